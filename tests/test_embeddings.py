"""Reroll and upscale reuse the prompt embeddings of the same words: the text encoder (7.5 GB to move
onto the GPU under offload) runs once, and the pictures are exactly what a fresh encoding gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.embeddings import EmbeddingCache
from engine.engine import Engine
from engine.request import DrawRequest, Kind
from tests.support.pipeline import pixels

SMALL = dict(width=128, height=128, steps=2)


@pytest.fixture
def encoder_calls(engine):
    calls = []
    handle = engine.pipeline.text_encoder.register_forward_pre_hook(lambda module, args: calls.append(1))
    yield calls
    handle.remove()


def test_the_same_words_are_encoded_once_and_draw_the_same_picture(engine, tiny_model_dir, encoder_calls):
    first = engine.generate(DrawRequest("a quiet harbour, cached", seed=3, **SMALL))
    reroll = engine.generate(DrawRequest("a quiet harbour, cached", seed=4, **SMALL))
    again = engine.generate(DrawRequest("a quiet harbour, cached", seed=3, **SMALL))
    assert len(encoder_calls) == 1
    assert (first.prompt_cached, reroll.prompt_cached, again.prompt_cached) == (False, True, True)
    assert np.array_equal(pixels(again.image), pixels(first.image))
    assert not np.array_equal(pixels(reroll.image), pixels(first.image))
    fresh = Engine.load(tiny_model_dir, device="cpu")  # nothing cached: the encoder runs
    assert np.array_equal(
        pixels(fresh.generate(DrawRequest("a quiet harbour, cached", seed=3, **SMALL)).image), pixels(first.image)
    )


def test_other_words_guidance_or_negative_prompts_are_encoded_anew(engine, encoder_calls, tmp_path):
    engine.generate(DrawRequest("a red barn, cached", seed=1, **SMALL))
    engine.generate(DrawRequest("a blue barn, cached", seed=1, **SMALL))
    assert len(encoder_calls) == 2
    engine.generate(DrawRequest("a red barn, cached", seed=1, cfg=2.0, **SMALL))  # and its negative prompt
    assert len(encoder_calls) == 4
    engine.generate(DrawRequest("a red barn, cached", seed=1, cfg=2.0, negative_prompt="fog", **SMALL))
    assert len(encoder_calls) == 6
    source = tmp_path / "barn.png"
    engine.generate(DrawRequest("a red barn, cached", seed=1, **SMALL)).image.save(source)
    variation = DrawRequest("a red barn, cached", seed=1, kind=Kind.VARIATION, source_image=str(source), **SMALL)
    engine.generate(variation)  # the image-to-image pipeline shares the encoder and the cache
    assert len(encoder_calls) == 6


def test_the_cache_keeps_the_most_recent_and_hands_out_copies():
    cache = EmbeddingCache(size=2)
    embeds = ([torch.ones(3, 4)], [])
    for name in ("a", "b", "c"):
        cache.put((name,), embeds)
    assert cache.get(("a",), torch.device("cpu")) is None  # the oldest went first
    copy = cache.get(("c",), torch.device("cpu"))
    copy[0][0].zero_()  # whatever the pipeline does to its inputs
    assert cache.get(("c",), torch.device("cpu"))[0][0].sum() == 12
    assert (cache.hits, cache.misses) == (2, 1)


def test_the_cache_stays_within_its_bytes_and_never_keeps_a_bad_encoding():
    cache = EmbeddingCache(size=64, max_bytes=3 * 1000 * 4)
    for name in "abcd":
        cache.put((name,), ([torch.ones(10, 100)], []))  # 4,000 bytes each
    assert cache.nbytes == 12_000 and cache.get(("a",), torch.device("cpu")) is None
    cache.put(("nan",), ([torch.full((2, 3), float("nan"))], []))
    assert cache.get(("nan",), torch.device("cpu")) is None


def test_without_guidance_a_different_negative_prompt_is_the_same_encoding(engine, encoder_calls):
    engine.generate(DrawRequest("a grey heron, cached", seed=1, **SMALL))
    engine.generate(DrawRequest("a grey heron, cached", seed=1, negative_prompt="fog", **SMALL))
    assert len(encoder_calls) == 1  # cfg 1: the negative prompt is never encoded
