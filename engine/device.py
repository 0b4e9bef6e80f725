"""Reading the machine: which accelerator, how much memory, whether bf16 is real."""

from __future__ import annotations

import os

# Must be set before CUDA initialises to help with fragmentation across jobs of different sizes;
# a value the user set wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import psutil  # noqa: E402
import torch  # noqa: E402

from engine.planner import DeviceFacts, plan_for, ram_needed_gb  # noqa: E402
from engine.request import ModelProfile  # noqa: E402

GB = 1024**3


def resolve_device(requested: str = "auto") -> str:
    """'auto' means CUDA when there is one; anything else is taken as given ('cpu', 'cuda', 'cuda:1')."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def probe_device(requested: str = "auto") -> DeviceFacts:
    """Facts about the device generation will run on, read fresh (free memory changes between jobs)."""
    device = resolve_device(requested)
    ram_gb = psutil.virtual_memory().total / GB
    if not device.startswith("cuda"):
        return DeviceFacts(kind="cpu", name="cpu", system_ram_gb=ram_gb)
    index = torch.device(device).index or 0
    free, total = torch.cuda.mem_get_info(index)
    capability = torch.cuda.get_device_capability(index)
    # is_bf16_supported() says True on pre-Ampere cards by (slow) emulation; ask for the real thing.
    real_bf16 = capability >= (8, 0) and torch.cuda.is_bf16_supported(including_emulation=False)
    return DeviceFacts(
        kind="cuda",
        name=torch.cuda.get_device_name(index),
        total_vram_gb=total / GB,
        free_vram_gb=free / GB,
        compute_capability=capability,
        real_bf16=real_bf16,
        system_ram_gb=ram_gb,
    )


def ram_shortfall(facts: DeviceFacts, profile: ModelProfile) -> str | None:
    """Why RAM + swap cannot hold what the plan for the default size keeps in system RAM (offload
    keeps the weights there); None when it can.  A machine short of it is killed by the kernel while
    loading the model, which nothing can explain afterwards: say it before loading."""
    if not facts.is_gpu:
        return None
    side = min(profile.default_size)
    placement = plan_for(facts, profile, side, side).placement
    needed = ram_needed_gb(placement, profile)
    swap_gb = psutil.swap_memory().total / GB
    if needed <= facts.system_ram_gb + swap_gb:
        return None
    return (
        f"{profile.name} at {side}x{side} runs as {placement.value} here, which needs ~{needed:.0f} GB of "
        f"system RAM; this machine has {facts.system_ram_gb:.0f} GB RAM + {swap_gb:.0f} GB swap. Add swap "
        f"(RAM + swap of {needed + 2:.0f} GB or more), or the process may be killed while loading the model."
    )
