"""`Fallback` on its own: which rung, precision and batching the next run gets after each kind of
failure, and what the Result will say.  (tests/test_engine*.py run the same paths end to end.)"""

from __future__ import annotations

import pytest

from engine.errors import BadOutput, OutOfMemory
from engine.fallback import Failure, Fallback
from engine.learned import Lesson
from engine.planner import GPU_LADDER, DeviceFacts, Placement, Plan
from engine.request import Z_IMAGE_TURBO, DrawRequest, validate

CARD = DeviceFacts(kind="cuda", name="card", total_vram_gb=24, free_vram_gb=20, real_bf16=True, system_ram_gb=64)
PRE_AMPERE = DeviceFacts(kind="cuda", name="old", total_vram_gb=8, free_vram_gb=7, real_bf16=False, system_ram_gb=64)
PLACEMENTS = [placement.value for placement in GPU_LADDER]


class Ladders:
    """Hand-made ladders: rung i fits from `first_fit` on (per dtype); the batch from `batch_fit` on."""

    def __init__(self, first_fit: dict[str | None, int], batch_fit: int = 0) -> None:
        self.first_fit = first_fit
        self.batch_fit = batch_fit
        self.asked: list[str | None] = []

    def __call__(self, dtype: str | None) -> tuple[list[Plan], list[Plan]]:
        self.asked.append(dtype)
        first = self.first_fit[dtype]
        dtype = dtype or "float16"
        single = [self._plan(dtype, placement, index >= first) for index, placement in enumerate(GPU_LADDER)]
        batch = [
            self._plan(dtype, placement, index >= max(first, self.batch_fit), 9.0)
            for index, placement in enumerate(GPU_LADDER)
        ]
        return single, batch

    @staticmethod
    def _plan(dtype: str, placement: Placement, fits: bool, peak: float = 3.0) -> Plan:
        return Plan("cuda", dtype, placement, False, dtype == "float16", peak, fits)


def fallback(count: int = 1, facts: DeviceFacts = PRE_AMPERE, ladders=None, held=None, profile=Z_IMAGE_TURBO, **kwargs):
    request = validate(DrawRequest("a fox", count=count, seed=1), Z_IMAGE_TURBO)
    ladders = ladders or Ladders({None: 0, "bfloat16": 0, "float32": 0})
    return Fallback(ladders, facts, profile, request, held, **kwargs)


def test_it_starts_on_the_fastest_fitting_rung_and_batches_when_the_batch_fits():
    state = fallback(count=3, ladders=Ladders({None: 1}, batch_fit=1))
    assert (state.rung, state.batched, state.learned_start) == (1, True, False)
    assert state.next_plan() is state.batch_plans[1] and state.plan.estimated_peak_gb == 9.0
    assert not fallback(count=3, ladders=Ladders({None: 1}, batch_fit=2)).batched  # no room for the batch there
    assert not fallback(count=1).batched
    assert not fallback(count=3, one_call_batches=False).batched


def test_a_lesson_starts_lower_and_draws_one_picture_per_call():
    state = fallback(count=2, held=Lesson(rung=2, one_call_failed=True, free_gb=7, when=0))
    assert (state.rung, state.batched, state.learned_start) == (2, False, True)
    assert state.next_plan() is state.plans[2]


def test_out_of_memory_steps_down_the_ladder_then_gives_up():
    state = fallback()
    state.next_plan()
    for rung in range(1, len(GPU_LADDER)):
        assert state.after(Failure(), drawn=0) is True
        assert state.rung == rung and state.next_plan().placement.value == PLACEMENTS[rung]
    assert state.fallbacks[0] == "out of memory on gpu: fell back to model_offload"
    assert state.worth_learning
    with pytest.raises(OutOfMemory) as raised:
        state.after_oom(in_batch=False, drawn=0)
    assert (raised.value.params["width"], raised.value.params["height"]) == (1024, 1024)
    assert "fits" in raised.value.params


def test_out_of_memory_past_the_last_rung_keeps_the_pictures_drawn():
    state = fallback(count=2, held=Lesson(rung=len(GPU_LADDER) - 1, one_call_failed=True, free_gb=7, when=0))
    state.next_plan()
    assert state.after_oom(in_batch=False, drawn=1) is False
    assert state.warnings == ["out of memory: 1 of 2 drawn"]


def test_a_batch_out_of_memory_in_one_call_is_drawn_one_at_a_time_on_the_same_rung():
    state = fallback(count=4)
    assert state.next_plan() is state.batch_plans[0]
    assert state.after(Failure(in_batch=True), drawn=1) is True
    assert (state.rung, state.batched, state.one_call_failed) == (0, False, True)
    assert state.fallbacks == ["out of memory with 3 pictures in one call on gpu: drew them one at a time"]
    assert state.next_plan() is state.plans[0] and state.worth_learning


def test_bad_output_is_retried_once_in_a_safer_precision_never_higher_up_the_ladder():
    ladders = Ladders({None: 0, "float32": 0})
    state = fallback(ladders=ladders, facts=PRE_AMPERE)
    state.after_oom(in_batch=False, drawn=0)  # now on rung 1
    assert state.next_plan().dtype == "float16"
    assert state.after(Failure(stage="latents"), drawn=0) is True
    assert ladders.asked == [None, "float32"]  # no real bf16 on this card
    assert state.rung == 1 and state.next_plan().dtype == "float32"
    assert state.retries == ["non-finite latents in float16: retried in float32"]
    assert not state.worth_learning  # a precision retry teaches nothing about memory

    with pytest.raises(BadOutput) as raised:
        state.after_bad_output("pixels", drawn=0)
    assert raised.value.key == "error.bad_output" and raised.value.params == {"stage": "pixels"}


def test_bad_output_again_keeps_the_pictures_already_drawn():
    state = fallback(count=3, facts=CARD, ladders=Ladders({None: 0, "bfloat16": 2}))
    state.next_plan()
    assert state.after_bad_output("black", drawn=0) is True
    assert state.rung == 2 and state.retries == ["non-finite black in float16: retried in bfloat16"]
    assert state.batched  # the batch fits the safer rung too
    assert state.after_bad_output("black", drawn=2) is False
    assert state.warnings == ["non-finite black again: 2 of 3 drawn"]


def test_without_ram_for_a_safer_copy_a_batch_goes_one_at_a_time_then_gives_up():
    short_of_ram = DeviceFacts(
        kind="cuda", name="c", total_vram_gb=24, free_vram_gb=20, real_bf16=True, system_ram_gb=8
    )
    state = fallback(count=2, facts=short_of_ram)
    state.next_plan()
    assert state.after_bad_output("latents", drawn=0) is True
    assert state.retries == ["non-finite latents in float16, no RAM for bfloat16: one at a time"]
    assert not state.batched and state.next_plan().dtype == "float16"
    with pytest.raises(BadOutput) as raised:
        state.after_bad_output("latents", drawn=0)
    assert raised.value.params == {"stage": "latents"}

    single = fallback(count=2, facts=short_of_ram, one_call_batches=False)
    single.next_plan()
    with pytest.raises(BadOutput) as raised:
        single.after_bad_output("latents", drawn=0)
    assert raised.value.key == "error.bad_output_low_ram"
    kept = fallback(count=2, facts=short_of_ram, one_call_batches=False)
    kept.next_plan()
    assert kept.after_bad_output("pixels", drawn=1) is False
    assert kept.warnings == ["non-finite pixels: 1 of 2 drawn"]
