"""A model's profile comes from its own files (engine/model_files.py, `profile_for`): the family from
model_index.json, memory from the safetensors headers (bytes on disk over each tensor's dtype),
picture sizes from the transformer's configuration.  No marker file, no name."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

import pytest
from safetensors import safe_open

from engine.engine import Engine, why_it_cannot_run
from engine.errors import NeedsGPU
from engine.full_size import full_size_modules
from engine.model_files import ITEM_BYTES, read_model, weights_gb
from engine.planner import DeviceFacts, first_fitting, ladder
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest, profile_for

CPU = DeviceFacts(kind="cpu", system_ram_gb=64.0)
CARD_8GB = DeviceFacts(kind="cuda", name="8GB", total_vram_gb=8, free_vram_gb=7.5, real_bf16=True, system_ram_gb=64)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid safetensors file with these tensors' headers; the data is a hole (a sparse file), so a
    20 GB model costs no disk."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * ITEM_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as file:
        file.write(struct.pack("<Q", len(raw)))
        file.write(raw)
        file.truncate(8 + len(raw) + offset)


def folder_like(tiny_model_dir: str, target: Path, transformer_config: dict | None = None) -> Path:
    """The tiny model's folder under another name, its transformer configuration replaced if given."""
    shutil.copytree(tiny_model_dir, target)
    if transformer_config is not None:
        (target / "transformer" / "config.json").write_text(json.dumps(transformer_config))
    return target


def shapes(module, dtype: str) -> dict[str, tuple[str, list[int]]]:
    return {name: (dtype, list(tensor.shape)) for name, tensor in module.state_dict().items()}


def test_the_tiny_model_carries_no_marker_and_plans_small_from_its_files(tiny_model_dir, tmp_path):
    folder = folder_like(tiny_model_dir, tmp_path / "my-small-finetune")
    assert sorted(path.name for path in folder.iterdir() if path.is_file()) == ["model_index.json"]

    profile = profile_for(str(folder))
    assert profile.name == "my-small-finetune" and profile.model_gb < 0.01
    # Its transformer reaches a quarter of Z-Image-Turbo's positions: the quarter-sized table.
    assert (profile.default_size, profile.max_side, profile.aspect_ratios) == (
        TINY.default_size,
        TINY.max_side,
        TINY.aspect_ratios,
    )
    assert why_it_cannot_run(str(folder), CPU) is None

    engine = Engine.load(str(folder), device="cpu")
    result = engine.generate(DrawRequest("a fox", steps=1, seed=3))
    assert result.image.size == (256, 256) and result.plan.placement.value == "cpu"


def test_weights_are_measured_from_the_headers_in_the_precision_a_gpu_loads(tiny_model_dir, tmp_path):
    transformer = Path(tiny_model_dir) / "transformer" / "diffusion_pytorch_model.safetensors"
    with safe_open(str(transformer), "pt") as file:
        numbers = sum(math.prod(file.get_slice(key).get_shape()) for key in file.keys())  # noqa: SIM118
    assert weights_gb(transformer.parent) == pytest.approx(numbers * 2 / 1024**3)

    # The same tensors stored in fp32 or in bf16 weigh the same once loaded.
    for dtype in ("F32", "BF16"):
        (tmp_path / dtype).mkdir()
        write_safetensors(tmp_path / dtype / "model.safetensors", {"w": (dtype, [1024, 1024])})
        assert weights_gb(tmp_path / dtype) == pytest.approx(2 / 1024)


def test_a_folder_with_z_image_turbos_weights_plans_exactly_as_z_image_turbo(tiny_model_dir, tmp_path):
    modules = full_size_modules("meta")
    folder = folder_like(tiny_model_dir, tmp_path / "zit-copy", dict(modules["transformer"].config))
    # As on the hub: a sharded fp32 transformer, a bf16 text encoder.
    transformer = shapes(modules["transformer"], "F32")
    names = list(transformer)
    halves = {"a.safetensors": names[: len(names) // 2], "b.safetensors": names[len(names) // 2 :]}
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
    for shard, keys in halves.items():
        write_safetensors(folder / "transformer" / shard, {key: transformer[key] for key in keys})
    index = {"weight_map": {key: shard for shard, keys in halves.items() for key in keys}}
    (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    write_safetensors(folder / "text_encoder" / "model.safetensors", shapes(modules["text_encoder"], "BF16"))
    write_safetensors(folder / "vae" / "diffusion_pytorch_model.safetensors", shapes(modules["vae"], "F32"))

    assert profile_for(str(folder)) is Z_IMAGE_TURBO
    refusal = why_it_cannot_run(str(folder), CPU)
    assert isinstance(refusal, NeedsGPU) and refusal.params["size_gb"] == 19.2

    # A shard missing (a download cut short): not measured, planned as the big model, never as small.
    (folder / "transformer" / "b.safetensors").unlink()
    assert read_model(str(folder)) is None and profile_for(str(folder)) is Z_IMAGE_TURBO


def test_a_large_model_of_another_size_plans_big_with_its_own_weights(tiny_model_dir, tmp_path):
    folder = folder_like(tiny_model_dir, tmp_path / "big-finetune", {"axes_lens": [1024, 512, 512]})
    write_safetensors(folder / "transformer" / "diffusion_pytorch_model.safetensors", {"w": ("F32", [3 * 1024**3])})
    write_safetensors(folder / "text_encoder" / "model.safetensors", {"w": ("BF16", [1024**3])})

    profile = profile_for(str(folder))
    assert profile.name == "big-finetune" and profile.default_size == (1024, 1024)
    assert profile.transformer_gb == pytest.approx(6.0) and profile.text_encoder_gb == pytest.approx(2.0)
    refusal = why_it_cannot_run(str(folder), CPU)
    assert isinstance(refusal, NeedsGPU) and refusal.params["size_gb"] == 8.0
    # 8 GB of weights do not fit all on an 8 GB card; the tiny model does.
    assert first_fitting(ladder(CARD_8GB, profile, 1024, 1024)) > 0
    assert first_fitting(ladder(CARD_8GB, profile_for(tiny_model_dir), 256, 256)) == 0


def test_a_model_whose_files_are_not_here_or_of_another_family_plans_as_z_image_turbo(tiny_model_dir, tmp_path):
    assert profile_for("Tongyi-MAI/not-downloaded-here") is Z_IMAGE_TURBO  # the hub is never asked
    assert profile_for(str(tmp_path / "missing")) is Z_IMAGE_TURBO
    other = folder_like(tiny_model_dir, tmp_path / "other")
    index = json.loads((other / "model_index.json").read_text())
    (other / "model_index.json").write_text(json.dumps({**index, "_class_name": "FluxPipeline"}))
    assert read_model(str(other)).pipeline == "FluxPipeline"
    assert profile_for(str(other)) is Z_IMAGE_TURBO  # not a model easel draws with: loading says why
