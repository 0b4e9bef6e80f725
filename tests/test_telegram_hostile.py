"""A hostile group on Telegram (issue 13), end to end: the real python-telegram-bot against the fake
Bot API, the real app with the tiny model.  Admins target ids or a reply (never a name anyone can
take), echoed words never mention anyone, and Params too long for an alert goes privately, paced."""

from __future__ import annotations

import re
import time

from bot.adapters.telegram import fitting
from bot.adapters.telegram.outbox import SHORT_ANSWER
from bot.language.buttons import Action, button_id
from bot.language.messages import t
from tests.support import telegram_harness as harness
from tests.support.telegram_harness import (
    ADMIN,
    ALICE,
    BOB,
    GROUP,
    jobs_of,
    picture,
    press,
    replying_to,
    said,
    say,
    settled,
)

tg = harness.tg  # fixtures
easel = harness.easel

# What Telegram turns into a mention in plain text: `@` and a username, not inside a word.
LINKABLE = re.compile(r"(?<!\w)@[A-Za-z0-9_]{3,}")


async def test_admins_ban_by_id_or_by_reply_and_a_borrowed_name_bans_nobody(easel, tg):
    app, _ = await easel.start(serve=False)
    await say(tg, GROUP, ALICE, "/quota", username="alice")
    bobs = await say(tg, GROUP, BOB, "/quota", username="alice")  # bob took alice's name
    bobs_message = replying_to(bobs)

    for target in ("alice", "@alice"):
        refused = await say(tg, GROUP, ADMIN, f"/ban {target}")
        assert refused.params["text"] == fitting.unlinked(t("user_not_found", "en", target=target))
        assert not LINKABLE.search(refused.params["text"])
    assert not any([(await app.db.users.find("telegram", str(who))).banned for who in (ALICE, BOB)])

    # In reply to bob's message: bob, whatever he calls himself.
    done = await say(tg, GROUP, ADMIN, "/ban flooding the group", reply_to_message_id=bobs_message)
    assert done.params["text"] == t("admin_done", "en", action=t("action.ban", "en"), target=f"alice (telegram:{BOB})")
    assert (await app.db.users.find("telegram", str(BOB))).banned
    assert not (await app.db.users.find("telegram", str(ALICE))).banned
    [entry] = await app.db.audit.recent()
    assert (entry.target, entry.details) == (f"telegram:{BOB}", {"reason": "flooding the group"})
    refused = await say(tg, GROUP, BOB, "/draw a fox", username="alice")
    assert refused.params["text"] == t("banned", "en")

    # By id, as everywhere.
    await say(tg, GROUP, ADMIN, f"/unban telegram:{BOB}")
    done = await say(tg, GROUP, ADMIN, f"/ban telegram:{ALICE}")
    assert f"telegram:{ALICE}" in done.params["text"] and (await app.db.users.find("telegram", str(ALICE))).banned
    assert not (await app.db.users.find("telegram", str(BOB))).banned


async def test_echoed_words_never_mention_anyone(easel, tg):
    app, _ = await easel.start()

    example = await say(tg, GROUP, ALICE, "/draw a portrait of @durov --ar 99:1")
    assert "durov" in example.params["text"] and not LINKABLE.search(example.params["text"])

    mark = said(tg, GROUP, ALICE, "/draw a portrait of @durov and @everyone --size 128x128 --steps 1")
    photo = await picture(tg, GROUP, mark)
    caption = photo.params["caption"]
    assert "durov" in caption and "everyone" in caption and not LINKABLE.search(caption)
    [job] = await jobs_of(app, ALICE)
    job = await settled(app, job.id)
    assert "@durov" in job.request["prompt"]  # only what is shown changes

    params = await press(tg, GROUP, ALICE, photo.result["message_id"], button_id(Action.PARAMS, job.id))
    assert params.params["show_alert"] is True and "durov" in params.params["text"]
    assert not LINKABLE.search(params.params["text"])


