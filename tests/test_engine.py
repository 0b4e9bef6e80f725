"""The engine with the tiny real Z-Image pipeline: generation, determinism, guidance, img2img,
cancel, and faults injected into the real pipeline (OOM at step k, NaN latents, black decode)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import BadOutput, Cancelled, InvalidRequest, OutOfMemory
from engine.guards import install_fp16_clamp
from engine.planner import Placement
from engine.request import DrawRequest, Kind
from tests.support.pipeline import pixels, transformer_fault


def test_generates_the_requested_size_with_every_phase_timed(engine):
    steps = []
    result = engine.generate(
        DrawRequest("a red fox in snow", width=320, height=208, seed=7), on_step=lambda i, n: steps.append((i, n))
    )
    assert result.image.size == (320, 208)
    assert result.seed == 7
    assert steps == [(i, 8) for i in range(1, 9)]
    assert set(result.timings) >= {"encode", "denoise", "decode", "post", "total"}
    assert result.plan.placement is Placement.CPU and result.plan.dtype == "float32"
    assert result.request.steps == 8 and result.request.cfg == 1.0
    assert result.fallbacks == [] and result.retries == []


def test_steps_are_transformer_forwards(engine):
    with transformer_fault(engine, at_call=10**9, fault="none") as calls:
        engine.generate(DrawRequest("count me", steps=5, seed=1))
    assert calls["n"] == 5


def test_same_seed_same_picture_and_random_seed_is_reported(engine):
    a = engine.generate(DrawRequest("lighthouse", seed=123))
    b = engine.generate(DrawRequest("lighthouse", seed=123))
    c = engine.generate(DrawRequest("lighthouse", seed=124))
    assert np.array_equal(pixels(a.image), pixels(b.image))
    assert not np.array_equal(pixels(a.image), pixels(c.image))
    random_seed = engine.generate(DrawRequest("lighthouse"))
    replay = engine.generate(DrawRequest("lighthouse", seed=random_seed.seed))
    assert np.array_equal(pixels(random_seed.image), pixels(replay.image))


def test_raw_skips_enhancement(engine):
    enhanced = engine.generate(DrawRequest("a bowl of fruit", seed=5))
    raw = engine.generate(DrawRequest("a bowl of fruit", seed=5, enhance=False))
    assert not np.array_equal(pixels(enhanced.image), pixels(raw.image))


def test_cfg_above_one_runs_guidance_with_the_negative_prompt(engine):
    with transformer_fault(engine, at_call=10**9, fault="none") as calls:
        plain = engine.generate(DrawRequest("a castle", seed=9, steps=4))
    batches = []
    hook = engine.pipeline.transformer.register_forward_pre_hook(lambda m, args: batches.append(len(args[0])))
    try:
        guided = engine.generate(DrawRequest("a castle", seed=9, steps=4, cfg=2.0, negative_prompt="fog"))
        other_negative = engine.generate(DrawRequest("a castle", seed=9, steps=4, cfg=2.0, negative_prompt="sun"))
    finally:
        hook.remove()
    assert calls["n"] == 4
    assert batches and all(b == 2 for b in batches)  # positive and negative in one batch
    assert not np.array_equal(pixels(plain.image), pixels(guided.image))
    assert not np.array_equal(pixels(guided.image), pixels(other_negative.image))


def test_invalid_request_names_the_problem(engine):
    with pytest.raises(InvalidRequest) as info:
        engine.generate(DrawRequest("x", width=300, height=256))
    assert info.value.key == "error.size_multiple" and info.value.params["suggestion"] == 304
    with pytest.raises(InvalidRequest) as info:
        engine.generate(DrawRequest("x", cfg=3.0))
    assert info.value.key == "error.cfg_range"


def test_variation_and_upscale_from_an_earlier_result(engine, tmp_path):
    source = engine.generate(DrawRequest("a harbour", seed=11))
    path = tmp_path / "source.png"
    source.image.save(path)
    steps = []
    subtle = engine.generate(
        DrawRequest("a harbour at night", kind=Kind.VARIATION, source_image=str(path), strength=0.35, seed=11),
        on_step=lambda i, n: steps.append(n),
    )
    strong = engine.generate(
        DrawRequest("a harbour at night", kind=Kind.VARIATION, source_image=str(path), strength=0.9, seed=11)
    )
    assert subtle.image.size == source.image.size
    assert steps[-1] == 8 - int(8 - 8 * 0.35)  # strength trims the schedule (diffusers rounds up)
    distance = lambda img: np.abs(pixels(img) - pixels(source.image)).mean()  # noqa: E731
    assert distance(subtle.image) < distance(strong.image)

    upscaled = engine.generate(
        DrawRequest("a harbour", kind=Kind.UPSCALE, source_image=str(path), width=512, height=512, seed=11)
    )
    assert upscaled.image.size == (512, 512)
    assert upscaled.request.strength == engine.profile.upscale_strength


def test_cancel_stops_within_one_step(engine):
    steps = []
    with pytest.raises(Cancelled):
        engine.generate(
            DrawRequest("never finished", seed=3),
            on_step=lambda i, n: steps.append(i),
            should_stop=lambda: len(steps) >= 2,
        )
    assert steps == [1, 2]
    assert engine.generate(DrawRequest("next job runs fine", seed=3)).image.size == (256, 256)


def test_oom_at_step_k_falls_back_with_the_same_seed(engine):
    clean = engine.generate(DrawRequest("a mountain lake", seed=21))
    with transformer_fault(engine, at_call=3, fault="oom") as calls:
        result = engine.generate(DrawRequest("a mountain lake", seed=21))
    assert calls["fired"] == 1
    assert result.seed == 21
    assert result.plan.placement is Placement.CPU_LOW_MEMORY
    assert result.fallbacks == ["out of memory on cpu: fell back to cpu_low_memory"]
    other_seed = engine.generate(DrawRequest("a mountain lake", seed=22))
    # Same seed, same picture up to the VAE tiling the safer rung switches on.
    tiling_noise = np.abs(pixels(result.image) - pixels(clean.image)).mean()
    seed_change = np.abs(pixels(other_seed.image) - pixels(clean.image)).mean()
    assert tiling_noise < seed_change / 3


def test_oom_on_every_rung_is_a_friendly_error_not_a_crash(engine):
    with transformer_fault(engine, at_call=1, fault="oom", times=100), pytest.raises(OutOfMemory) as info:
        engine.generate(DrawRequest("too big", seed=1))
    assert info.value.key == "error.oom"
    assert info.value.params["width"] == 256
    assert engine.generate(DrawRequest("afterwards", seed=1)).image.size == (256, 256)


def test_nan_latents_are_retried_once_and_the_picture_is_finite(engine):
    with transformer_fault(engine, at_call=3, fault="nan") as calls:
        result = engine.generate(DrawRequest("a meadow", seed=4))
    assert calls["fired"] == 1
    assert result.retries == ["non-finite latents in float32: retried in float32"]
    assert np.isfinite(pixels(result.image)).all() and pixels(result.image).max() > 0


def test_persistent_nan_gives_bad_output(engine):
    with transformer_fault(engine, at_call=1, fault="nan", times=100), pytest.raises(BadOutput) as info:
        engine.generate(DrawRequest("cursed", seed=4))
    assert info.value.key == "error.bad_output"


def test_black_decode_is_caught_and_retried(engine):
    fired = []

    def blacken(module, args, output):
        if not fired:
            fired.append(True)
            return torch.full_like(output, -1.0)
        return output

    handle = engine.pipeline.vae.decoder.register_forward_hook(blacken)
    try:
        result = engine.generate(DrawRequest("a sunny beach", seed=8, enhance=False))
    finally:
        handle.remove()
    assert fired and result.retries == ["non-finite black in float32: retried in float32"]
    assert pixels(result.image).max() > 5


def test_fp16_clamp_keeps_overflowing_blocks_finite():
    from engine.tiny import build_pipeline

    transformer = build_pipeline().transformer.to(torch.float16)
    with torch.no_grad():
        for module in transformer.modules():
            if type(module).__name__ == "FeedForward":
                for parameter in module.parameters():
                    parameter.mul_(400.0)
    latents = [torch.randn(16, 1, 8, 8, dtype=torch.float16)]
    timestep = torch.tensor([0.5])
    captions = [torch.randn(7, 32, dtype=torch.float16)]

    def run():
        with torch.no_grad():
            return transformer(latents, timestep, captions, return_dict=False)[0][0]

    assert not torch.isfinite(run()).all()
    handles = install_fp16_clamp(transformer)
    assert handles
    assert torch.isfinite(run()).all()


def test_the_img2img_twin_shares_weights_without_an_fp32_copy():
    from engine.engine import Engine
    from engine.request import TINY
    from engine.tiny import build_pipeline

    pipeline = build_pipeline().to(torch.bfloat16)
    twin = Engine(pipeline, "tiny", TINY, "cpu")._img2img
    assert pipeline.transformer.dtype == torch.bfloat16  # from_pipe used to cast everything to fp32
    assert twin.transformer is pipeline.transformer and twin.vae is pipeline.vae
