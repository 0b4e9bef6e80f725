"""What this machine taught the engine: the rung each size last ran out of memory on.

The planner's peak estimates are calibrated on someone else's card.  Where they are too low here,
every job of that size would run out of memory on the same rung and pay for a failed attempt (up to
a whole denoise, when the OOM comes at decode) before falling back.  After one such fallback, jobs
of that size start on the rung that worked, for a while, and only while there is not clearly more
free memory than when it failed (another program closed, a smaller budget lifted).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

LESSON_S = 30 * 60
MORE_MEMORY_GB = 0.5  # this much more free memory than at the failure: try the planner's rung again

Key = tuple  # (width, height, guidance on, pictures)


@dataclass(frozen=True)
class Lesson:
    rung: int
    one_call_failed: bool
    free_gb: float
    when: float


class LearnedRungs:
    def __init__(self, lesson_s: float = LESSON_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._lesson_s = lesson_s
        self._clock = clock
        self._lessons: dict[Key, Lesson] = {}

    def holding(self, key: Key, free_gb: float) -> Lesson | None:
        """The lesson for this size that still holds: the rung that last worked after an OOM, and
        whether the batch ran out of memory in one call (then: one call per picture)."""
        lesson = self._lessons.get(key)
        if lesson is None or self._clock() - lesson.when > self._lesson_s:
            self._lessons.pop(key, None)
            return None
        return lesson if free_gb <= lesson.free_gb + MORE_MEMORY_GB else None

    def learn(self, key: Key, rung: int, one_call_failed: bool, free_gb: float) -> None:
        self._lessons[key] = Lesson(rung, one_call_failed, free_gb, self._clock())
