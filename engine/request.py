"""`DrawRequest`, model profiles and the validation that turns user wishes into a safe request."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from engine.errors import InvalidRequest
from engine.loras import MAX_LORAS, MAX_WEIGHT, MIN_WEIGHT
from engine.loras import NAME as LORA_NAME
from engine.model_files import read_model


class Kind(StrEnum):
    TXT2IMG = "txt2img"
    VARIATION = "variation"
    UPSCALE = "upscale"
    OUTPAINT = "outpaint"


RANDOM_SEED = -1
MAX_SEED = 2**32 - 1
MAX_CHAOS = 100

# The official Z-Image 1024-class sizes, keyed by the ratio users type.
OFFICIAL_1024 = {
    "1:1": (1024, 1024),
    "9:7": (1152, 896),
    "4:3": (1152, 864),
    "3:2": (1248, 832),
    "16:9": (1280, 720),
    "21:9": (1344, 576),
}


def _with_transposes(sizes: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    table = dict(sizes)
    for ratio, (w, h) in sizes.items():
        a, b = ratio.split(":")
        table.setdefault(f"{b}:{a}", (h, w))
    return table


@dataclass(frozen=True)
class ModelProfile:
    """What a model accepts and what it does best; every default a request gets comes from here."""

    name: str
    default_steps: int = 8
    min_steps: int = 1
    max_steps: int = 16
    default_cfg: float = 1.0
    min_cfg: float = 1.0
    max_cfg: float = 2.5
    default_size: tuple[int, int] = (1024, 1024)
    multiple: int = 16
    min_side: int = 256
    max_side: int = 2048
    max_pixels: int = 1536 * 1536
    max_ratio: float = 4.0
    max_prompt_chars: int = 1000
    aspect_ratios: dict[str, tuple[int, int]] = field(default_factory=lambda: _with_transposes(OFFICIAL_1024))
    quality_suffix: str = "highly detailed, sharp focus, natural lighting, masterpiece"
    negative_prompt: str = "blurry, lowres, jpeg artifacts, deformed, watermark, text, oversaturated"
    subtle_strength: float = 0.35
    strong_strength: float = 0.7
    upscale_strength: float = 0.3
    upload_strength: float = 0.6  # a picture brought in with /draw, when --strength does not say
    outpaint_strength: float = 1.0  # Zoom out / Pan: the new area is drawn from noise
    # --draft: half the side (1024 class -> 512 class) in fewer steps; Enhance redraws a draft at full
    # size from it (image to image, the draft's seed) with this strength.
    draft_steps: int = 6
    enhance_strength: float = 0.55
    max_expansion_chars: int = 1500  # a prompt enhancer's rewrite is cut here (at a word)
    upscale_factor: int = 2
    # Upscales may pass max_side/max_pixels, so every official 1024-class size doubles exactly (21:9
    # 1344x576 -> 2688x1152), within the 2048x2048 pixel count users run (FACTS.md: 2048² works).
    upscale_max_side: int = 2688
    upscale_max_pixels: int = 2048 * 2048
    transformer_gb: float = 11.5
    text_encoder_gb: float = 7.5
    vae_gb: float = 0.16
    # A transformer file of one's own (EASEL_TRANSFORMER_FILE, GGUF): its size, whatever the recipe.
    transformer_file_gb: float | None = None
    max_count: int = 4

    @property
    def model_gb(self) -> float:
        return self.transformer_gb + self.text_encoder_gb + self.vae_gb


Z_IMAGE_TURBO = ModelProfile(name="Z-Image-Turbo")


def _quarter(side: int) -> int:
    return max(64, round(side / 4 / 16) * 16)


_TINY_SIZES = {k: (_quarter(w), _quarter(h)) for k, (w, h) in _with_transposes(OFFICIAL_1024).items()}

# The tiny random-weight test model: same rules, sizes a quarter as long so CPU runs stay fast.
TINY = ModelProfile(
    name="tiny-z-image",
    default_size=(256, 256),
    min_side=64,
    max_side=512,
    max_pixels=512 * 512,
    upscale_max_side=2 * max(max(size) for size in _TINY_SIZES.values()),
    upscale_max_pixels=4 * max(w * h for w, h in _TINY_SIZES.values()),  # rounding made 3:2 320x208
    aspect_ratios=_TINY_SIZES,
    transformer_gb=0.001,
    text_encoder_gb=0.001,
    vae_gb=0.001,
)


def seed_for(seed: int, index: int) -> int:
    """The seed of picture `index` of a batch whose first picture has `seed`: redraw that picture
    alone with `--seed seed_for(seed, index)`."""
    return (seed + index) % (MAX_SEED + 1)


# The pipelines of the one family easel draws with: Z-Image's rules (steps, guidance, multiples of 16).
Z_IMAGE_PIPELINES = {"ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"}

# Picture sizes by how many patches a side the transformer's rotary table reaches (`axes_lens`;
# nothing in a model's files names the size it was trained at).  Z-Image-Turbo's 512 draws its
# official 1024-class table; the tiny test model's transformer reaches a quarter of that (128) and
# draws the same table a quarter as long a side (TINY, 256x256 by default).  A model gets the
# largest class its table reaches.
SIZE_CLASSES = ((512, Z_IMAGE_TURBO), (128, TINY))

# Weights within this share of Z-Image-Turbo's (and its sizes): that model or a fine-tune of it,
# which keeps the profile the planner is calibrated on (FACTS.md), exactly.
SAME_WEIGHTS = 0.02


def profile_for(model: str) -> ModelProfile:
    """The profile for a hub id or directory, from the model's own files (engine/model_files.py): its
    rules from its family, its memory from its weights on disk, its picture sizes from its
    transformer.  Z-Image-Turbo's when the files are not here (a hub id before its download), cannot
    be read whole, or belong to another family (loading says what is wrong with them)."""
    files = read_model(model)
    if files is None or files.pipeline not in Z_IMAGE_PIPELINES:
        return Z_IMAGE_TURBO
    sizes = next((profile for reach, profile in SIZE_CLASSES if files.positions >= reach), SIZE_CLASSES[-1][1])
    weights = sum(files.weights_gb.values())
    if sizes is Z_IMAGE_TURBO and abs(weights - Z_IMAGE_TURBO.model_gb) <= SAME_WEIGHTS * Z_IMAGE_TURBO.model_gb:
        return Z_IMAGE_TURBO
    name = Path(model.rstrip("/\\")).name or model
    return replace(sizes, name=name, **{f"{component}_gb": gb for component, gb in files.weights_gb.items()})


@dataclass(frozen=True)
class DrawRequest:
    """The one object that travels from an adapter to the engine.

    `None` means "the profile's default".  `cfg` is the UI convention (1.0 = no guidance);
    the engine hands `cfg - 1` to diffusers.  `source_image` is a path to a PNG on disk for the
    image-to-image kinds.  `count` pictures are drawn, picture i with `seed_for(seed, i)`.
    """

    prompt: str
    negative_prompt: str = ""
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    cfg: float | None = None
    seed: int = RANDOM_SEED
    enhance: bool = True
    kind: Kind = Kind.TXT2IMG
    source_image: str | None = None
    strength: float | None = None
    count: int = 1
    # OUTPAINT: where the source picture sits on the canvas (x, y, width, height), in pixels.
    region: tuple[int, int, int, int] | None = None
    chaos: int = 0  # 0-100: seeded noise on the prompt embeddings (engine/chaos.py); 0 draws as before
    draft: bool = False  # half the side in fewer steps (sized by the parser), a quarter of the cost
    expanded: str = ""  # the prompt enhancer's rewrite of `prompt`, drawn instead of it (not with --raw)
    # --lora name[:weight]: installed LoRAs (engine/loras.py) and their weights, at most 3; a weight
    # of None takes the LoRA's default (`resolve` in engine/loras.py)
    loras: tuple[tuple[str, float | None], ...] = ()

    def to_dict(self) -> dict:
        data = self.__dict__.copy()
        data["kind"] = self.kind.value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> DrawRequest:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["kind"] = Kind(known.get("kind", Kind.TXT2IMG))
        if known.get("region") is not None:
            known["region"] = tuple(known["region"])
        known["loras"] = tuple((str(name), weight) for name, weight in known.get("loras") or ())
        return cls(**known)


_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def clean_text(text: str) -> str:
    """Strip control, zero-width and bidi-override characters; collapse whitespace.

    Format characters (soft hyphens, joiners, tags...) vanish rather than becoming spaces, so
    `grim<soft hyphen>dark` stays one word for the block lists."""
    text = _INVISIBLE.sub("", text)
    text = "".join("" if unicodedata.category(ch) == "Cf" else ch for ch in text)
    text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    return " ".join(text.split())


def size_for_ratio(ratio_w: int, ratio_h: int, profile: ModelProfile) -> tuple[int, int]:
    """The official size for a ratio users know, else the nearest multiple-of-16 size with the
    profile's default pixel count."""
    if ratio_w <= 0 or ratio_h <= 0:
        raise InvalidRequest("error.ratio_invalid", ratio=f"{ratio_w}:{ratio_h}")
    g = math.gcd(ratio_w, ratio_h)
    key = f"{ratio_w // g}:{ratio_h // g}"
    # Compared as ratios, not names: "21:9" and "7:3" (and "42:18") are the same official size.
    for name, size in profile.aspect_ratios.items():
        a, b = (int(part) for part in name.split(":"))
        if a * ratio_h == b * ratio_w:
            return size
    ratio = ratio_w / ratio_h
    if not (1 / profile.max_ratio <= ratio <= profile.max_ratio):
        raise InvalidRequest("error.ratio_extreme", ratio=key, max_ratio=f"{profile.max_ratio:g}:1")
    pixels = profile.default_size[0] * profile.default_size[1]
    m = profile.multiple
    width = max(profile.min_side, round(math.sqrt(pixels * ratio) / m) * m)
    height = max(profile.min_side, round(math.sqrt(pixels / ratio) / m) * m)
    return width, height


