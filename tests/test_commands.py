"""The command language: what parses to what, and every refusal renders and offers a working fix."""

from __future__ import annotations

import re

import pytest

from bot.language.commands import (
    Ban,
    Cancel,
    Draw,
    Help,
    History,
    Loras,
    QueueCmd,
    Quota,
    SetQuota,
    SetRole,
    SettingsCmd,
    Show,
    Start,
    Stats,
    Unban,
    parse,
    parse_draw_args,
)
from bot.language.errors import ParseError, UserError
from bot.language.messages import CATALOGUE, LANGUAGES, t
from engine.request import MAX_SEED, RANDOM_SEED, TINY, Z_IMAGE_TURBO

PROFILE = Z_IMAGE_TURBO
BOT = "easelbot"
UNFILLED = re.compile(r"\{\w+\}")


def draw(text: str, profile=PROFILE):
    command = parse(text, profile, BOT)
    assert isinstance(command, Draw)
    return command.request


def refusal(text: str, profile=PROFILE) -> ParseError:
    """Parse text that must fail; check the error renders fully in every language and its fix works."""
    with pytest.raises(ParseError) as caught:
        parse(text, profile, BOT)
    error = caught.value
    assert error.key in CATALOGUE["en"], f"{error.key} has no message"
    for lang in LANGUAGES:
        message = t(error.key, lang, **error.params)
        assert not UNFILLED.search(message), f"unfilled placeholder in {lang}: {message!r}"
        if "example" in error.params:
            assert message.endswith(error.params["example"])
    if "example" in error.params and error.params["example"].startswith("/draw"):
        assert isinstance(parse(error.params["example"], profile, BOT), Draw), error.params["example"]
    return error


# Drawing: what the user wrote ends up in the request


def test_plain_prompt_keeps_defaults_open():
    request = draw("/draw a fox in the snow")
    assert request.prompt == "a fox in the snow"
    assert (request.width, request.height, request.steps, request.cfg) == (None, None, None, None)
    assert request.seed == RANDOM_SEED and request.enhance and request.negative_prompt == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/draw a fox --ar 3:2", {"width": 1248, "height": 832}),
        ("/draw --ar 16:9 a fox", {"prompt": "a fox", "width": 1280, "height": 720}),
        ("/draw a fox --ar 9:16", {"width": 720, "height": 1280}),
        ("/draw a fox --ar 3：2", {"width": 1248, "height": 832}),
        ("/draw a fox --ar=3:2", {"width": 1248, "height": 832}),
        ("/draw a fox --AR 3:2", {"width": 1248, "height": 832}),
        ("/draw a fox --size 1024x768", {"width": 1024, "height": 768}),
        ("/draw a fox --size 768×1024", {"width": 768, "height": 1024}),
        ("/draw a fox --seed 0", {"seed": 0}),
        ("/draw a fox --seed 4294967295", {"seed": MAX_SEED}),
        ("/draw a fox --steps 12 --cfg 1.5", {"steps": 12, "cfg": 1.5}),
        ("/draw a fox --raw", {"enhance": False}),
        ("/draw a fox --no blurry, text --seed 5", {"negative_prompt": "blurry, text", "seed": 5}),
        ("/draw a fox --no text --raw", {"negative_prompt": "text", "enhance": False}),
        ("/draw a fox -- in snow --seed 3", {"prompt": "a fox -- in snow", "seed": 3}),
    ],
)
def test_flags_fill_the_request(text, expected):
    request = draw(text)
    assert {name: getattr(request, name) for name in expected} == expected
    assert not re.search(r"--[a-z]", request.prompt)  # no flag leaked into the prompt


@pytest.mark.parametrize(
    "text",
    [
        "/draw a fox —seed 7",  # iOS smart punctuation
        "/draw a fox ——seed 7",  # Chinese keyboard
        "/draw a fox －－seed 7",  # full-width
        "/draw a fox –seed 7",  # en dash
    ],
)
def test_phone_dashes_count_as_flags(text):
    request = draw(text)
    assert (request.prompt, request.seed) == ("a fox", 7)


def test_dashes_in_prose_stay_prose():
    assert draw("/draw a fox — in the snow —winter").prompt == "a fox — in the snow —winter"
    assert draw("/draw a fox -no filter").prompt == "a fox -no filter"


