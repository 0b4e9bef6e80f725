"""After an OOM fallback on a GPU, jobs of that size start on the rung that worked (for a while),
instead of failing on the same rung every time: the tiny real pipeline behind a planner that believes
it runs on a card, faults injected into the real transformer."""

from __future__ import annotations

import pytest

from engine.engine import Engine
from engine.learned import LESSON_S, LearnedRungs
from engine.planner import DeviceFacts, Placement
from engine.request import TINY, DrawRequest
from engine.tiny import build_pipeline
from tests.support.pipeline import transformer_fault

SMALL = dict(width=128, height=128, steps=2)


@pytest.fixture
def card():
    """A pretend 8 GB card with room for everything, and a clock the test moves."""
    now = {"t": 1000.0, "free_gb": 7.5}

    def probe(device: str) -> DeviceFacts:
        return DeviceFacts("cuda", "pretend card", 16.0, now["free_gb"], (8, 9), True, 64)

    engine = Engine(build_pipeline(), "tiny", TINY, "cpu", probe=probe)
    engine._learned = LearnedRungs(clock=lambda: now["t"])
    engine.now = now
    return engine


def draw(engine: Engine, **options):
    return engine.generate(DrawRequest("a fox", seed=5, **{**SMALL, **options}))


def test_a_size_that_ran_out_of_memory_starts_where_it_last_worked_until_the_lesson_expires(card):
    with transformer_fault(card, at_call=1, fault="oom"):
        first = draw(card)
    assert first.fallbacks == ["out of memory on gpu: fell back to model_offload"]

    again = draw(card)
    assert again.plan.placement is Placement.MODEL_OFFLOAD and again.fallbacks == [] and again.learned_start
    assert not first.learned_start
    other_size = draw(card, width=160)
    assert other_size.plan.placement is Placement.GPU

    card.now["free_gb"] = 7.7  # about as much free memory: the lesson holds
    assert draw(card).plan.placement is Placement.MODEL_OFFLOAD
    card.now["free_gb"] = 9.0  # clearly more than when it failed: the planner's rung again
    assert draw(card).plan.placement is Placement.GPU
    card.now["free_gb"] = 7.5
    assert draw(card).plan.placement is Placement.MODEL_OFFLOAD
    card.now["t"] += LESSON_S + 1
    assert draw(card).plan.placement is Placement.GPU


def test_a_batch_that_ran_out_of_memory_in_one_call_is_drawn_one_per_call_next_time(card):
    with transformer_fault(card, at_call=1, fault="oom", min_batch=2) as calls:
        first = draw(card, count=3)
    assert calls["fired"] == 1 and not first.batched and len(first.images) == 3
    assert first.plan.placement is Placement.GPU

    with transformer_fault(card, at_call=10**9, fault="none") as calls:
        again = draw(card, count=3)
    assert not again.batched and again.fallbacks == [] and again.plan.placement is Placement.GPU
    assert again.learned_start and not first.learned_start
    assert calls["n"] == 3 * SMALL["steps"]  # one call per picture from the start: no failed batched call
    assert draw(card, count=2).batched  # another count is another lesson


def test_the_cpu_learns_nothing(engine):
    """Only GPU memory is planned: a CPU job after an OOM starts on the plain CPU rung again."""
    with transformer_fault(engine, at_call=1, fault="oom"):
        assert draw(engine).plan.placement is Placement.CPU_LOW_MEMORY
    assert draw(engine).plan.placement is Placement.CPU
