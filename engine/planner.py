"""The memory planner: a pure function from device facts and request size to a plan.

Figures are calibrated on the published Z-Image-Turbo measurements (FACTS.md, 1024x1024, bf16):
all-on-GPU peaks at ~24.9 GB, model offload at ~13.5 GB, leaf group offload with streams at ~6.6 GB,
sequential offload at ~1.9 GB.  Activation and VAE-decode memory scale with the pixel count;
activations also with the number of pictures denoised in one call (`batch`), decode does not (the
engine decodes a batch one picture at a time).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum

from engine.quantize import SCALE, Recipe
from engine.request import ModelProfile

HEADROOM_GB = 1.2
ONE_MPX = 1024 * 1024


class Placement(StrEnum):
    """Where the weights live while the model runs, fastest first."""

    GPU = "gpu"
    MODEL_OFFLOAD = "model_offload"
    GROUP_OFFLOAD = "group_offload"
    SEQUENTIAL_OFFLOAD = "sequential_offload"
    CPU = "cpu"
    CPU_LOW_MEMORY = "cpu_low_memory"


GPU_LADDER = [Placement.GPU, Placement.MODEL_OFFLOAD, Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD]
CPU_LADDER = [Placement.CPU, Placement.CPU_LOW_MEMORY]

# Peak system RAM of each GPU placement (FACTS.md, peak RAM column), per GB of model: loading and
# what offload keeps off the GPU.  Group offload pins a copy of every weight up front; with
# low_cpu_mem_usage it pins each layer as it streams instead (less RAM, speed not yet measured).
_RAM_PER_MODEL_GB = {
    Placement.GPU: 9.8 / 19.2,
    Placement.MODEL_OFFLOAD: 24.4 / 19.2,
    Placement.GROUP_OFFLOAD: 33.2 / 19.2,
    Placement.SEQUENTIAL_OFFLOAD: 21.0 / 19.2,
}
_GROUP_OFFLOAD_LOW_RAM_PER_MODEL_GB = 22.3 / 19.2


@dataclass(frozen=True)
class DeviceFacts:
    """What the planner needs to know about the machine; `probe_device()` reads it from torch."""

    kind: str  # "cuda" or "cpu"
    name: str = "cpu"
    total_vram_gb: float = 0.0
    free_vram_gb: float = 0.0
    compute_capability: tuple[int, int] | None = None
    real_bf16: bool = False
    system_ram_gb: float = 16.0
    swap_gb: float = 0.0

    @property
    def memory_gb(self) -> float:
        """RAM and swap: what the kernel can give the process before it kills it."""
        return self.system_ram_gb + self.swap_gb

    @property
    def is_gpu(self) -> bool:
        return self.kind == "cuda"


@dataclass(frozen=True)
class Plan:
    """How one request will run.  Plain data: recorded with every job."""

    device: str
    dtype: str  # "bfloat16", "float16" or "float32"
    placement: Placement
    vae_tiling: bool
    clamp_fp16: bool
    estimated_peak_gb: float
    fits: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)
    low_cpu_memory: bool = False  # group offload pins each layer as it goes, not all weights up front
    recipe: str = Recipe.NONE.value  # the weights' own precision, or int8 / int4 (engine/quantize.py)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["placement"] = self.placement.value
        data["warnings"] = list(self.warnings)
        return data

    def describe(self) -> str:
        weights = f" {self.recipe} weights" if self.recipe != Recipe.NONE else ""
        tiling = ", VAE tiling" if self.vae_tiling else ""
        low_ram = ", low RAM" if self.low_cpu_memory else ""
        return f"{self.placement.value} {self.dtype}{weights}{tiling}{low_ram} (~{self.estimated_peak_gb:.1f} GB)"


def choose_dtype(device: DeviceFacts) -> tuple[str, bool]:
    """bf16 where the card really has it; fp16 with overflow clamping before Ampere; fp32 on CPU."""
    if not device.is_gpu:
        return "float32", False
    if device.real_bf16:
        return "bfloat16", False
    return "float16", True


def safer_dtype(dtype: str, real_bf16: bool = True) -> str:
    """The precision to retry with after non-finite output: bf16 only where the card really has it
    (emulated bf16 on Turing/Volta is far slower than fp32)."""
    if dtype == "float16" and real_bf16:
        return "bfloat16"
    return "float32"


def estimate_peak_gb(
    placement: Placement,
    profile: ModelProfile,
    width: int,
    height: int,
    cfg: float = 1.0,
    vae_tiling: bool = False,
    bytes_per_param: int = 2,
    batch: int = 1,
) -> float:
    """Peak accelerator memory (GB) for `batch` pictures denoised in one call under a placement."""
    mpx = width * height / ONE_MPX
    streams = 2 if cfg > 1.0 else 1  # guidance runs the negative prompt in the same forward
    denoise = 2.0 * mpx * streams * batch
    decode = 0.8 if vae_tiling else 5.7 * mpx
    weights = profile.model_gb * bytes_per_param / 2
    if placement in (Placement.CPU, Placement.CPU_LOW_MEMORY):
        return 0.0
    if placement is Placement.GPU:
        return weights + max(denoise, decode)
    if placement is Placement.MODEL_OFFLOAD:
        scale = bytes_per_param / 2
        return max(profile.text_encoder_gb * scale, profile.transformer_gb * scale + denoise, decode)
    if placement is Placement.GROUP_OFFLOAD:
        return 4.6 * weights / Z_WEIGHTS_GB + max(denoise, decode)
    return 0.4 * weights / Z_WEIGHTS_GB + max(0.75 * denoise, decode * 0.5)


Z_WEIGHTS_GB = 11.5 + 7.5 + 0.16


def _needs_tiling(placement: Placement, width: int, height: int) -> bool:
    return placement not in (Placement.GPU, Placement.CPU) or width * height > 1.5 * ONE_MPX


def plan_for(
    device: DeviceFacts,
    profile: ModelProfile,
    width: int,
    height: int,
    cfg: float = 1.0,
    dtype: str | None = None,
    batch: int = 1,
    recipe: Recipe = Recipe.NONE,
    gguf: bool | None = None,
) -> Plan:
    """The fastest plan that leaves at least HEADROOM_GB free; the safest one when none does."""
    plans = ladder(device, profile, width, height, cfg, dtype, batch, recipe, gguf)
    return plans[first_fitting(plans)]


def first_fitting(plans: list[Plan]) -> int:
    """The index of the fastest plan that fits; the safest one's when none does."""
    return next((index for index, plan in enumerate(plans) if plan.fits), len(plans) - 1)