def test_sql_in_the_prompt_is_kept_verbatim():
    prompt = "Robert'); DROP TABLE jobs; -- SELECT * FROM users WHERE 1=1"
    assert draw("/draw " + prompt).prompt == prompt


def test_invisible_and_control_characters_are_stripped_before_parsing():
    request = draw("/draw a\u202e fox\u200b\u200d --se\u200bed\u2066 7\x00\n--raw")
    assert request.prompt == "a fox"
    assert (request.seed, request.enhance) == (7, False)


def test_ratios_follow_the_profile():
    request = draw("/draw a fox --ar 3:2", TINY)
    assert (request.width, request.height) == TINY.aspect_ratios["3:2"]


def test_text_without_a_slash_is_a_prompt():
    assert draw("a fox --ar 1:1").prompt == "a fox"
    assert parse_draw_args("a fox --seed 3", PROFILE).seed == 3


# Addressing and command names


@pytest.mark.parametrize(
    "text",
    ["/draw@easelbot a fox", "/DRAW@EaselBot a fox", "/Draw a fox", "／draw a fox", "/imagine a fox", "/画 a fox"],
)
def test_commands_for_us(text):
    assert draw(text).prompt == "a fox"


@pytest.mark.parametrize("text", ["/draw@otherbot a fox", "/frobnicate@otherbot", "/ban@otherbot telegram:5"])
def test_commands_for_another_bot_are_not_ours(text):
    assert parse(text, PROFILE, BOT) is None


def test_without_a_username_any_addressee_is_accepted():
    assert isinstance(parse("/draw@whoever a fox", PROFILE), Draw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/cancel", Cancel(None)),
        ("/cancel #12", Cancel(12)),
        ("/cancel 12", Cancel(12)),
        ("/cancel ＃12", Cancel(12)),
        ("/history", History(1)),
        ("/history 2", History(2)),
        ("/show #7", Show(7)),
        ("/quota", Quota()),
        ("/help", Help()),
        ("/help draw", Help()),
        ("/start", Start()),
        ("/start ref_abc", Start()),
        ("/queue", QueueCmd()),
        ("/stats", Stats()),
        ("/settings", SettingsCmd(None, None)),
        ("/settings LANG", SettingsCmd("lang", None)),
        ("/settings lang zh", SettingsCmd("lang", "zh")),
        ("/ban telegram:5 spamming links", Ban("telegram:5", "spamming links")),
        ("/ban discord:9", Ban("discord:9", "")),
        ("/unban telegram:5", Unban("telegram:5")),
        ("/setquota telegram:5 10", SetQuota("telegram:5", 10)),
        ("/setquota telegram:5 0", SetQuota("telegram:5", 0)),
        ("/setquota telegram:5 unlimited", SetQuota("telegram:5", 0)),
        ("/setquota telegram:5 default", SetQuota("telegram:5", None)),
        ("/setquota telegram:5 Reset", SetQuota("telegram:5", None)),
        ("/setrole telegram:5 Trusted", SetRole("telegram:5", "trusted")),
        # No user: in reply to their message (the adapter says whose; see Caller.replied_user_id).
        ("/ban", Ban("", "")),
        ("/unban", Unban("")),
        ("/setquota 20", SetQuota("", 20)),
        ("/setrole trusted", SetRole("", "trusted")),
    ],
)
def test_other_commands(text, expected):
    assert parse(text, PROFILE, BOT) == expected


