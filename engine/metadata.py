"""The `parameters` text chunk that A1111-style tools (and civitai, and ComfyUI readers) understand."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from engine.loras import tags
from engine.request import DrawRequest


def parameters_text(request: DrawRequest, seed: int, model: str) -> str:
    """A1111 format: prompt line, optional negative line, then comma-separated settings."""
    lines = [request.expanded or request.prompt]  # what the model drew from
    if request.loras:  # A1111 writes the LoRAs into the prompt line: `<lora:name:0.8>`
        lines[0] = f"{lines[0]} {tags(request.loras)}"
    if request.negative_prompt:
        lines.append(f"Negative prompt: {request.negative_prompt}")
    settings = [
        f"Steps: {request.steps}",
        "Sampler: Euler (flow match)",
        f"CFG scale: {request.cfg:g}",
        f"Seed: {seed}",
        f"Size: {request.width}x{request.height}",
        f"Model: {model}",
    ]
    if request.kind.value != "txt2img":
        settings.append(f"Denoising strength: {request.strength:g}")
    settings.append(f"Enhance: {'on' if request.enhance else 'off'}")
    if request.expanded:  # the user's own words, beside the enhancer's expansion above
        settings.append(f"User prompt: {json.dumps(request.prompt, ensure_ascii=False)}")
    if request.chaos:
        settings.append(f"Chaos: {request.chaos}")
    if request.draft:
        settings.append("Draft: on")
    lines.append(", ".join(settings))
    return "\n".join(lines)


def save_png(image: Image.Image, path: str | Path, parameters: str, compress_level: int = 1) -> Path:
    """Write a PNG carrying the parameters chunk; fast compression keeps it off the critical path."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", pnginfo=info, compress_level=compress_level)
    return path


def read_parameters(path: str | Path) -> str | None:
    with Image.open(path) as image:
        return image.text.get("parameters") if hasattr(image, "text") else None
