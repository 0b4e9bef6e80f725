"""Reading the machine: which accelerator, how much memory, whether bf16 is real."""

from __future__ import annotations

import os

# Must be set before CUDA initialises to help with fragmentation across jobs of different sizes;
# a value the user set wins.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

import psutil  # noqa: E402
import torch  # noqa: E402

from engine.planner import DeviceFacts  # noqa: E402

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