def validate(request: DrawRequest, profile: ModelProfile) -> DrawRequest:
    """Return the request with every default filled in and every value checked, or raise
    `InvalidRequest` whose key and params say exactly what is wrong."""
    prompt = clean_text(request.prompt)
    if not prompt:
        raise InvalidRequest("error.prompt_empty")
    if len(prompt) > profile.max_prompt_chars:
        raise InvalidRequest("error.prompt_too_long", length=len(prompt), limit=profile.max_prompt_chars)
    negative = clean_text(request.negative_prompt)
    if len(negative) > profile.max_prompt_chars:
        raise InvalidRequest("error.prompt_too_long", length=len(negative), limit=profile.max_prompt_chars)

    width = profile.default_size[0] if request.width is None else request.width
    height = profile.default_size[1] if request.height is None else request.height
    _check_size(width, height, profile, upscale=request.kind is Kind.UPSCALE)

    steps = profile.default_steps if request.steps is None else request.steps
    if not isinstance(steps, int) or not profile.min_steps <= steps <= profile.max_steps:
        raise InvalidRequest("error.steps_range", value=steps, min=profile.min_steps, max=profile.max_steps)

    cfg = profile.default_cfg if request.cfg is None else float(request.cfg)
    if not math.isfinite(cfg) or not profile.min_cfg <= cfg <= profile.max_cfg:
        raise InvalidRequest("error.cfg_range", value=request.cfg, min=profile.min_cfg, max=profile.max_cfg)

    seed = request.seed
    if not isinstance(seed, int) or not (seed == RANDOM_SEED or 0 <= seed <= MAX_SEED):
        raise InvalidRequest("error.seed_range", value=seed, max=MAX_SEED)

    count = request.count
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= profile.max_count:
        raise InvalidRequest("error.count_range", value=count, min=1, max=profile.max_count)

    chaos = request.chaos
    if not isinstance(chaos, int) or isinstance(chaos, bool) or not 0 <= chaos <= MAX_CHAOS:
        raise InvalidRequest("error.chaos_range", value=chaos, max=MAX_CHAOS)

    _check_loras(request.loras)
    strength = _check_strength(request, profile)
    region = _check_region(request, width, height)
    expanded = clean_text(request.expanded) if request.enhance else ""
    if len(expanded) > profile.max_expansion_chars:
        expanded = expanded[: profile.max_expansion_chars].rsplit(" ", 1)[0]
    return replace(
        request,
        expanded=expanded,
        region=region,
        prompt=prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        steps=steps,
        cfg=cfg,
        seed=seed,
        strength=strength,
    )


