"""The message catalogue: complete in both languages, covers every key the code raises, never raises."""

from __future__ import annotations

import logging
import re
import string
from pathlib import Path

import pytest

from bot.language.errors import UserError
from bot.language.messages import CATALOGUE, LANGUAGES, language_for, t

ROOT = Path(__file__).resolve().parent.parent
# The brief's contract: every key the code can raise is a literal like "error.size_range".
KEY_LITERAL = re.compile(r"\"(error\.[a-z_]+)\"")
SERVICE_KEYS = [
    "queued", "queued_next", "running", "done_caption", "cancelled", "cancel_none", "cancel_not_yours",
    "job_not_found", "quota_exceeded", "quota_status", "quota_unlimited", "pending_limit", "banned",
    "chat_not_allowed", "not_admin", "user_not_found", "admin_done", "history_header", "history_line",
    "history_empty", "show_header", "show_line", "queue_header", "queue_line", "queue_empty", "stats",
    "settings_current", "settings_saved", "settings_unknown", "help", "help_admin", "button.reroll",
    "button.vary_subtle", "button.vary_strong", "button.upscale", "button.params", "button.delete", "deleted",
    "delete_not_yours", "stale_button", "params", "error.internal", "status.queued", "status.running",
    "status.done", "status.failed", "status.cancelled", "fallback_note", "retry_note", "oversize_note",
    "token_expired_mention",
]  # fmt: skip


def placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def keys_in_source() -> set[str]:
    keys = set()
    for package in ("engine", "bot"):
        for path in (ROOT / package).rglob("*.py"):
            keys |= set(KEY_LITERAL.findall(path.read_text(encoding="utf-8")))
    return keys


def test_both_languages_have_the_same_keys():
    assert set(CATALOGUE) == set(LANGUAGES)
    assert set(CATALOGUE["zh"]) == set(CATALOGUE["en"])


@pytest.mark.parametrize("key", sorted(CATALOGUE["en"]))
def test_placeholders_match_between_languages(key):
    assert placeholders(CATALOGUE["zh"][key]) == placeholders(CATALOGUE["en"][key])


@pytest.mark.parametrize("lang", LANGUAGES)
def test_templates_use_plain_names_only(lang):
    # A format spec or attribute access ({cfg:.1f}, {user.name}) could raise when a param is missing.
    for key, template in CATALOGUE[lang].items():
        assert template.strip(), key
        for _, name, spec, conversion in string.Formatter().parse(template):
            if name is not None:
                assert name.isidentifier() and not spec and not conversion, (key, name)


def test_every_key_raised_in_the_code_has_a_message():
    found = keys_in_source()
    # The scan must see engine and parser keys, or it is not scanning anything useful.
    assert {"error.size_multiple", "error.oom", "error.unknown_flag", "error.repeated_flag"} <= found
    assert found - set(CATALOGUE["en"]) == set()


def test_every_key_the_service_uses_has_a_message():
    assert set(SERVICE_KEYS) - set(CATALOGUE["en"]) == set()


def test_chinese_status_words_are_chinese():
    for key, text in CATALOGUE["zh"].items():
        if key.startswith(("status.", "kind.", "action.", "settings.")):
            assert not re.search(r"[A-Za-z]", text), (key, text)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_help_fits_a_discord_message(lang):
    assert len(t("help", lang)) <= 2000 and len(t("help_admin", lang)) <= 2000
    assert "/draw" in t("help", lang) and "/setquota" in t("help_admin", lang)


def test_t_fills_params():
    # Durations arrive formatted by the service ("40s", "2m05s").
    assert t("queued", "en", job_id=12, position=3, eta="40s") == "Queued as #12: number 3 in line, ready in about 40s."
    assert t("queued", "zh", job_id=12, position=3, eta="40s") == "已加入队列：#12，排第 3 位，大约 40s 后完成。"


def test_missing_params_stay_visible_instead_of_raising():
    assert t("job_not_found", "en") == "I can't find job #{job_id}."
    assert "{spec}" not in t("job_not_found", "en", job_id=5, spec="extra params are ignored")


def test_braces_in_params_are_not_formatted_again():
    assert t("job_not_found", "en", job_id="{0.__class__}") == "I can't find job #{0.__class__}."


def test_unknown_language_falls_back_to_english():
    assert t("deleted", "fr") == t("deleted", "en") == "Deleted."


def test_missing_key_returns_the_key_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="bot.language.messages"):
        assert t("no.such.key", "zh") == "no.such.key"
    assert "no.such.key" in caplog.text


def test_example_param_becomes_the_last_line():
    message = t("error.seed_range", "zh", value="-1", max=4294967295, example="/draw a fox --seed 5")
    assert message.endswith("\n试试：/draw a fox --seed 5")
    assert t("error.seed_range", "en", value="-1", max=4294967295).endswith("random one.")


def test_fits_param_suggests_a_size():
    assert t("error.oom", "en", fits=(768, 768)).endswith("\nA size that fits: 768x768")


def test_floats_read_naturally():
    assert t("error.cfg_range", "en", value=3.0, min=1.0, max=2.5) == "CFG must be between 1 and 2.5 (you asked for 3)."
    assert "3.42s" in t("done_caption", "en", prompt="p", seed=1, width=8, height=8, seconds=3.4167, job_id=1)


def test_user_errors_render():
    error = UserError("settings_saved", key="lang", value="zh")
    assert (error.key, error.params) == ("settings_saved", {"key": "lang", "value": "zh"})
    assert t(error.key, "en", **error.params) == "Saved: lang = zh."
    assert "lang = zh" in t("settings_current", "en", lang="zh", png="off")


def test_user_error_subclasses_with_a_fixed_key_are_one_line():
    class QuotaExceeded(UserError):
        key = "quota_exceeded"

    error = QuotaExceeded(limit=5, resets="5h12m")
    assert error.key == "quota_exceeded" and error.params == {"limit": 5, "resets": "5h12m"}


@pytest.mark.parametrize(
    ("code", "lang"),
    [
        ("zh", "zh"),
        ("zh-hans", "zh"),
        ("zh-CN", "zh"),
        ("zh_TW", "zh"),
        ("ZH-hant-HK", "zh"),
        ("en", "en"),
        ("en-GB", "en"),
        ("de", "en"),
        ("zu", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_language_for(code, lang):
    assert language_for(code) == lang


def test_an_error_key_this_version_does_not_know_reads_as_the_generic_failure():
    """A newer remote worker may name a failure this bot's catalogue lacks."""
    for lang in ("en", "zh"):
        assert t("error.from_a_newer_worker", lang, stage="latents") == t("error.engine", lang)
