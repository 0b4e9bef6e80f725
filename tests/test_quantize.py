"""Quantized weights (issue 17) with the real tiny model: int8 (torchao) and int4 (a GGUF Q4_0
transformer written by engine/quantize.py) draw finite pictures close to the model's own, are
written once and read back bit for bit, and a GGUF file of one's own loads through
EASEL_TRANSFORMER_FILE.  Sizes and speed on the real architecture: bench/quantized_ram.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from engine.engine import Engine
from engine.quantize import GGUF_NAME, Recipe, WeightsWanted, cache_folder, is_quantized_already, write_gguf
from engine.request import DrawRequest, Kind

# PSNR (dB) of the quantized tiny model's picture against the model's own, same seed.  Measured here:
# int8 51-60 dB, int4 (Q4_0) 35-37 dB; the bounds leave room for other CPUs' arithmetic.
MIN_PSNR = {Recipe.INT8: 40.0, Recipe.INT4: 28.0}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    error = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if error == 0 else 10 * np.log10(255.0**2 / error)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0])


def draw(engine: Engine, **overrides):
    return engine.generate(DrawRequest("a red fox in the snow", **{**dict(width=128, height=128, seed=7), **overrides}))


@pytest.fixture(scope="module")
def reference(tiny_model_dir) -> np.ndarray:
    return pixels(draw(Engine.load(tiny_model_dir, device="cpu")))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("quantized")


@pytest.mark.parametrize("recipe", [Recipe.INT8, Recipe.INT4])
def test_a_quantized_recipe_draws_a_finite_picture_close_to_the_models_own(tiny_model_dir, cache, reference, recipe):
    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted(recipe.value, None, cache))
    result = draw(engine)
    picture = pixels(result)
    assert engine.recipe is recipe and result.plan.recipe == recipe.value
    assert f"{recipe.value} weights" in result.plan.describe()
    assert picture.std() > 1.0, "a flat picture"
    assert MIN_PSNR[recipe] <= psnr(picture, reference) < float("inf"), "the weights were not quantized"


@pytest.mark.parametrize("recipe", [Recipe.INT8, Recipe.INT4])
def test_weights_are_quantized_once_and_read_back_bit_for_bit(tiny_model_dir, tmp_path, recipe):
    from pathlib import Path

    wanted = WeightsWanted(recipe.value, None, tmp_path)
    assert not is_quantized_already(tiny_model_dir, recipe, tmp_path)
    first = Engine.load(tiny_model_dir, device="cpu", weights=wanted)
    assert is_quantized_already(tiny_model_dir, recipe, tmp_path)
    folder = cache_folder(Path(tiny_model_dir), tmp_path)
    written = {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}
    assert (folder / GGUF_NAME).is_file() == (recipe is Recipe.INT4)
    assert (folder / "transformer-int8").is_dir() == (recipe is Recipe.INT8)
    again = Engine.load(tiny_model_dir, device="cpu", weights=wanted)
    assert {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()} == written
    assert np.array_equal(pixels(draw(first)), pixels(draw(again)))


def test_the_text_encoders_copy_serves_both_recipes_and_a_gguf_file_needs_no_transformer_copy(tiny_model_dir, tmp_path):
    from pathlib import Path

    folder = cache_folder(Path(tiny_model_dir), tmp_path)
    own = tmp_path / "own.gguf"
    write_gguf(Path(tiny_model_dir) / "transformer", own, "Q8_0", progress=False)
    Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("int8", str(own), tmp_path))
    assert sorted(path.name for path in folder.iterdir() if path.is_dir()) == ["text_encoder-int8"]
    encoder = {path: path.stat().st_mtime_ns for path in (folder / "text_encoder-int8").rglob("*")}
    Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("int4", None, tmp_path))
    assert {path: path.stat().st_mtime_ns for path in (folder / "text_encoder-int8").rglob("*")} == encoder
    assert (folder / GGUF_NAME).is_file()


def test_a_start_killed_while_quantizing_quantizes_again(tiny_model_dir, tmp_path, reference):
    """Half-written weights are never loaded: they live under a `.partial` name until complete."""
    from pathlib import Path

    folder = cache_folder(Path(tiny_model_dir), tmp_path)
    partial = folder / "transformer-int8.partial"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{")  # what a killed start left
    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("int8", None, tmp_path))
    assert is_quantized_already(tiny_model_dir, Recipe.INT8, tmp_path) and not partial.exists()
    assert psnr(pixels(draw(engine)), reference) >= MIN_PSNR[Recipe.INT8]


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0"])
def test_a_gguf_transformer_file_loads_like_the_communitys(tiny_model_dir, tmp_path, reference, kind):
    """EASEL_TRANSFORMER_FILE: a GGUF file in the original checkpoint's key names (fused qkv), as
    ComfyUI users download them, read by diffusers' single-file loader."""
    from pathlib import Path

    file = tmp_path / f"z-image-turbo-{kind}.gguf"
    write_gguf(Path(tiny_model_dir) / "transformer", file, kind, progress=False)
    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("none", str(file), tmp_path))
    type_name = type(engine.pipeline.transformer.layers[0].attention.to_q.weight).__name__
    assert type_name == "GGUFParameter"
    assert psnr(pixels(draw(engine)), reference) >= (MIN_PSNR[Recipe.INT8] if kind == "Q8_0" else 28.0)


