"""Pictures people bring: read safely, normalised, stored without their metadata.

`read_picture` refuses what must not be opened (only PNG, JPEG, WebP and GIF decoders are tried; a
header claiming more pixels than allowed is refused before any pixel is decoded), what is not a
picture, what is cut short, and what cannot be made RGB (any decode error is BadUpload); it takes the
first frame of an animation, applies EXIF orientation, and turns CMYK, palette, grey and alpha
pictures into plain RGB (alpha over white).  `store_upload` writes a fresh PNG (no EXIF, no text
chunks) under root/uploads/YYYY/MM/DD/.  Synchronous: call through `asyncio.to_thread`."""

from __future__ import annotations

import io
import os
import secrets
import tempfile
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageOps

MAX_PIXELS = 40_000_000  # a header claiming more is refused before decoding (Pillow warns at 89M)
MAX_STORED_SIDE = 2048  # larger pictures are stored scaled down: the engine never draws from more
UPLOADS = "uploads"  # the folder under the images root
# The only decoders a stranger's file reaches: no TIFF IFD walks, no EPS through Ghostscript, no PSD...
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


class BadUpload(Exception):
    """A file that cannot be drawn from; `key` and `params` name the message that says why."""

    def __init__(self, key: str, **params: object) -> None:
        self.key = key
        self.params = params
        super().__init__(key)


@dataclass(frozen=True)
class Picture:
    image: Image.Image  # RGB, orientation applied, no metadata
    animated: bool  # the file had more frames: this is the first


def read_picture(data: bytes, max_pixels: int = MAX_PIXELS) -> Picture:
    """The picture in `data`, or BadUpload (too many pixels, not a picture, truncated)."""
    limit = {"limit": round(max_pixels / 1_000_000)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
        if image.width * image.height > max_pixels:
            raise BadUpload("error.upload_too_many_pixels", **limit)
        animated = getattr(image, "n_frames", 1) > 1
        image.seek(0)
        image.load()  # a truncated file fails here (Pillow does not load truncated images by default)
        image = ImageOps.exif_transpose(image)
        plain = _plain_rgb(image)  # an odd mode (LAB, HSV, I;16...) Pillow cannot convert fails here
    except BadUpload:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadUpload("error.upload_too_many_pixels", **limit) from exc
    except Exception as exc:  # not a picture, cut short, bad EXIF (struct.error), an unconvertible mode...
        raise BadUpload("error.upload_not_image") from exc
    return Picture(plain, animated)


def _plain_rgb(image: Image.Image) -> Image.Image:
    """RGB pixels only: alpha laid over white, CMYK and palettes converted, every metadata gone."""
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, mask=rgba.getchannel("A"))
    image = image.convert("RGB")
    if max(image.size) > MAX_STORED_SIDE:
        image.thumbnail((MAX_STORED_SIDE, MAX_STORED_SIDE), Image.Resampling.LANCZOS)
    return Image.frombytes("RGB", image.size, image.tobytes())  # a fresh image: no info, no EXIF


def store_upload(root: Path, image: Image.Image) -> Path:
    """Write the picture as a PNG under root/uploads/ (atomically) and return its path."""
    folder = Path(root) / UPLOADS / datetime.now(UTC).strftime("%Y/%m/%d")
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"upload-{secrets.token_hex(8)}.png"
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as file:
            image.save(file, format="PNG", compress_level=1)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target


def stored_upload(root: Path, source: str | None) -> Path | None:
    """The stored upload a job's `source_image` names (a file under root/uploads/), or None for
    anything else: no source, a job's own picture (a variation's), a path outside the root."""
    if not source:
        return None
    path = (Path(root) / source).resolve()
    return path if path.is_relative_to((Path(root) / UPLOADS).resolve()) else None
