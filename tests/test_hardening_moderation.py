"""Moderation holes closed (issue 13), through the service with the tiny real model: admin commands
take ids and never names, banned users and chats off the allowlist are turned away before anything
is read, every refused request is a strike, word-list files fail closed, and a chat's own lists are
capped and compiled off the event loop."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from bot.cli.main import main
from bot.community import moderation
from bot.community.moderation import WordListUnreadable
from bot.core.service import Caller
from bot.language.buttons import Action, button_id
from bot.language.messages import t
from tests.support.service import alice, settled, shown_on, started

ADMIN = Caller("telegram", "900", name="root", language="en", chat_id="1")


def caller(user_id: str, name: str, chat_id: str = "1", **extra) -> Caller:
    return Caller("telegram", user_id, name=name, language="en", chat_id=chat_id, **extra)


async def draw(app, who: Caller, text: str, key: str | None = None, **extra):
    return await app.service.handle_text(who, text, {"chat_id": who.chat_id}, idempotency_key=key, **extra)


async def strikes(app, who: Caller, scope: str = "telegram:chat:1") -> int:
    user = await app.db.users.find(who.platform, who.user_id)
    return len(await app.db.moderation.strike_times(user.id, scope, 0))


# -- 1. admin commands name people by id ------------------------------------------------------------


async def test_admin_commands_never_match_a_name_however_it_is_spoofed(make_app):
    app = await make_app(EASEL_ADMINS="telegram:900")
    real, impostor = caller("100", "alice"), caller("200", "alice")  # bob renamed himself "alice"
    await draw(app, real, "/quota")
    await draw(app, impostor, "/quota")

    for target in ("alice", "@alice", "telegram:alice", "Alice"):
        refused = await draw(app, ADMIN, f"/ban {target}")
        assert refused.text == t("user_not_found", "en", target=target) and refused.alert
    assert not any([(await app.db.users.find("telegram", uid)).banned for uid in ("100", "200")])
    assert await app.db.audit.recent() == []
    assert (await draw(app, ADMIN, "/ban")).text == t("target_missing", "en")  # no reply to take it from

    done = await draw(app, ADMIN, "/ban telegram:200 spoofing")
    assert done.text == t("admin_done", "en", action=t("action.ban", "en"), target="alice (telegram:200)")
    assert (await app.db.users.find("telegram", "200")).banned
    assert not (await app.db.users.find("telegram", "100")).banned
    # A bare id is on the admin's own platform; a Discord mention is a Discord id.
    bare = await draw(app, ADMIN, "/setquota 100 7")
    assert bare.text == t("admin_done", "en", action=t("action.setquota", "en"), target="alice (telegram:100)")
    assert (await app.db.users.find("telegram", "100")).quota_override == 7
    mention = await draw(app, ADMIN, "/setrole <@!4242> trusted")
    assert mention.text == t("admin_done", "en", action=t("action.setrole", "en"), target="discord:4242")
    assert (await app.db.users.find("discord", "4242")).role == "trusted"


async def test_an_admin_command_in_reply_targets_the_sender_of_that_message(make_app):
    app = await make_app(EASEL_ADMINS="telegram:900")
    await draw(app, caller("200", "bob"), "/quota")
    replying = caller("900", "root", replied_user_id="200")

    done = await draw(app, replying, "/ban posting gore")  # in reply, every word is the reason
    assert done.text == t("admin_done", "en", action=t("action.ban", "en"), target="bob (telegram:200)")
    [entry] = await app.db.audit.recent()
    assert (entry.action, entry.target, entry.details) == ("ban", "telegram:200", {"reason": "posting gore"})
    assert (await draw(app, replying, "/setquota 5")).text.startswith("Done")
    assert (await app.db.users.find("telegram", "200")).quota_override == 5
    # An id given explicitly wins over the reply.
    assert "telegram:300" in (await draw(app, replying, "/unban telegram:300")).text


async def test_a_bare_number_in_a_reply_ban_is_reason_text_and_only_an_explicit_id_overrides(make_app):
    app = await make_app(EASEL_ADMINS="telegram:900")
    await draw(app, caller("200", "bob"), "/quota")
    replying = caller("900", "root", replied_user_id="200")

    done = await draw(app, replying, "/ban 3 times spamming")
    assert done.text == t("admin_done", "en", action=t("action.ban", "en"), target="bob (telegram:200)")
    [entry] = await app.db.audit.recent()
    assert (entry.target, entry.details) == ("telegram:200", {"reason": "3 times spamming"})
    assert await app.db.users.find("telegram", "3") is None
    # A platform-qualified id or a mention still names someone else than the replied-to sender.
    assert "telegram:300" in (await draw(app, replying, "/ban telegram:300 spam")).text
    assert "discord:42" in (await draw(app, replying, "/ban <@42> spam")).text
    assert [entry.target for entry in await app.db.audit.recent()] == ["discord:42", "telegram:300", "telegram:200"]


# -- 2. turned away before anything is read --------------------------------------------------------


async def test_a_chat_off_the_allowlist_gets_one_line_no_echo_and_no_user_row(make_app):
    app, _ = await started(make_app, EASEL_ALLOWED_CHATS="telegram:-100")
    stranger = caller("555", "raider", chat_id="-5", public=True)
    users = await app.db.users.count()

    for text in ("/draw SECRETWORD --ar 99:1", "/ban SECRETWORD", "/draw@easelbot --cfg SECRETWORD"):
        reply = await draw(app, stranger, text, shared_chat=True, bot_username="easelbot")
        assert reply.text == t("chat_not_allowed", "en") and "SECRETWORD" not in reply.text
    # In a group, chatter and other bots' commands get no line at all.
    for text in ("SECRETWORD --frobnicate", "/frobnicate SECRETWORD", "/draw@otherbot SECRETWORD"):
        assert await draw(app, stranger, text, shared_chat=True, bot_username="easelbot") is None
    private = await draw(app, caller("556", "raider2", chat_id="556"), "SECRETWORD --frobnicate")
    assert private.text == t("chat_not_allowed", "en")
    pressed = await app.service.press(stranger, button_id(Action.PARAMS, 1), {}, message_id="m1")
    assert pressed.text == t("chat_not_allowed", "en")
    assert await app.db.users.find("telegram", "555") is None and await app.db.users.count() == users
    assert await app.db.users.find("telegram", "556") is None


async def test_a_banned_user_gets_one_line_no_echo_and_their_row_is_untouched(make_app):
    app, adapter = await started(make_app, EASEL_ADMINS="telegram:900")
    victim = caller("100", "alice")
    first = await draw(app, victim, "/draw a lighthouse --steps 1")
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    await draw(app, ADMIN, "/ban telegram:100")
    renamed = caller("100", "@everyone SECRETWORD")

    for text in ("/draw SECRETWORD --ar 99:1", "/draw a fox", "/nonsense SECRETWORD"):
        reply = await draw(app, renamed, text)
        assert reply.text == t("banned", "en") and "SECRETWORD" not in reply.text
    assert await draw(app, caller("100", "x", chat_id="-7", public=True), "hello SECRETWORD", shared_chat=True) is None
    varied = await app.service.vary_from_picture(renamed, "SECRETWORD --ar 99:1", "1", shown_on(first.job_id), {}, None)
    assert varied.text == t("banned", "en")
    pressed = await app.service.press(
        renamed, button_id(Action.REROLL, first.job_id), {}, message_id=shown_on(first.job_id)
    )
    assert pressed.text == t("banned", "en")
    user = await app.db.users.find("telegram", "100")
    assert user.name == "alice"  # never read past the ban: not even their new name was stored
    assert len((await app.db.jobs.list_for_user(user.id, 0, 10))[0]) == 1


# -- 3. every refusal is a strike -------------------------------------------------------------------


async def test_blocked_words_through_no_replies_and_buttons_are_strikes(make_app):
    app, adapter = await started(make_app, EASEL_ADMINS="telegram:900", EASEL_STRIKE_LIMIT="10")
    first = await draw(app, alice(), "/draw a kraken at sea --steps 1")
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    await settled(app, first.job_id)

    assert (await draw(app, ADMIN, "/block add grimdark")).text.startswith("Added")
    assert (await draw(app, ADMIN, "/block add kraken")).text.startswith("Added")

    assert (await draw(app, alice(), "/draw a boat --no grimdark")).text == t("blocked_prompt", "en")
    assert await strikes(app, alice()) == 1
    varied = await app.service.vary_from_picture(alice(), "a grimdark sea", "1", shown_on(first.job_id), {}, "r1")
    assert varied.text == t("blocked_prompt", "en") and await strikes(app, alice()) == 2
    # The stored prompt predates the list; pressing it again after the list changed still counts.
    for key in ("cb1", "cb1", "cb2"):  # a re-sent press strikes once
        pressed = await app.service.press(
            alice(), button_id(Action.REROLL, first.job_id), {}, idempotency_key=key, message_id=shown_on(first.job_id)
        )
        assert pressed.text == t("blocked_prompt", "en")
    assert await strikes(app, alice()) == 4


async def test_a_blocked_word_on_someone_elses_picture_is_refused_without_a_strike(make_app):
    app, adapter = await started(make_app, EASEL_ADMINS="telegram:900", EASEL_STRIKE_LIMIT="2")
    first = await draw(app, alice(), "/draw a kraken at sea --steps 1")
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    await settled(app, first.job_id)
    assert (await draw(app, ADMIN, "/block add kraken")).text.startswith("Added")

    # Bob presses Reroll under Alice's picture in the group: the words are hers, not his.
    bob = caller("200", "bob", public=True)
    for key in ("cb1", "cb2", "cb3", "cb4"):
        pressed = await app.service.press(
            bob, button_id(Action.REROLL, first.job_id), {}, idempotency_key=key, message_id=shown_on(first.job_id)
        )
        assert pressed.text == t("blocked_prompt", "en") and pressed.job_id is None
    assert await strikes(app, bob) == 0
    assert (await draw(app, bob, "/draw a calm lake --steps 1")).job_id is not None  # not rate-limited
    # Her own press on her own picture still counts.
    await app.service.press(
        alice(), button_id(Action.REROLL, first.job_id), {}, idempotency_key="cb5", message_id=shown_on(first.job_id)
    )
    assert await strikes(app, alice()) == 1


# -- 4. word-list files fail closed -----------------------------------------------------------------


async def test_a_missing_or_unreadable_word_list_file_stops_the_app_from_starting(make_app, tmp_path):
    with pytest.raises(WordListUnreadable, match="EASEL_BLOCKED_WORDS_FILE .*missing.txt.*no such file"):
        await make_app(EASEL_BLOCKED_WORDS_FILE=str(tmp_path / "missing.txt"))
    broken = tmp_path / "latin1.txt"
    broken.write_bytes(b"caf\xe9\n")
    with pytest.raises(WordListUnreadable, match="EASEL_SENSITIVE_WORDS_FILE .*not UTF-8"):
        await make_app(EASEL_SENSITIVE_WORDS_FILE=str(broken))


def test_easel_run_refuses_to_start_with_a_clear_line_and_doctor_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EASEL_BLOCKED_WORDS_FILE", str(tmp_path / "gone.txt"))
    assert main(["run"]) == 2
    err = capsys.readouterr().err
    assert "not starting" in err and "EASEL_BLOCKED_WORDS_FILE" in err and "gone.txt" in err
    assert "Traceback" not in err
    assert not (tmp_path / "data" / "easel.db").exists()  # nothing opened

    monkeypatch.setenv("EASEL_DEVICE", "cpu")
    assert main(["doctor", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert any(p.startswith("THE BOT WILL NOT START") and "gone.txt" in p for p in problems)


async def test_a_word_list_file_that_breaks_while_running_keeps_the_last_good_list(make_app, tmp_path, caplog):
    words = tmp_path / "blocked.txt"
    words.write_text("# one per line\nkraken\n")
    app, _ = await started(make_app, EASEL_BLOCKED_WORDS_FILE=str(words), EASEL_STRIKE_LIMIT="0")
    assert (await draw(app, alice(), "/draw a kraken")).text == t("blocked_prompt", "en")

    with caplog.at_level(logging.ERROR, logger="bot.community.moderation"):
        words.write_bytes(b"kraken\nsquid\n\xff\xfe broken")  # not UTF-8 any more
        assert (await draw(app, alice(), "/draw a kraken")).text == t("blocked_prompt", "en")
        words.unlink()
        assert (await draw(app, alice(), "/draw a kraken")).text == t("blocked_prompt", "en")
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("unreadable" in m and "KEEPING the last good list" in m for m in messages)
    assert any("is gone" in m and "KEEPING the last good list" in m for m in messages)
    words.write_text("squid\n")  # back: the new list applies
    assert (await draw(app, alice(), "/draw a squid")).text == t("blocked_prompt", "en")
    assert (await draw(app, alice(), "/draw a kraken")).job_id is not None


# -- 5. a chat's own lists: capped, compiled off the loop ---------------------------------------------


async def test_a_chats_own_list_is_capped(make_app):
    app = await make_app(EASEL_ADMINS="telegram:900", EASEL_MAX_CHAT_TERMS="2")
    for word in ("one", "two"):
        assert (await draw(app, ADMIN, f"/sensitive add {word}")).text.startswith("Added")
    full = await draw(app, ADMIN, "/sensitive add three")
    assert full.text == t("wordlist_full", "en", list=t("list.sensitive", "en"), limit=2)
    assert await app.db.moderation.terms("telegram:chat:1", "sensitive") == ["one", "two"]
    # Removing makes room again.
    assert (await draw(app, ADMIN, "/sensitive remove one")).text.startswith("Removed")
    assert (await draw(app, ADMIN, "/sensitive add three")).text.startswith("Added")


async def test_a_ten_thousand_term_list_compiles_on_a_worker_thread_while_the_loop_keeps_ticking(make_app, monkeypatch):
    app = await make_app()
    scope = "telegram:chat:1"
    for index in range(10_000):  # as an old database, from before the cap, might hold
        await app.db.moderation.add_term(scope, "blocked", f"forbidden{index:05d}word", None)
    ticks = 0
    compiles: list[tuple[str, int, int]] = []
    loop_thread = threading.current_thread()
    real = moderation.WordList

    def recording(entries=()):
        before = ticks
        words = real(entries)
        if len(words.entries) >= 10_000:
            compiles.append((threading.current_thread().name, before, ticks))
        return words

    async def heartbeat():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    monkeypatch.setattr(moderation, "WordList", recording)
    beating = asyncio.create_task(heartbeat())
    try:
        # Several prompts arrive while the list is being compiled: it is compiled once, for all.
        replies = await asyncio.gather(
            draw(app, alice(), "/draw forbidden04321word at dusk"),
            *(draw(app, caller(str(300 + n), f"user{n}"), f"/draw a calm lake {n}") for n in range(3)),
        )
    finally:
        beating.cancel()
    assert replies[0].text == t("blocked_prompt", "en")
    assert all(reply.job_id is not None for reply in replies[1:])
    [(thread, before, after)] = compiles
    assert thread != loop_thread.name
    assert after > before  # the loop ran while the list compiled
