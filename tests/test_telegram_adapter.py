"""The Telegram adapter end to end: the real python-telegram-bot and the real app (tiny model, SQLite,
GPU thread) against the fake Bot API server in tests/fakes/telegram_server.py.

Most tests use private chats and no rate limiter (PTB's AIORateLimiter holds groups to 20 messages
a minute).  The tiny engine is shared by every app and is not thread-safe, so a test never lets two
apps draw at once: the harness stops its apps and waits for their GPU threads at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest
import torch

from bot.adapters.telegram import TelegramAdapter, fitting
from bot.adapters.telegram.fitting import caption_for, file_url_for, fit, fits_as_photo, utf16_length
from bot.adapters.telegram.texts import COMMANDS, unexpected_error
from bot.language.buttons import SINGLE_PICTURE, Action, button_id
from bot.language.messages import t
from storage.jobs import JobStatus
from tests.fakes.telegram_server import FakeTelegram
from tests.support import telegram_harness as harness
from tests.support.telegram_harness import (
    ADMIN,
    ALICE,
    BOB,
    GROUP,
    OTHER_GROUP,
    SLOW,
    Gate,
    ProcessKilled,
    answer_after,
    answers_to,
    attached,
    gpu_idle,
    jobs_of,
    markup,
    picture,
    post_as_bot,
    prefix,
    press,
    quota_used,
    replying_to,
    said,
    say,
    settled,
    until,
)

tg = harness.tg  # fixtures
easel = harness.easel

# -- pure rules ---------------------------------------------------------------------------------


def test_telegram_size_rules_are_kept():
    foxes = "🦊" * 600  # 1200 UTF-16 units: each fox counts twice
    cut = fit(foxes, fitting.MAX_CAPTION)
    assert utf16_length(cut) <= 1024 and cut.endswith("…") and set(cut[:-1]) == {"🦊"}
    assert fit("short", 10) == "short"
    assert caption_for("a fox\n#1 · seed 7", ["lower-memory plan"]) == "a fox\n#1 · seed 7\n\nlower-memory plan"
    assert caption_for("x" * 1020, ["a note that no longer fits"]) == "x" * 1020
    assert utf16_length(caption_for("y" * 5000, [])) == 1024
    assert fits_as_photo(10_000_000, 4000, 3000) and fits_as_photo(1_000, 2000, 100)
    assert not fits_as_photo(10_000_001, 100, 100)  # over 10 MB
    assert not fits_as_photo(1_000, 6000, 4001)  # width + height over 10000
    assert not fits_as_photo(1_000, 2100, 100)  # ratio over 20
    assert file_url_for("https://api.telegram.org/bot") == "https://api.telegram.org/file/bot"
    assert file_url_for("http://127.0.0.1:8081/bot") == "http://127.0.0.1:8081/file/bot"
    assert file_url_for("http://127.0.0.1:8081/custom") is None


def test_shrinking_for_a_photo_meets_every_photo_limit_at_the_largest_size_it_can(monkeypatch):
    import io

    import numpy as np
    from PIL import Image

    from bot.adapters.telegram.fitting import shrink_for_photo

    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (200, 400, 3), dtype=np.uint8))
    png = io.BytesIO()
    noise.save(png, "PNG")
    monkeypatch.setattr(fitting, "PHOTO_MAX_SIDES", 300)
    data, size = shrink_for_photo(png.getvalue())
    assert size == (198, 99) and fits_as_photo(len(data), *size) and data[:2] == b"\xff\xd8"
    monkeypatch.setattr(fitting, "PHOTO_MAX_SIDES", 10_000)
    monkeypatch.setattr(fitting, "PHOTO_MAX_BYTES", 12_000)  # noise hardly compresses: it must shrink
    data, size = shrink_for_photo(png.getvalue())
    assert fits_as_photo(len(data), *size) and size[0] < 400 and size[0] / size[1] == pytest.approx(2, abs=0.05)
    data, size = shrink_for_photo(png.getvalue(), max_side=100)
    assert max(size) == 100


# -- start-up ---------------------------------------------------------------------------------------


async def test_the_command_menu_is_published_and_help_answered_with_the_rate_limiter_on(easel, tg):
    await easel.start(serve=False, rate_limiter=True)

    english_help = await say(tg, ALICE, ALICE, "/help")
    chinese_help = await say(tg, BOB, BOB, "/start", language_code="zh-hans")

    assert (english_help.params["text"], chinese_help.params["text"]) == (t("help", "en"), t("help", "zh"))
    english, chinese = tg.my_commands(), tg.my_commands("zh")
    assert [c["command"] for c in english] == [c["command"] for c in chinese] == list(COMMANDS)
    assert english[0]["description"].startswith("Draw") and "画" in chinese[0]["description"]
    assert all(en["description"] != zh["description"] for en, zh in zip(english, chinese, strict=True))


# -- drawing -----------------------------------------------------------------------------------------


async def test_a_draw_with_flags_arrives_as_a_photo_with_its_buttons(easel, tg):
    app, _ = await easel.start()

    status = await say(tg, ALICE, ALICE, "/draw a lighthouse at dusk --ar 3:2 --seed 7 --steps 2")
    sent = await picture(tg, ALICE)
    [job] = await jobs_of(app, ALICE)
    job = await settled(app, job.id)

    photo = tg.message(ALICE, sent.result["message_id"])
    assert (photo.photo_sizes[-1]["width"], photo.photo_sizes[-1]["height"]) == (320, 208)
    assert photo.photo == app.service.images.resolve(job.image_paths[0]).read_bytes()
    assert "seed 7" in photo.caption and "320x208" in photo.caption and "a lighthouse at dusk" in photo.caption
    assert photo.button_data() == [button_id(action, job.id) for action in SINGLE_PICTURE]
    assert [len(row) for row in photo.reply_markup["inline_keyboard"]] == [3, 3, 2, 4]
    # The status message answered the request at once; the picture replies to the request and replaces it.
    assert f"#{job.id}" in status.params["text"] and photo.reply_to_message_id == replying_to(status)
    assert job.reply_to["status_message_id"] == status.result["message_id"]
    assert [m.message_id for m in tg.chat_messages(ALICE)] == [photo.message_id]
    assert (await app.db.jobs.find_by_message("telegram", str(ALICE), str(photo.message_id))).id == job.id


async def test_plain_text_is_a_prompt_in_private_and_the_daily_quota_holds(easel, tg):
    app, _ = await easel.start(serve=False, EASEL_DAILY_QUOTA=1)

    queued = await say(tg, ALICE, ALICE, "a red fox in the snow")
    refused = await say(tg, ALICE, ALICE, "/draw a blue fox")

    [job] = await jobs_of(app, ALICE)
    assert job.request["prompt"] == "a red fox in the snow" and f"#{job.id}" in queued.params["text"]
    assert refused.params["text"].startswith(prefix("quota_exceeded", limit=1))
    assert await quota_used(app, ALICE) == 1


async def test_in_groups_only_commands_for_this_bot_count_and_only_in_allowed_chats(easel, tg):
    app, _ = await easel.start(serve=False, EASEL_ALLOWED_CHATS=f"telegram:{GROUP}")

    said(tg, GROUP, ALICE, "hello everyone, lovely weather")
    said(tg, GROUP, ALICE, "/draw@otherbot a cat")
    said(tg, GROUP, 555, "/draw a robot", is_bot=True)
    queued = await say(tg, GROUP, ALICE, "/draw@easelbot a fox on a hill")
    refused = await say(tg, OTHER_GROUP, ALICE, "/draw@easelbot a fox")
    chinese = await say(tg, GROUP, BOB, "/quota", language_code="zh-CN")

    [job] = await jobs_of(app, ALICE)
    assert job.request["prompt"] == "a fox on a hill" and f"#{job.id}" in queued.params["text"]
    assert refused.params["text"] == t("chat_not_allowed", "en")
    assert chinese.params["text"].startswith(prefix("quota_status", "zh", used=0, limit=50, left=50))
    # Chatter, another bot's command and a bot's message got no answer at all.
    in_group = [c.index for c in tg.calls_of("sendMessage") if c.params["chat_id"] == GROUP]
    assert in_group == [queued.index, chinese.index]
    assert await app.db.jobs.counts_by_status() == {status.value: 0 for status in JobStatus} | {"queued": 1}


async def test_a_banned_user_is_refused_politely(easel, tg):
    app, _ = await easel.start(serve=False)

    done = await say(tg, ADMIN, ADMIN, "/ban telegram:100 spam")
    refused = await say(tg, ALICE, ALICE, "/draw a fox")

    assert "telegram:100" in done.params["text"]
    assert refused.params["text"] == t("banned", "en")
    assert await jobs_of(app, ALICE) == []


async def test_hostile_inputs_get_one_clear_answer_each(easel, tg, caplog):
    app, _ = await easel.start(serve=False)

    huge = await say(tg, ALICE, ALICE, "/draw " + "x" * 20_000)
    invisible = await say(tg, ALICE, ALICE, "\u200b\u200d\u2060")
    nan = await say(tg, ALICE, ALICE, "/draw a <cat> & co --cfg nan")
    hidden = await say(tg, ALICE, ALICE, "/draw a\u200b fox\u200d in the snow")

    assert "20000" in huge.params["text"] and "1000" in huge.params["text"] and len(huge.params["text"]) < 300
    assert invisible.params["text"].startswith(t("error.prompt_empty", "en"))
    # Sent as plain text: the corrected command comes back verbatim, markup characters and all.
    assert "nan" in nan.params["text"] and nan.params["text"].endswith("/draw a <cat> & co")
    [job] = await jobs_of(app, ALICE)
    assert job.request["prompt"] == "a fox in the snow" and f"#{job.id}" in hidden.params["text"]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# -- buttons -----------------------------------------------------------------------------------------


async def test_every_button_under_a_picture_does_its_job(easel, tg):
    app, _ = await easel.start(EASEL_MAX_PENDING=10)  # four new pictures wait at once
    await say(tg, GROUP, ALICE, "/draw@easelbot a lighthouse --size 128x128 --steps 2")
    picture_id = (await picture(tg, GROUP)).result["message_id"]
    [parent] = await jobs_of(app, ALICE)
    parent = await settled(app, parent.id)

    refused = await press(tg, GROUP, BOB, picture_id, button_id(Action.DELETE, parent.id))
    params = await press(tg, GROUP, ALICE, picture_id, button_id(Action.PARAMS, parent.id))
    assert (refused.params["show_alert"], refused.params["text"]) == (True, t("delete_not_yours", "en"))
    assert params.params["show_alert"] is True and "a lighthouse" in params.params["text"]

    for action in (Action.REROLL, Action.VARY_SUBTLE, Action.VARY_STRONG, Action.UPSCALE):
        mark = len(tg.calls)
        answer = await press(tg, GROUP, ALICE, picture_id, button_id(action, parent.id))
        status = await answer_after(tg, GROUP, mark)
        # Answered first, then the status message, under the picture.
        assert answer.ok and answer.index < status.index and replying_to(status) == picture_id

    children = [await settled(app, child.id) for child in await app.db.jobs.children(parent.id)]
    assert [child.kind for child in children] == ["txt2img", "variation", "variation", "upscale"]
    assert all(child.status is JobStatus.DONE for child in children)
    photos = {m.caption.rsplit("#", 1)[1].split(" ")[0]: m for m in tg.chat_messages(GROUP) if m.photo}
    assert all(photos[str(child.id)].reply_to_message_id == picture_id for child in children)
    upscaled = photos[str(children[-1].id)].photo_sizes[-1]
    assert (upscaled["width"], upscaled["height"]) == (256, 256)

    deleted = await press(tg, GROUP, ALICE, picture_id, button_id(Action.DELETE, parent.id))
    await tg.wait_for("deleteMessage", lambda c: c.params["message_id"] == picture_id)
    assert deleted.params["text"] == t("deleted", "en")
    assert picture_id not in [m.message_id for m in tg.chat_messages(GROUP)]
    assert (await app.db.jobs.get(parent.id)).deleted

    # A button of the deleted picture, kept somewhere (a forwarded copy): stale now.
    old = button_id(Action.REROLL, parent.id)
    copy = await post_as_bot(tg, "sendMessage", chat_id=GROUP, text="copy", reply_markup=markup([old]))
    stale = await press(tg, GROUP, ALICE, copy["message_id"], old)
    assert (stale.params["show_alert"], stale.params["text"]) == (True, t("stale_button", "en"))
    assert len(await app.db.jobs.children(parent.id)) == 4


async def test_forged_button_data_gets_an_alert_and_nothing_else(easel, tg, caplog):
    app, _ = await easel.start(serve=False)
    forged = ["easel:reroll:999999", "easel:explode:1", "nonsense", "easel:reroll:1;DROP", "easel:delete:-1"]
    message = await post_as_bot(tg, "sendMessage", chat_id=ALICE, text="old buttons", reply_markup=markup(forged))
    mark = len(tg.calls)

    answers = [await press(tg, ALICE, ALICE, message["message_id"], data) for data in forged]

    assert all(a.ok and (a.params["show_alert"], a.params["text"]) == (True, t("stale_button", "en")) for a in answers)
    assert [c.method for c in tg.calls[mark:] if c.method != "getUpdates"] == ["answerCallbackQuery"] * len(forged)
    assert await jobs_of(app, ALICE) == []
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_words_in_reply_to_a_picture_draw_a_variation_of_it(easel, tg):
    app, _ = await easel.start()
    await say(tg, ALICE, ALICE, "/draw a fox --size 128x128 --steps 2")
    picture_id = (await picture(tg, ALICE)).result["message_id"]
    [parent] = await jobs_of(app, ALICE)
    await settled(app, parent.id)

    for words in ("the same fox in winter", "/draw the same fox in spring"):
        mark = said(tg, ALICE, ALICE, words, reply_to_message_id=picture_id)
        status = await answer_after(tg, ALICE, mark)
        sent = await picture(tg, ALICE, mark)
        child = await settled(app, (await jobs_of(app, ALICE))[0].id)
        assert child.kind == "variation" and child.request["prompt"] == words.removeprefix("/draw ")
        assert Path(child.request["source_image"]) == app.service.images.resolve(parent.image_paths[0])
        assert (child.request["width"], child.request["height"]) == (128, 128)
        assert replying_to(sent) == replying_to(status) != picture_id  # answers the reply, not the picture


async def test_a_variation_by_reply_records_its_parent(easel, tg):
    app, _ = await easel.start(serve=False)  # no drawing: the parent is marked done by hand
    status = await say(tg, ALICE, ALICE, "/draw a fox")
    [parent] = await jobs_of(app, ALICE)
    await app.db.jobs.mark_running(parent.id)
    await app.db.jobs.mark_done(parent.id, seed=1, image_paths=["fox.png"], plan={}, timings={"total": 1.0})
    await app.service.record_message(parent.id, "telegram", str(ALICE), str(status.result["message_id"]))

    await say(tg, ALICE, ALICE, "in winter", reply_to_message_id=status.result["message_id"])

    child = (await jobs_of(app, ALICE))[0]
    assert child.kind == "variation"
    assert child.parent_id == parent.id


# -- the queue ---------------------------------------------------------------------------------------


async def test_cancel_stops_a_waiting_and_a_running_picture(easel, tg, engine):
    with Gate(engine, at=2) as gate:
        app, _ = await easel.start()
        await say(tg, ALICE, ALICE, "/draw one --size 64x64 --steps 3")
        await gate.wait_reached()
        await say(tg, ALICE, ALICE, "/draw two --size 64x64 --steps 1")
        waiting, running = await jobs_of(app, ALICE)

        latest = await say(tg, ALICE, ALICE, "/cancel")
        by_number = await say(tg, ALICE, ALICE, f"/cancel #{running.id}")
        gate.open()

        async def stopped() -> bool:
            return (await app.db.jobs.get(running.id)).status is JobStatus.CANCELLED

        await until(stopped)
    assert latest.params["text"] == t("cancelled", "en", job_id=waiting.id)
    assert by_number.params["text"] == t("cancelled", "en", job_id=running.id)
    assert (await app.db.jobs.get(waiting.id)).status is JobStatus.CANCELLED
    assert tg.calls_of("sendPhoto") == []


async def test_two_users_take_turns(easel, tg, engine):
    with Gate(engine, at=2) as gate:
        app, _ = await easel.start()
        for i in range(3):
            await say(tg, ALICE, ALICE, f"/draw alice {i} --size 64x64 --steps 2")
        await gate.wait_reached()
        await say(tg, BOB, BOB, "/draw bob --size 64x64 --steps 2")
        gate.open()
        await tg.wait_for("sendPhoto", lambda c: len([p for p in tg.calls_of("sendPhoto") if p.ok]) == 4, SLOW)

    order = [c.params["chat_id"] for c in tg.calls_of("sendPhoto")]
    # Bob waits behind Alice's running picture and at most one more of hers, never behind all three.
    assert sorted(order) == [ALICE, ALICE, ALICE, BOB] and order[-1] == ALICE, order
    jobs = await jobs_of(app, ALICE) + await jobs_of(app, BOB)
    assert [(await settled(app, job.id)).status for job in jobs] == [JobStatus.DONE] * 4


# -- flood control -----------------------------------------------------------------------------------


async def test_a_429_on_a_progress_edit_skips_it_and_the_picture_still_arrives_once(easel, tg, engine):
    with Gate(engine, at=1) as gate:
        app, _ = await easel.start()
        tg.fail_next("editMessageText", status=429, retry_after=1)
        await say(tg, ALICE, ALICE, "/draw a storm --size 64x64 --steps 3")
        await gate.wait_reached()
        [job] = await jobs_of(app, ALICE)
        await attached(app, job.id)  # so step 1 has a status message to edit
        gate.open()
        flood = await tg.wait_for("editMessageText", timeout=SLOW)
        await picture(tg, ALICE)
    await settled(app, job.id)

    assert flood.fault == "error 429"
    # Nothing more went to the chat during the flood wait: no retried edit, the picture waited.
    assert all(c.timestamp - flood.timestamp >= 1.0 for c in tg.calls[flood.index + 1 :] if c.method != "getUpdates")
    assert len(tg.calls_of("sendPhoto")) == 1
    assert [m.photo is not None for m in tg.chat_messages(ALICE)] == [True]


async def test_a_429_on_the_picture_is_waited_out_and_the_picture_arrives_once(easel, tg, caplog):
    app, _ = await easel.start()
    tg.fail_next("sendPhoto", status=429, retry_after=1)

    await say(tg, ALICE, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    await picture(tg, ALICE)
    [job] = await jobs_of(app, ALICE)
    await settled(app, job.id)

    first, second = tg.calls_of("sendPhoto")
    assert (first.fault, second.ok) == ("error 429", True)
    assert second.timestamp - first.timestamp >= 1.0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # waited out, not failed and redelivered
    assert [m.message_id for m in tg.chat_messages(ALICE)] == [second.result["message_id"]]
    assert (await app.db.jobs.find_by_message("telegram", str(ALICE), str(second.result["message_id"]))).id == job.id


async def test_a_blocked_bot_stops_retrying_instead_of_trying_forever(easel, tg):
    app, _ = await easel.start()
    tg.fail_next("sendPhoto", status=403, description="Forbidden: bot was blocked by the user")

    await say(tg, ALICE, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    await tg.wait_for("sendPhoto", lambda c: c.fault is not None, timeout=SLOW)
    [job] = await jobs_of(app, ALICE)
    await settled(app, job.id)  # marked done with: nothing will ever take it
    await asyncio.sleep(0.3)
    assert len(tg.calls_of("sendPhoto")) == 1
    assert app.service.metrics.value("easel_platform_errors_total", platform="telegram") == 1


async def test_a_photo_telegram_refuses_goes_out_as_a_document(easel, tg):
    app, _ = await easel.start()
    await say(tg, ALICE, ALICE, "/settings png on")
    tg.fail_next("sendPhoto", status=400, description="Bad Request: PHOTO_INVALID_DIMENSIONS")

    await say(tg, ALICE, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    document = await tg.wait_for("sendDocument", lambda c: c.ok and c.params["chat_id"] == ALICE, timeout=SLOW)
    [job] = await jobs_of(app, ALICE)
    await settled(app, job.id)
    assert document.params["reply_markup"]["inline_keyboard"]  # still with its buttons
    assert len(tg.calls_of("sendPhoto")) == 1
    assert len(tg.calls_of("sendDocument")) == 1  # the document is the PNG: not sent twice


# -- files -------------------------------------------------------------------------------------------


async def test_the_png_setting_adds_the_lossless_file_and_oversize_pictures_go_as_documents(easel, tg, monkeypatch):
    app, _ = await easel.start()
    await say(tg, ALICE, ALICE, "/settings png on")

    await say(tg, ALICE, ALICE, "/draw a map --size 64x64 --steps 1")
    photo = await picture(tg, ALICE)
    png = await tg.wait_for("sendDocument", timeout=SLOW)
    [job] = await jobs_of(app, ALICE)
    job = await settled(app, job.id)
    assert png.files["document"] == app.service.images.resolve(job.image_paths[0]).read_bytes()
    assert png.filenames["document"] == f"easel-{job.id}.png" and replying_to(png) == photo.result["message_id"]

    await press(tg, ALICE, ALICE, photo.result["message_id"], button_id(Action.DELETE, job.id))
    await until(lambda: _nothing_left(tg, {photo.result["message_id"], png.result["message_id"]}))

    monkeypatch.setattr(fitting, "PHOTO_MAX_BYTES", 100)
    mark = len(tg.calls)
    await say(tg, ALICE, ALICE, "/draw a bigger map --size 64x64 --steps 1")
    document = await tg.wait_for("sendDocument", lambda c: c.index >= mark and c.ok, timeout=SLOW)
    big = await settled(app, (await jobs_of(app, ALICE))[0].id)
    assert f"#{big.id}" in document.params["caption"]
    assert [b["callback_data"] for row in document.params["reply_markup"]["inline_keyboard"] for b in row] == [
        button_id(action, big.id) for action in SINGLE_PICTURE
    ]
    assert [c.method for c in tg.calls[mark:]].count("sendDocument") == 1 and tg.calls_of("sendPhoto") == [photo]


async def test_a_picture_too_old_to_delete_is_said_plainly(easel, tg):
    app, _ = await easel.start()
    await say(tg, ALICE, ALICE, "/draw an old postcard --size 64x64 --steps 1")
    photo = await picture(tg, ALICE)
    [job] = await jobs_of(app, ALICE)
    await settled(app, job.id)
    tg.fail_next("deleteMessage", status=400, description="Bad Request: message can't be deleted for everyone")
    mark = len(tg.calls)

    await press(tg, ALICE, ALICE, photo.result["message_id"], button_id(Action.DELETE, job.id))
    told = await answer_after(tg, ALICE, mark)
    assert told.params["text"] == t("delete_message_failed", "en")
    assert (await app.db.jobs.get(job.id)).deleted


async def _nothing_left(tg: FakeTelegram, message_ids: set[int]) -> bool:
    """Delete removes the photo and the lossless PNG that came with it."""
    return not message_ids & {m.message_id for m in tg.chat_messages(ALICE)}


# -- failures ----------------------------------------------------------------------------------------


async def test_a_failed_picture_turns_the_status_message_into_one_clear_message(easel, tg, engine):
    with Gate(engine, at=1, error=torch.OutOfMemoryError("CUDA out of memory (injected)")) as gate:
        app, _ = await easel.start()
        status = await say(tg, ALICE, ALICE, "/draw far too much --size 64x64 --steps 1")
        await gate.wait_reached()
        [job] = await jobs_of(app, ALICE)
        await attached(app, job.id)
        gate.open()
        await settled(app, job.id)

    [message] = tg.chat_messages(ALICE)
    assert message.message_id == status.result["message_id"] and message.text.startswith(t("error.oom", "en"))
    assert tg.calls_of("sendPhoto") == []


async def test_an_unexpected_failure_reaches_the_user_as_one_plain_sentence(easel, tg, caplog, monkeypatch):
    app, _ = await easel.start(serve=False)

    async def broken(*args, **kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(app.service, "handle_text", broken)
    monkeypatch.setattr(app.service, "press", broken)
    apology = await say(tg, ALICE, ALICE, "/quota")
    keyboard = markup(["easel:reroll:1"])
    message = await post_as_bot(tg, "sendMessage", chat_id=ALICE, text="pick", reply_markup=keyboard)
    mark = len(tg.calls)
    spinner = await press(tg, ALICE, ALICE, message["message_id"], "easel:reroll:1")
    second = await answer_after(tg, ALICE, mark)

    assert apology.params["text"] == second.params["text"] == unexpected_error("en")
    assert "text" not in spinner.params and replying_to(second) == message["message_id"]
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR and r.exc_info]
    assert len(failures) == 2 and all("database on fire" in str(r.exc_info[1]) for r in failures)


# -- restarts ----------------------------------------------------------------------------------------


async def test_an_update_delivered_twice_makes_one_job_and_costs_one_quota_unit(easel, tg):
    app = await easel.app()
    first = await easel.connect(app)
    await tg.wait_for("getUpdates")
    tg.drop_next("getUpdates", count=100)  # the bot's confirmations are lost, as when it crashes
    mark = said(tg, ALICE, ALICE, "/draw a fox")
    status = await answer_after(tg, ALICE, mark)
    [job] = await jobs_of(app, ALICE)
    await attached(app, job.id)
    await easel.disconnect(first)
    tg.clear_faults()
    assert len(tg.unconfirmed_update_ids()) == 1

    await easel.connect(app)
    quota = await say(tg, ALICE, ALICE, "/quota")  # answered after the re-sent update

    assert [j.id for j in await jobs_of(app, ALICE)] == [job.id] and await quota_used(app, ALICE) == 1
    assert quota.params["text"].startswith(prefix("quota_status", used=1, limit=50, left=49))
    assert answers_to(tg, ALICE, replying_to(status)) == [status]  # no second status message


async def test_a_bot_killed_mid_picture_delivers_it_exactly_once_after_a_restart(easel, tg, engine):
    # The "process" dies at step 2: its adapter is cancelled, its app stopped, its GPU thread ends there.
    with Gate(engine, at=2, error=ProcessKilled()) as gate:
        app = await easel.app()
        first = await easel.connect(app)
        await app.service.start()
        await tg.wait_for("getUpdates")
        tg.drop_next("getUpdates", count=100)  # the update is never confirmed: it comes again
        mark = said(tg, ALICE, ALICE, "/draw a phoenix --size 64x64 --steps 3")
        status = await answer_after(tg, ALICE, mark)
        await gate.wait_reached()
        [job] = await jobs_of(app, ALICE)
        job = await attached(app, job.id)
        assert job.status is JobStatus.RUNNING

        await easel.kill(first)
        await app.service.stop(grace_s=0)  # a killed process gives nothing a grace period
        await app.stop()
        gate.open()
        await gpu_idle()
    tg.clear_faults()

    restarted = await easel.app()
    await easel.connect(restarted)
    await restarted.service.start()
    sent = await picture(tg, ALICE)
    job = await settled(restarted, job.id)
    await say(tg, ALICE, ALICE, "/quota")  # answered after the re-sent /draw

    assert job.status is JobStatus.DONE and [j.id for j in await jobs_of(restarted, ALICE)] == [job.id]
    assert await quota_used(restarted, ALICE) == 1
    assert [m.message_id for m in tg.chat_messages(ALICE) if m.photo] == [sent.result["message_id"]]
    assert len(tg.calls_of("sendPhoto")) == 1 and replying_to(sent) == replying_to(status)
    assert answers_to(tg, ALICE, replying_to(status)) == [status]  # the re-sent /draw got no second answer
    assert status.result["message_id"] not in [m.message_id for m in tg.chat_messages(ALICE)]


async def test_a_graceful_restart_mid_picture_still_delivers_it(easel, tg, engine, monkeypatch):
    with Gate(engine, at=2) as gate:
        app, adapter = await easel.start()
        told_to_stop = asyncio.Event()
        cancel = app.worker.cancel
        monkeypatch.setattr(app.worker, "cancel", lambda job_id: (told_to_stop.set(), cancel(job_id))[1])
        await say(tg, ALICE, ALICE, "/draw a phoenix --size 64x64 --steps 3")
        await gate.wait_reached()
        [job] = await jobs_of(app, ALICE)

        await easel.disconnect(adapter)
        stopping = asyncio.create_task(app.stop())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(told_to_stop.wait(), 2)
        gate.open()
        await stopping
        await gpu_idle()

    restarted = await easel.app()
    assert (await restarted.db.jobs.get(job.id)).status is not JobStatus.CANCELLED
    await easel.connect(restarted)
    await restarted.service.start()
    await picture(tg, ALICE)
    assert (await settled(restarted, job.id)).status is JobStatus.DONE


async def test_a_rejected_token_turns_telegram_off_without_printing_it(make_app, tg, caplog):
    secret = "999:THIS-IS-SECRET"
    app = await make_app(TELEGRAM_TOKEN=secret, TELEGRAM_API_URL=tg.base_url)
    adapter = TelegramAdapter(app.service, app.settings, rate_limiter=False, poll_timeout=1)
    from bot.runtime.logs import QUIET

    for name in QUIET:  # as bot.runtime.logs.configure() sets them in production, at any EASEL_LOG_LEVEL
        caplog.set_level(logging.WARNING, logger=name)
    with caplog.at_level(logging.DEBUG, logger="bot"), caplog.at_level(logging.DEBUG, logger="telegram"):
        await asyncio.wait_for(adapter.run(), 10)  # returns: the rest of the process keeps running
    assert "rejected TELEGRAM_TOKEN" in caplog.text
    assert "THIS-IS-SECRET" not in caplog.text
