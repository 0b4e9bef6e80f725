"""Properties of the command language (`hypothesis`): any text at all gives a command, None, or a
`UserError` the catalogue can say in both languages; the example a drawing error offers is accepted;
and the line Discord's /draw options are written into (`draw_text`) reads back as those options."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.adapters.discord.slash import draw_text
from bot.language.commands import _flag_token, parse
from bot.language.errors import UserError
from bot.language.messages import t
from engine.request import MAX_SEED, TINY, Z_IMAGE_TURBO, clean_text

PROFILE = Z_IMAGE_TURBO
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text shaped like commands: slashes, dashes of every kind, flag names, numbers and ratios among
# arbitrary unicode, so the parser's branches are reached, not only "unknown command".
_PIECES = st.sampled_from(
    ["/draw", "/", "\uff0f", "--ar", "--size", "--seed", "--steps", "--cfg", "--no", "--n", "--raw", "--style",
     "\u2014ar", "\u2014\u2014no", "-seed", "--a", "--sed", "--ar=", "3:2", "1:0", "0x0", "1024x1024", "99999999x1",
     "-1", "4294967296", "1e9", ".5", "nan", "inf", "#12", "/cancel", "/show", "/history", "/ban", "/setquota",
     "/settings", "/block", "/draw@other", "/draw@easel", " ", "\u200b", "\u202e", "\x00", "\n"]
)  # fmt: skip
COMMAND_LIKE = st.lists(st.one_of(_PIECES, st.text(max_size=12)), max_size=12).map(" ".join)
ANY_TEXT = st.one_of(st.text(), COMMAND_LIKE)


def _said(error: UserError) -> None:
    """The user is told something, in both languages, from the error's own parameters."""
    for lang in ("en", "zh"):
        text = t(error.key, lang, **error.params)
        assert text and text != error.key, (error.key, lang)


@EXAMPLES
@given(text=ANY_TEXT, username=st.sampled_from([None, "easel", "EaselBot"]))
def test_any_text_gives_a_command_none_or_a_user_error(text, username):
    try:
        command = parse(text, PROFILE, bot_username=username)
    except UserError as error:
        _said(error)
        return
    assert command is None or type(command).__module__ == "bot.language.commands"


@EXAMPLES
@given(text=COMMAND_LIKE)
def test_the_example_a_drawing_error_offers_is_accepted(text):
    try:
        parse(text, PROFILE)
    except UserError as error:
        example = error.params.get("example")
        if not example or not example.startswith("/draw"):
            return
        parse(example, PROFILE)  # raises if the fix we offer does not work


def _plain_words(text: str) -> str:
    """Words that are not flags (what a user types into the prompt option and means as words)."""
    return " ".join(word for word in clean_text(text).split() if _flag_token(word) is None)


PROMPTS = st.text(min_size=1, max_size=200).map(_plain_words).filter(bool)


@EXAMPLES
@given(
    prompt=PROMPTS,
    ratio=st.none() | st.sampled_from(sorted(PROFILE.aspect_ratios)),
    seed=st.none() | st.integers(0, MAX_SEED),
    steps=st.none() | st.integers(PROFILE.min_steps, PROFILE.max_steps),
    cfg=st.none() | st.floats(PROFILE.min_cfg, PROFILE.max_cfg),
    negative=st.none() | PROMPTS,
    raw=st.booleans(),
    count=st.none() | st.integers(1, PROFILE.max_count),
    style=st.none() | st.sampled_from(["photo", "Anime", "ink-wash"]),
)
def test_discord_options_read_back_as_themselves(prompt, ratio, seed, steps, cfg, negative, raw, count, style):
    text = draw_text(
        prompt, aspect_ratio=ratio, seed=seed, steps=steps, cfg=cfg, negative=negative, raw=raw, count=count,
        style=style,
    )  # fmt: skip
    draw = parse(text, PROFILE)
    request = draw.request
    assert request.prompt == prompt
    assert request.negative_prompt == (negative or "")
    assert (request.width, request.height) == (PROFILE.aspect_ratios[ratio] if ratio else (None, None))
    assert request.seed == (-1 if seed is None else seed)
    assert request.steps == steps and request.count == (count or 1) and request.enhance is not raw
    assert (request.cfg is None) if cfg is None else math.isclose(request.cfg, cfg, rel_tol=0, abs_tol=0)
    assert draw.style == (style.lower() if style else None)


@EXAMPLES
@given(text=ANY_TEXT)
def test_the_tiny_profile_parses_the_same_language(text):
    """The test model's profile only changes sizes: the outcome kinds stay the same."""
    try:
        parse(text, TINY)
    except UserError as error:
        _said(error)
