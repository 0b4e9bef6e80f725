"""bot/language/text.py: cutting user text to a limit, and durations as users read them."""

from __future__ import annotations

import pytest

from bot.adapters.telegram.fitting import utf16_length
from bot.language.text import clip, duration, minutes


def test_clip_keeps_what_fits_and_ends_a_cut_in_an_ellipsis():
    assert clip("a fox", 5) == "a fox"
    assert clip("a red fox", 5) == "a re…" and len(clip("a red fox", 5)) == 5


def test_clip_counts_as_told_and_never_splits_a_character():
    text = "🦊🦊🦊"  # two UTF-16 units each
    assert clip(text, 6, length=utf16_length) == text
    assert clip(text, 5, length=utf16_length) == "🦊🦊…"
    assert clip(text, 4, length=utf16_length) == "🦊…"


def test_a_tidy_clip_leaves_no_space_before_the_ellipsis():
    assert clip("a fox and more", 7) == "a fox …"
    assert clip("a fox and more", 7, tidy=True) == "a fox…"


@pytest.mark.parametrize(
    "seconds, spoken", [(0, "0s"), (59.4, "59s"), (60, "1m00s"), (185, "3m05s"), (3600, "1h00m"), (7620, "2h07m")]
)
def test_duration(seconds, spoken):
    assert duration(seconds) == spoken


def test_minutes_round_up():
    assert minutes(1) == "1 min" and minutes(60) == "1 min" and minutes(61) == "2 min"
