"""Pictures on disk: PNGs under root/YYYY/MM/DD/ with the generation parameters embedded.

File names are made here (`job-<id>-<random hex>.png`), never from user input, and every path
handed back in is checked to lie inside the root.  Synchronous on purpose: call it from the worker
thread or through `asyncio.to_thread`, not on the event loop.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image
from PIL.PngImagePlugin import PngInfo

# Speed over size: level 1 writes several times faster than the default and costs little space.
_PNG_COMPRESS_LEVEL = 1


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def save(self, job_id: int, image: Image.Image, parameters: str) -> Path:
        """Write `image` with a `parameters` text chunk (the A1111 convention) and return its path.

        Written to a temporary file and renamed, so a reader or a crash never sees half a PNG.
        """
        folder = self.root / datetime.now(UTC).strftime("%Y/%m/%d")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"job-{int(job_id)}-{secrets.token_hex(4)}.png"
        info = PngInfo()
        info.add_text("parameters", parameters)
        fd, temp_name = tempfile.mkstemp(dir=folder, prefix=".partial-", suffix=".png")
        try:
            with os.fdopen(fd, "wb") as file:
                image.save(file, format="PNG", pnginfo=info, compress_level=_PNG_COMPRESS_LEVEL)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        return target

    def open(self, path: str | Path) -> Image.Image:
        """The image fully loaded (the file is closed again); its text chunks are in `.info`."""
        with Image.open(self.resolve(path)) as image:
            image.load()
            return image

    def delete(self, path: str | Path) -> bool:
        """True if a file was removed."""
        target = self.resolve(path)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        return True

    def remove(self, path: str | Path) -> int:
        """Remove one picture; the bytes it freed (0 when it was gone already)."""
        target = self.resolve(path)
        try:
            size = target.stat().st_size
            target.unlink()
        except FileNotFoundError:
            return 0
        return size

    def resolve(self, path: str | Path) -> Path:
        """An absolute path inside the root for `path` (absolute, or relative to the root).

        Raises ValueError for anything that ends up outside the root, symlinks and `..` included.
        """
        candidate = (self.root / path).resolve()
        if not candidate.is_relative_to(self.root):
            raise ValueError(f"image path outside the image store: {path!s}")
        return candidate

    def relative(self, path: str | Path) -> str:
        """`path` relative to the root, the portable form to keep in the database."""
        return self.resolve(path).relative_to(self.root).as_posix()
