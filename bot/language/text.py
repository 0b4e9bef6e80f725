"""Small text helpers every part of the bot shares: cutting user text to a limit, and durations."""

from __future__ import annotations

import math
from collections.abc import Callable

ELLIPSIS = "…"


def clip(text: str, limit: int, *, length: Callable[[str], int] = len, tidy: bool = False) -> str:
    """`text`, or as much of it as fits in `limit` followed by an ellipsis, never splitting a
    character.  `length` counts (Telegram counts UTF-16 units); `tidy` drops the spaces the cut
    leaves before the ellipsis."""
    if length(text) <= limit:
        return text
    budget = limit - length(ELLIPSIS)
    if length is len:
        kept = text[:budget]
    else:
        chars, used = [], 0
        for char in text:
            used += length(char)
            if used > budget:
                break
            chars.append(char)
        kept = "".join(chars)
    return (kept.rstrip() if tidy else kept) + ELLIPSIS


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`: a wait or an ETA."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def minutes(seconds: float) -> str:
    """`5 min`, rounded up: a longer stretch, where seconds would be noise."""
    return f"{math.ceil(seconds / 60)} min"
