"""The placements that need an accelerator, with the tiny model on a real CUDA device.

Skipped without CUDA (see conftest.py); run them whenever a GPU is available:
    .venv/bin/python -m pytest -m gpu
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine.engine import Engine
from engine.planner import Placement, ladder
from engine.request import DrawRequest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_engine(tiny_model_dir):
    return Engine.load(tiny_model_dir, device="cuda")


def forced(engine: Engine, placement: Placement, dtype: str | None = None):
    """The real plan for this placement on this device, to be put first on the ladder."""
    plans = ladder(engine.device_facts(), engine.profile, 256, 256, 1.0, dtype)
    return next(p for p in plans if p.placement is placement)


@pytest.mark.parametrize(
    "placement",
    [Placement.GPU, Placement.MODEL_OFFLOAD, Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD],
)
def test_every_placement_draws_the_same_picture(cuda_engine, placement, monkeypatch):
    import engine.engine as engine_module

    reference = cuda_engine.generate(DrawRequest("a red fox", seed=3))
    # No VAE tiling: the offload plans tile, and tiling alone moves pixels by more than the tolerance.
    plan = dataclasses.replace(forced(cuda_engine, placement), fits=True, vae_tiling=False)
    monkeypatch.setattr(engine_module, "ladder", lambda *args, **kwargs: [plan])
    result = cuda_engine.generate(DrawRequest("a red fox", seed=3))
    assert result.plan.placement is placement
    assert result.peak_memory_gb is not None and result.peak_memory_gb > 0
    difference = np.abs(np.asarray(result.image, dtype=np.int16) - np.asarray(reference.image, dtype=np.int16))
    assert difference.mean() < 8


def test_fp16_plan_with_clamp_stays_finite(cuda_engine, monkeypatch):
    import engine.engine as engine_module

    plan = dataclasses.replace(forced(cuda_engine, Placement.GPU, "float16"), fits=True)
    assert plan.clamp_fp16
    monkeypatch.setattr(engine_module, "ladder", lambda *args, **kwargs: [plan])
    result = cuda_engine.generate(DrawRequest("a blue bird", seed=5))
    assert result.plan.dtype == "float16"
    assert np.asarray(result.image).max() > 0


def test_a_batch_on_the_gpu_matches_its_pictures_drawn_alone(cuda_engine):
    """One call for the batch when it fits; each picture close to the same seed drawn alone."""
    from engine.request import seed_for

    batch = cuda_engine.generate(DrawRequest("a red fox", seed=11, count=3, enhance=False))
    assert len(batch.images) == 3 and batch.batched
    for index, image in enumerate(batch.images):
        alone = cuda_engine.generate(DrawRequest("a red fox", seed=seed_for(11, index), enhance=False))
        difference = np.abs(np.asarray(image, dtype=np.int16) - np.asarray(alone.image, dtype=np.int16))
        assert difference.mean() < 8
