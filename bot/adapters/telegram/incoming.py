"""Updates in: text messages and button presses become service calls, failures one error handler.

Handlers parse nothing and decide nothing: who may draw, what a flag means and what to say are the
service's.  What is Telegram's to decide stays here: in a group only commands (and replies to our
pictures) are for us, other bots are never answered, and a re-sent update carries the same
idempotency key (`telegram:<chat>:<message>`, `telegram:cb:<query>`) so it never becomes a second job.
"""

from __future__ import annotations

import functools
import logging
import re

from telegram import Chat, Message, MessageEntity, Update, User
from telegram.constants import ChatMemberStatus, ChatType
from telegram.error import TelegramError
from telegram.ext import Application, CallbackQueryHandler, ContextTypes, MessageHandler, filters

from bot.adapters.telegram.outbox import Outbox
from bot.adapters.telegram.texts import unexpected_error
from bot.contract import Caller, ChatService, Upload
from bot.language.buttons import parse_button_id
from bot.language.errors import UserError
from bot.language.messages import language_for, t

log = logging.getLogger(__name__)

_LIST_COMMAND = re.compile(r"[/\uff0f](block|sensitive)(@\w+)?(\s|$)", re.IGNORECASE)


class Incoming:
    def __init__(self, service: ChatService, outbox: Outbox, max_upload_mb: float = 10.0) -> None:
        self.service = service
        self.outbox = outbox
        self.max_upload_mb = max_upload_mb  # EASEL_MAX_UPLOAD_MB: nothing larger is downloaded

    def register(self, application: Application) -> None:
        """All the wiring, in one place."""
        application.add_handler(MessageHandler(filters.UpdateType.MESSAGE & filters.TEXT, self.on_message))
        pictures = (filters.PHOTO | filters.Document.IMAGE) & filters.CAPTION
        application.add_handler(MessageHandler(filters.UpdateType.MESSAGE & pictures, self.on_picture))
        application.add_handler(CallbackQueryHandler(self.on_button))
        application.add_error_handler(self.on_error)

    async def on_message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A line of text: a command, a prompt (private chats), or new words for one of our pictures."""
        message = update.message
        sender = message.from_user
        if sender is None or sender.is_bot:
            return
        chat = message.chat
        caller = caller_for(
            sender,
            chat,
            chat_admin=await self._manages(context, chat, sender, message.text),
            replied_user_id=_replied_sender(message),
        )
        key = f"telegram:{chat.id}:{message.message_id}"
        reply_to = {"chat_id": chat.id, "reply_to_message_id": message.message_id}
        reply = None
        private = chat.type == ChatType.PRIVATE
        # In a group, members answer each other's pictures all the time: only words addressed to
        # the bot (a mention or a command, as on Discord) draw a variation and spend a picture.
        if _replies_to(message, context.bot.id) and (private or _addresses(message, context.bot.username)):
            picture = str(message.reply_to_message.message_id)
            text = _without_mention(message.text, context.bot.username)
            reply = await self.service.vary_from_picture(
                caller, text, str(chat.id), picture, reply_to, key, bot_username=context.bot.username
            )
        upload = (
            None
            if _replies_to(message, context.bot.id)
            else _upload_of(message.reply_to_message, context.bot, self.max_upload_mb)
        )
        if reply is None and upload is not None and (private or _addresses(message, context.bot.username)):
            text = _without_mention(message.text, context.bot.username)
            reply = await self.service.draw_from_upload(
                caller, text, upload, reply_to, key, bot_username=context.bot.username
            )
        if reply is None and (private or _is_command(message)):
            reply = await self.service.handle_text(
                caller,
                message.text,
                reply_to,
                idempotency_key=key,
                bot_username=context.bot.username,
                shared_chat=chat.type != ChatType.PRIVATE,
            )
        if reply is not None:
            await self.outbox.answer(chat.id, message.message_id, reply)

    async def on_picture(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A photo or image file whose caption is /draw words (any caption in a private chat; in a
        group it must address the bot): drawn from that picture."""
        message = update.message
        sender, chat, caption = message.from_user, message.chat, message.caption or ""
        if sender is None or sender.is_bot:
            return
        mention = _mention(context.bot.username)
        addressed = caption.lstrip().startswith(("/", "\uff0f")) or bool(mention and mention.search(caption))
        if chat.type != ChatType.PRIVATE and not addressed:
            return
        reply = await self.service.draw_from_upload(
            caller_for(sender, chat),
            _without_mention(caption, context.bot.username),
            _upload_of(message, context.bot, self.max_upload_mb),
            {"chat_id": chat.id, "reply_to_message_id": message.message_id},
            f"telegram:{chat.id}:{message.message_id}",
            bot_username=context.bot.username,
        )
        if reply is not None:
            await self.outbox.answer(chat.id, message.message_id, reply)

    async def _manages(self, context: ContextTypes.DEFAULT_TYPE, chat: Chat, sender: User, text: str) -> bool:
        """Whether the sender administers this group: asked only for the word-list commands, which
        a group's own admins may use (one API call, not one per message)."""
        if chat.type == ChatType.PRIVATE or not _LIST_COMMAND.match(text):
            return False
        try:
            member = await context.bot.get_chat_member(chat.id, sender.id)
        except TelegramError as error:
            log.info("telegram: could not tell whether %s administers %s: %s", sender.id, chat.id, error)
            return False
        return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A button under one of our pictures: the service decides, the query is answered straight away."""
        query = update.callback_query
        picture = query.message  # None only for inline-mode messages, which this bot never sends
        chat = picture.chat if picture is not None else None
        reply_to = {"chat_id": chat.id, "reply_to_message_id": picture.message_id} if picture is not None else {}
        try:
            reply = await self.service.press(
                caller_for(query.from_user, chat),
                query.data or "",
                reply_to,
                idempotency_key=f"telegram:cb:{query.id}",
                message_id=str(picture.message_id) if picture is not None else None,
            )
        except Exception:
            await self.outbox.answer_query(query)  # stop the spinner; on_error tells the user
            raise
        shown = await self.outbox.answer_query(query, reply)
        if picture is None:
            return
        if reply.delete_message:
            if not await self._delete_job_messages(chat.id, picture.message_id, query.data or ""):
                await self.outbox.send_text(chat.id, t("delete_message_failed", reply.language), picture.message_id)
        elif reply.job_id is not None or not shown:
            await self.outbox.answer(chat.id, picture.message_id, reply)

    async def _delete_job_messages(self, chat_id: int, picture_id: int, data: str) -> bool:
        """The picture and everything else posted for its job in this chat (the lossless PNG too);
        False when the picture itself could not be removed."""
        targets = {picture_id}
        parsed = parse_button_id(data)
        if parsed is not None:
            recorded = await self.service.messages_of(parsed[1], "telegram")
            targets |= {int(message) for chat, message in recorded if chat == str(chat_id)}
        gone = {message_id: await self.outbox.delete(chat_id, message_id) for message_id in sorted(targets)}
        return gone[picture_id]

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Log the failure with its traceback; tell the user in one plain sentence, never the traceback."""
        log.error("telegram: handling %s failed", _describe(update), exc_info=context.error)
        if not isinstance(update, Update) or update.effective_chat is None:
            return
        chat, user = update.effective_chat, update.effective_user
        lang = language_for(user.language_code if user else None)
        try:
            if user is not None:
                lang = await self.service.language_of(caller_for(user, chat))
        except Exception:
            log.debug("telegram: no stored language for the apology", exc_info=True)
        message = update.effective_message
        try:
            await self.outbox.send_text(chat.id, unexpected_error(lang), message.message_id if message else None)
        except TelegramError as error:
            log.warning("telegram: could not tell chat %s about the failure: %s", chat.id, error)


