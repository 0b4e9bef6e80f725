"""Community features end to end on Telegram: the real python-telegram-bot against the fake Bot API,
the real app with the tiny model.  Moderation, spoilers, batches as albums with a keyboard that
works, style presets and the cooldown."""

from __future__ import annotations

import asyncio
import re

from bot.adapters.telegram import fitting
from bot.language.buttons import Action, button_id
from bot.language.messages import t
from tests.support import telegram_harness as harness
from tests.support.telegram_harness import (
    ADMIN,
    ALICE,
    BOB,
    GROUP,
    SLOW,
    jobs_of,
    press,
    quota_used,
    said,
    say,
    settled,
)

tg = harness.tg  # fixtures
easel = harness.easel


async def album(tg, chat: int, mark: int = 0):
    return await tg.wait_for(
        "sendMediaGroup", lambda c: c.index >= mark and c.ok and c.params["chat_id"] == chat, timeout=SLOW
    )


async def test_blocked_prompts_are_refused_without_the_word_and_an_admin_edits_the_groups_list(easel, tg):
    app, _ = await easel.start(EASEL_BLOCKED_WORDS="grimdark", EASEL_STRIKE_LIMIT="10")

    zero_width = await say(tg, ALICE, ALICE, "/draw a grim\u200bdark castle")
    full_width = await say(tg, ALICE, ALICE, "/draw a castle --no ｇｒｉｍｄａｒｋ")
    assert zero_width.params["text"] == full_width.params["text"] == t("blocked_prompt", "en")
    assert await jobs_of(app, ALICE) == []

    refused = await say(tg, GROUP, ALICE, "/block add kraken")
    assert refused.params["text"] == t("not_admin", "en")
    # The group's own admins keep its list (Telegram says who they are), plain words only.
    tg.set_member_status(GROUP, ALICE, "administrator")
    added = await say(tg, GROUP, ALICE, "/block add octopus")
    assert added.params["text"] == t("wordlist_added", "en", list="blocked words", term="octopus")
    regex = await say(tg, GROUP, ALICE, "/block add re:octo+pus")
    assert regex.params["text"] == t("wordlist_regex_admins", "en")
    listing = await say(tg, GROUP, ALICE, "/block list")
    assert "o·····s" in listing.params["text"] and "octopus" not in listing.params["text"]  # the group reads it
    assert len(tg.calls_of("getChatMember")) == 4  # asked for the list commands only
    added = await say(tg, GROUP, ADMIN, "/block add Kraken")
    assert added.params["text"] == t("wordlist_added", "en", list="blocked words", term="Kraken")
    blocked = await say(tg, GROUP, BOB, "/draw a k r a k e n at sea")
    assert blocked.params["text"] == t("blocked_prompt", "en")
    elsewhere = await say(tg, BOB, BOB, "/draw a kraken at sea")  # a private chat keeps its own list
    assert "#" in elsewhere.params["text"]
    removed = await say(tg, GROUP, ADMIN, "/block remove ＫＲＡＫＥＮ")  # any spelling of it
    assert removed.params["text"] == t("wordlist_removed", "en", list="blocked words", term="Kraken")
    again = await say(tg, GROUP, ADMIN, "/block remove kraken")
    assert again.params["text"] == t("wordlist_missing", "en", list="blocked words")
    queued = await say(tg, GROUP, BOB, "/draw a kraken at sea --steps 1")
    assert "#" in queued.params["text"]
    audit = [(e.action, e.target) for e in reversed(await app.db.audit.recent())]
    scope = f"telegram:chat:{GROUP}"
    assert audit == [("blocked_add", scope), ("blocked_add", scope), ("blocked_remove", scope)]


async def test_a_sensitive_picture_is_sent_with_a_spoiler_and_no_unhidden_png(easel, tg):
    app, _ = await easel.start(EASEL_SENSITIVE_WORDS="swimsuit")
    await say(tg, ALICE, ALICE, "/settings png on")

    mark = said(tg, ALICE, ALICE, "/draw a cat in a swimsuit --steps 1")
    photo_call = await tg.wait_for("sendPhoto", lambda c: c.index >= mark and c.ok, timeout=SLOW)
    [job] = await jobs_of(app, ALICE)
    job = await settled(app, job.id)
    photo = tg.message(ALICE, photo_call.result["message_id"])
    assert job.sensitive and photo.has_media_spoiler and t("spoiler_note", "en") in photo.caption
    assert not [c for c in tg.calls_of("sendDocument") if c.index >= mark]

    mark = said(tg, ALICE, ALICE, "/draw a cat --steps 1")
    plain = await tg.wait_for("sendPhoto", lambda c: c.index >= mark and c.ok, timeout=SLOW)
    assert not tg.message(ALICE, plain.result["message_id"]).has_media_spoiler


