"""Make a finished picture fit an interaction's upload limit.

The PNG goes out untouched when it fits (Discord keeps files byte for byte, so the parameters chunk
survives).  Otherwise: lossless WebP, then JPEG at falling quality, then smaller sizes.  Synchronous
on purpose: run it with `asyncio.to_thread`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

JPEG_QUALITIES = (95, 90, 85, 80, 70, 60, 50, 40)
SHRINK = 0.75
SMALLEST_SIDE = 16


@dataclass(frozen=True)
class Upload:
    data: bytes
    extension: str  # "png", "webp", "jpg"
    reencoded: bool


class TooLarge(Exception):
    """Nothing we can make of the picture fits the limit."""


def fit_to_limit(path: Path, limit: int) -> Upload:
    """The file as it is when it fits `limit` bytes, else the best re-encoding that does."""
    data = path.read_bytes()
    if len(data) <= limit:
        return Upload(data, path.suffix.lstrip(".").lower() or "png", reencoded=False)
    with Image.open(path) as image:
        image.load()
    webp = _encode(image, "WEBP", lossless=True, method=4)
    if len(webp) <= limit:
        return Upload(webp, "webp", reencoded=True)
    rgb = image.convert("RGB")
    while min(rgb.size) >= SMALLEST_SIDE:
        for quality in JPEG_QUALITIES:
            jpeg = _encode(rgb, "JPEG", quality=quality, optimize=True)
            if len(jpeg) <= limit:
                return Upload(jpeg, "jpg", reencoded=True)
        width, height = rgb.size
        rgb = rgb.resize((max(1, int(width * SHRINK)), max(1, int(height * SHRINK))), Image.Resampling.LANCZOS)
    raise TooLarge(f"{path.name} does not fit in {limit} bytes at any size")


def _encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()