def test_a_missing_gguf_file_is_a_clear_model_error(tiny_model_dir, tmp_path):
    from engine.errors import ModelNotFound

    with pytest.raises(ModelNotFound):
        Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("none", str(tmp_path / "nope.gguf"), tmp_path))


def test_image_to_image_and_outpaint_run_on_quantized_weights(tiny_model_dir, cache, tmp_path):
    """The img2img and inpaint pipelines share the quantized modules (no cast, which they refuse)."""
    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("int8", None, cache))
    source = tmp_path / "source.png"
    draw(engine).images[0].save(source)
    upscaled = draw(engine, kind=Kind.VARIATION, source_image=str(source), strength=0.5)
    outpainted = draw(
        engine, kind=Kind.OUTPAINT, source_image=str(source), width=256, height=128, region=(64, 0, 128, 128)
    )
    assert upscaled.images[0].size == (128, 128) and outpainted.images[0].size == (256, 128)
    assert np.isfinite(pixels(outpainted)).all() and pixels(outpainted).std() > 1.0


OFFLOADS = ["model_offload", "group_offload", "sequential_offload"]


@pytest.mark.parametrize(
    ("recipe", "placement"),
    [(Recipe.INT8, where) for where in OFFLOADS] + [(Recipe.INT4, where) for where in OFFLOADS[:2]],
)
def test_quantized_weights_draw_the_same_picture_under_every_offload(
    tiny_model_dir, cache, monkeypatch, cpu_as_accelerator, recipe, placement
):
    """Rehearsed with the CPU as the accelerator (tests/test_placement_cpu.py): the hooks move
    quantized tensors (torchao's, GGUF's) layer by layer and the picture does not change."""
    import engine.engine as engine_module
    from engine.planner import Placement, Plan

    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted(recipe.value, None, cache))

    def force(where: str) -> None:
        rung = Plan("cpu", "float32", Placement(where), False, False, 0.0, True, recipe=recipe.value)
        monkeypatch.setattr(engine_module, "ladder", lambda *args, **kwargs: [rung])

    force("cpu")
    plain = pixels(draw(engine))
    force(placement)
    offloaded = draw(engine)
    assert offloaded.plan.placement.value == placement
    assert np.abs(pixels(offloaded).astype(int) - plain.astype(int)).max() <= 1


def test_a_gguf_transformer_has_no_sequential_offload_rung(tiny_model_dir, cache, monkeypatch, cpu_as_accelerator):
    """accelerate's sequential offload re-wraps each weight it moves as `GGUFParameter(tensor)`, losing
    its quantization type (KeyError: None): the ladder of a GGUF transformer stops at group offload."""
    from engine.planner import DeviceFacts, Placement, ladder
    from engine.request import Z_IMAGE_TURBO

    six_gb = DeviceFacts("cuda", "RTX 2060", 6.0, 5.6, (7, 5), False, 16.0)
    assert Placement.SEQUENTIAL_OFFLOAD not in {
        plan.placement for plan in ladder(six_gb, Z_IMAGE_TURBO, 1024, 1024, recipe=Recipe.INT4)
    }
    assert ladder(six_gb, Z_IMAGE_TURBO, 1024, 1024, recipe=Recipe.INT8)[-1].placement is Placement.SEQUENTIAL_OFFLOAD
    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("int4", None, cache))
    assert engine.gguf
    plain = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("int8", None, cache))
    assert not plain.gguf


@pytest.mark.parametrize("recipe", [Recipe.INT8, Recipe.INT4])
def test_a_lora_works_on_quantized_weights(tiny_model_dir, cache, tmp_path, recipe):
    """peft wraps torchao's and GGUF's linear layers: the LoRA changes the picture about as it does
    on the model's own weights, and a job without it is the quantized base picture again, bit for bit."""
    from tests.support.loras import write_lora

    own = Engine.load(tiny_model_dir, device="cpu")
    write_lora(tmp_path / "ink.safetensors", own.pipeline.transformer, seed=1)
    own.install_loras(str(tmp_path), max_mb=5, max_loaded=3)
    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted(recipe.value, None, cache))
    engine.install_loras(str(tmp_path), max_mb=5, max_loaded=3)
    base = pixels(draw(engine))
    inked = pixels(draw(engine, loras=(("ink", 1.0),)))
    assert not np.array_equal(inked, base)
    assert np.array_equal(pixels(draw(engine)), base)
    assert psnr(inked, pixels(draw(own, loras=(("ink", 1.0),)))) >= MIN_PSNR[recipe]


