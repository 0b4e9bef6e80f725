"""`--chaos`: seeded noise on the prompt embeddings, with the tiny real pipeline."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from engine import chaos as chaos_module
from engine.chaos import noisy_embeds
from engine.errors import InvalidRequest
from engine.request import TINY, DrawRequest, seed_for, validate
from tests.support.pipeline import pixels

SMALL = dict(width=128, height=128, steps=4, enhance=False)


def mean_pairwise_difference(images) -> float:
    return float(np.mean([np.abs(pixels(a) - pixels(b)).mean() for a, b in itertools.combinations(images, 2)]))


@pytest.fixture
def alike_seeds(engine, monkeypatch):
    """The tiny model with Z-Image-Turbo's habit at its extreme: every seed of a batch starts from the
    first picture's noise (random weights otherwise make seeds differ far more than words do)."""
    original = engine.pipeline.prepare_latents

    def same_start(*args, **kwargs):
        latents = original(*args, **kwargs)
        return latents[:1].expand_as(latents).clone()

    monkeypatch.setattr(engine.pipeline, "prepare_latents", same_start)
    return engine


def test_a_batch_with_chaos_differs_more_between_pictures_than_without(alike_seeds):
    calm = alike_seeds.generate(DrawRequest("a lighthouse on a cliff", seed=5, count=4, **SMALL))
    wild = alike_seeds.generate(DrawRequest("a lighthouse on a cliff", seed=5, count=4, chaos=60, **SMALL))
    assert mean_pairwise_difference(calm.images) < 0.05  # the same start: (nearly) the same picture
    assert mean_pairwise_difference(wild.images) > 0.05 + 10 * mean_pairwise_difference(calm.images)


def test_more_chaos_moves_a_picture_further_from_its_chaos_zero_self(engine):
    def draw(chaos: int):
        return pixels(engine.generate(DrawRequest("a lighthouse on a cliff", seed=5, chaos=chaos, **SMALL)).image)

    calm = draw(0)
    moved = [float(np.abs(draw(chaos) - calm).mean()) for chaos in (20, 60, 100)]
    assert 0 < moved[0] < moved[1] < moved[2]


def test_the_same_seed_and_chaos_give_the_same_picture_alone_or_in_a_batch(engine):
    batch = engine.generate(DrawRequest("a red kite", seed=70, count=3, chaos=40, **SMALL))
    again = engine.generate(DrawRequest("a red kite", seed=70, count=3, chaos=40, **SMALL))
    for first, second in zip(batch.images, again.images, strict=True):
        assert np.array_equal(pixels(first), pixels(second))
    # Picture 3 redrawn alone from its Params (its own seed, the same chaos): the noise is its seed's.
    lone = engine.generate(DrawRequest("a red kite", seed=seed_for(70, 2), chaos=40, **SMALL)).image
    assert int(np.abs(pixels(lone) - pixels(batch.images[2])).max()) <= 1
    other = engine.generate(DrawRequest("a red kite", seed=seed_for(70, 2), chaos=41, **SMALL)).image
    assert not np.array_equal(pixels(lone), pixels(other))


def test_chaos_zero_never_touches_the_embeddings(engine, monkeypatch):
    before = engine.generate(DrawRequest("a quiet pond", seed=9, count=2, **SMALL))

    def refuse(*args, **kwargs):
        raise AssertionError("chaos 0 must draw exactly as before")

    monkeypatch.setattr("engine.engine.per_picture", refuse)
    monkeypatch.setattr("engine.engine.CleanLater", refuse)
    after = engine.generate(DrawRequest("a quiet pond", seed=9, count=2, chaos=0, **SMALL))
    for first, second in zip(before.images, after.images, strict=True):
        assert np.array_equal(pixels(first), pixels(second))


def test_the_noise_is_the_seeds_and_grows_with_chaos():
    clean = torch.randn(12, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy_embeds(clean, 3, 50), noisy_embeds(clean, 3, 50))
    assert not torch.equal(noisy_embeds(clean, 3, 50), noisy_embeds(clean, 4, 50))
    small = (noisy_embeds(clean, 3, 10) - clean).abs().mean()
    large = (noisy_embeds(clean, 3, 100) - clean).abs().mean()
    assert 0 < small < large
    changed = float(((noisy_embeds(clean, 3, 100) - clean) != 0).float().mean())
    assert abs(changed - chaos_module.MASKED_SHARE) < 0.1


def test_the_clean_embeddings_come_back_half_way(engine, monkeypatch):
    seen = []
    original = chaos_module.CleanLater.__call__

    def spy(self, pipe, index, timestep, kwargs):
        out = original(self, pipe, index, timestep, kwargs)
        seen.append(out["prompt_embeds"] is self._clean)
        return out

    monkeypatch.setattr(chaos_module.CleanLater, "__call__", spy)
    engine.generate(DrawRequest("a meadow", seed=1, chaos=50, **SMALL))
    assert seen == [False, True, True, True]  # 4 steps: the first 2 see noise (the callback runs after each)


@pytest.mark.parametrize("value", [-1, 101, "5", True, 5.0])
def test_chaos_outside_zero_to_hundred_is_refused(value):
    with pytest.raises(InvalidRequest) as error:
        validate(DrawRequest("a fox", chaos=value), TINY)
    assert error.value.key == "error.chaos_range"


def test_chaos_travels_in_the_request_dict_and_old_dicts_mean_none():
    assert DrawRequest.from_dict(DrawRequest("a fox", chaos=30).to_dict()).chaos == 30
    assert DrawRequest.from_dict({"prompt": "a fox"}).chaos == 0
