"""The offload placements rehearsed on the CPU: diffusers and accelerate accept the CPU as the
"accelerator" of model, group and sequential offload, so the hooks easel installs, removes and
switches between run here for real, with the tiny model through the real Engine.

What this cannot show is a tensor left on the wrong device (everything is on the CPU); that, speed
and memory are for `tests/test_gpu.py` and `bench/gpu_matrix.py` on a GPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import engine.engine as engine_module
from engine.engine import Engine
from engine.errors import OutOfMemory
from engine.planner import Placement, Plan
from engine.request import DrawRequest, Kind
from tests.support.pipeline import transformer_fault

OFFLOADS = [Placement.MODEL_OFFLOAD, Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD]


@pytest.fixture(scope="module")
def cpu_engine(tiny_model_dir):
    """An engine of its own: these tests leave hooks on its pipeline between draws."""
    return Engine.load(tiny_model_dir, device="cpu")


@pytest.fixture(autouse=True)
def cpu_zero_is_cpu(cpu_as_accelerator):
    """Every test here runs the offload hooks with the CPU as the accelerator (tests/conftest.py)."""


def plan(placement: Placement) -> Plan:
    """No VAE tiling, so that a difference in pixels can only come from the placement."""
    return Plan("cpu", "float32", placement, False, False, 0.0, True)


def force(monkeypatch, *placements: Placement) -> None:
    """Make the planner's ladder these rungs, fastest first."""
    rungs = [plan(p) for p in placements]
    monkeypatch.setattr(engine_module, "ladder", lambda *args, **kwargs: list(rungs))


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def hooks_left(engine: Engine) -> list[str]:
    """Every offload hook still attached anywhere in the pipeline."""
    from diffusers.hooks import HookRegistry

    found = []
    for name, component in engine.pipeline.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        for path, module in component.named_modules():
            if getattr(module, "_hf_hook", None) is not None:
                found.append(f"{name}.{path}: accelerate")
            registry = getattr(module, HookRegistry.__name__.lower(), None) or getattr(module, "_diffusers_hook", None)
            if registry is not None and registry.hooks:
                found.append(f"{name}.{path}: {sorted(registry.hooks)}")
    return found


def draw(engine: Engine, **overrides):
    return engine.generate(DrawRequest("a red fox", **{**dict(width=128, height=128, steps=3, seed=3), **overrides}))


@pytest.mark.parametrize("placement", OFFLOADS)
def test_every_offload_draws_the_picture_the_plain_cpu_draws(cpu_engine, monkeypatch, placement):
    force(monkeypatch, Placement.CPU)
    reference = draw(cpu_engine)
    force(monkeypatch, placement)
    result = draw(cpu_engine)
    assert result.plan.placement is placement
    assert np.abs(pixels(result.image) - pixels(reference.image)).max() <= 1
    assert hooks_left(cpu_engine), "the offload placement installed no hooks"
    force(monkeypatch, Placement.CPU)
    assert np.abs(pixels(draw(cpu_engine).image) - pixels(reference.image)).max() <= 1
    assert hooks_left(cpu_engine) == []


def test_group_offload_for_little_ram_draws_the_same_picture(cpu_engine, monkeypatch):
    """The low_cpu_mem_usage variant the planner picks when RAM + swap are short; switching to it
    from the usual group offload re-places the pipeline."""
    force(monkeypatch, Placement.CPU)
    reference = pixels(draw(cpu_engine).image)
    force(monkeypatch, Placement.GROUP_OFFLOAD)
    draw(cpu_engine)
    low_ram = dataclasses.replace(plan(Placement.GROUP_OFFLOAD), low_cpu_memory=True)
    monkeypatch.setattr(engine_module, "ladder", lambda *args, **kwargs: [low_ram])
    result = draw(cpu_engine)
    assert result.plan.low_cpu_memory and np.abs(pixels(result.image) - reference).max() <= 1
    registry = cpu_engine.pipeline.text_encoder.embed_tokens._diffusers_hook
    assert registry.get_hook("group_offloading").group.low_cpu_mem_usage


def test_switching_between_every_pair_of_placements_leaves_no_stale_hook(cpu_engine, monkeypatch):
    """Jobs of different sizes get different plans, in any order: each switch must undo the last."""
    force(monkeypatch, Placement.CPU)
    reference = pixels(draw(cpu_engine).image)
    order = [*OFFLOADS, Placement.MODEL_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD, Placement.GROUP_OFFLOAD, *OFFLOADS[::-1]]
    for placement in order:
        force(monkeypatch, placement)
        result = draw(cpu_engine)
        assert result.plan.placement is placement
        assert np.abs(pixels(result.image) - reference).max() <= 1, placement
    force(monkeypatch, Placement.CPU)
    draw(cpu_engine)
    assert hooks_left(cpu_engine) == []


