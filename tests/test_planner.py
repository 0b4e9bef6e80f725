import dataclasses

import pytest

from engine.planner import (
    DeviceFacts,
    Placement,
    choose_dtype,
    ladder,
    largest_fitting_square,
    plan_for,
    ram_needed_gb,
    ram_shortfall,
    safer_dtype,
)
from engine.request import Z_IMAGE_TURBO

DEVICES = {
    "6GB Turing": DeviceFacts("cuda", "RTX 2060", 6.0, 5.6, (7, 5), False, 16),
    "8GB Ampere": DeviceFacts("cuda", "RTX 3060 Ti", 8.0, 7.5, (8, 6), True, 32),
    "12GB Ampere": DeviceFacts("cuda", "RTX 3060", 12.0, 11.3, (8, 6), True, 32),
    "24GB": DeviceFacts("cuda", "RTX 4090", 24.0, 23.3, (8, 9), True, 64),
    "80GB": DeviceFacts("cuda", "H100", 80.0, 79.0, (9, 0), True, 128),
    "CPU": DeviceFacts("cpu", system_ram_gb=64),
}

# device, side -> (placement, dtype, tiling)
TABLE = [
    ("6GB Turing", 512, Placement.SEQUENTIAL_OFFLOAD, "float16", True),
    ("6GB Turing", 1024, Placement.SEQUENTIAL_OFFLOAD, "float16", True),
    ("8GB Ampere", 512, Placement.GROUP_OFFLOAD, "bfloat16", True),
    ("8GB Ampere", 1024, Placement.SEQUENTIAL_OFFLOAD, "bfloat16", True),
    ("12GB Ampere", 1024, Placement.GROUP_OFFLOAD, "bfloat16", True),
    ("12GB Ampere", 1536, Placement.GROUP_OFFLOAD, "bfloat16", True),
    ("24GB", 512, Placement.GPU, "bfloat16", False),
    ("24GB", 1024, Placement.MODEL_OFFLOAD, "bfloat16", True),
    ("80GB", 1024, Placement.GPU, "bfloat16", False),
    ("80GB", 1536, Placement.GPU, "bfloat16", True),
    ("CPU", 1024, Placement.CPU, "float32", False),
]


@pytest.mark.parametrize(("device", "side", "placement", "dtype", "tiling"), TABLE)
def test_plan_table(device, side, placement, dtype, tiling):
    plan = plan_for(DEVICES[device], Z_IMAGE_TURBO, side, side)
    assert (plan.placement, plan.dtype, plan.vae_tiling) == (placement, dtype, tiling)
    assert plan.fits


def test_every_gpu_plan_leaves_headroom():
    for facts in DEVICES.values():
        if not facts.is_gpu:
            continue
        for side in (512, 768, 1024):
            plan = plan_for(facts, Z_IMAGE_TURBO, side, side)
            assert plan.estimated_peak_gb + 1.2 <= facts.free_vram_gb, (facts.name, side, plan)


def test_estimates_match_published_1024_measurements():
    plans = {p.placement: p.estimated_peak_gb for p in ladder(DEVICES["80GB"], Z_IMAGE_TURBO, 1024, 1024)}
    assert plans[Placement.GPU] == pytest.approx(24.9, abs=0.2)
    assert plans[Placement.MODEL_OFFLOAD] == pytest.approx(13.5, abs=0.2)
    assert plans[Placement.GROUP_OFFLOAD] == pytest.approx(6.6, abs=0.2)
    assert plans[Placement.SEQUENTIAL_OFFLOAD] == pytest.approx(1.9, abs=0.2)


def test_cfg_doubles_the_batch_and_can_push_to_offload():
    facts = DeviceFacts("cuda", "A", 26.0, 24.5, (8, 9), True, 64)
    assert plan_for(facts, Z_IMAGE_TURBO, 1280, 1280, cfg=1.0).placement is Placement.GPU
    assert plan_for(facts, Z_IMAGE_TURBO, 1280, 1280, cfg=2.0).placement is not Placement.GPU


