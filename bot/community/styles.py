"""Style presets: `--style anime` wraps the user's words in a tested prompt template, adds a negative
prompt and, when the user chose no shape, a default aspect ratio.

A few presets ship built in; admins add or override presets in a TOML file (`EASEL_STYLES_FILE`,
default `<data dir>/styles.toml`), read again when it changes:

    [neon]
    prompt = "{prompt}, neon signs, synthwave palette, night"
    negative = "daylight"
    aspect_ratio = "16:9"
    description = "Neon night"
    description_zh = "霓虹夜景"
    loras = ["neon-glow:0.8"]   # LoRAs (engine/loras.py) the preset brings along; the user's own win
"""

from __future__ import annotations

import logging
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from bot.community.watched import WatchedFile
from engine.errors import InvalidRequest
from engine.loras import MAX_LORAS, MAX_WEIGHT, MIN_WEIGHT
from engine.loras import NAME as LORA_NAME
from engine.request import DrawRequest, ModelProfile, size_for_ratio

log = logging.getLogger(__name__)

PLACEHOLDER = "{prompt}"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_RATIO = re.compile(r"([0-9]{1,3}):([0-9]{1,3})")


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str  # a template; {prompt} is where the user's words go
    negative: str = ""
    aspect_ratio: str | None = None
    description: str = ""
    description_zh: str = ""
    loras: tuple[tuple[str, float | None], ...] = ()

    def describe(self, lang: str) -> str:
        return (self.description_zh if lang == "zh" else "") or self.description

    def apply(self, request: DrawRequest, profile: ModelProfile) -> DrawRequest:
        """The request with the template around its prompt; the user's own choices win."""
        # replace(), not format(): the user's words may hold braces.
        prompt = self.prompt.replace(PLACEHOLDER, request.prompt)
        negative = ", ".join(part for part in (request.negative_prompt, self.negative) if part)
        width, height = request.width, request.height
        if width is None and height is None and self.aspect_ratio:
            width, height = size_for_ratio(*_ratio(self.aspect_ratio), profile)
        named = {name for name, _ in request.loras}
        loras = (*request.loras, *(lora for lora in self.loras if lora[0] not in named))
        return replace(request, prompt=prompt, negative_prompt=negative, width=width, height=height, loras=loras)


BUILT_IN: tuple[Style, ...] = (
    Style(
        "photo",
        "{prompt}, professional photograph, 35mm lens, natural light, realistic textures, shallow depth of field",
        "illustration, painting, cartoon, cgi, 3d render",
        None,
        "Realistic photograph",
        "写实摄影",
    ),
    Style(
        "anime",
        "anime illustration of {prompt}, cel shading, clean line art, vibrant colors, detailed background",
        "photo, realistic, 3d render",
        "2:3",
        "Anime illustration, portrait shape",
        "日系动漫插画，竖构图",
    ),
    Style(
        "watercolor",
        "watercolor painting of {prompt}, soft washes, visible paper texture, gentle color bleeding",
        "photo, 3d render, hard digital lines",
        None,
        "Watercolor on paper",
        "纸上水彩",
    ),
    Style(
        "ink",
        "traditional Chinese ink wash painting of {prompt}, sumi-e brush strokes, monochrome ink, rice paper,"
        " generous empty space",
        "color, photo, 3d render",
        "2:3",
        "Chinese ink wash (shuimo)",
        "中国水墨画",
    ),
    Style(
        "cinematic",
        "cinematic film still of {prompt}, anamorphic lens, dramatic lighting, color graded, subtle film grain",
        "cartoon, illustration, flat lighting",
        "16:9",
        "Film still, wide screen",
        "电影剧照，宽银幕",
    ),
)


class InvalidStyle(ValueError):
    pass


def style_from(name: str, table: object, profile: ModelProfile) -> Style:
    """One preset from its TOML table, or InvalidStyle saying what is wrong."""
    if not NAME.fullmatch(name):
        raise InvalidStyle(f"name {name!r}: use 1-32 lower-case letters, digits, - or _")
    if not isinstance(table, dict):
        raise InvalidStyle(f"{name}: expected a table of settings")
    prompt = table.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidStyle(f"{name}: `prompt` is missing")
    if PLACEHOLDER not in prompt:
        prompt = f"{PLACEHOLDER}, {prompt}"
    ratio = table.get("aspect_ratio")
    if ratio is not None:
        try:
            size_for_ratio(*_ratio(str(ratio)), profile)
        except (InvalidRequest, InvalidStyle) as error:
            raise InvalidStyle(f"{name}: aspect_ratio {ratio!r} is not usable") from error
    texts = {key: table.get(key, "") for key in ("negative", "description", "description_zh")}
    if not all(isinstance(value, str) for value in texts.values()):
        raise InvalidStyle(f"{name}: negative and descriptions must be text")
    descriptions = texts["description"], texts["description_zh"]
    return Style(name, prompt, texts["negative"], ratio and str(ratio), *descriptions, _loras(name, table))


def _loras(name: str, table: dict) -> tuple[tuple[str, float | None], ...]:
    """`loras = ["ink:0.8", "clay"]`: up to MAX_LORAS names, each with an optional weight."""
    entries = table.get("loras", [])
    if not isinstance(entries, list) or len(entries) > MAX_LORAS or not all(isinstance(e, str) for e in entries):
        raise InvalidStyle(f'{name}: loras must be a list of at most {MAX_LORAS} texts like "ink:0.8"')
    loras = []
    for entry in entries:
        lora, _, weight_text = entry.strip().lower().partition(":")
        try:
            weight = float(weight_text) if weight_text else None
        except ValueError:
            weight = float("nan")
        if not LORA_NAME.fullmatch(lora) or (weight is not None and not MIN_WEIGHT <= weight <= MAX_WEIGHT):
            raise InvalidStyle(f'{name}: LoRA {entry!r} should look like "ink" or "ink:0.8" (weight -2 to 2)')
        loras.append((lora, weight))
    return tuple(loras)


def _ratio(text: str) -> tuple[int, int]:
    match = _RATIO.fullmatch(text.strip())
    if match is None:
        raise InvalidStyle(f"aspect ratio {text!r}")
    return int(match[1]), int(match[2])


class StyleBook:
    """The built-in presets plus the admins' file (which may override a built-in by name)."""

    def __init__(self, path: Path | None, profile: ModelProfile) -> None:
        self.path = path
        self.profile = profile
        self.file = WatchedFile(path)
        self._custom: dict[str, Style] = {}
        self.problems: list[str] = []  # what the last read of the file skipped, for `easel doctor`

    def all(self) -> list[Style]:
        self._refresh()
        styles = {style.name: style for style in BUILT_IN}
        styles.update(self._custom)
        return list(styles.values())

    def get(self, name: str) -> Style | None:
        return next((style for style in self.all() if style.name == name.lower()), None)

    def _refresh(self) -> None:
        try:
            changed, text = self.file.changed()
            if not changed:
                return
            tables = tomllib.loads(text or "")  # gone: no presets of the admins'
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            self.problems = [f"{self.path}: {error}"]
            log.error("style presets in %s not read: %s; keeping the previous ones", self.path, error)
            return
        custom: dict[str, Style] = {}
        problems = []
        for name, table in tables.items():
            try:
                custom[name] = style_from(name, table, self.profile)
            except InvalidStyle as error:
                problems.append(str(error))
                log.warning("style preset skipped: %s", error)
        self._custom, self.problems = custom, problems
        log.info("style presets: %d from %s", len(custom), self.path)
