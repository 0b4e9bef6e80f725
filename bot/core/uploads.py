"""Pictures people bring to /draw (a photo with a caption, a reply to a photo, Discord's image
option): checked, stored without metadata, and turned into an image-to-image request.

The size the platform reports is checked before anything is downloaded; the bytes are read by
storage/uploads.py (pixel limit before decoding, not a picture, truncated, animated, orientation,
colour modes).  Nothing is stored for a refused file."""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import replace
from pathlib import Path

from bot.contract import Upload
from bot.language.commands import Draw
from bot.language.errors import UserError
from bot.runtime.settings import Settings
from engine.request import DrawRequest, Kind, ModelProfile, draft_size
from storage.images import ImageStore
from storage.uploads import BadUpload, read_picture, store_upload

log = logging.getLogger(__name__)
MB = 1024 * 1024
DECODERS = 2  # pictures read and stored at once: each may hold a 40 MP decode in memory


class Uploads:
    def __init__(self, settings: Settings, profile: ModelProfile, images: ImageStore) -> None:
        self.settings = settings
        self.profile = profile
        self.images = images
        self._decoding = asyncio.Semaphore(DECODERS)

    @property
    def limit_bytes(self) -> int:
        return int(self.settings.max_upload_mb * MB)

    async def take(self, draw: Draw, upload: Upload) -> tuple[Draw, Path, bool]:
        """(the draw from the stored picture, where it is stored, whether it was animated), or
        UserError saying what is wrong with the file.  Call it only once the job could be accepted
        (Intake.precheck): the download and decode are the expensive part."""
        self._check_size(upload.size)
        try:
            data = await upload.fetch()
        except UserError:  # the adapter refused it (a size the platform told only at the last step)
            raise
        except Exception:
            log.warning("uploads: could not download a picture", exc_info=True)
            raise UserError("error.upload_failed") from None
        self._check_size(len(data))
        async with self._decoding:  # at most DECODERS at once, however many arrive together
            try:
                picture = await asyncio.to_thread(read_picture, data)
            except BadUpload as bad:
                raise UserError(bad.key, **bad.params) from None
            path = await asyncio.to_thread(store_upload, self.images.root, picture.image)
        # Relative to the images root, like a job's pictures: a restore into another data dir keeps it.
        source = self.images.relative(path)
        request = picture_request(draw.request, picture.image.size, source, self.profile)
        return Draw(request, style=draw.style), path, picture.animated

    def _check_size(self, size: int | None) -> None:
        if size is not None and size > self.limit_bytes:
            size_mb = f"{size / MB:.1f}"
            raise UserError("error.upload_too_big", size_mb=size_mb, limit_mb=f"{self.settings.max_upload_mb:g}")


def picture_request(request: DrawRequest, size: tuple[int, int], source: str, profile: ModelProfile) -> DrawRequest:
    """Image to image from the stored picture: `--strength` or the profile's, and the official size
    nearest the picture's shape unless `--ar`/`--size` said otherwise (a `--draft` without them:
    the draft of that nearest size, not of the square default the parser gave it)."""
    if not request.width:
        width, height = nearest_size(*size, profile)
    elif request.draft and (request.width, request.height) == draft_size(*profile.default_size, profile):
        # The parser sized the draft from the default; an explicit --ar/--size giving the very same
        # draft size cannot be told apart, and is read as the default too.
        width, height = draft_size(*nearest_size(*size, profile), profile)
    else:
        width, height = request.width, request.height
    strength = request.strength if request.strength is not None else profile.upload_strength
    return replace(request, kind=Kind.VARIATION, source_image=source, strength=strength, width=width, height=height)


def nearest_size(width: int, height: int, profile: ModelProfile) -> tuple[int, int]:
    """The profile's official size whose aspect ratio is nearest this one (compared as logarithms,
    so 2:1 and 1:2 are as far from 1:1)."""
    ratio = math.log(width / height)
    return min(profile.aspect_ratios.values(), key=lambda wh: abs(math.log(wh[0] / wh[1]) - ratio))