def _check_loras(loras: tuple) -> None:
    """At most MAX_LORAS LoRAs, each named once, with weights MIN_WEIGHT..MAX_WEIGHT (or None)."""
    if len(loras) > MAX_LORAS:
        raise InvalidRequest("error.lora_count", count=len(loras), max=MAX_LORAS)
    names = [name for name, _ in loras]
    if len(set(names)) != len(names):
        raise InvalidRequest("error.lora_twice", name=next(n for n in names if names.count(n) > 1))
    for name, weight in loras:
        if not isinstance(name, str) or not LORA_NAME.fullmatch(name):
            raise InvalidRequest("error.lora_format", value=str(name)[:48])
        number = isinstance(weight, int | float) and not isinstance(weight, bool)
        if weight is not None and not (number and math.isfinite(weight) and MIN_WEIGHT <= weight <= MAX_WEIGHT):
            raise InvalidRequest("error.lora_weight", name=name, value=weight, min=MIN_WEIGHT, max=MAX_WEIGHT)


_DEFAULT_STRENGTH = {Kind.UPSCALE: "upscale_strength", Kind.OUTPAINT: "outpaint_strength"}


def _check_strength(request: DrawRequest, profile: ModelProfile) -> float | None:
    """How far an image-to-image kind moves from its source (the profile's default for its kind);
    None for text to image."""
    if request.kind is Kind.TXT2IMG:
        return None
    if not request.source_image:
        raise InvalidRequest("error.source_missing")
    default = getattr(profile, _DEFAULT_STRENGTH.get(request.kind, "subtle_strength"))
    strength = default if request.strength is None else float(request.strength)
    if not math.isfinite(strength) or not 0.05 <= strength <= 1.0:
        raise InvalidRequest("error.strength_range", value=request.strength)
    return strength


