"""The planner's recipes (issue 17): `auto` keeps the model's own weights where they run resident or
with model offload, and otherwise picks int8, then int4, before any sequential offload; an admin's
EASEL_QUANTIZE wins.  Machines as the issue names them, sizes from FACTS.md's Z-Image-Turbo."""

from __future__ import annotations

import pytest

from engine.planner import DeviceFacts, Placement, choose_recipe, fits_in_ram, plan_for, quantized, ram_shortfall
from engine.quantize import Recipe
from engine.request import Z_IMAGE_TURBO


def card(vram_gb: float, ram_gb: float, ampere: bool = True, swap_gb: float = 0.0) -> DeviceFacts:
    """A card as the probe sees it: a desktop leaves ~0.4 GB of it to the display."""
    capability, bf16 = ((8, 6), True) if ampere else ((7, 5), False)
    return DeviceFacts("cuda", f"{vram_gb:g} GB", vram_gb, vram_gb - 0.4, capability, bf16, ram_gb, swap_gb)


def auto_plan(facts: DeviceFacts, side: int = 1024):
    recipe = choose_recipe(facts, Z_IMAGE_TURBO)
    return recipe, plan_for(facts, Z_IMAGE_TURBO, side, side, recipe=recipe)


@pytest.mark.parametrize("ampere", [False, True], ids=["turing", "ampere"])
def test_a_6_gb_card_in_a_16_gb_machine_draws_1024_without_sequential_offload(ampere):
    facts = card(6.0, 16.0, ampere)
    recipe, plan = auto_plan(facts)
    assert recipe is not Recipe.NONE
    assert plan.fits and plan.placement is not Placement.SEQUENTIAL_OFFLOAD
    assert fits_in_ram(facts, quantized(Z_IMAGE_TURBO, recipe), plan)
    assert ram_shortfall(facts, Z_IMAGE_TURBO, recipe) is None
    assert plan.recipe == recipe.value and f"{recipe.value} weights" in plan.describe()
    # The model's own weights on the same machine: only sequential offload fits, and RAM cannot hold it.
    own = plan_for(facts, Z_IMAGE_TURBO, 1024, 1024)
    assert own.placement is Placement.SEQUENTIAL_OFFLOAD and ram_shortfall(facts, Z_IMAGE_TURBO) is not None


def test_an_8_gb_card_in_a_16_gb_machine_gets_int8_or_better():
    recipe, plan = auto_plan(card(8.0, 16.0))
    assert recipe in (Recipe.NONE, Recipe.INT8)
    assert plan.fits and plan.placement is not Placement.SEQUENTIAL_OFFLOAD


def test_a_24_gb_card_in_a_64_gb_machine_stays_bf16():
    recipe, plan = auto_plan(card(24.0, 64.0))
    assert recipe is Recipe.NONE and plan.dtype == "bfloat16" and plan.fits


def test_bf16_that_fits_the_card_but_not_ram_takes_int8_kept_on_the_gpu():
    """A 24 GB card in a 16 GB machine: bf16 would fit the card, but loading 19 GB of weights
    through 16 GB of RAM gets the process killed."""
    recipe, plan = auto_plan(card(24.0, 16.0))
    assert recipe is Recipe.INT8 and plan.placement in (Placement.GPU, Placement.MODEL_OFFLOAD)


def test_an_admin_forces_a_recipe_and_a_cpu_keeps_the_models_own():
    assert choose_recipe(card(6.0, 16.0), Z_IMAGE_TURBO, "none") is Recipe.NONE
    assert choose_recipe(card(24.0, 64.0), Z_IMAGE_TURBO, "int4") is Recipe.INT4
    cpu = DeviceFacts("cpu", system_ram_gb=16.0)
    assert choose_recipe(cpu, Z_IMAGE_TURBO) is Recipe.NONE