# Refusals: right key, full message in both languages, a fix that parses


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", "error.prompt_empty"),
        ("  \u200b\u200f\t ", "error.prompt_empty"),
        ("/draw", "error.prompt_empty"),
        ("/draw --ar 16:9 --seed 3", "error.prompt_empty"),
        ("/draw --no text, a fox", "error.prompt_empty"),  # --no takes every word up to the next flag
        ("/draw a fox --ar 0:0", "error.ratio_invalid"),
        ("/draw a fox --ar wide", "error.ratio_invalid"),
        ("/draw a fox --ar 100:1", "error.ratio_extreme"),
        ("/draw a fox --ar 1:100", "error.ratio_extreme"),
        ("/draw a fox --seed -1", "error.seed_range"),
        ("/draw a fox --seed 99999999999", "error.seed_range"),
        ("/draw a fox --seed " + "9" * 5000, "error.seed_range"),
        ("/draw a fox --seed 1e3", "error.not_integer"),
        ("/draw a fox --seed ٣", "error.not_integer"),
        ("/draw a fox --steps ３", "error.not_integer"),
        ("/draw a fox --cfg nan", "error.not_number"),
        ("/draw a fox --cfg inf", "error.not_number"),
        ("/draw a fox --cfg 1_5", "error.not_number"),
        ("/draw a fox --cfg 3", "error.cfg_range"),
        ("/draw a fox --cfg 0.5", "error.cfg_range"),
        ("/draw a fox --steps 0", "error.steps_range"),
        ("/draw a fox --steps 17", "error.steps_range"),
        ("/draw a fox --steps 99999999999999999999999999999999999", "error.steps_range"),
        ("/draw a fox --seed 1 --seed 2", "error.repeated_flag"),
        ("/draw a fox --raw --raw", "error.repeated_flag"),
        ("/draw a fox --foo", "error.unknown_flag"),
        ("/draw a fox --no-text", "error.unknown_flag"),
        ("/draw a fox --ar 3:2 --size 1024x1024", "error.flag_conflict"),
        ("/draw a fox --seed", "error.missing_value"),
        ("/draw a fox --seed --raw", "error.missing_value"),
        ("/draw a fox --no", "error.missing_value"),
        ("/draw a fox --ar=", "error.missing_value"),
        ("/draw a fox --size big", "error.size_format"),
        ("/draw a fox --size 1000x1000", "error.size_multiple"),
        ("/draw a fox --size 4096x4096", "error.size_range"),
        ("/draw a fox --size 0x0", "error.size_range"),
        ("/draw a fox --size 2048x2048", "error.size_pixels"),
        ("/draw a fox --size 2048x256", "error.ratio_extreme"),
        ("/draw a fox —seed -1", "error.seed_range"),
        ("/frobnicate", "error.unknown_command"),
        ("/", "error.unknown_command"),
        ("/history x", "error.page_number"),
        ("/history 0", "error.page_number"),
        ("/history ٣", "error.page_number"),
        ("/history 1 2", "error.usage"),
        ("/cancel abc", "error.job_id"),
        ("/cancel #0", "error.job_id"),
        ("/cancel 1 2", "error.usage"),
        ("/show", "error.usage"),
        ("/show #x", "error.job_id"),
        ("/unban telegram:5 telegram:6", "error.usage"),
        ("/setquota telegram:5", "error.usage"),
        ("/setquota telegram:5 -3", "error.quota_value"),
        ("/setquota telegram:5 lots", "error.quota_value"),
        ("/setrole telegram:5", "error.usage"),
    ],
)
def test_refusals(text, key):
    assert refusal(text).key == key


@pytest.mark.parametrize(
    "text",
    [
        "/draw " + "a" * 20_000,
        "/draw " + "fox " * 5_000,
        "/draw a fox --no " + "blurry " * 200,
        "/draw " + "x" * 20_000 + " --bogus --seed -1",  # length is judged before anything that echoes
    ],
)
def test_oversized_prompts_are_refused_with_the_limit(text):
    error = refusal(text)
    assert error.key == "error.prompt_too_long"
    assert error.params["limit"] == PROFILE.max_prompt_chars
    assert "example" not in error.params  # repeating 20,000 characters back helps nobody


def test_prompt_at_the_limit_is_accepted():
    assert len(draw("/draw " + "a" * PROFILE.max_prompt_chars).prompt) == PROFILE.max_prompt_chars


