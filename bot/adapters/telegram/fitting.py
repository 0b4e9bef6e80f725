"""Telegram's size rules, as plain functions: text lengths, captions, photo limits, the file URL."""

from __future__ import annotations

import io
import re

from PIL import Image

from bot.language.text import clip

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_ANSWER = 200  # answerCallbackQuery text
MAX_CALLBACK_DATA_BYTES = 64
PHOTO_MAX_BYTES = 10 * 1000 * 1000
PHOTO_MAX_SIDES = 10_000  # width + height
PHOTO_MAX_RATIO = 20
# A photo Telegram refused all the same (its dimension rules are not all documented) goes again this small.
CAUTIOUS_PHOTO_SIDE = 2560
WORD_JOINER = "\u2060"  # invisible, and no username character: `@\u2060name` is plain text
_AUTO_MENTION = re.compile(r"(?<!\w)@(?=\w)")


def utf16_length(text: str) -> int:
    """Length as Telegram counts it (UTF-16 code units: an emoji outside the BMP counts twice)."""
    return len(text.encode("utf-16-le")) // 2


def unlinked(text: str) -> str:
    """Telegram links (and notifies) every `@username` in plain text.  What we send echoes users'
    words (prompts in captions and Params, examples in parse errors, names in admin answers) and
    nothing we write ourselves mentions anyone, so every `@` before a name gets a word joiner."""
    return _AUTO_MENTION.sub("@" + WORD_JOINER, text)


def fit(text: str, limit: int) -> str:
    """`text` cut to `limit` UTF-16 units, ending in an ellipsis when cut, never splitting a
    character; no `@name` in it becomes a mention (see `unlinked`)."""
    return clip(unlinked(text), limit, length=utf16_length, tidy=True)


def caption_for(caption: str, notes: list[str]) -> str:
    """The service's caption and its notes in one photo caption; the notes are dropped first when too long."""
    full = unlinked("\n\n".join([caption, *notes]) if notes else caption)
    if utf16_length(full) <= MAX_CAPTION:
        return full
    return fit(caption, MAX_CAPTION)


def fits_as_photo(size_bytes: int, width: int, height: int) -> bool:
    """Whether Telegram takes the picture as a photo; anything else must go as a document."""
    if size_bytes > PHOTO_MAX_BYTES or width <= 0 or height <= 0:
        return False
    return width + height <= PHOTO_MAX_SIDES and max(width, height) / min(width, height) <= PHOTO_MAX_RATIO


def shrink_for_photo(data: bytes, max_side: int | None = None) -> tuple[bytes, tuple[int, int]]:
    """A JPEG of the picture that Telegram takes as a photo, as large as the limits allow: for a
    picture that must stay behind a spoiler, which a document cannot have.  (Pictures never exceed
    the ratio limit: no model profile allows a ratio over 4.)"""
    with Image.open(io.BytesIO(data)) as opened:
        image = opened.convert("RGB")
    width, height = image.size
    scale = min(1.0, (PHOTO_MAX_SIDES - 2) / (width + height), (max_side or width) / max(width, height))
    while True:
        size = (max(1, int(width * scale)), max(1, int(height * scale)))
        resized = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
        for quality in (90, 80, 70):
            out = io.BytesIO()
            resized.save(out, "JPEG", quality=quality)
            if out.tell() <= PHOTO_MAX_BYTES or min(size) <= 64:
                return out.getvalue(), size
        scale *= 0.7


def file_url_for(api_url: str) -> str | None:
    """The file-download base matching a Bot API base (`.../bot` -> `.../file/bot`); None if unknown."""
    if api_url.endswith("/bot"):
        return api_url.removesuffix("/bot") + "/file/bot"
    return None