def _check_region(request: DrawRequest, width: int, height: int) -> tuple[int, int, int, int] | None:
    """An outpaint's region must lie on its canvas and leave something to draw; other kinds have none."""
    if request.kind is not Kind.OUTPAINT:
        return None
    region = request.region
    if region is None or len(region) != 4 or not all(isinstance(v, int) for v in region):
        raise InvalidRequest("error.region_invalid", region=region)
    x, y, w, h = region
    if x < 0 or y < 0 or w < 16 or h < 16 or x + w > width or y + h > height or (w, h) == (width, height):
        raise InvalidRequest("error.region_invalid", region=region)
    return tuple(region)


def size_limits(profile: ModelProfile, upscale: bool = False) -> tuple[int, int]:
    """(longest side, most pixels) a request of that kind may have."""
    if upscale:
        return profile.upscale_max_side, profile.upscale_max_pixels
    return profile.max_side, profile.max_pixels


def fit_size(width: int, height: int, profile: ModelProfile, upscale: bool = False) -> tuple[int, int]:
    """The size, scaled down (never up) to what a request of that kind may have: same aspect ratio,
    multiples of `profile.multiple`, e.g. an upscaled 2048x2048 picture varied as 1536x1536."""
    max_side, max_pixels = size_limits(profile, upscale)
    scale = min(1.0, max_side / max(width, height), math.sqrt(max_pixels / (width * height)))
    m = profile.multiple
    return tuple(max(profile.min_side, int(side * scale) // m * m) for side in (width, height))


def draft_size(width: int, height: int, profile: ModelProfile) -> tuple[int, int]:
    """A draft's size: half the side, on the profile's multiple (1024x1024 -> 512x512, 1248x832 ->
    624x416: the 512 class of the official sizes); never under the smallest side."""
    m = profile.multiple
    return tuple(max(profile.min_side, round(side / 2 / m) * m) for side in (width, height))


def _check_size(width: int, height: int, profile: ModelProfile, upscale: bool = False) -> None:
    m = profile.multiple
    max_side, max_pixels = size_limits(profile, upscale)
    for side_name, side in (("width", width), ("height", height)):
        if not isinstance(side, int) or side % m:
            suggestion = max(profile.min_side, round(side / m) * m) if isinstance(side, int) else None
            raise InvalidRequest("error.size_multiple", side=side_name, value=side, multiple=m, suggestion=suggestion)
        if not profile.min_side <= side <= max_side:
            raise InvalidRequest("error.size_range", side=side_name, value=side, min=profile.min_side, max=max_side)
    if width * height > max_pixels:
        raise InvalidRequest("error.size_pixels", width=width, height=height, max_pixels=max_pixels)
    if max(width, height) / min(width, height) > profile.max_ratio:
        raise InvalidRequest("error.ratio_extreme", ratio=f"{width}:{height}", max_ratio=f"{profile.max_ratio:g}:1")