def ladder(
    device: DeviceFacts,
    profile: ModelProfile,
    width: int,
    height: int,
    cfg: float = 1.0,
    dtype: str | None = None,
    batch: int = 1,
    recipe: Recipe = Recipe.NONE,
    gguf: bool | None = None,
) -> list[Plan]:
    """Every plan for this device from fastest to safest, for `batch` pictures denoised in one call;
    the OOM ladder walks down it.  `profile` is the model's; its weights are sized for `recipe` here.
    A GGUF transformer (`gguf`, int4's by default) has no sequential offload: accelerate re-wraps each
    weight it moves without its quantization type, so that rung would fail every job; group offload,
    which moves whole tensors, is its safest rung."""
    profile = quantized(profile, recipe)
    gguf = recipe is Recipe.INT4 if gguf is None else gguf
    default_dtype, _ = choose_dtype(device)
    dtype = dtype or default_dtype
    clamp = dtype == "float16"
    size = bytes_per_param(dtype)
    rungs = gpu_rungs(gguf) if device.is_gpu else CPU_LADDER
    plans = []
    for placement in rungs:
        tiling = _needs_tiling(placement, width, height)
        peak = estimate_peak_gb(placement, profile, width, height, cfg, tiling, size, batch)
        fits = not device.is_gpu or peak + HEADROOM_GB <= device.free_vram_gb
        warnings = []
        pinned = ram_needed_gb(placement, profile, False, size)
        low_ram = placement is Placement.GROUP_OFFLOAD and pinned > device.memory_gb
        if placement is not Placement.GPU and ram_needed_gb(placement, profile, low_ram, size) > device.memory_gb:
            warnings.append("warning.low_system_ram")
        if clamp:
            warnings.append("warning.fp16_clamped")
        plan = Plan(device.kind, dtype, placement, tiling, clamp, round(peak, 2), fits, tuple(warnings), low_ram)
        plans.append(replace(plan, recipe=recipe.value))
    return plans


