"""A change of precision casts every weight on the CPU: on a machine whose RAM cannot hold the
fp32 copy (Z-Image-Turbo: 38 GB), the NaN retry would get the process killed.  The engine says the
picture came out blank instead.  The tiny real pipeline stands in for a full-size model on a
pretend fp16 card (no real bf16, so the safer precision is fp32)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.engine import Engine
from engine.errors import BadOutput
from engine.planner import DeviceFacts, weights_fit_in_ram
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest
from engine.tiny import build_pipeline
from tests.test_engine import transformer_fault

FULL_SIZED = dataclasses.replace(TINY, transformer_gb=11.5, text_encoder_gb=7.5, vae_gb=0.16)


def turing_card(ram_gb: float) -> Engine:
    """A 24 GB card without real bf16 (so fp16, then fp32 on a NaN), in a machine with `ram_gb`."""
    facts = DeviceFacts("cuda", "pretend Turing", 80.0, 79.0, (7, 5), False, ram_gb)
    return Engine(build_pipeline(), "tiny", FULL_SIZED, "cpu", probe=lambda device: facts)


def test_weights_fit_in_ram_counts_twice_the_bytes_for_fp32():
    roomy, short = DeviceFacts("cuda", system_ram_gb=64), DeviceFacts("cuda", system_ram_gb=32)
    assert weights_fit_in_ram(roomy, Z_IMAGE_TURBO, "float32") and weights_fit_in_ram(short, Z_IMAGE_TURBO, "float16")
    assert not weights_fit_in_ram(short, Z_IMAGE_TURBO, "float32")
    assert weights_fit_in_ram(dataclasses.replace(short, swap_gb=16), Z_IMAGE_TURBO, "float32")


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
