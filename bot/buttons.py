"""Button ids: namespaced, self-describing, valid after a restart (`easel:vary_subtle:12`).

One parser for every platform; well within Telegram's 64 bytes and Discord's 100 characters.
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "easel"


class Action(StrEnum):
    REROLL = "reroll"
    VARY_SUBTLE = "vary_subtle"
    VARY_STRONG = "vary_strong"
    UPSCALE = "upscale"
    PARAMS = "params"
    DELETE = "delete"


BUTTON_ROW = [Action.REROLL, Action.VARY_SUBTLE, Action.VARY_STRONG, Action.UPSCALE, Action.PARAMS, Action.DELETE]


def button_id(action: Action, job_id: int) -> str:
    return f"{PREFIX}:{action.value}:{job_id}"


def parse_button_id(data: str | None) -> tuple[Action, int] | None:
    """(action, job id), or None for anything forged, stale-format or foreign."""
    if not data or len(data) > 64:
        return None
    parts = data.split(":")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[2].isascii() or not parts[2].isdigit():
        return None
    try:
        return Action(parts[1]), int(parts[2])
    except ValueError:
        return None