@pytest.mark.parametrize(
    ("text", "example"),
    [
        ("/draw a fox --size 1000x1000", "/draw a fox --size 1008x1008"),
        ("/draw a fox --size 4096x4096", "/draw a fox --size 1536x1536"),
        ("/draw a fox --size 2048x256", "/draw a fox --size 1024x256"),
        ("/draw a fox --ar 100:1", "/draw a fox --ar 4:1"),
        ("/draw a fox --ar 0:0", "/draw a fox --ar 1:1"),
        ("/draw a fox --steps 17", "/draw a fox --steps 16"),
        ("/draw a fox --steps 0", "/draw a fox --steps 1"),
        ("/draw a fox --cfg 3", "/draw a fox --cfg 2.5"),
        ("/draw a fox --cfg nan", "/draw a fox"),
        ("/draw a fox --seed -1 --raw", "/draw a fox --raw"),
        ("/draw a fox --sead 5", "/draw a fox --seed 5"),
        ("/draw a fox --negative blurry face", "/draw a fox --no blurry face"),
        ("/draw a fox --seed 1 --seed 2", "/draw a fox --seed 1"),
        ("/draw a fox --ar 3:2 --size 1000x1000", "/draw a fox --ar 3:2"),
        ("/draw a fox --seed", "/draw a fox --seed 42"),
        ("/draw --ar 16:9", "/draw a red fox in the snow --ar 16:9"),
        ("/draw a fox —ar 50:1 ——steps 40", "/draw a fox --ar 4:1 --steps 16"),
    ],
)
def test_examples_are_the_users_command_repaired(text, example):
    assert refusal(text).params["example"] == example


def test_examples_respect_the_profile():
    error = refusal("/draw a fox --size 1024x1024", TINY)
    assert error.key == "error.size_range"
    assert error.params["example"] == "/draw a fox --size 512x512"


def test_unknown_flag_lists_the_known_ones():
    error = refusal("/draw a fox --quality 2")
    assert error.params["flag"] == "--quality"
    assert all(f"--{name}" in error.params["known"] for name in ("ar", "size", "seed", "steps", "cfg", "no", "raw"))


def test_echoed_user_text_is_cut_short():
    error = refusal("/draw a fox --ar " + "9" * 500)
    assert len(error.params["ratio"]) <= 40


def test_unknown_command_names_the_command():
    error = refusal("/Paint a fox")
    assert error.params["command"] == "/paint"


def test_parse_errors_are_user_errors_carrying_key_and_params():
    error = refusal("/draw a fox --steps 17")
    assert isinstance(error, UserError)
    assert error.params["value"] == 17 and error.params["max"] == PROFILE.max_steps
    assert "error.steps_range" in str(error)


def test_strength_is_read_for_a_picture_of_ones_own_and_its_range_is_kept():
    assert parse_draw_args("a fox --strength 0.5", Z_IMAGE_TURBO).strength == 0.5
    assert parse_draw_args("a fox", Z_IMAGE_TURBO).strength is None  # the profile's upload_strength later
    for written, repaired in (("2", "0.95"), ("0.01", "0.1"), ("lots", None)):
        with pytest.raises(ParseError) as info:
            parse(f"/draw a fox --strength {written}", Z_IMAGE_TURBO)
        assert info.value.key == "error.strength_flag"
        example = info.value.params["example"]
        assert (f"--strength {repaired}" in example) if repaired else "--strength" not in example
        assert isinstance(parse(example, Z_IMAGE_TURBO), Draw)


def test_lora_is_repeatable_with_optional_weights():
    request = draw("/draw a fox --lora Ink:0.8 --lora neon-glow —lora=clay:-1.5")
    assert request.loras == (("ink", 0.8), ("neon-glow", None), ("clay", -1.5))
    assert isinstance(parse("/loras", PROFILE, BOT), Loras)


@pytest.mark.parametrize(
    ("text", "key", "fixed"),
    [
        ("/draw a fox --lora ink:3", "error.lora_weight", "/draw a fox --lora ink:2"),
        ("/draw a fox --lora ink:heavy", "error.lora_weight", "/draw a fox --lora ink"),
        (
            "/draw a fox --lora a --lora b --lora c --lora d",
            "error.lora_count",
            "/draw a fox --lora a --lora b --lora c",
        ),
        ("/draw a fox --lora in$k", "error.lora_format", "/draw a fox --lora ink"),
        ("/draw a fox --lora ink --lora ink:0.5", "error.lora_twice", "/draw a fox --lora ink"),
        ("/draw a fox --lora", "error.missing_value", "/draw a fox"),
    ],
)
def test_lora_mistakes_come_with_a_repaired_example(text, key, fixed):
    error = refusal(text)
    assert error.key == key and error.params["example"] == fixed
