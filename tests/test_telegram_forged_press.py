"""Forged button presses through the real python-telegram-bot against the fake Bot API: callback data
is written by the client, so a press naming another chat's job, or another message's, must reveal
nothing, create nothing and delete nothing."""

from __future__ import annotations

from bot.language.buttons import Action, button_id
from bot.language.messages import t
from tests.fakes.telegram_server import Call, FakeTelegram
from tests.support.telegram_harness import (
    ALICE,
    BOB,
    GROUP,
    OTHER_GROUP,
    easel,  # noqa: F401  (fixture)
    jobs_of,
    markup,
    picture,
    post_as_bot,
    say,
    settled,
    tg,  # noqa: F401  (fixture)
)

MALLORY = 300
PROMPT = "a secret lighthouse for the family album"


async def press(tg: FakeTelegram, chat: int, user: int, message_id: int, data: str) -> Call:  # noqa: F811
    """A press from a modified client: any callback data on any bot message the user can see."""
    query_id = tg.press_button(chat, user, message_id, data, forged=True)
    return await tg.wait_for("answerCallbackQuery", lambda c: c.params["callback_query_id"] == query_id)


def stale(answer) -> bool:
    return answer.ok and (answer.params["show_alert"], answer.params["text"]) == (True, t("stale_button", "en"))


async def test_a_press_naming_another_chats_job_reveals_nothing_creates_nothing_deletes_nothing(easel, tg):  # noqa: F811
    app, _ = await easel.start(EASEL_MAX_PENDING=10)
    await say(tg, GROUP, ALICE, f"/draw@easelbot {PROMPT} --size 128x128 --steps 1")
    victim_picture = (await picture(tg, GROUP)).result["message_id"]
    [victim] = await jobs_of(app, ALICE)
    victim = await settled(app, victim.id)

    # Mallory has a bot message of his own in another group: his own picture, with real buttons.
    await say(tg, OTHER_GROUP, MALLORY, "/draw@easelbot a pebble --size 128x128 --steps 1")
    own_picture = (await picture(tg, OTHER_GROUP)).result["message_id"]
    [own] = await jobs_of(app, MALLORY)
    own = await settled(app, own.id)
    jobs_before = await app.db.jobs.counts_by_status()
    mark = len(tg.calls)

    # His modified client swaps the job id in the callback data of his own message's buttons.
    for action in (Action.PARAMS, Action.UPSCALE, Action.VARY_STRONG, Action.REROLL, Action.DELETE):
        answer = await press(tg, OTHER_GROUP, MALLORY, own_picture, button_id(action, victim.id))
        assert stale(answer), action
        assert PROMPT not in answer.params["text"]
    # And presses his own job's Delete on the victim's message (he can see it: he joined her group).
    answer = await press(tg, GROUP, MALLORY, victim_picture, button_id(Action.DELETE, own.id))
    assert stale(answer)
    # Even her own job's buttons work only on her own picture, not on a copy somewhere else.
    copy = await post_as_bot(tg, "sendMessage", chat_id=OTHER_GROUP, text="x", reply_markup=markup(["x"]))
    answer = await press(tg, OTHER_GROUP, ALICE, copy["message_id"], button_id(Action.PARAMS, victim.id))
    assert stale(answer)

    later = tg.calls[mark:]
    assert not [c for c in later if c.method == "deleteMessage"]
    assert not [c for c in later if c.method in ("sendPhoto", "sendDocument", "sendMediaGroup")]
    assert not [c for c in later if c.method == "sendMessage" and PROMPT in str(c.params.get("text"))]
    assert await app.db.jobs.counts_by_status() == jobs_before
    assert not (await app.db.jobs.get(victim.id)).deleted
    assert app.service.images.resolve(victim.image_paths[0]).exists()
    assert victim_picture in [m.message_id for m in tg.chat_messages(GROUP)]

    # The real buttons still work where they were shown.
    params = await press(tg, GROUP, ALICE, victim_picture, button_id(Action.PARAMS, victim.id))
    assert PROMPT in params.params["text"]


async def test_a_batch_button_works_on_its_own_message_and_a_pictures_button_only_on_its_picture(easel, tg):  # noqa: F811
    app, _ = await easel.start(EASEL_MAX_PENDING=10)
    await say(tg, ALICE, ALICE, "/draw three boats --n 3 --size 128x128 --steps 1")
    buttons = await tg.wait_for("sendMessage", lambda c: c.ok and "reply_markup" in c.params, timeout=30)
    [batch] = await jobs_of(app, ALICE)
    batch = await settled(app, batch.id)
    album = [m for m in tg.chat_messages(ALICE) if m.photo]
    assert len(album) == 3

    # U2 on the message that carries the batch's buttons: honoured.
    upscale = await press(tg, ALICE, ALICE, buttons.result["message_id"], button_id(Action.UPSCALE, batch.id, 1))
    assert upscale.ok and not upscale.params.get("show_alert")
    # U3 on the second picture's own message (albums carry no buttons; a forged press): refused.
    forged = await press(tg, ALICE, ALICE, album[1].message_id, button_id(Action.UPSCALE, batch.id, 2))
    assert stale(forged)
    # Rerolls of another user's batch from one's own chat: refused.
    bobs = await post_as_bot(tg, "sendMessage", chat_id=BOB, text="hello", reply_markup=markup(["x"]))
    other = await press(tg, BOB, BOB, bobs["message_id"], button_id(Action.REROLL, batch.id))
    assert stale(other)
    assert len(await app.db.jobs.children(batch.id)) == 1


async def test_a_forged_press_from_a_stranger_is_answered_without_a_user_row(easel, tg):  # noqa: F811
    app, _ = await easel.start()
    stranger = 4040
    greeting = await post_as_bot(tg, "sendMessage", chat_id=GROUP, text="hi", reply_markup=markup(["x"]))
    users = await app.db.users.count()

    for data in ("easel:nonsense", "", button_id(Action.PARAMS, 1), button_id(Action.REROLL, 999999)):
        answer = await press(tg, GROUP, stranger, greeting["message_id"], data)
        assert stale(answer), data
    assert await app.db.users.find("telegram", str(stranger)) is None
    assert await app.db.users.count() == users