def test_ladder_orders_fastest_to_safest():
    placements = [p.placement for p in ladder(DEVICES["24GB"], Z_IMAGE_TURBO, 1024, 1024)]
    assert placements == [
        Placement.GPU,
        Placement.MODEL_OFFLOAD,
        Placement.GROUP_OFFLOAD,
        Placement.SEQUENTIAL_OFFLOAD,
    ]
    assert [p.placement for p in ladder(DEVICES["CPU"], Z_IMAGE_TURBO, 512, 512)] == [
        Placement.CPU,
        Placement.CPU_LOW_MEMORY,
    ]


def test_precision_choice():
    assert choose_dtype(DEVICES["6GB Turing"]) == ("float16", True)
    assert choose_dtype(DEVICES["12GB Ampere"]) == ("bfloat16", False)
    assert choose_dtype(DEVICES["CPU"]) == ("float32", False)
    assert [safer_dtype(d) for d in ("float16", "bfloat16", "float32")] == ["bfloat16", "float32", "float32"]
    assert safer_dtype("float16", real_bf16=False) == "float32"  # no slow emulated bf16 on Turing
    assert "warning.fp16_clamped" in plan_for(DEVICES["6GB Turing"], Z_IMAGE_TURBO, 1024, 1024).warnings


def test_fp32_retry_plans_for_twice_the_weights():
    fp32 = plan_for(DEVICES["24GB"], Z_IMAGE_TURBO, 1024, 1024, dtype="float32")
    assert fp32.dtype == "float32"
    assert fp32.placement in (Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD)


def test_nothing_fits_gives_safest_plan_and_a_size_hint():
    tiny_card = DeviceFacts("cuda", "GT 1030", 2.0, 1.5, (6, 1), False, 8)
    plan = plan_for(tiny_card, Z_IMAGE_TURBO, 1536, 1536)
    assert plan.placement is Placement.SEQUENTIAL_OFFLOAD and not plan.fits
    assert "warning.low_system_ram" in plan.warnings
    assert largest_fitting_square(tiny_card, Z_IMAGE_TURBO) is None
    assert largest_fitting_square(DEVICES["6GB Turing"], Z_IMAGE_TURBO) >= 1024


def test_plan_is_plain_data():
    data = plan_for(DEVICES["12GB Ampere"], Z_IMAGE_TURBO, 1024, 1024).to_dict()
    assert data["placement"] == "group_offload" and data["dtype"] == "bfloat16"
    assert isinstance(data["warnings"], list)


@pytest.mark.parametrize(
    ("ram_gb", "swap_gb", "low_cpu_memory", "warned"),
    [(64, 0, False, False), (24, 0, True, False), (16, 16, True, False), (16, 0, True, True)],
)
def test_group_offload_pins_layer_by_layer_when_ram_and_swap_cannot_hold_every_weight_pinned(
    ram_gb, swap_gb, low_cpu_memory, warned
):
    card = dataclasses.replace(DEVICES["12GB Ampere"], system_ram_gb=ram_gb, swap_gb=swap_gb)
    plan = plan_for(card, Z_IMAGE_TURBO, 1024, 1024)
    assert plan.placement is Placement.GROUP_OFFLOAD
    assert plan.low_cpu_memory is low_cpu_memory
    assert ("warning.low_system_ram" in plan.warnings) is warned
    assert ram_needed_gb(Placement.GROUP_OFFLOAD, Z_IMAGE_TURBO, low_cpu_memory) == (22.3 if low_cpu_memory else 33.1)
    assert ("low RAM" in plan.describe()) is low_cpu_memory


def test_the_ram_check_names_a_fallback_rung_that_needs_more_than_the_plan():
    big_card_small_ram = DeviceFacts("cuda", "RTX 6000", 48.0, 47.0, (8, 9), True, 16)
    said = ram_shortfall(big_card_small_ram, Z_IMAGE_TURBO)
    assert said is not None and "runs as gpu and may fall back to model_offload" in said
    assert ram_shortfall(dataclasses.replace(big_card_small_ram, swap_gb=16), Z_IMAGE_TURBO) is None
    assert ram_shortfall(DEVICES["CPU"], Z_IMAGE_TURBO) is None
