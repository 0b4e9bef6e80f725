"""The fake Telegram server against the real python-telegram-bot: if PTB is happy with it, adapter
tests built on it mean something."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from PIL import Image
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaAnimation,
    InputMediaDocument,
    InputMediaPhoto,
    ReplyParameters,
    Update,
)
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, RetryAfter
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
)

from tests.fakes.telegram_server import FakeTelegram

TOKEN = "123:ABC"
USER = 42
BUTTON = "easel:vary:job1"


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN) as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(TOKEN, base_url=tg.base_url, base_file_url=tg.base_file_url) as plain_bot:
        yield plain_bot


def build_application(tg: FakeTelegram, *, rate_limiter: AIORateLimiter | None = None) -> Application:
    builder = ApplicationBuilder().token(TOKEN).base_url(tg.base_url).base_file_url(tg.base_file_url)
    if rate_limiter is not None:
        builder = builder.rate_limiter(rate_limiter)
    return builder.build()


@asynccontextmanager
async def polling(application: Application) -> AsyncIterator[Application]:
    """Run an application the way run_polling does, minus its signal handlers and its own loop."""
    async with application:  # initialize() ... shutdown()
        await application.start()
        await application.updater.start_polling(poll_interval=0, timeout=dt.timedelta(seconds=5))
        try:
            yield application
        finally:
            # updater.stop() sends one last getUpdates that confirms everything already fetched.
            if application.updater.running:
                await application.updater.stop()
            if application.running:
                await application.stop()


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greets with a button, like the bot's real menus."""
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Vary", callback_data=BUTTON)]])
    await update.effective_message.reply_text("Hello", reply_markup=keyboard)


async def test_get_me_reports_the_configured_bot(bot: Bot) -> None:
    me = await bot.get_me()

    assert (me.id, me.username, me.is_bot) == (123, "easelbot", True)


async def test_a_wrong_token_is_rejected_as_invalid(tg: FakeTelegram) -> None:
    with pytest.raises(InvalidToken):
        async with Bot("999:WRONG", base_url=tg.base_url):
            pass


async def test_start_command_reaches_the_handler_and_the_reply_arrives(tg: FakeTelegram) -> None:
    application = build_application(tg)
    application.add_handler(CommandHandler("start", start))

    async with polling(application):
        tg.send_user_message(USER, USER, "/start", username="alice")
        call = await tg.wait_for("sendMessage")

    assert call.ok
    assert (call.params["chat_id"], call.params["text"]) == (USER, "Hello")
    [reply] = tg.chat_messages(USER)
    assert reply.text == "Hello"
    assert reply.button_data() == [BUTTON]
    assert [c.method for c in tg.calls[:2]] == ["getMe", "deleteWebhook"]


