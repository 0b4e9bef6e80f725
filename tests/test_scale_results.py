"""A remote worker's result crosses Redis as JSON and comes back as the engine's `Result`, flags
included; an older worker's result (without the newer flags) still reads."""

from __future__ import annotations

import json

from PIL import Image

from bot.scale.results import done_meta, result_from
from engine.planner import Placement, Plan
from engine.request import DrawRequest
from engine.result import Result


def test_a_result_survives_the_trip_through_redis_with_its_flags():
    plan = Plan("cuda", "bfloat16", Placement.MODEL_OFFLOAD, True, False, 13.5, True, (), low_cpu_memory=False)
    sent = Result(
        images=[Image.new("RGB", (64, 64))],
        seed=7,
        request=DrawRequest("a fox", width=64, height=64, steps=2),
        plan=plan,
        timings={"total": 1.5},
        peak_memory_gb=12.1,
        fallbacks=["out of memory on gpu: fell back to model_offload"],
        batched=False,
        learned_start=True,
        prompt_cached=True,
    )
    meta = json.loads(json.dumps(done_meta(sent, "worker-1")))
    back = result_from({b"meta": json.dumps(meta).encode()}, sent.images, None)
    assert (back.learned_start, back.prompt_cached, back.plan, back.fallbacks) == (True, True, plan, sent.fallbacks)

    for newer in ("learned_start", "prompt_cached"):
        del meta[newer]
    del meta["plan"]["low_cpu_memory"]
    older = result_from({b"meta": json.dumps(meta).encode()}, sent.images, None)
    assert (older.learned_start, older.prompt_cached, older.plan) == (False, False, plan)