async def test_a_sensitive_picture_too_big_for_a_photo_goes_as_a_smaller_hidden_photo(easel, tg, monkeypatch):
    """A document would show it unhidden (Telegram has no spoiler for documents)."""
    monkeypatch.setattr(fitting, "PHOTO_MAX_BYTES", 20_000)
    app, _ = await easel.start(EASEL_SENSITIVE_WORDS="swimsuit")

    mark = said(tg, ALICE, ALICE, "/draw a cat in a swimsuit --size 128x128 --steps 1")
    call = await tg.wait_for("sendPhoto", lambda c: c.index >= mark and c.ok, timeout=SLOW)
    [job] = await jobs_of(app, ALICE)
    job = await settled(app, job.id)
    assert len(app.service.images.resolve(job.image_paths[0]).read_bytes()) > 20_000  # the PNG would not do
    photo = tg.message(ALICE, call.result["message_id"])
    assert photo.has_media_spoiler and photo.photo[:2] == b"\xff\xd8" and len(photo.photo) <= 20_000  # a JPEG
    assert not [c for c in tg.calls_of("sendDocument") if c.index >= mark]

    # The same for a batch: every picture of the album stays a hidden photo.
    mark = said(tg, ALICE, ALICE, "/draw two cats in swimsuits --size 128x128 --n 2 --steps 1")
    sent = await album(tg, ALICE, mark)
    photos = [tg.message(ALICE, m["message_id"]) for m in sent.result]
    assert all(p.has_media_spoiler and p.photo[:2] == b"\xff\xd8" for p in photos) and len(photos) == 2
    assert not [c for c in tg.calls_of("sendDocument") if c.index >= mark]


async def test_a_hidden_photo_telegram_refuses_goes_again_smaller_and_still_hidden(easel, tg):
    app, _ = await easel.start(EASEL_SENSITIVE_WORDS="swimsuit")
    tg.fail_next("sendPhoto", status=400, description="Bad Request: PHOTO_INVALID_DIMENSIONS")

    mark = said(tg, ALICE, ALICE, "/draw a dog in a swimsuit --size 128x128 --steps 1")
    call = await tg.wait_for("sendPhoto", lambda c: c.index >= mark and c.ok, timeout=SLOW)
    [job] = await jobs_of(app, ALICE)
    await settled(app, job.id)
    assert [c.ok for c in tg.calls_of("sendPhoto") if c.index >= mark] == [False, True]
    assert tg.message(ALICE, call.result["message_id"]).has_media_spoiler
    assert not [c for c in tg.calls_of("sendDocument") if c.index >= mark]


async def test_a_hidden_photo_refused_twice_is_never_unhidden_and_the_chat_is_told(easel, tg):
    app, _ = await easel.start(EASEL_SENSITIVE_WORDS="swimsuit")
    tg.fail_next("sendPhoto", status=400, description="Bad Request: not enough rights to send photos", count=2)

    mark = said(tg, ALICE, ALICE, "/draw a dog in a swimsuit --size 128x128 --steps 1")
    await harness.until(lambda: jobs_of(app, ALICE))
    [job] = await jobs_of(app, ALICE)
    told = t("error.undeliverable", "en", job_id=job.id)
    edit = await tg.wait_for("editMessageText", lambda c: c.index >= mark and c.params["text"] == told, timeout=SLOW)
    assert edit.ok
    job = await settled(app, job.id)
    assert job.delivered_at is None and "refused twice" in job.delivery_error  # given up: no retry will land
    assert await quota_used(app, ALICE) > 0  # drawn all the same: charged (not refunded), kept in /history
    await asyncio.sleep(0.5)
    assert [c.ok for c in tg.calls_of("sendPhoto") if c.index >= mark] == [False, False]
    assert not [c for c in tg.calls_of("sendDocument") if c.index >= mark]


async def test_in_a_group_only_replies_addressed_to_the_bot_vary_its_picture(easel, tg):
    app, _ = await easel.start()
    mark = said(tg, GROUP, ALICE, "/draw a harbour --steps 1")
    photo = await tg.wait_for("sendPhoto", lambda c: c.index >= mark and c.ok, timeout=SLOW)
    [job] = await jobs_of(app, ALICE)
    await settled(app, job.id)

    asked = said(tg, GROUP, BOB, "ha, nice one", reply_to_message_id=photo.result["message_id"])  # to the group
    said(tg, GROUP, BOB, "@EaselBotFan look at this", reply_to_message_id=photo.result["message_id"])  # not us
    said(tg, GROUP, BOB, "/roll 2d6", reply_to_message_id=photo.result["message_id"])  # another bot's command
    said(tg, GROUP, BOB, "@EaselBot, now at night", reply_to_message_id=photo.result["message_id"])

    async def varied():
        return await app.db.jobs.children(job.id)

    await harness.until(varied)
    [variation] = await app.db.jobs.children(job.id)
    assert variation.request["prompt"] == "now at night" and variation.kind == "variation"
    await settled(app, variation.id)
    await asyncio.sleep(0.3)
    assert len(await app.db.jobs.children(job.id)) == 1
    assert await quota_used(app, BOB) == 1 and await quota_used(app, ALICE) == 1
    answers = [c.params["text"] for c in tg.calls_of("sendMessage") if c.index >= asked]
    assert len(answers) == 1 and f"#{variation.id}" in answers[0]  # the variation's status, nothing else


