"""Putting a loaded pipeline where a plan says: dtype, device, offload hooks, VAE tiling.

The offload paths are meant for an accelerator: the `gpu`-marked tests and `bench/gpu_matrix.py`
run them there.  The planner never puts them on a CPU ladder, but they also run with the CPU as
the "accelerator", which `tests/test_placement_cpu.py` uses to rehearse their hooks.
"""

from __future__ import annotations

import torch

from engine.guards import install_fp16_clamp
from engine.planner import Placement, Plan

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
_CLAMP_HANDLES = "_easel_fp16_clamp"
# What a placement that failed half-way left: matches no real plan, and names a GPU placement, so
# that undoing it takes off every hook, brings every weight to the CPU and casts every one again.
HALF_PLACED = Plan("unknown", "unknown", Placement.GPU, False, False, 0.0, False)


def apply_placement(pipe, plan: Plan, device: str, previous: Plan | None) -> None:
    """Move `pipe` to `plan`, undoing whatever `previous` installed."""
    where = (plan.placement, plan.dtype, plan.low_cpu_memory)
    moved = previous is None or (previous.placement, previous.dtype, previous.low_cpu_memory) != where
    if moved:
        _remove_offload(pipe, previous)
        if previous is HALF_PLACED or pipe.vae.dtype != DTYPES[plan.dtype]:
            cast(pipe, DTYPES[plan.dtype])
        _place(pipe, plan, device)
        _set_clamp(pipe.transformer, plan.clamp_fp16)
    if plan.vae_tiling:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()
    if plan.placement is Placement.CPU_LOW_MEMORY:
        pipe.vae.enable_slicing()


def cast(pipe, dtype: torch.dtype) -> None:
    """Every component in `dtype`, but quantized ones (engine/quantize.py): their weights keep their
    own format and diffusers refuses to cast them; their other layers were loaded in the plan's dtype.
    The VAE is never quantized: its dtype is the pipeline's."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module) and not is_quantized(component):
            component.to(dtype=dtype)


def is_quantized(module: torch.nn.Module) -> bool:
    """Loaded with a quantization config (torchao, GGUF): diffusers and transformers both say so."""
    return bool(getattr(module, "is_quantized", False) or getattr(module, "hf_quantizer", None))


def _place(pipe, plan: Plan, device: str) -> None:
    target, placement = torch.device(device), plan.placement
    if placement in (Placement.CPU, Placement.CPU_LOW_MEMORY):
        if pipe.device.type != "cpu":
            pipe.to("cpu")
    elif placement is Placement.GPU:
        pipe.to(target)
    elif placement is Placement.MODEL_OFFLOAD:
        pipe.enable_model_cpu_offload(device=target)
    elif placement is Placement.GROUP_OFFLOAD:
        # The VAE (0.16 GB) stays on the GPU: its decode() never calls forward(), so group offload's
        # lazy prefetch would never finish tracing it and would grow its execution list every job.
        pipe.enable_group_offload(
            onload_device=target,
            offload_device=torch.device("cpu"),
            offload_type="leaf_level",
            use_stream=target.type != "cpu",  # prefetch the next layer while this one runs; the CPU has no streams
            exclude_modules=["vae"],
            low_cpu_mem_usage=plan.low_cpu_memory,  # the planner's call, from RAM + swap
        )
    else:
        pipe.enable_sequential_cpu_offload(device=target)


def _remove_offload(pipe, previous: Plan | None) -> None:
    """Remove every offload hook there is, whatever the previous plan says: a placement that failed
    half-way may have left some behind, and the next enable_* refuses to run over them."""
    if previous is None:
        return
    from diffusers.hooks import HookRegistry

    pipe.remove_all_hooks()
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            registry = HookRegistry.check_if_exists_or_initialize(component)
            for name in ("group_offloading", "layer_execution_tracker", "lazy_prefetch_group_offloading"):
                registry.remove_hook(name, recurse=True)
    if previous.placement is not Placement.CPU and previous.placement is not Placement.CPU_LOW_MEMORY:
        pipe.to("cpu")
        if torch.cuda.is_initialized():
            # Hand the old placement's blocks back: cached, they would be reused beyond what the
            # next plan was sized for (a per-process memory cap only applies to new blocks).
            torch.cuda.empty_cache()


def _set_clamp(transformer: torch.nn.Module, enabled: bool) -> None:
    for handle in getattr(transformer, _CLAMP_HANDLES, []):
        handle.remove()
    setattr(transformer, _CLAMP_HANDLES, install_fp16_clamp(transformer) if enabled else [])
