"""`Result`: what one `generate` call produced, and how.  Plain data, no torch: the bot rebuilds
it from what a remote worker sent (bot/scale/results.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from engine.planner import Plan
from engine.request import DrawRequest, seed_for


@dataclass
class Result:
    images: list[Image.Image]
    seed: int
    request: DrawRequest
    plan: Plan
    timings: dict[str, float]
    peak_memory_gb: float | None
    retries: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    batched: bool = False  # True when the pictures were denoised together in one pipeline call
    learned_start: bool = False  # started below the planner's rung: this size ran out of memory lately
    prompt_cached: bool = False  # the prompt's embeddings came from the cache: no text encoder run

    @property
    def image(self) -> Image.Image:
        return self.images[0]

    @property
    def seeds(self) -> list[int]:
        """The seed of every picture, in order: each redraws that picture alone."""
        return [seed_for(self.seed, index) for index in range(len(self.images))]
