"""Run-time estimates: how long a job will take, and when a queued job will be done.

Cost is modelled as seconds per (megapixel x step). One moving average covers every size; a
separate one per size bucket catches what the single rate misses (attention grows faster than the
pixel count, and small images pay a fixed overhead). An estimate uses the job's bucket when it has
data, else the overall average, else the configured default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

BUCKET_SIDE = 256  # buckets are squares whose side is a multiple of this: 512², 768², 1024², ...


def size_bucket(width: int, height: int) -> int:
    """The side of the square bucket a size falls in, e.g. 1248x832 -> 1024, 512x512 -> 512."""
    side = math.sqrt(width * height)
    return max(1, int(side / BUCKET_SIDE + 0.5)) * BUCKET_SIDE


class EtaEstimator:
    """Learns seconds per (megapixel x step) from finished jobs. Not thread-safe: record from one thread."""

    def __init__(self, default_seconds_per_mpx_step: float = 0.5, smoothing: float = 0.2) -> None:
        if default_seconds_per_mpx_step <= 0:
            raise ValueError(f"default_seconds_per_mpx_step must be positive (got {default_seconds_per_mpx_step})")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1] (got {smoothing})")
        self.default_seconds_per_mpx_step = default_seconds_per_mpx_step
        self.smoothing = smoothing
        self._overall: float | None = None
        self._by_bucket: dict[int, float] = {}

    def record(self, width: int, height: int, steps: int, seconds: float) -> None:
        """Fold one finished job's run time into the averages."""
        if seconds <= 0:
            raise ValueError(f"seconds must be positive (got {seconds})")
        rate = seconds / _work(width, height, steps)
        self._overall = self._blend(self._overall, rate)
        bucket = size_bucket(width, height)
        self._by_bucket[bucket] = self._blend(self._by_bucket.get(bucket), rate)

    def estimate(self, width: int, height: int, steps: int) -> float:
        """Expected run time in seconds of one job of this size and step count."""
        return self.seconds_per_mpx_step(width, height) * _work(width, height, steps)

    def seconds_per_mpx_step(self, width: int, height: int) -> float:
        """The rate an estimate for this size uses: its bucket's, else the overall, else the default."""
        rate = self._by_bucket.get(size_bucket(width, height), self._overall)
        return self.default_seconds_per_mpx_step if rate is None else rate

    def _blend(self, average: float | None, sample: float) -> float:
        # The first sample replaces the default outright rather than being dragged towards it.
        if average is None:
            return sample
        return average + self.smoothing * (sample - average)


def finish_etas(running_remaining: float, queued_costs: Sequence[float]) -> list[float]:
    """Seconds until each queued job is done, for one GPU working through the queue in order.

    `running_remaining` is what is left of the job on the GPU now (0 when idle), e.g.
    `estimate * (1 - step / steps)`; `queued_costs[i]` is the estimate of the job at position i.
    One O(n) pass, to go with `FairQueue.positions()`.
    """
    etas = []
    elapsed = max(running_remaining, 0.0)
    for cost in queued_costs:
        elapsed += cost
        etas.append(elapsed)
    return etas


def eta_for_position(position: int, running_remaining: float, queued_costs: Sequence[float]) -> float:
    """Seconds until the job at `position` is done: the running job, the jobs ahead, then itself."""
    if not 0 <= position < len(queued_costs):
        raise ValueError(f"position must be in [0, {len(queued_costs)}) (got {position})")
    return max(running_remaining, 0.0) + sum(queued_costs[: position + 1])


def _work(width: int, height: int, steps: int) -> float:
    if width <= 0 or height <= 0 or steps <= 0:
        raise ValueError(f"width, height and steps must be positive (got {width}x{height}, {steps} steps)")
    return width * height / 1_000_000 * steps
