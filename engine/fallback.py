"""`Fallback`: where one `generate` call stands after a failed run, and what it tries next.

Out of memory walks down the plan ladder (engine/planner.py, fastest rung first) with the same
seeds; a batch that ran out of memory inside one pipeline call is first drawn one picture per call
on the same rung.  Non-finite or black output is retried once in a safer precision, never on a rung
above the one in use (a rung that ran out of memory would again).  What was tried is kept in words
for the `Result`: `retries` (precision), `fallbacks` (memory), `warnings` (pictures given up).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import BadOutput, OutOfMemory
from engine.learned import Lesson
from engine.planner import DeviceFacts, Plan, first_fitting, fits_in_ram, largest_fitting_square, safer_dtype
from engine.request import DrawRequest, ModelProfile

log = logging.getLogger(__name__)

# dtype (None: the device's default) -> (the ladder for one picture per call, the same rungs for the
# whole batch in one call)
Ladders = Callable[[str | None], tuple[list[Plan], list[Plan]]]


@dataclass(frozen=True)
class Failure:
    """What stopped one run: non-finite or black output at `stage`, else out of memory (`in_batch`:
    inside one pipeline call for several pictures)."""

    stage: str | None = None
    in_batch: bool = False


class Fallback:
    """The rung, precision and batching of the next run of one request, and what was given up."""

    def __init__(
        self,
        ladders: Ladders,
        facts: DeviceFacts,
        profile: ModelProfile,
        request: DrawRequest,
        held: Lesson | None = None,
        one_call_batches: bool = True,
        gguf: bool = False,
    ) -> None:
        self._ladders = ladders
        self._facts = facts
        self._profile = profile  # sized for the loaded weights (planner.quantized)
        self._gguf = gguf  # a GGUF transformer: group offload is its safest rung
        self._request = request
        self.plans, self.batch_plans = ladders(None)
        # The fastest rung that fits, unless this size ran out of memory there lately (`held`).
        planned = first_fitting(self.plans)
        self.rung = max(planned, held.rung) if held else planned
        batched = one_call_batches and request.count > 1 and self.batch_plans[self.rung].fits
        batch_lesson = bool(held and held.one_call_failed)
        self.learned_start = self.rung > planned or (batched and batch_lesson)
        self.batched = batched and not batch_lesson
        self.first_rung = self.rung
        self.one_call_failed = False  # a batch ran out of memory in one call (then: one call each)
        self.plan = self.plans[self.rung]
        self.retries: list[str] = []
        self.fallbacks: list[str] = []
        self.warnings: list[str] = []

    def next_plan(self) -> Plan:
        """The plan of the next run; it stays `plan` (the one the Result reports) until the next."""
        self.plan = self.batch_plans[self.rung] if self.batched else self.plans[self.rung]
        return self.plan

    @property
    def worth_learning(self) -> bool:
        """Whether the run that worked is a lesson for the next job of this size (engine/learned.py):
        it fell back for memory, and not for precision."""
        return (self.rung > self.first_rung or self.one_call_failed) and not self.retries

    def after(self, failure: Failure, drawn: int) -> bool:
        """True: run again as now planned; False: stop with the `drawn` pictures (a warning says so)."""
        if failure.stage is not None:
            return self.after_bad_output(failure.stage, drawn)
        return self.after_oom(failure.in_batch, drawn)

    def after_oom(self, in_batch: bool, drawn: int) -> bool:
        """Out of memory: the same rung one picture per call when the batch's own call ran out,
        else the next rung down; `OutOfMemory` past the last rung with nothing drawn."""
        count = self._request.count
        if in_batch:  # the batch's own activations did not fit: same rung, one picture per call
            self.one_call_failed = True
            self.fallbacks.append(
                f"out of memory with {count - drawn} pictures in one call on "
                f"{self.plan.placement.value}: drew them one at a time"
            )
            self.batched = False
            return True
        self.batched = False  # whatever ran out was not the batch; lower rungs draw one picture per call
        if self.rung + 1 >= len(self.plans):
            if drawn:
                self.warnings.append(f"out of memory: {drawn} of {count} drawn")
                return False
            fits = largest_fitting_square(self._facts, self._profile, self._request.cfg, self._gguf)
            raise OutOfMemory(width=self._request.width, height=self._request.height, fits=fits)
        lower = self.plans[self.rung + 1]
        self.fallbacks.append(f"out of memory on {self.plan.placement.value}: fell back to {lower.placement.value}")
        log.warning("falling back to %s", lower.describe())
        self.rung += 1
        return True

    def after_bad_output(self, stage: str, drawn: int) -> bool:
        """Non-finite or black output at `stage`: once, a safer precision (one picture per call when
        RAM cannot hold that precision's copy); `BadOutput` when nothing was drawn and no retry is left."""
        count, facts = self._request.count, self._facts
        if self.retries:
            if not drawn:
                raise BadOutput(stage=stage)
            self.warnings.append(f"non-finite {stage} again: {drawn} of {count} drawn")
            return False
        dtype = safer_dtype(self.plan.dtype, facts.real_bf16 or not facts.is_gpu)
        safer, safer_batch = self._ladders(dtype)
        safer_rung = max(self.rung, first_fitting(safer))  # never back up the ladder
        if facts.is_gpu and dtype != self.plan.dtype and not fits_in_ram(facts, self._profile, safer[safer_rung]):
            if self.batched:  # keep the good pictures: draw them one per call, in this precision
                self.retries.append(f"non-finite {stage} in {self.plan.dtype}, no RAM for {dtype}: one at a time")
                self.batched = False
                return True
            if not drawn:
                raise BadOutput("error.bad_output_low_ram", stage=stage)
            self.warnings.append(f"non-finite {stage}: {drawn} of {count} drawn")
            return False
        self.retries.append(f"non-finite {stage} in {self.plan.dtype}: retried in {dtype}")
        self.plans, self.batch_plans, self.rung = safer, safer_batch, safer_rung
        self.batched = self.batched and self.batch_plans[self.rung].fits
        return True
