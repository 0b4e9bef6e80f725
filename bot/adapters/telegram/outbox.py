"""Everything the bot says in Telegram: replies, status edits, pictures, failures.

Flood control is decided here, per kind of message: a progress edit may be skipped (at most one
per chat every few seconds, and none while Telegram asked us to wait), while a reply, a picture or
a failure waits out a 429 and goes again.  After a picture is out nothing raises, because the
service retries a delivery that raised and the user would get the picture twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from PIL import Image
from telegram import (
    Bot,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    InputMediaPhoto,
    Message,
    ReplyParameters,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError

from bot.adapters.telegram.fitting import (
    CAUTIOUS_PHOTO_SIDE,
    MAX_ANSWER,
    MAX_TEXT,
    caption_for,
    fit,
    fits_as_photo,
    shrink_for_photo,
    unlinked,
    utf16_length,
)
from bot.contract import ChatService, Delivery, Reply, Undeliverable
from bot.language.messages import t
from bot.language.text import duration
from bot.runtime.bounded import BoundedMap
from storage.jobs import Job, JobStatus

log = logging.getLogger(__name__)

FLOOD_RETRIES = 5
FLOOD_MARGIN_S = 0.1  # a little past the wait Telegram names
T = TypeVar("T")
Picture = tuple[bytes, tuple[int, int]]  # the file's bytes, (width, height)
UPLOAD_TIMEOUTS = {"read_timeout": 60, "write_timeout": 120}
PRIVATE_ANSWER_INTERVAL_S = 30.0  # per user: answers too long for an alert, sent privately from a group
CHATS_PACED = 10_000  # chats (and users) whose pacing is remembered at once
PACING_KEPT_S = 3600.0  # longer than any edit interval or flood wait seen in practice
SHORT_ANSWER = 160  # UTF-16 units of such an answer shown in the group instead (no private chat)
# A 400 that means the bot may not post in the chat at all (see _chat_closed).
CHAT_CLOSED = (
    "chat not found",
    "topic_closed",
    "topic_deleted",
    "message thread not found",
    "chat_write_forbidden",
    "chat_restricted",
    "not enough rights to send text",
    "have no rights to send a message",
    "need administrator rights",
    "group chat was deactivated",
    "bot was kicked",
)


@dataclass(frozen=True)
class Where:
    """Where a job is shown: its chat, the user's message, and our status message if posted."""

    chat_id: int
    reply_to_message_id: int | None
    status_message_id: int | None

    @classmethod
    def of(cls, job: Job) -> Where | None:
        """None for a job that names no chat (it did not come from this adapter)."""
        reply_to = job.reply_to
        if reply_to.get("chat_id") is None:
            return None
        return cls(
            int(reply_to["chat_id"]),
            _int(reply_to.get("reply_to_message_id")),
            _int(reply_to.get("status_message_id")),
        )


