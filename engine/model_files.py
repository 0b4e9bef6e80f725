"""What a model's files say about it, read without loading it: the pipeline class (model_index.json),
each component's weights in GiB once loaded in bf16 (the safetensors headers: every tensor's bytes
on disk and its dtype), and how many patches a side the transformer can address (its config).

A hub id is read from the local Hugging Face cache only: nothing here touches the network.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

COMPONENTS = ("transformer", "text_encoder", "vae")  # the ones with weights, as ModelProfile sizes them
WEIGHT_STEMS = ("diffusion_pytorch_model", "model")  # diffusers' and transformers' file names, no variant
DEFAULT_POSITIONS = 512  # ZImageTransformer2DModel's default axes_lens [1024, 512, 512], per side
LOADED_BYTES = 2  # a profile's sizes are in bf16, what a GPU loads (fp32 on a CPU doubles them)
MAX_HEADER_BYTES = 100 * 1024**2  # the safetensors format's own limit
ITEM_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip


@dataclass(frozen=True)
class ModelFiles:
    folder: Path
    pipeline: str  # model_index.json's `_class_name`, e.g. "ZImagePipeline"
    weights_gb: dict[str, float]  # component -> GiB of its weights in bf16
    positions: int  # patches a side the transformer's rotary table reaches (the smaller spatial axis_len)


def read_model(model: str) -> ModelFiles | None:
    """The files of a local directory or a downloaded hub id; None when they are not all here (a hub
    id not downloaded yet, a download cut short) or cannot be read."""
    folder = local_folder(model)
    if folder is None:
        return None
    try:
        index = json.loads((folder / "model_index.json").read_text())
        weights = {name: weights_gb(folder / name) for name in COMPONENTS}
        if any(gb is None for gb in weights.values()):
            return None
        axes = _config(folder / "transformer").get("axes_lens") or [0, DEFAULT_POSITIONS, DEFAULT_POSITIONS]
        return ModelFiles(folder, str(index.get("_class_name", "")), weights, int(min(axes[1:])))
    except (OSError, ValueError, TypeError, KeyError, IndexError, struct.error):
        return None


def local_folder(model: str) -> Path | None:
    """The directory holding `model`'s model_index.json: the path itself, or the hub id's snapshot in
    the local cache."""
    path = Path(model).expanduser()
    if (path / "model_index.json").is_file():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "model_index.json")
    except Exception:  # not a valid hub id (a missing local path, say)
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def weights_gb(component: Path) -> float | None:
    """GiB of a component's weights once loaded in bf16; None without safetensors weights to read."""
    files = weight_files(component)
    if files is None:
        return None
    elements = sum(_elements(path) for path in files)
    return elements * LOADED_BYTES / 1024**3


def weight_files(component: Path) -> list[Path] | None:
    """The weight files `from_pretrained` loads (no variant): one file, or every shard of an index."""
    for stem in WEIGHT_STEMS:
        single = component / f"{stem}.safetensors"
        if single.is_file():
            return [single]
        index = component / f"{stem}.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            files = [component / shard for shard in shards]
            return files if files and all(path.is_file() for path in files) else None
    return None


def _elements(path: Path) -> int:
    """Numbers stored in a safetensors file: each tensor's bytes on disk over its dtype's size."""
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        if length > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: not a safetensors file")
        header = json.loads(file.read(length))
    elements = 0
    for name, tensor in header.items():
        if name != "__metadata__":
            start, end = tensor["data_offsets"]
            elements += (end - start) // ITEM_BYTES[tensor["dtype"]]
    return elements


def _config(component: Path) -> dict:
    path = component / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}