def gpu_rungs(gguf: bool = False) -> list[Placement]:
    """A GPU's placements, fastest first; a GGUF transformer stops at group offload (see `ladder`)."""
    return [rung for rung in GPU_LADDER if not (gguf and rung is Placement.SEQUENTIAL_OFFLOAD)]


def quantized(profile: ModelProfile, recipe: Recipe) -> ModelProfile:
    """The profile with its transformer and text encoder sized for `recipe` (engine/quantize.py)."""
    scale = SCALE[recipe]
    transformer_gb = profile.transformer_file_gb or profile.transformer_gb * scale["transformer"]
    if recipe is Recipe.NONE and profile.transformer_file_gb is None:
        return profile
    return replace(
        profile,
        transformer_gb=transformer_gb,
        text_encoder_gb=profile.text_encoder_gb * scale["text_encoder"],
        transformer_file_gb=None,
    )


# What `auto` tries, best first: the model's own weights where they run resident or with model
# offload; then int8, then int4, kept on the GPU; then int8 or int4 streamed by group offload (better
# than sequential offload by several times, FACTS.md).  Quality before speed among weights that need
# the same kind of offload.
RESIDENT = (Placement.GPU, Placement.MODEL_OFFLOAD)
AUTO_ORDER = (
    (Recipe.NONE, RESIDENT),
    (Recipe.INT8, RESIDENT),
    (Recipe.INT8, (Placement.GROUP_OFFLOAD,)),
    (Recipe.INT4, RESIDENT),
    (Recipe.INT4, (Placement.GROUP_OFFLOAD,)),
)


def choose_recipe(device: DeviceFacts, profile: ModelProfile, wanted: str = "auto") -> Recipe:
    """The weights to load for this machine: `wanted` when an admin forces one; for `auto`, the first
    of AUTO_ORDER whose plan for the default size fits both VRAM and RAM + swap.  A CPU keeps the
    model's own weights (its RAM is not planned); a card nothing fits gets int4, the smallest."""
    if wanted != "auto":
        return Recipe(wanted)
    if not device.is_gpu:
        return Recipe.NONE
    side = min(profile.default_size)
    for recipe, placements in AUTO_ORDER:
        plan = plan_for(device, profile, side, side, recipe=recipe)
        if plan.fits and plan.placement in placements and fits_in_ram(device, quantized(profile, recipe), plan):
            return recipe
    return Recipe.INT4