class Outbox:
    """Sends for one bot; remembers, per chat, when the next progress edit is allowed."""

    def __init__(self, bot: Bot, service: ChatService, edit_interval: float) -> None:
        self.bot = bot
        self.service = service
        self.edit_interval = edit_interval
        # Per chat or user, so bounded (bot/runtime/bounded.py); an entry forgotten only allows a send sooner.
        # chat id -> monotonic time of the next allowed progress edit
        self._next_edit: BoundedMap[int, float] = BoundedMap(CHATS_PACED, ttl_s=PACING_KEPT_S)
        # chat id -> when Telegram's last "retry after" ends
        self._flood_until: BoundedMap[int, float] = BoundedMap(CHATS_PACED, ttl_s=PACING_KEPT_S)
        # user id -> monotonic time of their last private answer
        self._private_answer_at: BoundedMap[int, float] = BoundedMap(CHATS_PACED, ttl_s=PRIVATE_ANSWER_INTERVAL_S)

    # -- answers to users -----------------------------------------------------------------------

    async def answer(self, chat_id: int, reply_to_message_id: int | None, reply: Reply) -> None:
        """Say the service's reply; a reply that carries a job becomes that job's status message."""
        job = await self.service.db.jobs.get(reply.job_id) if reply.job_id is not None else None
        if job is not None and job.reply_to.get("status_message_id") is not None:
            return  # a re-sent update: this job is on show already
        sent = await self.send_text(chat_id, reply.text, reply_to_message_id)
        if job is None:
            return
        self._next_edit[chat_id] = time.monotonic() + self.edit_interval
        await self.service.attach_status_message(
            job.id, chat_id=chat_id, status_message_id=sent.message_id, reply_to_message_id=reply_to_message_id
        )
        latest = await self.service.db.jobs.get(job.id)
        # Finished before the status message was known: the delivery (done, or still uploading) could
        # not clear it, so nothing else will.
        if latest is not None and (latest.delivered_at or latest.status is JobStatus.DONE):
            await self.delete(chat_id, sent.message_id)

    async def answer_query(self, query: CallbackQuery, reply: Reply | None = None) -> bool:
        """Answer a button press (an alert or a toast); True if the reply's text was shown, there or
        (in a group, when too long for an alert) privately."""
        fits = reply is not None and utf16_length(unlinked(reply.text)) <= MAX_ANSWER
        if reply is not None and not fits and reply.alert and reply.job_id is None and _in_group(query):
            return await self._answer_privately(query, reply)
        return await self._answer_query(query, unlinked(reply.text) if fits else None, bool(fits and reply.alert))

    async def _answer_query(self, query: CallbackQuery, text: str | None = None, alert: bool = False) -> bool:
        try:
            await query.answer(text=text, show_alert=alert)
        except TelegramError as error:
            log.info("telegram: could not answer callback query %s: %s", query.id, error)
            return False
        return text is not None

    async def _answer_privately(self, query: CallbackQuery, reply: Reply) -> bool:
        """An answer for the presser alone that no alert can hold (Params of a long prompt): a private
        message, or a short version in the group when they never started a chat with the bot.  One
        such post per user every PRIVATE_ANSWER_INTERVAL_S: a faster press gets a toast."""
        user_id, lang = query.from_user.id, reply.language
        now = time.monotonic()
        wait = self._private_answer_at.get(user_id, -PRIVATE_ANSWER_INTERVAL_S) + PRIVATE_ANSWER_INTERVAL_S - now
        if wait > 0:
            await self._answer_query(query, t("private_answer_wait", lang, wait=duration(math.ceil(wait))))
            return True
        self._private_answer_at[user_id] = now
        text = fit(reply.text, MAX_TEXT)
        try:
            await self._patiently(user_id, lambda: self.bot.send_message(user_id, text))
        except Forbidden as error:  # never started the bot, or blocked it
            log.info("telegram: no private chat with %s (%s); a short answer in the group", user_id, error)
        except TelegramError as error:
            log.warning("telegram: private answer to %s not sent: %s", user_id, error)
        else:
            await self._answer_query(query, t("private_answer_sent", lang))
            return True
        await self._answer_query(query)
        chat_id, message_id = query.message.chat.id, query.message.message_id
        short = t("private_answer_short", lang, text=fit(reply.text, SHORT_ANSWER))
        try:
            await self.send_text(chat_id, short, message_id)
        except TelegramError as error:
            log.warning("telegram: short answer in chat %s not sent: %s", chat_id, error)
        return True

    async def send_text(self, chat_id: int, text: str, reply_to_message_id: int | None = None) -> Message:
        text = fit(text, MAX_TEXT)
        return await self._replying_if_there(
            chat_id,
            reply_to_message_id,
            lambda replying: self.bot.send_message(chat_id, text, reply_parameters=replying),
        )

    async def delete(self, chat_id: int, message_id: int) -> bool:
        """Best effort: True when the message is gone.  Telegram refuses messages older than 48 hours
        (and others' messages where the bot is no admin)."""
        try:
            await self.bot.delete_message(chat_id, message_id)
        except TelegramError as error:
            log.debug("telegram: could not delete message %s in %s: %s", message_id, chat_id, error)
            return "not found" in str(error).lower()
        return True

    # -- the service's calls --------------------------------------------------------------------

    async def show_status(self, job: Job, text: str) -> None:
        """Edit the job's status message; skipped when the chat was edited lately or is in flood wait."""
        where = Where.of(job)
        if where is None or where.status_message_id is None or not self._may_edit(where.chat_id):
            return
        # Groups (negative ids) have ~20 messages a minute, edits included: progress gets half of that.
        interval = self.edit_interval * 2 if where.chat_id < 0 else self.edit_interval
        self._next_edit[where.chat_id] = time.monotonic() + interval
        try:
            await self.bot.edit_message_text(fit(text, MAX_TEXT), where.chat_id, where.status_message_id)
        except RetryAfter as error:
            self._flood(where.chat_id, error)
            log.info("telegram: flood wait in chat %s, progress of job %s skipped", where.chat_id, job.id)
        except BadRequest as error:
            if not _not_modified(error):
                log.debug("telegram: status of job %s not edited: %s", job.id, error)
        except TelegramError as error:
            log.warning("telegram: status of job %s not edited: %s", job.id, error)

    async def deliver(self, delivery: Delivery) -> None:
        """Send the picture (or a batch as an album) with its buttons as a reply to the request, then
        clear the status message; to the supergroup when the job's group has become one."""
        await self._following_moves(delivery.job, lambda job: self._deliver(replace(delivery, job=job)))

    async def _deliver(self, delivery: Delivery) -> None:
        pictures = [await asyncio.to_thread(_read_picture, path) for path in delivery.image_paths]
        if delivery.spoiler:  # a document would show it unhidden: every picture goes as a photo
            pictures = [
                (data, size) if fits_as_photo(len(data), *size) else await asyncio.to_thread(shrink_for_photo, data)
                for data, size in pictures
            ]
        if len(pictures) > 1:
            await self._deliver_album(delivery, pictures)
            return
        job = delivery.job
        where = _where(job)
        data, (width, height) = pictures[0]
        as_photo = fits_as_photo(len(data), width, height)
        filename = _named(data, f"easel-{job.id}.png")
        options = {
            "caption": caption_for(delivery.caption, delivery.notes),
            "reply_markup": _keyboard(delivery.buttons),
            "filename": filename,
        }
        sent = await self._send_picture(
            where.chat_id, where.reply_to_message_id, data, as_photo, options, delivery.spoiler
        )
        # The picture is out.  From here on nothing may raise: a raise means "send it again".
        await self._remember(job.id, where.chat_id, sent.message_id)
        # A document shows its picture unhidden: no lossless copy of a sensitive picture.
        if delivery.send_png and sent.photo and not delivery.spoiler:  # (not when it went as a document)
            await self._send_png(job.id, where.chat_id, data, filename, sent.message_id)
        await self._clear_status(job.id)

    async def _deliver_album(self, delivery: Delivery, pictures: list[Picture]) -> None:
        """A batch: one album (photos, or documents when one is too big for a photo), then the
        buttons in a message of their own, as albums cannot carry any."""
        job, chat_id = delivery.job, _where(delivery.job).chat_id
        names = [f"easel-{job.id}-{index + 1}.png" for index in range(len(pictures))]
        sent = await self._send_album(delivery, pictures, names)
        # The pictures are out: nothing below may raise.
        for index, message in enumerate(sent):
            await self._remember(job.id, chat_id, message.message_id, picture=index)
        await self._send_batch_buttons(delivery, chat_id, sent[0].message_id)
        if delivery.send_png and sent[0].photo and not delivery.spoiler:
            await self._send_pngs(job.id, chat_id, pictures, names, sent[0].message_id)
        await self._clear_status(job.id)

    async def _send_album(self, delivery: Delivery, pictures: list[Picture], names: list[str]) -> tuple[Message, ...]:
        """The album, as a reply to the request; pictures behind a spoiler go again smaller if refused."""
        where = _where(delivery.job)
        chat_id = where.chat_id
        as_photos = all(fits_as_photo(len(data), *size) for data, size in pictures)
        caption = caption_for(delivery.caption, delivery.notes)

        def album(photos: bool, pictures: list[Picture]) -> list[InputMediaPhoto | InputMediaDocument]:
            media: list[InputMediaPhoto | InputMediaDocument] = []
            for index, ((data, _), name) in enumerate(zip(pictures, names, strict=True)):
                text = caption if index == 0 else None
                name = _named(data, name)
                if photos:
                    media.append(InputMediaPhoto(data, caption=text, filename=name, has_spoiler=delivery.spoiler))
                else:
                    media.append(InputMediaDocument(data, caption=text, filename=name))
            return media

        async def send(photos: bool, pictures: list[Picture] = pictures) -> tuple[Message, ...]:
            media = album(photos, pictures)
            return await self._replying_if_there(
                chat_id,
                where.reply_to_message_id,
                lambda replying: self.bot.send_media_group(
                    chat_id, media, reply_parameters=replying, **UPLOAD_TIMEOUTS
                ),
            )

        async def smaller_photos() -> tuple[Message, ...]:
            smaller = [await asyncio.to_thread(shrink_for_photo, data, CAUTIOUS_PHOTO_SIDE) for data, _ in pictures]
            return await send(True, smaller)

        return await self._with_fallback(chat_id, as_photos, send, smaller_photos if delivery.spoiler else None)

    async def _send_batch_buttons(self, delivery: Delivery, chat_id: int, album_id: int) -> None:
        """The batch's buttons, under the album; missing them is not worth a resend."""
        job, lang = delivery.job, delivery.language
        try:
            keyboard = await self._patiently(
                chat_id,
                lambda: self.bot.send_message(
                    chat_id,
                    t("batch_buttons", lang, job_id=job.id),
                    reply_markup=_keyboard(delivery.buttons),
                    reply_parameters=_replying(album_id),
                ),
            )
            await self._remember(job.id, chat_id, keyboard.message_id, whole_batch=True)
        except TelegramError as error:
            log.warning("telegram: buttons of job %s not sent: %s", job.id, error)

    async def _send_pngs(
        self, job_id: int, chat_id: int, pictures: list[Picture], names: list[str], album_id: int
    ) -> None:
        """The lossless files of a batch, as one album of documents; missing them is not worth a resend."""
        try:
            files = [InputMediaDocument(data, filename=name) for (data, _), name in zip(pictures, names, strict=True)]
            documents = await self._patiently(
                chat_id,
                lambda: self.bot.send_media_group(
                    chat_id, files, reply_parameters=_replying(album_id), **UPLOAD_TIMEOUTS
                ),
            )
            for index, message in enumerate(documents):
                await self._remember(job_id, chat_id, message.message_id, picture=index)
        except TelegramError as error:
            log.warning("telegram: PNG files of job %s not sent: %s", job_id, error)

    async def _send_picture(
        self, chat_id: int, reply_to: int | None, data: bytes, as_photo: bool, options: dict, spoiler: bool = False
    ):
        """A photo (a document when Telegram refuses the photo), with timeouts sized for uploads."""
        # Generous timeouts: a TimedOut after Telegram took the upload would make the retry a duplicate.
        options = {**options, **UPLOAD_TIMEOUTS}

        async def send(photo: bool, payload: bytes = data):
            if photo:
                return await self._replying_if_there(
                    chat_id,
                    reply_to,
                    lambda replying: self.bot.send_photo(
                        chat_id, payload, has_spoiler=spoiler, reply_parameters=replying, **options
                    ),
                )
            return await self._replying_if_there(
                chat_id,
                reply_to,
                lambda replying: self.bot.send_document(chat_id, payload, reply_parameters=replying, **options),
            )

        async def smaller_photo():
            smaller, _ = await asyncio.to_thread(shrink_for_photo, data, CAUTIOUS_PHOTO_SIDE)
            options["filename"] = _named(smaller, options["filename"])
            return await send(True, smaller)

        return await self._with_fallback(chat_id, as_photo, send, smaller_photo if spoiler else None)

    async def _with_fallback(
        self,
        chat_id: int,
        as_photo: bool,
        send: Callable[[bool], Awaitable[T]],
        hidden_fallback: Callable[[], Awaitable[T]] | None = None,
    ) -> T:
        """Send as photos, or as documents when Telegram refuses the photos; pictures behind a
        spoiler go again as smaller photos instead (`hidden_fallback`), since a document shows its
        picture unhidden.  One fallback only: a 400 is the same answer every time, so a refused
        document (or fallback) is Undeliverable.  So is a chat that is gone, closed to the bot or has
        blocked it, whichever attempt finds out.  Network errors and 5xx raise as they are: the
        service tries again later."""
        try:
            return await _unless_gone(chat_id, send(as_photo))
        except BadRequest as error:
            if not as_photo:
                raise Undeliverable(f"telegram chat {chat_id}: document refused: {error}") from error
            refusal = error
        if hidden_fallback is not None:
            log.info("telegram: photo refused (%s); sending it smaller, still hidden", refusal)
            try:
                return await _unless_gone(chat_id, hidden_fallback())
            except BadRequest as error:
                raise Undeliverable(f"telegram chat {chat_id}: hidden photo refused twice: {error}") from error
        log.info("telegram: photo refused (%s); sending it as a document", refusal)
        try:
            return await _unless_gone(chat_id, send(False))
        except BadRequest as error:
            raise Undeliverable(f"telegram chat {chat_id}: photo and document refused: {error}") from error

    async def notify_failure(self, job: Job, text: str) -> None:
        """Turn the status message into the failure, or reply with it when there is none."""
        await self._following_moves(job, lambda moved: self._notify_failure(moved, text))

    async def _notify_failure(self, job: Job, text: str) -> None:
        where = _where(job)
        text = fit(text, MAX_TEXT)
        if where.status_message_id is not None:
            try:
                await _unless_gone(
                    where.chat_id,
                    self._patiently(
                        where.chat_id, lambda: self.bot.edit_message_text(text, where.chat_id, where.status_message_id)
                    ),
                )
                return
            except BadRequest as error:
                if _not_modified(error):
                    return
                log.info("telegram: status of job %s gone (%s); replying instead", job.id, error)
        try:
            await _unless_gone(where.chat_id, self.send_text(where.chat_id, text, where.reply_to_message_id))
        except BadRequest as error:  # the same text is refused the same way next time
            raise Undeliverable(f"telegram chat {where.chat_id}: text refused: {error}") from error

    # -- helpers ----------------------------------------------------------------------------------

    async def _following_moves(self, job: Job, send: Callable[[Job], Awaitable[None]]) -> None:
        """`send(job)`, and once more to the supergroup a group became meanwhile (ChatMigrated): the
        job is told its new chat, so a later try, a status edit or the failure goes there too.  The
        status message and the request stay behind in the old group, so the picture replies to none."""
        try:
            return await send(job)
        except ChatMigrated as error:
            moved = error.new_chat_id
        old = _where(job).chat_id
        log.info("telegram: chat %s became supergroup %s; sending job %s there", old, moved, job.id)
        where = {"chat_id": moved, "reply_to_message_id": None, "status_message_id": None}
        await self.service.attach_status_message(job.id, **where)
        try:
            return await send(replace(job, reply_to={**job.reply_to, **where}))
        except ChatMigrated as error:  # moved twice at once: not a chat we will find
            raise Undeliverable(f"telegram chat {old}: moved to {moved}, then to {error.new_chat_id}") from error

    async def _patiently(self, chat_id: int, call: Callable[[], Awaitable[T]]) -> T:
        """Make an API call that must not be skipped: wait out flood control (a few times), then call."""
        for attempt in range(FLOOD_RETRIES):
            wait = self._flood_until.get(chat_id, 0.0) - time.monotonic()
            if wait > 0:
                log.info("telegram: waiting %.1fs for flood control in chat %s", wait, chat_id)
                await asyncio.sleep(wait)
            try:
                return await call()
            except RetryAfter as error:
                self._flood(chat_id, error)
                if attempt + 1 == FLOOD_RETRIES:
                    raise
        raise AssertionError("unreachable")

    async def _replying_if_there(
        self, chat_id: int, reply_to: int | None, call: Callable[[ReplyParameters | None], Awaitable[T]]
    ) -> T:
        """`_patiently(call(reply))`, sent once more without the reply if the message it answers is gone
        (`allow_sending_without_reply` should spare us that, but not every server honours it)."""
        replying = _replying(reply_to)
        try:
            return await self._patiently(chat_id, lambda: call(replying))
        except BadRequest as error:
            if replying is None or not _reply_gone(error):
                raise
            log.info("telegram: message %s in chat %s is gone (%s); sending without reply", reply_to, chat_id, error)
        return await self._patiently(chat_id, lambda: call(None))

    async def _send_png(self, job_id: int, chat_id: int, data: bytes, filename: str, photo_id: int) -> None:
        """The lossless file next to the photo Telegram re-encodes; missing it is not worth a resend."""
        try:
            sent = await self._patiently(
                chat_id,
                lambda: self.bot.send_document(chat_id, data, filename=filename, reply_parameters=_replying(photo_id)),
            )
        except TelegramError as error:
            log.warning("telegram: PNG of job %s not sent: %s", job_id, error)
            return
        await self._remember(job_id, chat_id, sent.message_id)

    async def _remember(
        self, job_id: int, chat_id: int, message_id: int, picture: int = 0, whole_batch: bool = False
    ) -> None:
        """Map the message back to its job (for replies and button presses on it); a failure only
        costs that mapping."""
        try:
            await self.service.record_message(job_id, "telegram", str(chat_id), str(message_id), picture, whole_batch)
        except Exception:
            log.exception("telegram: could not record message %s of job %s", message_id, job_id)

    async def _clear_status(self, job_id: int) -> None:
        """Delete the status message, read afresh: it may have been posted while the job ran."""
        try:
            job = await self.service.db.jobs.get(job_id)
            where = Where.of(job) if job is not None else None
        except Exception:
            log.exception("telegram: could not look up the status message of job %s", job_id)
            return
        if where is not None and where.status_message_id is not None:
            await self.delete(where.chat_id, where.status_message_id)

    def _flood(self, chat_id: int, error: RetryAfter) -> None:
        """Remember a 429: nothing more goes to that chat until it has passed."""
        until = time.monotonic() + _seconds(error.retry_after) + FLOOD_MARGIN_S
        self._flood_until[chat_id] = max(until, self._flood_until.get(chat_id, 0.0))

    def _may_edit(self, chat_id: int) -> bool:
        now = time.monotonic()
        return now >= self._next_edit.get(chat_id, 0.0) and now >= self._flood_until.get(chat_id, 0.0)


