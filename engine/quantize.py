"""Smaller weights: the 8-bit and 4-bit recipes, quantized once into the data dir, loaded small after.

Backends as measured here (docs/PERFORMANCE.md, "Quantized weights"): torchao's Int8WeightOnlyConfig
loads, draws, saves to safetensors and reloads bit for bit on the CPU and on CUDA; torchao's int4
layouts need CUDA (tinygemm) or mslk, bitsandbytes refuses to quantize without a GPU in diffusers,
and optimum-quanto crashed (int8, bf16) or reloaded different pictures (int4).  So:

- int8: transformer and text encoder in torchao int8 (weight only, per channel).
- int4: transformer as a GGUF Q4_0 file written here with the `gguf` package in the layout the
  community's files use (ComfyUI's key names), read back by diffusers' GGUF loader; the text encoder
  in int8 as above (no 4-bit backend draws on the CPU).  A GGUF file of one's own
  (EASEL_TRANSFORMER_FILE, Q8_0, Q4_K, ...) loads the same way.

Quantizing reads one component at a time (diffusers and transformers quantize shard by shard as they
load; the GGUF writer one tensor at a time), so it never holds the whole bf16 model in RAM.  Each
recipe's files are written into a temporary folder renamed when complete: a start killed half-way
quantizes again instead of loading half a model.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)

GGUF_NAME = "transformer.gguf"
BLOCK = 32  # Q4_0 and Q8_0 quantize rows in blocks of 32 numbers


class Recipe(StrEnum):
    """How small the weights are; NONE is the model's own bf16 (fp32 on a CPU)."""

    NONE = "none"
    INT8 = "int8"
    INT4 = "int4"


# Each component's size next to bf16 (ModelProfile's unit).  int8: one byte a weight plus a bf16
# scale per row; Q4_0: 4.5 bits a weight (a fp16 scale per 32); norms, biases and embeddings stay.
# Measured on the full-size architecture: docs/PERFORMANCE.md ("Quantized weights").
SCALE = {
    Recipe.NONE: {"transformer": 1.0, "text_encoder": 1.0},
    Recipe.INT8: {"transformer": 0.52, "text_encoder": 0.53},
    Recipe.INT4: {"transformer": 0.30, "text_encoder": 0.53},
}


@dataclass(frozen=True)
class Weights:
    """Which weights to load: the recipe, a GGUF transformer file of one's own, where quantized copies live."""

    recipe: Recipe = Recipe.NONE
    transformer_file: str | None = None
    cache_dir: Path | None = None


@dataclass(frozen=True)
class WeightsWanted:
    """What the settings ask for (EASEL_QUANTIZE, EASEL_TRANSFORMER_FILE), before the planner picks:
    `quantize` is auto, none, int8 or int4; quantized copies are kept under `cache_dir`."""

    quantize: str = "none"
    transformer_file: str | None = None
    cache_dir: Path | None = None

    def changes(self, recipe: Recipe) -> bool:
        """Whether loading differs from the model's own files."""
        return recipe is not Recipe.NONE or bool(self.transformer_file)


def model_folder(model: str) -> Path:
    """The model's files on disk (a directory, or a hub id's snapshot, downloaded when missing)."""
    from engine.model_files import local_folder

    folder = local_folder(model)
    if folder is not None:
        return folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model))


def cache_folder(model_folder: Path, recipe: Recipe, cache_dir: Path) -> Path:
    """Where `recipe`'s weights of this model live: named after the model and what its transformer
    and text encoder files are (path, size, time), so a changed model is quantized again."""
    from engine.model_files import weight_files

    identity = [str(model_folder.resolve())]
    for component in ("transformer", "text_encoder"):
        for path in weight_files(model_folder / component) or []:
            stat = path.stat()
            identity.append(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}")
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:12]
    return cache_dir / f"{model_folder.name}-{digest}" / recipe.value


def is_complete(folder: Path) -> bool:
    return (folder / "complete").is_file()


def is_quantized_already(model: str, recipe: Recipe, cache_dir: Path | None) -> bool:
    """Whether `recipe`'s weights of a model already on disk were written (a later start); nothing
    is downloaded to find out."""
    from engine.model_files import local_folder

    folder = local_folder(model)
    if recipe is Recipe.NONE:
        return True
    return folder is not None and cache_dir is not None and is_complete(cache_folder(folder, recipe, cache_dir))


def quantize_once(model_folder: Path, recipe: Recipe, cache_dir: Path, progress: bool = True) -> Path:
    """The folder of `recipe`'s weights, writing them first when they are not there yet."""
    folder = cache_folder(model_folder, recipe, cache_dir)
    if is_complete(folder):
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    log.info("quantizing %s to %s once, into %s (later starts load it directly)", model_folder, recipe, folder)
    from tqdm import tqdm

    steps = tqdm(total=2, desc=f"quantizing to {recipe.value}", unit="component", disable=not progress)
    if recipe is Recipe.INT4:
        write_gguf(model_folder / "transformer", partial / GGUF_NAME, progress=progress)
        _let_go()
    else:
        _save_int8(model_folder, "transformer", partial / "transformer")
    steps.update()
    _save_int8(model_folder, "text_encoder", partial / "text_encoder")
    steps.update()
    steps.close()
    (partial / "complete").write_text(recipe.value)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return folder


def _save_int8(model_folder: Path, component: str, target: Path) -> None:
    module = _load_int8(model_folder / component, component, quantize=True)
    module.save_pretrained(target)
    del module
    _let_go()


def _let_go() -> None:
    """Hand a finished component's memory back before the next: glibc would keep it for this process."""
    from engine.heap import release_freed_memory

    gc.collect()
    release_freed_memory()


