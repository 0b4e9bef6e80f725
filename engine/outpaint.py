"""Outpainting (Zoom out, Pan): where the picture sits on a larger canvas, the canvas and mask the
inpaint pipeline draws on, and the original pixels laid back over the result with a blended seam.

Pure geometry and Pillow; the engine runs the pipeline (`ZImageInpaintPipeline.from_pipe`)."""

from __future__ import annotations

from enum import StrEnum

from PIL import Image, ImageDraw, ImageFilter

from engine.request import ModelProfile, fit_size

Region = tuple[int, int, int, int]  # x, y, width, height of the picture on the canvas


class Grow(StrEnum):
    """How the canvas grows around the picture."""

    ZOOM_1_5 = "zoom_1_5"
    ZOOM_2 = "zoom_2"
    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"


ZOOM = {Grow.ZOOM_1_5: 1.5, Grow.ZOOM_2: 2.0}
PAN = 0.5  # a pan adds half the picture on one side


def layout(width: int, height: int, grow: Grow, profile: ModelProfile) -> tuple[int, int, Region]:
    """(canvas width, canvas height, where the picture sits): the grown canvas, scaled down into the
    profile's bounds in multiples of its step, with the picture scaled by the same factor."""
    factor = ZOOM.get(grow, 1.0)
    wide = 1 + PAN if grow in (Grow.LEFT, Grow.RIGHT) else factor
    tall = 1 + PAN if grow in (Grow.UP, Grow.DOWN) else factor
    canvas_w, canvas_h = fit_size(round(width * wide), round(height * tall), profile)
    inner_w, inner_h = round(canvas_w / wide), round(canvas_h / tall)
    x = {Grow.LEFT: canvas_w - inner_w, Grow.RIGHT: 0}.get(grow, (canvas_w - inner_w) // 2)
    y = {Grow.UP: canvas_h - inner_h, Grow.DOWN: 0}.get(grow, (canvas_h - inner_h) // 2)
    return canvas_w, canvas_h, (x, y, inner_w, inner_h)


def overlap(region: Region) -> int:
    """Pixels inside the picture's edge that are redrawn and blended: the seam band."""
    return max(4, min(region[2], region[3]) // 32)


def canvas_and_mask(source: Image.Image, size: tuple[int, int], region: Region) -> tuple[Image.Image, Image.Image]:
    """The starting canvas (the picture in its place over a blurred stretch of itself) and the mask
    (white: draw; black: keep), which also opens the seam band inside the picture's edge."""
    x, y, w, h = region
    inner = source.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
    canvas = source.convert("RGB").resize(size, Image.Resampling.BILINEAR).filter(ImageFilter.GaussianBlur(16))
    canvas.paste(inner, (x, y))
    band = overlap(region)
    mask = Image.new("L", size, 255)
    ImageDraw.Draw(mask).rectangle((x + band, y + band, x + w - band - 1, y + h - band - 1), fill=0)
    return canvas, mask


def keep_original(drawn: Image.Image, source: Image.Image, region: Region) -> Image.Image:
    """The drawn canvas with the original picture laid back in its place: exact inside the seam
    band, fading into the drawn pixels across it."""
    x, y, w, h = region
    band = overlap(region)
    inner = source.convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
    alpha = Image.new("L", (w, h), 0)
    ImageDraw.Draw(alpha).rectangle((band, band, w - band - 1, h - band - 1), fill=255)
    alpha = alpha.filter(ImageFilter.BoxBlur(band / 2))
    # The blur leaks into the inner rectangle's edge; keep the middle exact.
    ImageDraw.Draw(alpha).rectangle((band, band, w - band - 1, h - band - 1), fill=255)
    result = drawn.convert("RGB").copy()
    result.paste(inner, (x, y), alpha)
    return result
