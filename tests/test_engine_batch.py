"""Batches (`count` > 1) with the tiny real Z-Image pipeline: one call or one call per picture,
seeds, equality with lone runs, and faults injected into the real pipeline (OOM in the batched
call, NaN in one picture, a black decode, cancel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.engine import Engine
from engine.errors import Cancelled, InvalidRequest, OutOfMemory
from engine.planner import HEADROOM_GB, DeviceFacts, Placement, estimate_peak_gb, ladder
from engine.request import MAX_SEED, TINY, Z_IMAGE_TURBO, DrawRequest, Kind, seed_for, validate
from engine.tiny import build_pipeline
from tests.support.pipeline import pixels, transformer_fault

SMALL = dict(width=128, height=128, steps=3)
BATCH_OOM = "out of memory with 3 pictures in one call on cpu: drew them one at a time"


def lone(engine, prompt: str, seed: int, **options):
    return engine.generate(DrawRequest(prompt, seed=seed, **{**SMALL, **options})).image


def max_difference(a, b) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def needs_gb(pictures: int) -> float:
    return estimate_peak_gb(Placement.GPU, TINY, SMALL["width"], SMALL["height"], batch=pictures) + HEADROOM_GB


# Free memory on the pretend card: one picture per call fits on the GPU rung, four in one call do not
# (at this size the per-picture decode outweighs a small batch's activations: four is the first
# count that clearly needs more); or room for all four.
TIGHT_GB, ROOMY_GB = (needs_gb(1) + needs_gb(4)) / 2, needs_gb(4) + 0.5


@pytest.fixture(scope="module")
def seen_as_gpu():
    """The tiny pipeline (bf16, on the CPU) behind an engine whose planner believes it runs on a
    card with `free["gb"]` free: set it to make the batch fit in one call or not."""
    free = {"gb": ROOMY_GB}

    def probe(device: str) -> DeviceFacts:
        return DeviceFacts("cuda", "pretend card", 8.0, free["gb"], (8, 9), True, 16)

    engine = Engine(build_pipeline(), "tiny", TINY, "cpu", probe=probe)
    engine.free = free
    return engine


@pytest.mark.parametrize("count", [0, 5, -1, "2", 2.0, True])
def test_count_outside_one_to_four_is_refused(count):
    with pytest.raises(InvalidRequest) as info:
        validate(DrawRequest("x", count=count), TINY)
    assert info.value.key == "error.count_range"
    assert info.value.params == {"value": count, "min": 1, "max": 4}


def test_count_travels_in_the_request_dict_and_old_dicts_mean_one():
    request = validate(DrawRequest("x", count=3), Z_IMAGE_TURBO)
    assert DrawRequest.from_dict(request.to_dict()).count == 3
    old = request.to_dict()
    del old["count"]
    assert DrawRequest.from_dict(old).count == 1


def test_seed_for_is_consecutive_and_wraps():
    assert [seed_for(10, i) for i in range(4)] == [10, 11, 12, 13]
    assert [seed_for(MAX_SEED - 1, i) for i in range(3)] == [MAX_SEED - 1, MAX_SEED, 0]


def test_a_batch_is_one_call_with_consecutive_seeds_and_one_prompt_encoding(engine):
    forwards, encodings = [], []
    transformer = engine.pipeline.transformer.register_forward_pre_hook(lambda m, args: forwards.append(len(args[0])))
    encoder = engine.pipeline.text_encoder.register_forward_pre_hook(lambda m, args: encodings.append(1))
    try:
        result = engine.generate(DrawRequest("three foxes", seed=MAX_SEED - 1, count=3, **SMALL))
    finally:
        transformer.remove()
        encoder.remove()
    assert result.batched and result.request.count == 3
    assert result.seeds == [MAX_SEED - 1, MAX_SEED, 0]
    assert [image.size for image in result.images] == [(128, 128)] * 3
    assert len({pixels(image).tobytes() for image in result.images}) == 3
    assert forwards == [3, 3, 3]  # three steps, each carrying the three pictures
    assert len(encodings) == 1
    assert set(result.timings) >= {"encode", "denoise", "decode", "post", "total"}


def test_a_lone_picture_is_not_batched(engine):
    result = engine.generate(DrawRequest("one fox", seed=1, **SMALL))
    assert not result.batched and result.seeds == [1]


def test_each_picture_of_a_batched_call_matches_its_lone_run(engine):
    result = engine.generate(DrawRequest("a lighthouse", seed=40, count=3, enhance=False, **SMALL))
    assert result.batched
    for index, image in enumerate(result.images):
        # Not bit-exact on CPU: batched matmuls round differently (latents differ by ~1e-6), so a
        # pixel may round to the next level (the sharpening post-process would make that 3).
        assert max_difference(image, lone(engine, "a lighthouse", seed_for(40, index), enhance=False)) <= 1


def test_each_picture_of_a_batched_variation_matches_its_lone_run(engine, tmp_path):
    path = tmp_path / "source.png"
    lone(engine, "a harbour", 11).save(path)
    variation = dict(kind=Kind.VARIATION, source_image=str(path), strength=0.6, enhance=False)
    result = engine.generate(DrawRequest("a harbour at night", seed=11, count=2, **SMALL, **variation))
    assert result.batched
    for index, image in enumerate(result.images):
        # Each generator also draws its own VAE-encode sample: off by 255 for pictures 2 and 3 if not.
        assert max_difference(image, lone(engine, "a harbour at night", 11 + index, **variation)) <= 1


def test_without_room_for_the_batch_each_picture_is_its_own_call_and_exactly_its_lone_run(seen_as_gpu):
    seen_as_gpu.free["gb"] = TIGHT_GB
    forwards = []
    hook = seen_as_gpu.pipeline.transformer.register_forward_pre_hook(lambda m, args: forwards.append(len(args[0])))
    try:
        result = seen_as_gpu.generate(DrawRequest("a lighthouse", seed=40, count=4, **SMALL))
    finally:
        hook.remove()
    assert not result.batched and result.fallbacks == []
    assert result.plan.placement is Placement.GPU and result.plan.dtype == "bfloat16"
    assert forwards == [1] * 12
    for index, image in enumerate(result.images):
        assert np.array_equal(pixels(image), pixels(lone(seen_as_gpu, "a lighthouse", seed_for(40, index))))

    seen_as_gpu.free["gb"] = ROOMY_GB
    roomy = seen_as_gpu.generate(DrawRequest("a lighthouse", seed=40, count=4, **SMALL))
    assert roomy.batched and roomy.plan.estimated_peak_gb > result.plan.estimated_peak_gb


def test_oom_in_the_batched_call_draws_one_at_a_time_on_the_same_rung(engine):
    with transformer_fault(engine, at_call=2, fault="oom", min_batch=2) as calls:
        result = engine.generate(DrawRequest("a mountain lake", seed=21, count=3, **SMALL))
    assert calls["fired"] == 1 and calls["n"] == 2 + 3 * 3
    assert not result.batched
    assert result.fallbacks == [BATCH_OOM]
    assert result.plan.placement is Placement.CPU
    assert result.seeds == [21, 22, 23]
    for index, image in enumerate(result.images):
        assert np.array_equal(pixels(image), pixels(lone(engine, "a mountain lake", 21 + index)))


def test_oom_one_at_a_time_too_walks_down_the_ladder_then_gives_up_politely(engine):
    with transformer_fault(engine, at_call=1, fault="oom", times=2) as calls:
        result = engine.generate(DrawRequest("a mountain lake", seed=21, count=3, **SMALL))
    assert calls["fired"] == 2 and len(result.images) == 3
    assert result.fallbacks == [BATCH_OOM, "out of memory on cpu: fell back to cpu_low_memory"]
    assert result.plan.placement is Placement.CPU_LOW_MEMORY

    with transformer_fault(engine, at_call=1, fault="oom", times=100), pytest.raises(OutOfMemory):
        engine.generate(DrawRequest("a mountain lake", seed=21, count=3, **SMALL))


def test_nan_in_one_picture_of_a_batch_retries_the_batch_in_a_safer_dtype(engine):
    clean = engine.generate(DrawRequest("a meadow", seed=4, count=3, **SMALL))
    with transformer_fault(engine, at_call=2, fault="nan", picture=1) as calls:
        result = engine.generate(DrawRequest("a meadow", seed=4, count=3, **SMALL))
    assert calls["fired"] == 1
    assert result.retries == ["non-finite latents in float32: retried in float32"]
    assert result.batched and len(result.images) == 3
    for image, expected in zip(result.images, clean.images, strict=True):
        assert np.array_equal(pixels(image), pixels(expected))


def test_nan_in_a_later_picture_keeps_the_finished_ones_and_retries_safer(seen_as_gpu):
    seen_as_gpu.free["gb"] = TIGHT_GB
    clean = seen_as_gpu.generate(DrawRequest("a meadow", seed=4, count=4, **SMALL))
    with transformer_fault(seen_as_gpu, at_call=8, fault="nan") as calls:  # picture 3, step 2
        result = seen_as_gpu.generate(DrawRequest("a meadow", seed=4, count=4, **SMALL))
    assert calls["fired"] == 1 and calls["n"] == 8 + 3 + 3  # pictures 1 and 2 were not drawn again
    assert result.retries == ["non-finite latents in bfloat16: retried in float32"]
    assert not result.batched and (result.plan.placement, result.plan.dtype) == (Placement.GPU, "float32")
    assert np.array_equal(pixels(result.images[0]), pixels(clean.images[0]))
    assert np.array_equal(pixels(result.images[1]), pixels(clean.images[1]))
    assert len(result.images) == 4


def test_every_picture_of_a_batch_is_checked_for_a_black_decode(engine):
    decodes = []

    def blacken_the_third(module, args, output):
        decodes.append(True)
        return torch.full_like(output, -1.0) if len(decodes) == 3 else output

    handle = engine.pipeline.vae.decoder.register_forward_hook(blacken_the_third)
    try:
        result = engine.generate(DrawRequest("a sunny beach", seed=8, count=3, enhance=False, **SMALL))
    finally:
        handle.remove()
    assert result.retries == ["non-finite black in float32: retried in float32"]
    assert len(decodes) == 4  # the first two pictures were kept
    assert all(pixels(image).max() > 5 for image in result.images)


def test_cancel_mid_batch_stops_within_one_step(engine, seen_as_gpu):
    steps = []
    with pytest.raises(Cancelled):
        engine.generate(
            DrawRequest("never finished", seed=3, count=3, **SMALL),
            on_step=lambda i, n: steps.append(i),
            should_stop=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]

    seen_as_gpu.free["gb"] = TIGHT_GB
    steps.clear()
    with pytest.raises(Cancelled):
        seen_as_gpu.generate(
            DrawRequest("never finished", seed=3, count=4, **SMALL),
            on_step=lambda i, n: steps.append(i),
            should_stop=lambda: len(steps) >= 5,  # in the second picture
        )
    assert steps == [1, 2, 3, 4, 5]
    assert len(engine.generate(DrawRequest("next job runs fine", seed=3, count=2, **SMALL)).images) == 2


def test_progress_counts_steps_of_the_call_or_of_all_pictures(engine, seen_as_gpu):
    batched = []
    engine.generate(DrawRequest("progress", seed=1, count=3, **SMALL), on_step=lambda i, n: batched.append((i, n)))
    assert batched == [(1, 3), (2, 3), (3, 3)]

    seen_as_gpu.free["gb"] = TIGHT_GB
    one_by_one = []
    seen_as_gpu.generate(
        DrawRequest("progress", seed=1, count=4, **SMALL), on_step=lambda i, n: one_by_one.append((i, n))
    )
    assert one_by_one == [(i, 12) for i in range(1, 13)]


def test_progress_never_goes_back_after_a_fallback_or_a_retry(engine):
    reports = []
    with transformer_fault(engine, at_call=3, fault="oom", min_batch=2):
        engine.generate(DrawRequest("progress", seed=1, count=3, **SMALL), on_step=lambda i, n: reports.append((i, n)))
    assert reports == [(1, 3), (2, 3), (7, 9), (8, 9), (9, 9)]  # silent until one by one passes 2/3

    reports.clear()
    with transformer_fault(engine, at_call=2, fault="nan"):
        engine.generate(DrawRequest("progress", seed=1, count=2, **SMALL), on_step=lambda i, n: reports.append((i, n)))
    assert reports == [(1, 3), (2, 3), (3, 3)]


def test_planner_counts_activations_per_picture_in_the_call():
    one = estimate_peak_gb(Placement.GPU, Z_IMAGE_TURBO, 1280, 1280)
    four = estimate_peak_gb(Placement.GPU, Z_IMAGE_TURBO, 1280, 1280, batch=4)
    assert four > one
    card = DeviceFacts("cuda", "32 GB card", 32.0, 31.0, (8, 9), True, 64)
    assert ladder(card, Z_IMAGE_TURBO, 1280, 1280)[0].fits
    assert not ladder(card, Z_IMAGE_TURBO, 1280, 1280, batch=4)[0].fits


def test_an_oom_outside_the_batched_call_steps_down_the_ladder_at_once(engine):
    fired = []

    def encoder_oom(module, args):
        if not fired:
            fired.append(True)
            raise torch.OutOfMemoryError("CUDA out of memory (injected in the text encoder)")

    handle = engine.pipeline.text_encoder.register_forward_pre_hook(encoder_oom)
    try:
        # Words no other test encodes: the encoder runs only for prompts not in the embedding cache.
        result = engine.generate(DrawRequest("a mountain lake, encoder fault", seed=21, count=3, **SMALL))
    finally:
        handle.remove()
    # Not blamed on the batch: the encoder's memory does not grow with it.
    assert result.fallbacks == ["out of memory on cpu: fell back to cpu_low_memory"]
    assert len(result.images) == 3


def test_cancel_during_the_decodes_of_a_batch_stops_before_the_next_picture(engine):
    decodes = []
    handle = engine.pipeline.vae.decoder.register_forward_hook(lambda module, args, output: decodes.append(1))
    try:
        with pytest.raises(Cancelled):
            engine.generate(DrawRequest("never finished", seed=3, count=4, **SMALL), should_stop=lambda: bool(decodes))
    finally:
        handle.remove()
    assert len(decodes) == 1


def test_pictures_finished_before_a_fault_that_persists_are_returned_with_a_warning(engine, seen_as_gpu):
    seen_as_gpu.free["gb"] = TIGHT_GB
    with transformer_fault(seen_as_gpu, at_call=8, fault="nan", times=2):  # picture 3, then its retry
        result = seen_as_gpu.generate(DrawRequest("a meadow", seed=4, count=4, **SMALL))
    assert len(result.images) == 2 and result.warnings[-1] == "non-finite latents again: 2 of 4 drawn"

    engine.one_call_batches = False
    try:
        with transformer_fault(engine, at_call=4, fault="oom", times=100):  # from picture 2 on, every rung
            result = engine.generate(DrawRequest("a meadow", seed=4, count=3, **SMALL))
    finally:
        engine.one_call_batches = True
    assert len(result.images) == 1 and result.warnings[-1] == "out of memory: 1 of 3 drawn"
    assert result.fallbacks == ["out of memory on cpu: fell back to cpu_low_memory"]