def _in_group(query: CallbackQuery) -> bool:
    message = query.message
    return message is not None and message.chat.type != ChatType.PRIVATE


def _where(job: Job) -> Where:
    where = Where.of(job)
    if where is None:
        raise ValueError(f"job {job.id} names no Telegram chat to answer in")
    return where


def _keyboard(rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup | None:
    """The service's rows of (button id, label); the id is the callback data."""
    keys = [[InlineKeyboardButton(label, callback_data=button_id) for button_id, label in row] for row in rows]
    keys = [row for row in keys if row]
    return InlineKeyboardMarkup(keys) if keys else None


def _replying(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id, allow_sending_without_reply=True)


def _read_picture(path: Path) -> Picture:
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        return data, image.size


def _named(data: bytes, filename: str) -> str:
    """`filename`, with .jpg for a picture re-encoded as JPEG to pass as a photo."""
    return filename.removesuffix(".png") + ".jpg" if data.startswith(b"\xff\xd8") else filename


async def _unless_gone(chat_id: int, attempt: Awaitable[T]) -> T:
    """The attempt's result; Forbidden (blocked, kicked) or a chat that is gone or closed to the bot
    becomes Undeliverable, since no retry and no other form of the picture will ever land.  A group
    that became a supergroup (ChatMigrated) is no such chat: `_following_moves` sends there."""
    try:
        return await attempt
    except (Forbidden, BadRequest) as error:
        if isinstance(error, Forbidden) or _chat_closed(error):
            raise Undeliverable(f"telegram chat {chat_id}: {error}") from error
        raise


def _chat_closed(error: TelegramError) -> bool:
    """Telegram's words for a chat the bot cannot post in at all (a refused photo is not one: a
    document may still go)."""
    text = str(error).lower()
    return any(words in text for words in CHAT_CLOSED)


def _reply_gone(error: TelegramError) -> bool:
    text = str(error).lower()
    return "message to be replied not found" in text or "replied message not found" in text


def _not_modified(error: TelegramError) -> bool:
    return "message is not modified" in str(error).lower()


def _seconds(retry_after: int | dt.timedelta) -> float:
    if isinstance(retry_after, dt.timedelta):
        return retry_after.total_seconds()
    return float(retry_after)


def _int(value: object) -> int | None:
    return None if value is None else int(value)