async def test_params_too_long_for_an_alert_go_privately_paced_or_short_in_the_group(easel, tg):
    app, _ = await easel.start()
    prompt = "a lighthouse on a rocky coast at dusk, " * 3 + "gulls"  # Params of it cannot fit 200 characters
    mark = said(tg, GROUP, ALICE, f"/draw {prompt} --size 128x128 --steps 1 --raw")
    photo = await picture(tg, GROUP, mark)
    picture_id = photo.result["message_id"]
    [job] = await jobs_of(app, ALICE)
    await settled(app, job.id)
    data = button_id(Action.PARAMS, job.id)

    mark = len(tg.calls)
    first = await press(tg, GROUP, ALICE, picture_id, data)
    assert first.params["text"] == t("private_answer_sent", "en") and not first.params.get("show_alert")
    [private] = [c for c in tg.calls_of("sendMessage") if c.index >= mark and c.ok]
    assert private.params["chat_id"] == ALICE and "a lighthouse on a rocky coast" in private.params["text"]
    assert "Seed:" in private.params["text"]

    again = await press(tg, GROUP, ALICE, picture_id, data)  # within 30 s: a toast, nothing posted
    assert again.params["text"].startswith(t("private_answer_wait", "en", wait="X").split("X")[0])
    assert [c for c in tg.calls_of("sendMessage") if c.index >= mark] == [private]

    # Bob never started a chat with the bot: Telegram refuses the private message; the group gets a
    # short version, under the picture.
    tg.fail_next("sendMessage", status=403, description="Forbidden: bot can't initiate conversation with a user")
    mark = len(tg.calls)
    bobs = await press(tg, GROUP, BOB, picture_id, data)
    assert not bobs.params.get("text")
    short = await tg.wait_for("sendMessage", lambda c: c.index >= mark and c.ok)
    assert short.params["chat_id"] == GROUP and replying_to(short) == picture_id
    assert short.params["text"].endswith(t("private_answer_short", "en", text="").lstrip("\n"))
    assert fitting.utf16_length(short.params["text"]) <= SHORT_ANSWER + 80
    refused = [c for c in tg.calls_of("sendMessage") if c.index >= mark and not c.ok]
    assert [c.params["chat_id"] for c in refused] == [BOB]
    # ...and that too is paced.
    mark = len(tg.calls)
    paced = await press(tg, GROUP, BOB, picture_id, data)
    assert paced.params["text"].startswith(t("private_answer_wait", "en", wait="X").split("X")[0])
    assert not [c for c in tg.calls_of("sendMessage") if c.index >= mark]


# -- forum topics: the topic's first message is no reply anyone chose -------------------------------

TOPIC = 500  # the id of the service message that created the topic, and so the topic's thread id


def in_forum(message_id: int, user: int, text: str | None = None, **fields) -> dict:
    """A message in GROUP as a forum supergroup, as Telegram sends it (the fake has no topics)."""
    message = {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": {"id": GROUP, "type": "supergroup", "title": "Forum", "is_forum": True},
        "from": {"id": user, "is_bot": False, "first_name": f"user {user}", "language_code": "en"},
        **fields,
    }
    if text is not None:
        message["text"] = text
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    return message


def in_topic(message_id: int, user: int, text: str, replied: dict) -> dict:
    return in_forum(message_id, user, text, message_thread_id=TOPIC, is_topic_message=True, reply_to_message=replied)


async def test_a_ban_in_a_forum_topic_without_a_reply_does_not_ban_the_topics_creator(easel, tg):
    app, _ = await easel.start(serve=False)
    for user in (ALICE, BOB):
        await say(tg, GROUP, user, "/quota")
    created = in_forum(TOPIC, ALICE, message_thread_id=TOPIC, forum_topic_created={"name": "Art", "icon_color": 0})
    bobs = in_topic(TOPIC + 1, BOB, "buy cheap followers", created)

    # Every message of the topic replies to the message that created it: not a target.
    mark = len(tg.calls)
    tg.inject_raw_update({"message": in_topic(TOPIC + 2, ADMIN, "/ban spam", created)})
    refused = await harness.answer_after(tg, GROUP, mark)
    assert f"telegram:{ALICE}" not in refused.params["text"]
    assert not (await app.db.users.find("telegram", str(ALICE))).banned
    assert await app.db.audit.recent() == []

    # A real reply inside the topic still names whom it answers.
    mark = len(tg.calls)
    tg.inject_raw_update({"message": in_topic(TOPIC + 3, ADMIN, "/ban spam", bobs)})
    done = await harness.answer_after(tg, GROUP, mark)
    assert f"telegram:{BOB}" in done.params["text"] and (await app.db.users.find("telegram", str(BOB))).banned
    assert not (await app.db.users.find("telegram", str(ALICE))).banned


async def test_a_reply_in_a_plain_supergroups_thread_still_names_its_target(easel, tg):
    """Outside forums a reply's thread id is the message it answers: that reply was chosen."""
    app, _ = await easel.start(serve=False)
    await say(tg, GROUP, BOB, "/quota")
    bobs = in_forum(TOPIC, BOB, "buy cheap followers", chat={"id": GROUP, "type": "supergroup", "title": "Group"})
    reply = in_forum(TOPIC + 1, ADMIN, "/ban spam", chat=bobs["chat"], message_thread_id=TOPIC, reply_to_message=bobs)
    mark = len(tg.calls)
    tg.inject_raw_update({"message": reply})
    done = await harness.answer_after(tg, GROUP, mark)
    assert f"telegram:{BOB}" in done.params["text"] and (await app.db.users.find("telegram", str(BOB))).banned
