"""A change of precision casts every weight on the CPU: on a machine whose RAM cannot hold the
fp32 copy (Z-Image-Turbo: 38 GB), the NaN retry would get the process killed.  The engine says the
picture came out blank instead.  The tiny real pipeline stands in for a full-size model on a
pretend fp16 card (no real bf16, so the safer precision is fp32)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.engine import Engine
from engine.errors import BadOutput
from engine.planner import DeviceFacts, Placement, fits_in_ram, plan_for, ram_needed_gb
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest
from engine.tiny import build_pipeline
from tests.support.pipeline import transformer_fault

FULL_SIZED = dataclasses.replace(TINY, transformer_gb=11.5, text_encoder_gb=7.5, vae_gb=0.16)


def turing_card(ram_gb: float) -> Engine:
    """A 24 GB card without real bf16 (so fp16, then fp32 on a NaN), in a machine with `ram_gb`."""
    facts = DeviceFacts("cuda", "pretend Turing", 80.0, 79.0, (7, 5), False, ram_gb)
    return Engine(build_pipeline(), "tiny", FULL_SIZED, "cpu", probe=lambda device: facts)


def test_fits_in_ram_counts_the_cast_and_what_the_fp32_placement_keeps_in_ram():
    def retry_plan(ram_gb: float, swap_gb: float = 0.0):
        card = DeviceFacts("cuda", "Turing 24 GB", 24.0, 23.0, (7, 5), False, ram_gb, swap_gb)
        return card, plan_for(card, Z_IMAGE_TURBO, 1024, 1024, dtype="float32")

    roomy, plan = retry_plan(128)
    assert fits_in_ram(roomy, Z_IMAGE_TURBO, plan) and not plan.low_cpu_memory
    # 32 GB RAM + 16 swap: fp32 weights (42 GB) fit; group offload pinning all of them (66 GB) would
    # not, so the fp32 plan pins layer by layer (45 GB), and the retry may go ahead.
    with_swap, plan = retry_plan(32, 16)
    assert plan.placement is Placement.GROUP_OFFLOAD and plan.low_cpu_memory
    assert ram_needed_gb(Placement.GROUP_OFFLOAD, Z_IMAGE_TURBO, False, 4) == 66.3
    assert fits_in_ram(with_swap, Z_IMAGE_TURBO, plan)
    short, plan = retry_plan(32)
    assert not fits_in_ram(short, Z_IMAGE_TURBO, plan)
    assert fits_in_ram(short, Z_IMAGE_TURBO, plan_for(short, Z_IMAGE_TURBO, 1024, 1024))  # fp16 is fine


def test_no_fp32_retry_where_ram_cannot_hold_it_only_a_clear_error():
    engine = turing_card(ram_gb=32)
    with transformer_fault(engine, at_call=1, fault="nan") as calls, pytest.raises(BadOutput) as info:
        engine.generate(DrawRequest("a meadow", seed=4, width=128, height=128, steps=2))
    assert info.value.key == "error.bad_output_low_ram" and calls["fired"] == 1
    assert (
        engine.pipeline.transformer.dtype.is_floating_point
        and str(engine.pipeline.transformer.dtype) == "torch.float16"
    )


def test_with_room_for_fp32_the_nan_is_retried_in_fp32():
    engine = turing_card(ram_gb=64)
    with transformer_fault(engine, at_call=1, fault="nan"):
        result = engine.generate(DrawRequest("a meadow", seed=4, width=128, height=128, steps=2))
    assert result.retries == ["non-finite latents in float16: retried in float32"]


def test_a_batch_with_one_bad_picture_keeps_the_good_ones_where_ram_allows_no_fp32_retry():
    engine = turing_card(ram_gb=32)
    with transformer_fault(engine, at_call=1, fault="nan", min_batch=2, picture=1):
        result = engine.generate(DrawRequest("two meadows", seed=4, width=128, height=128, steps=2, count=2))
    assert len(result.images) == 2 and not result.batched
    assert result.retries == ["non-finite latents in float16, no RAM for float32: one at a time"]