def caller_for(user: User, chat: Chat | None, chat_admin: bool = False, replied_user_id: str | None = None) -> Caller:
    return Caller(
        "telegram",
        str(user.id),
        name=user.username or user.full_name,
        language=user.language_code,
        chat_id=str(chat.id) if chat is not None else None,
        chat_admin=chat_admin,
        public=chat is not None and chat.type != ChatType.PRIVATE,
        replied_user_id=replied_user_id,
    )


def _replied_sender(message: Message) -> str | None:
    """Who wrote the message this one replies to (an admin's `/ban` in reply names them); never a bot,
    and never the topic's creator: in a forum every message of a topic "replies" to the service
    message that created it, though nobody chose to answer it.  (Outside forums a thread's id is the
    message a reply chain started at, which was chosen: that reply counts.)"""
    replied = message.reply_to_message
    if replied is None or replied.from_user is None or replied.from_user.is_bot:
        return None
    topic_root = message.is_topic_message and replied.message_id == message.message_thread_id
    if replied.forum_topic_created is not None or topic_root:
        return None
    return str(replied.from_user.id)


def _upload_of(message: Message | None, bot, max_upload_mb: float = 10.0) -> Upload | None:
    """The picture a message carries (its largest photo size, or an image sent as a file), fetched
    only when the service asks for it, after checking the size Telegram reports: a document may
    report none, so then getFile's is asked for, and a file of no known size is not downloaded
    (a local Bot API server would hand over any size)."""
    if message is None:
        return None
    if message.photo:
        item = message.photo[-1]
    elif message.document is not None and (message.document.mime_type or "").startswith("image/"):
        item = message.document
    else:
        return None

    limit = int(max_upload_mb * 1024 * 1024)

    def check(size: int | None) -> None:
        if size is None:
            raise UserError("error.upload_failed")
        if size > limit:
            raise UserError("error.upload_too_big", size_mb=f"{size / 1024 / 1024:.1f}", limit_mb=f"{max_upload_mb:g}")

    async def fetch() -> bytes:
        file = await bot.get_file(item.file_id)
        check(item.file_size if item.file_size is not None else file.file_size)
        data = bytes(await file.download_as_bytearray())
        check(len(data))  # what arrived, whatever was reported
        return data

    return Upload(item.file_size, fetch)


def _replies_to(message: Message, bot_id: int) -> bool:
    replied = message.reply_to_message
    return replied is not None and replied.from_user is not None and replied.from_user.id == bot_id


@functools.cache  # one bot, one username: compiled once, not twice per message
def _mention(bot_username: str | None) -> re.Pattern | None:
    """The bot's @username as a whole word (not the start of `@easelbot_fan`), with what follows it."""
    if not bot_username:
        return None
    return re.compile(rf"(?<!\w)@{re.escape(bot_username)}(?!\w)[\s,:;，：]*", re.IGNORECASE)


def _addresses(message: Message, bot_username: str | None) -> bool:
    """A command, or a mention of the bot by its @username."""
    mention = _mention(bot_username)
    return _is_command(message) or bool(mention and mention.search(message.text))


def _without_mention(text: str, bot_username: str | None) -> str:
    """The words without the bot's @username (which is not part of the prompt)."""
    mention = _mention(bot_username)
    return mention.sub(" ", text).strip() if mention else text


def _is_command(message: Message) -> bool:
    """What Telegram marks as a command (and so what a bot in privacy mode receives in groups)."""
    entities = message.entities or ()
    return any(e.type == MessageEntity.BOT_COMMAND and e.offset == 0 for e in entities) or message.text.startswith("/")


def _describe(update: object) -> str:
    return f"update {update.update_id}" if isinstance(update, Update) else "a background task"