async def test_a_batch_of_four_is_an_album_with_a_keyboard_that_works_and_costs_four(easel, tg):
    app, _ = await easel.start(EASEL_DAILY_QUOTA="10")

    mark = said(tg, ALICE, ALICE, "/draw a lighthouse --n 4 --seed 60 --steps 1")
    sent = await album(tg, ALICE, mark)
    [job] = await jobs_of(app, ALICE)
    job = await settled(app, job.id)
    photos = [tg.message(ALICE, m["message_id"]) for m in sent.result]
    assert len(photos) == 4 and len({p.media_group_id for p in photos}) == 1 and photos[0].media_group_id
    assert [p.photo for p in photos] == [app.service.images.resolve(path).read_bytes() for path in job.image_paths]
    assert "seeds 60–63" in photos[0].caption and photos[1].caption is None
    assert await quota_used(app, ALICE) == 4

    [keyboard] = [m for m in tg.chat_messages(ALICE) if m.reply_markup]
    assert keyboard.text == t("batch_buttons", "en", job_id=job.id)
    assert keyboard.reply_to_message_id == photos[0].message_id
    rows = keyboard.reply_markup["inline_keyboard"]
    assert [b["text"] for b in rows[0]] == ["U1", "U2", "U3", "U4"]
    assert [b["callback_data"] for b in rows[1]] == [button_id(Action.VARY_STRONG, job.id, i) for i in range(4)]
    assert [b["callback_data"] for b in rows[2]] == [
        button_id(action, job.id) for action in (Action.REROLL, Action.PARAMS, Action.DELETE)
    ]

    mark = len(tg.calls)
    await press(tg, ALICE, ALICE, keyboard.message_id, button_id(Action.UPSCALE, job.id, 2))
    upscale_photo = await tg.wait_for("sendPhoto", lambda c: c.index >= mark and c.ok, timeout=SLOW)
    upscale = (await jobs_of(app, ALICE))[0]
    upscale = await settled(app, upscale.id)
    assert upscale.parent_id == job.id and upscale.seed == 62 and upscale.kind == "upscale"
    assert upscale.request["source_image"] == str(app.service.images.resolve(job.image_paths[2]))
    assert tg.message(ALICE, upscale_photo.result["message_id"]).photo_sizes[-1]["width"] == 512

    # Words in reply to the third picture of the album: a variation of that picture.
    said(tg, ALICE, ALICE, "now at night", reply_to_message_id=photos[2].message_id)

    async def varied():
        children = await app.db.jobs.children(job.id)
        return len(children) == 2 and children[1]

    await harness.until(varied)
    variation = (await app.db.jobs.children(job.id))[1]
    assert variation.request["source_image"] == str(app.service.images.resolve(job.image_paths[2]))
    assert variation.request["prompt"] == "now at night"
    await settled(app, variation.id)
    assert await quota_used(app, ALICE) == 6

    # Words in reply to the button message name their picture with "#k".
    said(tg, ALICE, ALICE, "#2 at dawn", reply_to_message_id=keyboard.message_id)

    async def varied_again():
        return len(await app.db.jobs.children(job.id)) == 3

    await harness.until(varied_again)
    dawn = (await app.db.jobs.children(job.id))[2]
    assert dawn.request["source_image"] == str(app.service.images.resolve(job.image_paths[1]))
    assert dawn.request["prompt"] == "at dawn"
    await settled(app, dawn.id)

    query = await press(tg, ALICE, ALICE, keyboard.message_id, button_id(Action.DELETE, job.id))
    assert query.params.get("text") == t("deleted", "en")

    async def album_gone() -> bool:
        return all(
            m.message_id not in {p.message_id for p in photos} | {keyboard.message_id} for m in tg.chat_messages(ALICE)
        )

    await harness.until(album_gone)


async def test_a_style_changes_the_prompt_and_the_cooldown_refuses_a_fast_second_request(easel, tg):
    app, _ = await easel.start(EASEL_COOLDOWN_S="90")

    mark = said(tg, ALICE, ALICE, "/draw a fox in the rain --style cinematic --steps 1")
    await tg.wait_for("sendPhoto", lambda c: c.index >= mark and c.ok, timeout=SLOW)
    [job] = await jobs_of(app, ALICE)
    assert job.request["prompt"].startswith("cinematic film still of a fox in the rain")
    assert (job.request["width"], job.request["height"]) == app.service.profile.aspect_ratios["16:9"]

    second = await say(tg, ALICE, ALICE, "/draw an owl")
    assert re.fullmatch(r"Please wait (1m[0-2][0-9]|1m30)s before your next drawing\.", second.params["text"])
    assert len(await jobs_of(app, ALICE)) == 1
    styles = await say(tg, BOB, BOB, "/styles", language_code="zh-hans")
    assert styles.params["text"].startswith(t("styles_header", "zh")) and "中国水墨画" in styles.params["text"]
