"""Reading the machine: which accelerator, how much memory, whether bf16 is real."""

from __future__ import annotations

import os

# Must be set before CUDA initialises to help with fragmentation across jobs of different sizes;
# a value the user set wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import psutil  # noqa: E402
import torch  # noqa: E402

from engine.planner import DeviceFacts, ladder, ram_needed_gb  # noqa: E402
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
    swap_gb = psutil.swap_memory().total / GB
    if not device.startswith("cuda"):
        return DeviceFacts(kind="cpu", name="cpu", system_ram_gb=ram_gb, swap_gb=swap_gb)
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
        swap_gb=swap_gb,
    )


def ram_shortfall(facts: DeviceFacts, profile: ModelProfile) -> str | None:
    """Why RAM + swap cannot hold what the plan for the default size, or a rung it may fall back to,
    keeps in system RAM (offload keeps the weights there); None when it can.  A machine short of it
    is killed by the kernel, while loading or mid-job, which nothing can explain afterwards: say it
    before loading."""
    if not facts.is_gpu:
        return None
    side = min(profile.default_size)
    plans = ladder(facts, profile, side, side)
    planned = next((i for i, p in enumerate(plans) if p.fits), len(plans) - 1)
    worst = max(plans[planned:], key=lambda p: ram_needed_gb(p.placement, profile, p.low_cpu_memory))
    needed = ram_needed_gb(worst.placement, profile, worst.low_cpu_memory)
    if needed <= facts.memory_gb:
        return None
    how = "runs as" if worst is plans[planned] else f"runs as {plans[planned].placement.value} and may fall back to"
    return (
        f"{profile.name} at {side}x{side} {how} {worst.placement.value} here, which needs ~{needed:.0f} GB "
        f"of system RAM; this machine has {facts.system_ram_gb:.0f} GB RAM + {facts.swap_gb:.0f} GB swap. "
        f"Add swap (RAM + swap of {needed + 2:.0f} GB or more), or the process may be killed."
    )