def test_oom_walks_down_through_real_offload_placements(cpu_engine, monkeypatch):
    force(monkeypatch, Placement.CPU)
    reference = pixels(draw(cpu_engine).image)
    force(monkeypatch, *OFFLOADS)
    # Two injected OOMs: model offload fails, then group offload; sequential offload draws it.
    with transformer_fault(cpu_engine, at_call=2, fault="oom", times=2):
        result = draw(cpu_engine)
    assert result.plan.placement is Placement.SEQUENTIAL_OFFLOAD
    assert result.fallbacks == [
        "out of memory on model_offload: fell back to group_offload",
        "out of memory on group_offload: fell back to sequential_offload",
    ]
    assert np.abs(pixels(result.image) - reference).max() <= 1


@pytest.mark.parametrize("placement", OFFLOADS)
def test_variations_and_batches_run_under_every_offload(cpu_engine, monkeypatch, tmp_path, placement):
    """The img2img pipeline shares the offloaded modules (from_pipe); a batch is one call."""
    force(monkeypatch, placement)
    first = draw(cpu_engine)
    source = tmp_path / "source.png"
    first.image.save(source)
    variation = draw(cpu_engine, kind=Kind.VARIATION, source_image=str(source), strength=0.5)
    assert variation.image.size == (128, 128)
    assert np.abs(pixels(variation.image) - pixels(first.image)).mean() > 0
    batch = draw(cpu_engine, count=2)
    assert batch.batched and len(batch.images) == 2
    assert np.abs(pixels(batch.images[0]) - pixels(first.image)).max() <= 1


def test_a_run_that_fails_under_model_offload_does_not_break_the_next(cpu_engine, monkeypatch):
    """A run stopped mid-way never reaches diffusers' own maybe_free_model_hooks(); the engine's
    clean-up must leave the hooks in a state the next job runs under."""
    force(monkeypatch, Placement.MODEL_OFFLOAD)
    reference = pixels(draw(cpu_engine).image)
    with transformer_fault(cpu_engine, at_call=2, fault="oom", times=100), pytest.raises(OutOfMemory):
        draw(cpu_engine)
    assert np.abs(pixels(draw(cpu_engine).image) - reference).max() <= 1


def test_a_placement_that_fails_half_way_is_undone_before_the_next_rung(tiny_model_dir, monkeypatch):
    """The likeliest real failure: moving the weights runs out of memory part-way (the planner thought
    they fit).  The next rung must start from a clean pipeline, not from the half-placed one."""
    fresh = Engine.load(tiny_model_dir, device="cpu")  # nothing placed yet: the first job of a bot
    force(monkeypatch, Placement.CPU)
    reference = pixels(draw(fresh).image)
    fresh._applied = None  # as if that job had not run: the next apply starts from a fresh load
    real_apply = engine_module.apply_placement
    failed = []

    def out_of_memory_half_way(pipe, plan, device, previous):
        real_apply(pipe, plan, device, previous)  # the hooks are in...
        if not failed:
            failed.append(plan.placement)
            raise torch.OutOfMemoryError("CUDA out of memory (injected while placing)")  # ...then it fails

    monkeypatch.setattr(engine_module, "apply_placement", out_of_memory_half_way)
    force(monkeypatch, Placement.MODEL_OFFLOAD, Placement.GROUP_OFFLOAD)
    result = draw(fresh)
    assert failed == [Placement.MODEL_OFFLOAD] and result.plan.placement is Placement.GROUP_OFFLOAD
    assert np.abs(pixels(result.image) - reference).max() <= 1


@pytest.mark.parametrize("placement", OFFLOADS)
def test_an_oom_inside_a_layer_leaves_the_offload_hooks_able_to_go_on(cpu_engine, monkeypatch, placement):
    """Out of memory in the middle of the transformer (a layer onloaded, its hooks half-way): the
    batch is drawn again one picture per call on the same placement, and every picture is right."""
    force(monkeypatch, Placement.CPU)
    alone = [pixels(draw(cpu_engine, seed=seed).image) for seed in (3, 4)]
    force(monkeypatch, placement)
    layer = cpu_engine.pipeline.transformer.layers[0]
    fired = []

    def out_of_memory(module, args):
        if not fired and len(args[0]) > 1:  # only inside the call that carries both pictures
            fired.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory (injected inside a layer)")

    handle = layer.register_forward_pre_hook(out_of_memory)
    try:
        result = draw(cpu_engine, count=2)
    finally:
        handle.remove()
    assert fired and not result.batched and result.plan.placement is placement
    assert result.fallbacks == [
        f"out of memory with 2 pictures in one call on {placement.value}: drew them one at a time"
    ]
    for image, expected in zip(result.images, alone, strict=True):
        assert np.abs(pixels(image) - expected).max() <= 1
    assert np.abs(pixels(draw(cpu_engine, seed=3).image) - alone[0]).max() <= 1  # and the next job too