def _load_int8(folder: Path, component: str, quantize: bool, dtype=None):
    """A component in torchao int8: quantized while loading from bf16 (`quantize`), or read back."""
    import torch
    from torchao.quantization import Int8WeightOnlyConfig

    # Read back, the folder's own config says how it is quantized (passing None would override it).
    extra = {"quantization_config": None} if quantize else {}
    dtype = dtype or torch.bfloat16
    if component == "transformer":
        from diffusers import TorchAoConfig, ZImageTransformer2DModel

        if quantize:
            extra["quantization_config"] = TorchAoConfig(Int8WeightOnlyConfig())
        return ZImageTransformer2DModel.from_pretrained(folder, torch_dtype=dtype, **extra)
    from transformers import AutoModel, TorchAoConfig

    if quantize:
        extra["quantization_config"] = TorchAoConfig(Int8WeightOnlyConfig())
    return AutoModel.from_pretrained(folder, dtype=dtype, **extra)


def load_components(model_folder: Path, weights: Weights, dtype) -> dict:
    """The quantized components for `ZImagePipeline.from_pretrained(..., **components)`; {} for the
    model's own weights."""
    components = {}
    if weights.recipe is not Recipe.NONE:
        assert weights.cache_dir is not None, "a quantized recipe needs a folder to keep its weights in"
        folder = quantize_once(model_folder, weights.recipe, weights.cache_dir)
        components["text_encoder"] = _load_int8(folder / "text_encoder", "text_encoder", False, dtype)
        if weights.recipe is Recipe.INT8 and not weights.transformer_file:
            components["transformer"] = _load_int8(folder / "transformer", "transformer", False, dtype)
        elif weights.recipe is Recipe.INT4 and not weights.transformer_file:
            components["transformer"] = load_gguf_transformer(folder / GGUF_NAME, model_folder, dtype)
    if weights.transformer_file:
        components["transformer"] = load_gguf_transformer(Path(weights.transformer_file), model_folder, dtype)
    return components


def load_gguf_transformer(path: Path, model_folder: Path, dtype):
    """A GGUF transformer file (ours or the community's) with the model's own transformer config."""
    from diffusers import GGUFQuantizationConfig, ZImageTransformer2DModel

    return ZImageTransformer2DModel.from_single_file(
        str(path),
        config=str(model_folder),
        subfolder="transformer",
        quantization_config=GGUFQuantizationConfig(compute_dtype=dtype),
        torch_dtype=dtype,
    )


def is_gguf(module) -> bool:
    """A model loaded from a GGUF file (its weights are GGUFParameters)."""
    quantizer = getattr(module, "hf_quantizer", None)
    return quantizer is not None and getattr(quantizer.quantization_config, "quant_method", None) == "gguf"


# diffusers' key names -> the original checkpoint's, which diffusers' single-file converter expects
# (convert_z_image_transformer_checkpoint_to_diffusers undoes exactly these).
_ORIGINAL_NAMES = (
    ("all_final_layer.2-1.", "final_layer."),
    ("all_x_embedder.2-1.", "x_embedder."),
    (".attention.to_out.0.", ".attention.out."),
    (".attention.norm_k.", ".attention.k_norm."),
    (".attention.norm_q.", ".attention.q_norm."),
)


def original_tensors(names: list[str], read):
    """(original name, tensor) for a diffusers Z-Image transformer, one at a time: q, k and v fused
    into qkv as the original checkpoint stores them."""
    import torch

    for name in names:
        if ".attention.to_k." in name or ".attention.to_v." in name:
            continue
        tensor = read(name)
        if name.endswith(".attention.to_q.weight"):
            stem = name.removesuffix(".attention.to_q.weight")
            parts = [tensor, read(f"{stem}.attention.to_k.weight"), read(f"{stem}.attention.to_v.weight")]
            tensor, name = torch.cat(parts), f"{stem}.attention.qkv.weight"
        for new, old in _ORIGINAL_NAMES:
            name = name.replace(new, old)
        yield name, tensor


def write_gguf(transformer_folder: Path, target: Path, kind: str = "Q4_0", progress: bool = True) -> None:
    """Write the transformer as a GGUF file: linear weights in `kind`, everything else in fp32 (small).
    Reads one tensor at a time; the writer spills to a temporary file."""
    import gguf
    import numpy as np
    from safetensors import safe_open
    from tqdm import tqdm

    from engine.model_files import weight_files

    qtype = getattr(gguf.GGMLQuantizationType, kind)
    writer = gguf.GGUFWriter(str(target), "z_image", use_temp_file=True)
    files = weight_files(transformer_folder) or []
    handles = [safe_open(str(path), framework="pt") for path in files]
    where = {name: handle for handle in handles for name in handle.keys()}  # noqa: SIM118 (safe_open is no dict)
    names = sorted(where)
    bar = tqdm(total=len(names), desc=f"quantizing transformer ({kind})", unit="tensor", disable=not progress)
    for name, tensor in original_tensors(names, lambda key: where[key].get_tensor(key)):
        array = tensor.float().numpy()
        if _quantizable(name, array):
            packed = gguf.quants.quantize(array, qtype)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(name, array.astype(np.float32))
        bar.update(3 if name.endswith(".qkv.weight") else 1)
    bar.close()
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()


def _quantizable(name: str, array) -> bool:
    """Linear layers' weights (2-D, rows a multiple of the block); never the pad tokens, which the
    model concatenates with activations as they are."""
    return array.ndim == 2 and array.shape[-1] % BLOCK == 0 and name.endswith(".weight") and "pad_token" not in name
