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

Quantizing reads one component at a time (torchao quantizes each while loading it; the GGUF writer
goes tensor by tensor), so it never holds the whole bf16 model in RAM.  Each copy is written under a
`.partial` name and renamed when complete: a start killed half-way quantizes that copy again
instead of loading half of one.  The text encoder's int8 copy serves both recipes.
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
class WeightsWanted:
    """What the settings ask for (EASEL_QUANTIZE, EASEL_TRANSFORMER_FILE), before the planner picks:
    `quantize` is auto, none, int8 or int4; quantized copies are kept under `cache_dir`."""

    quantize: str = "none"
    transformer_file: str | None = None
    cache_dir: Path | None = None

    def changes(self, recipe: Recipe) -> bool:
        """Whether loading differs from the model's own files."""
        return recipe is not Recipe.NONE or bool(self.transformer_file)


def with_transformer_file(profile, transformer_file: str | None):
    """The profile sized with a transformer file of one's own (GGUF's size on disk is its size
    loaded: diffusers keeps GGUF weights packed)."""
    from dataclasses import replace

    path = Path(transformer_file).expanduser() if transformer_file else None
    if path is None or not path.is_file():
        return profile
    return replace(profile, transformer_file_gb=path.stat().st_size / 1024**3)


def model_folder(model: str) -> Path:
    """The model's files on disk (a directory, or a hub id's snapshot, downloaded when missing)."""
    from engine.model_files import local_folder

    folder = local_folder(model)
    if folder is not None:
        return folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model))


def cache_folder(model_folder: Path, cache_dir: Path) -> Path:
    """Where the quantized copies of this model live: named after the model and what its transformer
    and text encoder files are (path, size, time), so a changed model is quantized again."""
    from engine.model_files import weight_files

    identity = [str(model_folder.resolve())]
    for component in ("transformer", "text_encoder"):
        for path in weight_files(model_folder / component) or []:
            stat = path.stat()
            identity.append(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}")
    digest = hashlib.sha256("\n".join(identity).encode()).hexdigest()[:12]
    return cache_dir / f"{model_folder.name}-{digest}"


def parts(recipe: Recipe, own_transformer: bool = False) -> dict[str, str]:
    """The quantized copies `recipe` loads, component -> name in the cache folder; the text encoder's
    int8 copy serves both recipes, and a transformer file of one's own needs none of its own."""
    if recipe is Recipe.NONE:
        return {}
    names = {"text_encoder": "text_encoder-int8"}
    if not own_transformer:
        names["transformer"] = "transformer-int8" if recipe is Recipe.INT8 else GGUF_NAME
    return names


def is_quantized_already(model: str, recipe: Recipe, cache_dir: Path | None, own_transformer: bool = False) -> bool:
    """Whether every copy `recipe` loads of a model already on disk is written (a later start);
    nothing is downloaded to find out."""
    from engine.model_files import local_folder

    needed = parts(recipe, own_transformer)
    if not needed:
        return True
    folder = local_folder(model)
    if folder is None or cache_dir is None:
        return False
    return all((cache_folder(folder, cache_dir) / name).exists() for name in needed.values())


def quantize_once(
    model_folder: Path, recipe: Recipe, cache_dir: Path, progress: bool = True, own_transformer: bool = False
) -> dict[str, Path]:
    """The quantized copies `recipe` loads (component -> path), writing those not there yet.  Each is
    written under a `.partial` name and renamed when complete, holding a lock so that a bot and a
    worker sharing the data dir do not write the same copy at once."""
    import fcntl

    from tqdm import tqdm

    folder = cache_folder(model_folder, cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    needed = {component: folder / name for component, name in parts(recipe, own_transformer).items()}
    missing = {component: path for component, path in needed.items() if not path.exists()}
    if not missing:
        return needed
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = {component: path for component, path in missing.items() if not path.exists()}
        if not missing:  # another process wrote them while this one waited for the lock
            return needed
        log.info("quantizing %s (%s) once into %s; later starts load it directly", model_folder, recipe, folder)
        steps = tqdm(total=len(missing), desc=f"quantizing to {recipe.value}", unit="component", disable=not progress)
        for component, path in missing.items():
            partial = path.with_name(path.name + ".partial")
            if partial.is_dir():  # what a start killed half-way left
                shutil.rmtree(partial)
            partial.unlink(missing_ok=True)
            if path.name == GGUF_NAME:
                write_gguf(model_folder / component, partial, progress=progress)
            else:
                _save_int8(model_folder, component, partial)
            _let_go()
            _sync(partial)  # on disk before the name says complete: a power cut leaves no torn copy
            os.replace(partial, path)
            _sync(folder)
            steps.update()
        steps.close()
        _forget_older_copies(model_folder, folder)
    return needed


def _forget_older_copies(model_folder: Path, folder: Path) -> None:
    """Quantized copies of an earlier version of the same model (its files changed since) are never
    loaded again: delete them, so that a bot that follows model updates for months does not keep
    ~10 GB for each.  Each folder names the model it was made from in `source`."""
    source = str(model_folder.resolve())
    (folder / "source").write_text(source)
    for sibling in folder.parent.glob(f"{model_folder.name}-*"):
        marker = sibling / "source"
        if sibling != folder and marker.is_file() and marker.read_text() == source:
            log.info("deleting quantized copies of an earlier %s: %s", model_folder.name, sibling)
            shutil.rmtree(sibling, ignore_errors=True)


def _sync(path: Path) -> None:
    """fsync a file, or a folder's files and the folder itself."""
    for item in [*sorted(path.rglob("*")), path] if path.is_dir() else [path]:
        descriptor = os.open(item, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _save_int8(model_folder: Path, component: str, target: Path) -> None:
    module = _load_int8(model_folder / component, component, quantize=True)
    module.save_pretrained(target)
    del module


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


def load_components(model_folder: Path, recipe: Recipe, weights: WeightsWanted, dtype) -> dict:
    """The components for `ZImagePipeline.from_pretrained(..., **components)` in `recipe` (the one
    the planner chose for what `weights` asks), with a transformer file of one's own; {} for the
    model's own weights."""
    components = {}
    own_transformer = bool(weights.transformer_file)
    if recipe is not Recipe.NONE:
        assert weights.cache_dir is not None, "a quantized recipe needs a folder to keep its weights in"
        try:
            components = _load_copies(model_folder, recipe, weights, dtype)
        except Exception as exc:  # a copy that cannot be read (a disk fault, a torn write): make it again
            if isinstance(exc, MemoryError):
                raise
            log.warning("quantized copies of %s unreadable (%s): quantizing again", model_folder, exc)
            shutil.rmtree(cache_folder(model_folder, weights.cache_dir), ignore_errors=True)
            components = _load_copies(model_folder, recipe, weights, dtype)
    if own_transformer:
        components["transformer"] = load_gguf_transformer(Path(weights.transformer_file), model_folder, dtype)
    return components


def _load_copies(model_folder: Path, recipe: Recipe, weights: WeightsWanted, dtype) -> dict:
    """The recipe's copies, written first when missing, loaded."""
    copies = quantize_once(model_folder, recipe, weights.cache_dir, own_transformer=bool(weights.transformer_file))
    components = {"text_encoder": _load_int8(copies["text_encoder"], "text_encoder", False, dtype)}
    transformer = copies.get("transformer")
    if transformer is not None and transformer.name == GGUF_NAME:
        components["transformer"] = load_gguf_transformer(transformer, model_folder, dtype)
    elif transformer is not None:
        components["transformer"] = _load_int8(transformer, "transformer", False, dtype)
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