def load_and_plan_in(monkeypatch, dtype: str) -> None:
    """A GPU's precision on the CPU: loading (engine) and planning (planner) both choose `dtype`,
    fp16 with the overflow clamp as on a card before Ampere."""
    import engine.engine as engine_module
    import engine.planner as planner_module

    def choose(facts):
        return dtype, dtype == "float16"

    monkeypatch.setattr(engine_module, "choose_dtype", choose)
    monkeypatch.setattr(planner_module, "choose_dtype", choose)


@pytest.mark.parametrize("recipe", [Recipe.INT8, Recipe.INT4])
def test_non_finite_output_on_bf16_quantized_weights_is_retried_in_fp32(tiny_model_dir, cache, monkeypatch, recipe):
    """A GPU's bf16 engine, made on the CPU: the retry casts every layer but the quantized ones
    (which refuse a cast and keep their own format) to fp32, and the picture comes out finite."""
    from tests.support.pipeline import transformer_fault

    load_and_plan_in(monkeypatch, "bfloat16")
    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted(recipe.value, None, cache))
    assert draw(engine).plan.dtype == "bfloat16"
    with transformer_fault(engine, at_call=2, fault="nan"):
        result = draw(engine, steps=3)
    assert result.retries == ["non-finite latents in bfloat16: retried in float32"]
    assert result.plan.dtype == "float32" and engine.pipeline.vae.dtype == torch.float32
    assert np.isfinite(pixels(result)).all() and pixels(result).std() > 1.0


@pytest.mark.parametrize("recipe", [Recipe.INT8, Recipe.INT4])
def test_quantized_weights_draw_in_fp16_as_a_turing_card_runs_them(tiny_model_dir, cache, monkeypatch, recipe):
    """Cards before Ampere run fp16 with the overflow clamp: torchao's int8 layers (their scales kept
    in bf16) and GGUF's (dequantized to the compute dtype) take fp16 activations."""
    load_and_plan_in(monkeypatch, "float16")
    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted(recipe.value, None, cache))
    result = draw(engine)
    assert result.plan.dtype == "float16" and result.plan.clamp_fp16 and not result.retries
    assert np.isfinite(pixels(result)).all() and pixels(result).std() > 1.0


def test_the_fallback_sizes_ram_and_the_largest_size_for_the_loaded_weights(tiny_model_dir, cache, monkeypatch):
    """A NaN retry's RAM check and an OOM's "largest size that fits" must see the int8 weights, not
    the model's own bf16 ones (an 8 GB card in a 32 GB machine would otherwise refuse the fp32 retry)."""
    import engine.engine as engine_module
    from engine.planner import quantized

    seen = []

    class Recording(engine_module.Fallback):
        def __init__(self, ladders, facts, profile, *args, **kwargs):
            seen.append((profile, kwargs.get("gguf", args[-1] if args else None)))
            super().__init__(ladders, facts, profile, *args, **kwargs)

    monkeypatch.setattr(engine_module, "Fallback", Recording)
    for recipe in (Recipe.INT8, Recipe.INT4):
        engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted(recipe.value, None, cache))
        draw(engine)
        profile, gguf = seen[-1]
        assert profile == quantized(engine.profile, recipe) and profile.model_gb < engine.profile.model_gb
        assert gguf is (recipe is Recipe.INT4)


def test_copies_of_an_earlier_version_of_the_model_are_deleted_once_new_ones_are_written(tiny_model_dir, tmp_path):
    """A model updated in place (new weight files) is quantized again; the old copies, never loaded
    again, go, while another model's copies stay."""
    import shutil
    from pathlib import Path

    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny-z-image"))
    other = Path(shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / "tiny-z-image"))
    cache = tmp_path / "quantized"
    Engine.load(str(model), device="cpu", weights=WeightsWanted("int8", None, cache))
    Engine.load(str(other), device="cpu", weights=WeightsWanted("int8", None, cache))
    before, kept = cache_folder(model, cache), cache_folder(other, cache)
    assert before.is_dir() and kept.is_dir() and before != kept
    weights = model / "transformer" / "diffusion_pytorch_model.safetensors"
    os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 10))  # the model was updated
    Engine.load(str(model), device="cpu", weights=WeightsWanted("int8", None, cache))
    after = cache_folder(model, cache)
    assert after != before and after.is_dir() and not before.exists() and kept.is_dir()


def test_an_unreadable_copy_is_made_again_instead_of_failing_every_start(tiny_model_dir, tmp_path, reference):
    """A copy torn by a disk fault (its name says complete, its bytes do not): the start quantizes
    again and draws, instead of failing at every start."""
    from pathlib import Path

    Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("int4", None, tmp_path))
    copy = cache_folder(Path(tiny_model_dir), tmp_path) / GGUF_NAME
    copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 3])
    engine = Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("int4", None, tmp_path))
    assert copy.stat().st_size > 0 and psnr(pixels(draw(engine)), reference) >= MIN_PSNR[Recipe.INT4]
