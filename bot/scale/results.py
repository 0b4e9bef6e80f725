"""Outcomes on the wire: what a worker sends back for an engine `Result`, and that `Result` rebuilt
on the bot's side (images, seed, normalised request, plan, timings, ...)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from PIL import Image

from engine.planner import Placement, Plan
from engine.request import DrawRequest
from engine.result import Result


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # transport only: the bot re-saves with metadata
    return buffer.getvalue()


def decode_png(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


@dataclass(frozen=True)
class PlanRecord:
    """A plan from a worker of another version, kept as plain data (the bot only records it)."""

    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)

    def describe(self) -> str:
        return f"{self.data.get('placement', '?')} {self.data.get('dtype', '?')}"


def plan_from(data: dict[str, Any]) -> Plan | PlanRecord:
    """The engine's `Plan` again, so the bot reads a remote plan exactly like a local one."""
    try:
        return Plan(**{**data, "placement": Placement(data["placement"]), "warnings": tuple(data.get("warnings", ()))})
    except (KeyError, TypeError, ValueError):
        return PlanRecord(data)


def result_from(fields: dict[bytes, bytes], images: list[Image.Image], source_image: str | None) -> Result:
    """Rebuild the engine's result from a finished job's hash (state 'done')."""
    meta = json.loads(fields[b"meta"])
    request = DrawRequest.from_dict({**meta["request"], "source_image": source_image})
    return Result(
        images=images,
        seed=int(meta["seed"]),
        request=request,
        plan=plan_from(meta.get("plan") or {}),
        timings=meta.get("timings") or {"total": 0.0},
        peak_memory_gb=meta.get("peak_memory_gb"),
        retries=list(meta.get("retries") or []),
        fallbacks=list(meta.get("fallbacks") or []),
        warnings=list(meta.get("warnings") or []),
        batched=bool(meta.get("batched", False)),
        learned_start=bool(meta.get("learned_start", False)),
        prompt_cached=bool(meta.get("prompt_cached", False)),
    )


def done_meta(result: Any, worker_id: str) -> dict[str, Any]:
    """What a worker sends besides the PNGs for an `engine.engine.Result`."""
    return {
        "seed": result.seed,
        "request": result.request.to_dict(),
        "timings": result.timings,
        "plan": result.plan.to_dict(),
        "fallbacks": list(result.fallbacks),
        "retries": list(result.retries),
        "warnings": list(result.warnings),
        "peak_memory_gb": result.peak_memory_gb,
        "batched": getattr(result, "batched", False),
        "learned_start": getattr(result, "learned_start", False),
        "prompt_cached": getattr(result, "prompt_cached", False),
        "worker": worker_id,
    }