def test_quantized_weights_shrink_what_each_placement_needs():
    facts = card(12.0, 32.0)
    sizes = {recipe: quantized(Z_IMAGE_TURBO, recipe) for recipe in Recipe}
    assert sizes[Recipe.INT8].transformer_gb == pytest.approx(6.0, abs=0.3)
    assert sizes[Recipe.INT4].transformer_gb == pytest.approx(3.5, abs=0.3)
    assert sizes[Recipe.INT8].text_encoder_gb == pytest.approx(4.0, abs=0.3)
    peaks = [plan_for(facts, Z_IMAGE_TURBO, 1024, 1024, recipe=r).estimated_peak_gb for r in Recipe]
    own, int8, int4 = (plan_for(facts, Z_IMAGE_TURBO, 1024, 1024, recipe=r) for r in Recipe)
    assert own.placement is Placement.GROUP_OFFLOAD and int8.placement is Placement.MODEL_OFFLOAD, peaks
    assert int4.estimated_peak_gb < int8.estimated_peak_gb


def test_the_oom_ladder_keeps_the_recipe_on_every_rung():
    from engine.planner import ladder

    rungs = ladder(card(8.0, 16.0), Z_IMAGE_TURBO, 1024, 1024, recipe=Recipe.INT8)
    assert {plan.recipe for plan in rungs} == {"int8"}
    assert [plan.placement for plan in rungs][-1] is Placement.SEQUENTIAL_OFFLOAD


def test_quantizing_once_needs_the_largest_component_in_bf16_and_the_check_says_so():
    """bench/quantized_ram.py measured the first start's anonymous peak: int8 11.8 GB (the
    transformer), int4 7.4 GB (the text encoder; the GGUF writer streams); the check stays above."""
    from engine.planner import quantizing_ram_gb, quantizing_shortfall

    assert 11.8 <= quantizing_ram_gb(Z_IMAGE_TURBO, Recipe.INT8) <= 13.0
    assert 7.4 <= quantizing_ram_gb(Z_IMAGE_TURBO, Recipe.INT4) <= 8.5
    assert quantizing_ram_gb(Z_IMAGE_TURBO, Recipe.NONE) == 0.0
    assert quantizing_shortfall(card(6.0, 16.0), Z_IMAGE_TURBO, Recipe.INT4) is None
    assert quantizing_shortfall(card(8.0, 16.0), Z_IMAGE_TURBO, Recipe.INT8) is None
    tight = quantizing_shortfall(card(8.0, 8.0), Z_IMAGE_TURBO, Recipe.INT8)
    assert tight is not None and "~12 GB" in tight and "8 GB RAM + 0 GB swap" in tight
    assert quantizing_shortfall(card(8.0, 8.0, swap_gb=6.0), Z_IMAGE_TURBO, Recipe.INT8) is None


def test_a_transformer_file_of_ones_own_is_planned_at_its_size(tmp_path):
    """EASEL_TRANSFORMER_FILE: a Q4_K_M file of 5.0 GB is 5.0 GB whatever the recipe (GGUF stays
    packed once loaded); the text encoder follows the recipe."""
    from dataclasses import replace

    from engine.quantize import with_transformer_file

    file = tmp_path / "z-image-turbo-Q4_K_M.gguf"
    with open(file, "wb") as handle:  # sparse: the size is all the planner reads
        handle.truncate(5 * 1024**3)
    profile = with_transformer_file(Z_IMAGE_TURBO, str(file))
    assert profile.transformer_file_gb == pytest.approx(5.0)
    assert with_transformer_file(Z_IMAGE_TURBO, str(tmp_path / "missing.gguf")) is Z_IMAGE_TURBO
    for recipe in Recipe:
        sized = quantized(profile, recipe)
        assert sized.transformer_gb == pytest.approx(5.0)
        assert sized.text_encoder_gb == pytest.approx(quantized(Z_IMAGE_TURBO, recipe).text_encoder_gb)
    from engine.planner import ladder

    def model_offload_peak(sized) -> float:
        return ladder(card(8.0, 16.0), sized, 1024, 1024, recipe=Recipe.INT4)[1].estimated_peak_gb

    assert model_offload_peak(profile) == pytest.approx(model_offload_peak(Z_IMAGE_TURBO) + 5.0 - 11.5 * 0.30)
    assert replace(profile, transformer_file_gb=None) == Z_IMAGE_TURBO
