"""What a job costs, in work units: the one measure that quotas, the fair queue, the per-job cap,
metrics and remote timeouts all count in.

One unit is one 1024x1024 picture drawn in 8 steps without guidance: Z-Image-Turbo's default
picture.  A job costs pictures x megapixels x steps / 8, doubled when guidance is on (cfg > 1 runs
the model twice per step), rounded up, and at least one unit per picture:
`--n 4 --size 1536x1536 --steps 16 --cfg 2.5` is 4 x 2.25 x 2 x 2 = 36 units.  A `--draft` picture
(half the side, 6 steps: 3/16 of the work) costs at least a quarter unit instead of one, so a draft
costs a quarter of its full-size picture: `--draft --n 4` is one unit where `--n 4` is four.

A model profile with another default picture counts in its own unit (`Unit.of(profile)`): the tiny
test model's 256x256 default is its unit, so its sizes, a quarter as long, cost what the real
model's do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.request import DrawRequest, ModelProfile


@dataclass(frozen=True)
class Unit:
    """The picture that costs one unit: this many pixels, drawn in this many steps, unguided."""

    pixels: int = 1024 * 1024
    steps: int = 8

    @classmethod
    def of(cls, profile: ModelProfile | None) -> Unit:
        """The profile's default picture (1024x1024 at 8 steps for Z-Image-Turbo)."""
        if profile is None:
            return STANDARD
        width, height = profile.default_size
        return cls(width * height, profile.default_steps)


STANDARD = Unit()
DRAFT_SHARE = 4  # a draft picture's least cost is 1/DRAFT_SHARE of a unit


def guidance_factor(cfg: float) -> int:
    """2 when classifier-free guidance is on (a second model pass per step), else 1."""
    return 2 if cfg > 1 else 1


def job_cost(
    width: int, height: int, steps: int, cfg: float, count: int = 1, unit: Unit = STANDARD, draft: bool = False
) -> int:
    """Work units of `count` pictures of this size and step count: exact integer arithmetic, rounded up;
    at least a unit per picture, a quarter of one for drafts."""
    if width <= 0 or height <= 0 or steps <= 0 or count <= 0:
        raise ValueError(f"a job needs a positive size, steps and count (got {width}x{height}, {steps}, {count})")
    work = count * width * height * steps * guidance_factor(cfg)
    least = -(-count // DRAFT_SHARE) if draft else count
    return max(least, -(-work // (unit.pixels * unit.steps)))


def request_cost(request: DrawRequest | Mapping[str, Any], unit: Unit = STANDARD) -> int:
    """The cost of a validated request, or of a stored job's request dict (`Job.request`)."""
    if isinstance(request, DrawRequest):
        return job_cost(request.width, request.height, request.steps, request.cfg, request.count, unit, request.draft)
    stored = DrawRequest.from_dict(request)
    return job_cost(stored.width, stored.height, stored.steps, stored.cfg or 1.0, stored.count or 1, unit, stored.draft)


def largest_count(width: int, height: int, steps: int, cfg: float, limit: int, unit: Unit = STANDARD) -> int:
    """The most pictures of this kind whose job costs at most `limit` units (0 when even one is too big)."""
    count = 0
    while job_cost(width, height, steps, cfg, count + 1, unit) <= limit:
        count += 1
    return count


def largest_size(
    width: int,
    height: int,
    steps: int,
    cfg: float,
    count: int,
    limit: int,
    unit: Unit = STANDARD,
    multiple: int = 16,
    min_side: int = 16,
) -> tuple[int, int] | None:
    """The biggest size with about this aspect ratio (sides multiples of `multiple`, none under
    `min_side`) whose job costs at most `limit` units; None when no such size is small enough."""
    long_side, short_side = max(width, height), min(width, height)
    side = long_side // multiple * multiple
    while side >= min_side:
        other = short_side * side // long_side // multiple * multiple
        if other >= min_side:
            size = (side, other) if width >= height else (other, side)
            if job_cost(*size, steps, cfg, count, unit) <= limit:
                return size
        side -= multiple
    return None
