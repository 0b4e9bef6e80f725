"""Button ids: namespaced, self-describing, valid after a restart (`easel:vary_subtle:12`, and
`easel:upscale:12:3` for the third picture of a batch).

One parser for every platform; well within Telegram's 64 bytes and Discord's 100 characters.
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "easel"
# The same ids as a pattern, for platforms that route presses by regular expression (Discord's
# DynamicItem templates); `parse_button_id` still judges each id.
TEMPLATE = rf"{PREFIX}:(?P<action>[a-z_]+):(?P<job_id>[0-9]+)(?::(?P<picture>[0-9]+))?"


class Action(StrEnum):
    REROLL = "reroll"
    VARY_SUBTLE = "vary_subtle"
    VARY_STRONG = "vary_strong"
    UPSCALE = "upscale"
    PARAMS = "params"
    DELETE = "delete"
    ZOOM_OUT_1_5 = "zoom_out_one_half"
    ZOOM_OUT_2 = "zoom_out_double"
    PAN_LEFT = "pan_left"
    PAN_RIGHT = "pan_right"
    PAN_UP = "pan_up"
    PAN_DOWN = "pan_down"
    ENHANCE = "enhance"  # a draft redrawn at full size (bot/core/variations.py)


BUTTON_ROW = [Action.REROLL, Action.VARY_SUBTLE, Action.VARY_STRONG, Action.UPSCALE, Action.PARAMS, Action.DELETE]
# A batch: one upscale and one variation button per picture, then these for the whole batch.
BATCH_PER_PICTURE = [Action.UPSCALE, Action.VARY_STRONG]
BATCH_ROW = [Action.REROLL, Action.PARAMS, Action.DELETE]
# Outpainting under a single picture, after BUTTON_ROW: two rows, within five buttons a row.
OUTPAINT_ROWS = [
    [Action.ZOOM_OUT_1_5, Action.ZOOM_OUT_2],
    [Action.PAN_LEFT, Action.PAN_RIGHT, Action.PAN_UP, Action.PAN_DOWN],
]
# Every button under a single picture, in order.
SINGLE_PICTURE = BUTTON_ROW + [action for row in OUTPAINT_ROWS for action in row]
# Under a draft, one more row: Enhance (one picture) or E1..En (a batch).
DRAFT_ROW = [Action.ENHANCE]
MAX_PICTURE = 9


def button_id(action: Action, job_id: int, picture: int | None = None) -> str:
    """`picture` is 0-based; ids write it 1-based, as the labels do (U1, V1...)."""
    if picture is None:
        return f"{PREFIX}:{action.value}:{job_id}"
    return f"{PREFIX}:{action.value}:{job_id}:{picture + 1}"


def parse_button_id(data: str | None) -> tuple[Action, int, int] | None:
    """(action, job id, 0-based picture), or None for anything forged, stale-format or foreign."""
    if not data or len(data) > 64:
        return None
    parts = data.split(":")
    if len(parts) == 3:
        parts.append("1")
    if len(parts) != 4 or parts[0] != PREFIX or not all(_digits(part) for part in parts[2:]):
        return None
    picture = int(parts[3])
    if not 1 <= picture <= MAX_PICTURE:
        return None
    try:
        return Action(parts[1]), int(parts[2]), picture - 1
    except ValueError:
        return None


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18