def bytes_per_param(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def ram_needed_gb(
    placement: Placement, profile: ModelProfile, low_cpu_memory: bool = False, bytes_per_param: int = 2
) -> float:
    """Peak system RAM (GB) a GPU placement needs for this model in this precision (FACTS's figures
    are bf16; fp32 doubles them); 0 where not measured (CPU rungs)."""
    per_gb = _RAM_PER_MODEL_GB.get(placement, 0.0)
    if low_cpu_memory and placement is Placement.GROUP_OFFLOAD:
        per_gb = _GROUP_OFFLOAD_LOW_RAM_PER_MODEL_GB
    return round(per_gb * profile.model_gb * bytes_per_param / 2, 1)


def fits_in_ram(device: DeviceFacts, profile: ModelProfile, plan: Plan) -> bool:
    """Whether RAM + swap hold a change to `plan`: the whole pipeline is cast on the CPU (fp32 is
    38 GB for Z-Image-Turbo), then the placement keeps what it offloads there.  Running short gets
    the process killed rather than an error anyone can answer."""
    weights = profile.model_gb * bytes_per_param(plan.dtype) / 2 * 1.1
    return max(weights, plan_ram_gb(plan, profile)) <= device.memory_gb


def plan_ram_gb(plan: Plan, profile: ModelProfile) -> float:
    """Peak system RAM (GB) this plan's placement needs, in its precision and RAM mode."""
    return ram_needed_gb(plan.placement, profile, plan.low_cpu_memory, bytes_per_param(plan.dtype))


def ram_shortfall(facts: DeviceFacts, profile: ModelProfile, recipe: Recipe = Recipe.NONE) -> str | None:
    """Why RAM + swap cannot hold what the plan for the default size, or a rung it may fall back to,
    keeps in system RAM (offload keeps the weights there); None when it can.  A machine short of it
    is killed by the kernel, while loading or mid-job, which nothing can explain afterwards: say it
    before loading."""
    if not facts.is_gpu:
        return None
    side = min(profile.default_size)
    plans = ladder(facts, profile, side, side, recipe=recipe)
    profile = quantized(profile, recipe)
    planned = first_fitting(plans)
    worst = max(plans[planned:], key=lambda plan: plan_ram_gb(plan, profile))
    needed = plan_ram_gb(worst, profile)
    if needed <= facts.memory_gb:
        return None
    how = "runs as" if worst is plans[planned] else f"runs as {plans[planned].placement.value} and may fall back to"
    return (
        f"{profile.name} at {side}x{side} {how} {worst.placement.value} here, which needs ~{needed:.0f} GB "
        f"of system RAM; this machine has {facts.system_ram_gb:.0f} GB RAM + {facts.swap_gb:.0f} GB swap. "
        f"Add swap (RAM + swap of {needed + 2:.0f} GB or more), or the process may be killed."
    )


def quantizing_ram_gb(profile: ModelProfile, recipe: Recipe) -> float:
    """Peak system RAM (GB, not counting memory-mapped files) of the first start with `recipe`:
    torchao quantizes a component while it loads it in bf16, one component at a time, and the GGUF
    writer streams tensor by tensor.  bench/quantized_ram.py measured 11.8 GB for int8 (the 11.5 GB
    transformer) and 7.4 GB for int4 (the 7.5 GB text encoder)."""
    if recipe is Recipe.NONE:
        return 0.0
    # A transformer file of one's own (EASEL_TRANSFORMER_FILE): only the text encoder is quantized.
    int8_transformer = recipe is Recipe.INT8 and profile.transformer_file_gb is None
    loaded_whole = [profile.text_encoder_gb] + ([profile.transformer_gb] if int8_transformer else [])
    return round(max(loaded_whole) * 1.05, 1)


def quantizing_shortfall(facts: DeviceFacts, profile: ModelProfile, recipe: Recipe) -> str | None:
    """Why quantizing once may not fit in RAM + swap; None when it does (later starts need less)."""
    needed = quantizing_ram_gb(profile, recipe)
    if needed <= facts.memory_gb:
        return None
    return (
        f"the first start quantizes {profile.name} to {recipe.value}, which needs ~{needed:.0f} GB of system RAM; "
        f"this machine has {facts.system_ram_gb:.0f} GB RAM + {facts.swap_gb:.0f} GB swap. Add swap for that "
        f"start (later starts load the quantized copy and need less), or quantize on a bigger machine and copy "
        f"EASEL_DATA_DIR/quantized over."
    )


def largest_fitting_square(
    device: DeviceFacts, profile: ModelProfile, cfg: float = 1.0, gguf: bool = False
) -> int | None:
    """The largest square side (multiple of 64, within the profile) the safest rung could still hold:
    sequential offload, or group offload for a GGUF transformer (which has no sequential rung)."""
    if not device.is_gpu:
        return None
    safest = gpu_rungs(gguf)[-1]
    side = profile.max_side
    while side >= profile.min_side:
        if estimate_peak_gb(safest, profile, side, side, cfg, True) + HEADROOM_GB <= device.free_vram_gb:
            return side
        side -= 64
    return None
