"""Tiny random LoRAs for the tiny transformer, made with peft the way trainers make them."""

from __future__ import annotations

import copy
from pathlib import Path

TARGETS = ["to_q", "to_k", "to_v"]


def write_lora(path: str | Path, transformer, seed: int = 0, rank: int = 4, std: float = 0.3) -> Path:
    """Write `path` (a .safetensors LoRA in diffusers' format) with random A and B matrices, so the
    picture changes visibly with it."""
    import torch
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file

    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS, init_lora_weights=False)
    model = inject_adapter_in_model(config, copy.deepcopy(transformer))
    generator = torch.Generator().manual_seed(seed)
    state = get_peft_model_state_dict(model)
    weights = {
        f"transformer.{key}": torch.randn(value.shape, generator=generator, dtype=torch.float32).mul(std).contiguous()
        for key, value in state.items()
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(path))
    return path


def installed_loras(folder: Path, tiny_model_dir: str, extra: dict[str, str | None]) -> Path:
    """A LoRA folder as an admin fills it: `ink` with its settings, `neon-glow`, a broken file, and
    `extra` (name -> its TOML, or None for none), each a random LoRA for the tiny transformer."""
    from engine.engine import Engine

    transformer = Engine.load(tiny_model_dir, device="cpu").pipeline.transformer
    write_lora(folder / "ink.safetensors", transformer, seed=1)
    (folder / "ink.toml").write_text('description = "bold ink lines"\ntriggers = ["inked"]\ndefault_weight = 0.7\n')
    write_lora(folder / "neon-glow.safetensors", transformer, seed=2)
    for seed, (name, settings) in enumerate(extra.items(), start=3):
        write_lora(folder / f"{name}.safetensors", transformer, seed=seed)
        if settings is not None:
            (folder / f"{name}.toml").write_text(settings)
    (folder / "broken.safetensors").write_bytes(b"not a LoRA")
    return folder


def write_misshapen_lora(path: str | Path, transformer) -> Path:
    """A LoRA whose keys name this transformer's modules, as the folder's checks want, but whose
    matrices have the wrong shapes: it fails only when the pipeline loads it."""
    import torch
    from safetensors.torch import load_file, save_file

    path = Path(path)
    good = load_file(str(write_lora(path, transformer)))
    save_file({key: torch.zeros(value.shape[0] + 3, value.shape[1] + 1) for key, value in good.items()}, str(path))
    return path