async def test_button_press_reaches_the_callback_handler_which_answers_and_edits(tg: FakeTelegram) -> None:
    async def vary(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        await update.callback_query.answer("Varying")
        await update.callback_query.edit_message_text(f"Working on {update.callback_query.data}")

    application = build_application(tg)
    application.add_handler(CommandHandler("start", start))
    application.add_handler(CallbackQueryHandler(vary, pattern=r"^easel:vary:"))

    async with polling(application):
        tg.send_user_message(USER, USER, "/start")
        sent = await tg.wait_for("sendMessage")
        query_id = tg.press_button(USER, USER, sent.result["message_id"], BUTTON)
        answer = await tg.wait_for("answerCallbackQuery")
        await tg.wait_for("editMessageText")

    assert (answer.params["callback_query_id"], answer.params["text"]) == (query_id, "Varying")
    [message] = tg.chat_messages(USER)
    assert message.text == f"Working on {BUTTON}"
    # Like Telegram, an edit without reply_markup drops the keyboard.
    assert message.buttons() == []


async def test_a_callback_query_can_be_answered_only_once(tg: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(
        USER, "Pick", reply_markup=InlineKeyboardMarkup.from_button(InlineKeyboardButton("Vary", callback_data=BUTTON))
    )
    query_id = tg.press_button(USER, USER, sent.message_id, BUTTON)

    assert await bot.answer_callback_query(query_id)
    # PTB drops the "Bad Request: " prefix and capitalize()s the rest: match case-insensitively.
    with pytest.raises(BadRequest, match="(?i)query is too old"):
        await bot.answer_callback_query(query_id)


async def test_photo_upload_round_trips_byte_for_byte(tg: FakeTelegram, bot: Bot) -> None:
    png = png_bytes(160, 96, "teal")

    message = await bot.send_photo(USER, png, caption="a teal square", filename="square.png")
    downloaded = await (await bot.get_file(message.photo[-1].file_id)).download_as_bytearray()

    assert (message.photo[-1].width, message.photo[-1].height) == (160, 96)
    assert message.photo[0].width <= 90  # the thumbnail Telegram adds
    assert tg.calls_of("sendPhoto")[0].files["photo"] == png
    assert tg.calls_of("sendPhoto")[0].filenames["photo"] == "square.png"
    assert bytes(downloaded) == png
    [stored] = tg.chat_messages(USER)
    assert (stored.photo, stored.caption) == (png, "a teal square")


async def test_a_progress_picture_can_be_replaced_recaptioned_and_deleted(tg: FakeTelegram, bot: Bot) -> None:
    keyboard = InlineKeyboardMarkup.from_button(InlineKeyboardButton("Cancel", callback_data=BUTTON))
    preview, final = png_bytes(32, 32, "gray"), png_bytes(64, 48, "teal")

    sent = await bot.send_photo(USER, preview, caption="step 1/8", reply_markup=keyboard)
    await bot.edit_message_media(InputMediaPhoto(final), USER, sent.message_id, reply_markup=keyboard)
    edited = await bot.edit_message_caption(USER, sent.message_id, caption="done", reply_markup=keyboard)
    document = await bot.send_document(USER, b'{"seed": 7}', filename="params.json")

    assert (edited.photo[-1].width, edited.photo[-1].height) == (64, 48)
    assert (document.document.file_name, document.document.mime_type) == ("params.json", "application/json")
    picture = tg.message(USER, sent.message_id)
    assert (picture.photo, picture.caption, picture.button_data(), picture.edit_count) == (final, "done", [BUTTON], 2)
    assert await bot.delete_message(USER, sent.message_id)
    assert [m.document for m in tg.chat_messages(USER)] == [b'{"seed": 7}']


async def test_a_spoiler_photo_is_reported_covered_and_an_edit_can_uncover_it(tg: FakeTelegram, bot: Bot) -> None:
    covered = await bot.send_photo(USER, png_bytes(32, 32, "red"), has_spoiler=True)
    plain = await bot.send_photo(USER, png_bytes(32, 32, "blue"))
    uncovered = await bot.edit_message_media(InputMediaPhoto(png_bytes(16, 16, "red")), USER, covered.message_id)

    assert (covered.has_media_spoiler, plain.has_media_spoiler) == (True, None)
    assert "has_media_spoiler" not in tg.calls_of("sendPhoto")[1].result  # Telegram leaves out false
    assert tg.calls_of("sendPhoto")[0].params["has_spoiler"] is True
    assert uncovered.has_media_spoiler is None
    assert [m.has_media_spoiler for m in tg.chat_messages(USER)] == [False, False]


async def test_an_album_shares_one_media_group_id_keeps_order_spoilers_and_the_reply(
    tg: FakeTelegram, bot: Bot
) -> None:
    tg.send_user_message(USER, USER, "/draw a cat x3")
    earlier = await bot.send_photo(USER, png_bytes(120, 80, "gray"))
    pictures = [png_bytes(160, 96, color) for color in ("red", "green")]

    album = await bot.send_media_group(
        USER,
        [
            InputMediaPhoto(pictures[0], caption="<b>seed</b> 1", parse_mode="HTML", filename="1.png"),
            InputMediaPhoto(pictures[1], has_spoiler=True, filename="2.png"),
            InputMediaPhoto(earlier.photo[-1].file_id),  # sent again by file_id
        ],
        reply_parameters=ReplyParameters(message_id=1),
    )

    [group_id] = {message.media_group_id for message in album}
    assert group_id is not None and group_id.isdigit()
    assert [m.has_media_spoiler for m in album] == [None, True, None]
    assert [m.caption for m in album] == ["seed 1", None, None]
    assert [m.reply_to_message.text for m in album] == ["/draw a cat x3"] * 3
    assert album[2].photo[-1].file_id == earlier.photo[-1].file_id
    [call] = tg.calls_of("sendMediaGroup")
    assert sorted(call.filenames.values()) == ["1.png", "2.png"]
    stored = tg.chat_messages(USER)[1:]
    assert [m.message_id for m in stored] == [m.message_id for m in album]
    assert [(m.media_group_id, m.has_media_spoiler) for m in stored] == [
        (group_id, False),
        (group_id, True),
        (group_id, False),
    ]
    assert [m.photo for m in stored[:2]] == pictures
    downloaded = await (await bot.get_file(album[1].photo[-1].file_id)).download_as_bytearray()
    assert bytes(downloaded) == pictures[1]

    second = await bot.send_media_group(USER, [InputMediaPhoto(p) for p in pictures])
    assert {m.media_group_id for m in second} != {group_id}


async def test_a_one_item_album_is_an_ordinary_message_and_documents_group_with_documents(
    tg: FakeTelegram, bot: Bot
) -> None:
    [single] = await bot.send_media_group(USER, [InputMediaPhoto(png_bytes(8, 8, "red"), has_spoiler=True)])
    documents = await bot.send_media_group(
        USER,
        [InputMediaDocument(b'{"seed": 1}', filename="1.json"), InputMediaDocument(b"png", filename="1.png")],
    )

    assert (single.media_group_id, single.has_media_spoiler) == (None, True)  # as TDLib sends one item
    assert [d.document.file_name for d in documents] == ["1.json", "1.png"]
    assert len({d.media_group_id for d in documents}) == 1 and documents[0].media_group_id is not None


@pytest.mark.parametrize(
    ("media", "refusal"),
    [
        (lambda png: [InputMediaPhoto(png)] * 11, "too many messages to send as an album"),
        (
            lambda png: [InputMediaPhoto(png), InputMediaDocument(b"x", filename="x.txt")],
            "document can't be mixed with other media types",
        ),
        (
            lambda png: [InputMediaPhoto(png), InputMediaAnimation(b"GIF89a")],
            "can't parse InputMedia: type \"animation\" can't be used in sendMediaGroup",
        ),
        (lambda png: [InputMediaPhoto(png), InputMediaPhoto("no-such-file-id")], "wrong file identifier"),
        (
            lambda png: [InputMediaPhoto(png), InputMediaPhoto(png_bytes(9000, 1001, "red"))],
            'failed to send message #2 with the error message "PHOTO_INVALID_DIMENSIONS"',
        ),
        (
            lambda png: [InputMediaPhoto(png, caption="<cat>", parse_mode="HTML"), InputMediaPhoto(png)],
            "can't parse InputMedia: Can't parse entities: Unsupported start tag",
        ),
        (lambda png: [InputMediaPhoto(png, caption="x" * 1025), InputMediaPhoto(png)], "message caption is too long"),
    ],
    ids=["eleven", "mixed", "animation", "unknown-file-id", "too-large", "bad-html", "long-caption"],
)
async def test_albums_telegram_refuses_send_nothing(
    tg: FakeTelegram, bot: Bot, media: Callable[[bytes], list], refusal: str
) -> None:
    with pytest.raises(BadRequest) as raised:
        await bot.send_media_group(USER, media(png_bytes(8, 8, "red")))

    [call] = tg.calls_of("sendMediaGroup")
    assert call.error.startswith(f"Bad Request: {refusal}")
    # PTB drops the "Bad Request: " prefix and capitalize()s the rest.
    assert str(raised.value).lower().startswith(refusal.lower())
    assert tg.chat_messages(USER) == []


async def test_album_parameters_are_read_like_the_bot_api_server(tg: FakeTelegram) -> None:
    """Requests PTB would never build, sent raw: the answers are the official server's."""
    photo = {"type": "photo", "media": "attach://one"}
    cases = [
        ({}, 'Bad Request: parameter "media" is required'),
        ({"media": "[not json"}, "Bad Request: can't parse media JSON object"),
        ({"media": '{"type": "photo"}'}, "Bad Request: expected an Array of InputMedia"),
        ({"media": "[]"}, "Bad Request: there are no messages to send"),
        (
            {"media": json.dumps([photo, {"type": "photo", "media": "attach://two"}])},
            "Bad Request: can't parse InputMedia: media not found",
        ),
        (
            {"media": json.dumps([photo, {"type": "sticker", "media": "attach://one"}])},
            'Bad Request: can\'t parse InputMedia: type "sticker" is unsupported',
        ),
        (
            {"media": json.dumps([{**photo, "show_caption_above_media": True}, photo])},
            "Bad Request: parameter show_caption_above_media must be the same for all messages",
        ),
        (
            {"media": json.dumps([{"type": "audio", "media": "attach://one"}, photo])},
            "Bad Request: audio can't be mixed with other media types",
        ),
    ]
    async with aiohttp.ClientSession() as session:
        for fields, description in cases:
            form = aiohttp.FormData({"chat_id": str(USER), **fields})
            form.add_field("one", png_bytes(8, 8, "red"), filename="one.png")
            async with session.post(f"{tg.base_url}{TOKEN}/sendMediaGroup", data=form) as response:
                answer = await response.json()
            assert (response.status, answer) == (400, {"ok": False, "error_code": 400, "description": description})
    assert tg.chat_messages(USER) == []


async def test_injected_faults_reach_send_media_group(tg: FakeTelegram, bot: Bot) -> None:
    album = [InputMediaPhoto(png_bytes(8, 8, color)) for color in ("red", "blue")]
    tg.fail_next("sendMediaGroup", status=429, retry_after=3)
    tg.drop_next("sendMediaGroup")

    with pytest.raises(RetryAfter) as raised:
        await bot.send_media_group(USER, album)
    with pytest.raises(NetworkError, match="Server disconnected"):
        await bot.send_media_group(USER, album)
    sent = await bot.send_media_group(USER, album)

    assert "Retry in 3 seconds" in str(raised.value)
    assert [c.fault for c in tg.calls_of("sendMediaGroup")] == ["error 429", "drop", None]
    assert [m.message_id for m in tg.chat_messages(USER)] == [m.message_id for m in sent]


async def test_telegram_rules_on_text_are_enforced(bot: Bot) -> None:
    with pytest.raises(BadRequest, match='(?i)unsupported start tag "cat"'):
        await bot.send_message(USER, "a <cat> in a hat", parse_mode="HTML")
    sent = await bot.send_message(USER, "<b>bold</b> &amp; plain", parse_mode="HTML")
    with pytest.raises(BadRequest, match="(?i)message is not modified"):
        await bot.edit_message_text("bold & plain", USER, sent.message_id)

    assert sent.text == "bold & plain"


async def test_commands_are_recorded_per_language(tg: FakeTelegram, bot: Bot) -> None:
    await bot.set_my_commands([("draw", "Draw a picture")])
    await bot.set_my_commands([("draw", "Ein Bild malen")], language_code="de")

    assert tg.my_commands() == [{"command": "draw", "description": "Draw a picture"}]
    assert tg.my_commands("de") == [{"command": "draw", "description": "Ein Bild malen"}]
    assert [c.description for c in await bot.get_my_commands(language_code="de")] == ["Ein Bild malen"]


async def test_a_429_without_rate_limiter_raises_retry_after(tg: FakeTelegram, bot: Bot) -> None:
    tg.fail_next("sendMessage", status=429, retry_after=7)

    with pytest.raises(RetryAfter) as raised:
        await bot.send_message(USER, "too fast")

    # .retry_after is an int, or a timedelta with PTB_TIMEDELTA set: the message is stable.
    assert "Retry in 7 seconds" in str(raised.value)
    assert tg.calls_of("sendMessage")[0].fault == "error 429"
    assert tg.chat_messages(USER) == []


async def test_aio_rate_limiter_retries_a_429_and_the_message_arrives_once(tg: FakeTelegram) -> None:
    application = build_application(tg, rate_limiter=AIORateLimiter(max_retries=3))
    application.add_handler(CommandHandler("start", start))
    tg.fail_next("sendMessage", status=429, retry_after=1)

    async with polling(application):
        tg.send_user_message(USER, USER, "/start")
        await tg.wait_for("sendMessage", lambda call: call.ok, timeout=5)

    first, second = tg.calls_of("sendMessage")
    assert (first.fault, second.fault) == ("error 429", None)
    assert second.timestamp - first.timestamp >= 1.0  # AIORateLimiter waits retry_after + 0.1 s
    assert [m.text for m in tg.chat_messages(USER)] == ["Hello"]


async def test_a_dropped_connection_raises_network_error_and_is_not_retried(tg: FakeTelegram, bot: Bot) -> None:
    tg.drop_next("sendMessage")

    with pytest.raises(NetworkError, match="Server disconnected"):
        await bot.send_message(USER, "lost")
    await bot.send_message(USER, "next")

    assert [c.fault for c in tg.calls_of("sendMessage")] == ["drop", None]
    assert [m.text for m in tg.chat_messages(USER)] == ["next"]


async def test_a_second_poller_ends_the_first_with_conflict(tg: FakeTelegram, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for("getUpdates")

    async with Bot(TOKEN, base_url=tg.base_url) as second_instance:
        assert await second_instance.get_updates(timeout=0) == ()

    with pytest.raises(Conflict, match="only one bot instance"):
        await first


async def test_long_poll_answers_as_soon_as_an_update_arrives(tg: FakeTelegram, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await tg.wait_for("getUpdates")
    update_id = tg.send_user_message(USER, USER, "hi")

    updates = await asyncio.wait_for(poll, timeout=1)

    assert [u.update_id for u in updates] == [update_id]
    assert updates[0].message.text == "hi"


def recording_application(tg: FakeTelegram, seen: list[int]) -> Application:
    async def record(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append(update.update_id)

    application = build_application(tg)
    application.add_handler(CommandHandler("draw", record))
    return application


async def test_confirmed_updates_are_not_delivered_again_after_a_restart(tg: FakeTelegram) -> None:
    seen: list[int] = []
    async with polling(recording_application(tg, seen)):
        first = tg.send_user_message(USER, USER, "/draw a cat")
        await wait_until(lambda: seen == [first])
    assert tg.unconfirmed_update_ids() == []  # the graceful stop confirmed it

    async with polling(recording_application(tg, seen)):
        second = tg.send_user_message(USER, USER, "/draw a dog")
        # A pending first update would have come in the same batch, ahead of the second.
        await wait_until(lambda: second in seen)

    assert seen == [first, second]


async def test_unconfirmed_updates_are_delivered_again_after_a_crash(tg: FakeTelegram) -> None:
    seen: list[int] = []
    async with polling(recording_application(tg, seen)):
        await tg.wait_for("getUpdates")  # the long poll that will hand the update out is in flight
        # PTB confirms with its next getUpdates (and once more on stop); losing those is a crash.
        tg.drop_next("getUpdates", count=100)
        update_id = tg.send_user_message(USER, USER, "/draw a cat")
        await wait_until(lambda: seen == [update_id])
    tg.clear_faults()
    assert tg.unconfirmed_update_ids() == [update_id]

    async with polling(recording_application(tg, seen)):
        await wait_until(lambda: seen == [update_id, update_id])

    assert tg.unconfirmed_update_ids() == []


async def test_wait_for_names_the_calls_it_saw_when_it_gives_up(tg: FakeTelegram, bot: Bot) -> None:
    await bot.get_me()

    with pytest.raises(AssertionError, match=r"no matching sendPhoto call within 0.05s; calls seen: getMe"):
        await tg.wait_for("sendPhoto", timeout=0.05)


def png_bytes(width: int, height: int, color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_get_chat_member_reports_the_status_a_test_set(tg: FakeTelegram, bot: Bot) -> None:
    tg.send_user_message(-100, 7, "hello", chat_type="supergroup")
    tg.set_member_status(-100, 8, "creator")
    tg.set_member_status(-100, 9, "administrator")
    member, owner, admin = [await bot.get_chat_member(-100, user_id) for user_id in (7, 8, 9)]
    assert (member.status, owner.status, admin.status) == ("member", "creator", "administrator")
    assert member.user.id == 7 and admin.can_delete_messages and not admin.can_be_edited
