"""What this machine taught the engine: the rung each size last ran out of memory on.

The planner's peak estimates are calibrated on someone else's card.  Where they are too low here,
every job of that size would run out of memory on the same rung and pay for a failed attempt (up to
a whole denoise, when the OOM comes at decode) before falling back.  After one such fallback, jobs
of that size start on the rung that worked, for a while: free memory changes (another program
closes), so the lesson expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable

LESSON_S = 30 * 60

Key = tuple  # (width, height, guidance on, pictures)


class LearnedRungs:
    def __init__(self, lesson_s: float = LESSON_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._lesson_s = lesson_s
        self._clock = clock
        self._rungs: dict[Key, tuple[int, bool, float]] = {}  # key -> (rung, one call failed, when)

    def _fresh(self, key: Key) -> tuple[int, bool] | None:
        lesson = self._rungs.get(key)
        if lesson is None or self._clock() - lesson[2] > self._lesson_s:
            self._rungs.pop(key, None)
            return None
        return lesson[0], lesson[1]

    def start(self, key: Key, planned: int) -> int:
        """The rung to start on: the planner's, or the one that last worked after an OOM if lower."""
        lesson = self._fresh(key)
        return max(planned, lesson[0]) if lesson else planned

    def one_call_failed(self, key: Key) -> bool:
        """Whether this size's batch last ran out of memory in one call (then: one call per picture)."""
        lesson = self._fresh(key)
        return bool(lesson and lesson[1])

    def learn(self, key: Key, rung: int, one_call_failed: bool) -> None:
        self._rungs[key] = (rung, one_call_failed, self._clock())
