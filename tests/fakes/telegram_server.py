"""A fake Telegram Bot API server on 127.0.0.1 for end-to-end tests.

It speaks the wire format python-telegram-bot uses (`POST /bot<token>/<method>` with a form-encoded,
multipart or JSON body, answered `{"ok": true, "result": ...}` or an error object), keeps just
enough state to behave like Telegram towards one bot (chats, messages, files, commands, the
getUpdates queue) and records every call so tests can assert on what the bot did.

Behaviour copied from Telegram because bots trip over it:
- getUpdates drops an update only once a later call carries an offset past it, so a poller that
  dies before confirming gets the same updates again (a fresh poller starts at offset 0);
- a second getUpdates ends the one in flight with 409 Conflict;
- editing text or caption without `reply_markup` removes the inline keyboard;
- an edit that changes nothing fails with "message is not modified";
- HTML messages with tags Telegram does not know fail with "can't parse entities";
- a callback query can be answered once;
- sendMediaGroup answers one Message per item, sharing a `media_group_id` (one item is sent as an
  ordinary message, as TDLib does), and refuses albums the way the official server and TDLib do
  (0 or more than 10 items, documents or audio mixed with other media, animations);
- `has_spoiler` on a photo comes back as `has_media_spoiler` on the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http import HTTPStatus
from typing import Any

from aiohttp import web
from PIL import Image, UnidentifiedImageError

MAX_TEXT_CHARS = 4096
MAX_CAPTION_CHARS = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_ALBUM_ITEMS = 10
THUMBNAIL_SIDE = 90
# Documents may be 50 MB; aiohttp refuses bodies over 1 MiB unless told otherwise.
MAX_UPLOAD_BYTES = 60 * 1024 * 1024

# Form fields that hold free text or opaque ids; every other form field is JSON-encoded by the
# client (numbers, booleans, objects), so decoding these would turn a text "42" into an int.
_STRING_FIELDS = frozenset(
    {"text", "caption", "data", "callback_query_id", "inline_message_id", "parse_mode", "language_code", "action"}
    | {"url", "photo", "document", "file_id", "emoji", "title", "description", "short_description", "name"}
    | {"business_connection_id", "message_effect_id"}
)

_HTML_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "code", "pre"}
    | {"blockquote", "tg-emoji"}
)

_NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a content and reply markup of the current message"
)
_QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
_CONFLICT = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"


@dataclass
class Call:
    """One request the bot made, as the server understood it."""

    index: int
    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(repr=False)  # multipart part name -> uploaded bytes
    filenames: dict[str, str]
    timestamp: float  # time.monotonic(), to measure gaps between calls
    fault: str | None = None  # "error 429", "drop": a fault injected by the test
    error: str | None = None  # the description of any error answer, injected or earned
    result: Any = field(default=None, repr=False)  # what the bot received on success

    @property
    def ok(self) -> bool:
        return self.fault is None and self.error is None


@dataclass
class ChatMessage:
    """A message as it currently stands in a chat (after edits)."""

    chat_id: int
    message_id: int
    sender: dict[str, Any] = field(repr=False)
    date: int = field(repr=False)
    from_bot: bool
    text: str | None = None
    caption: str | None = None
    parse_mode: str | None = None
    entities: list[dict[str, Any]] | None = field(default=None, repr=False)
    # Bytes are left out of repr so a failed assertion does not print megabytes.
    photo: bytes | None = field(default=None, repr=False)  # the uploaded bytes of the largest size
    photo_sizes: list[dict[str, Any]] | None = None
    document: bytes | None = field(default=None, repr=False)
    document_info: dict[str, Any] | None = None
    reply_markup: dict[str, Any] | None = None
    reply_to_message_id: int | None = None
    has_media_spoiler: bool = False  # the photo is covered until tapped (sent with has_spoiler)
    media_group_id: str | None = None  # shared by the messages of one album (sendMediaGroup)
    edit_count: int = 0

    def buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's buttons, row after row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]

    def button_data(self) -> list[str]:
        return [button["callback_data"] for button in self.buttons() if "callback_data" in button]


@dataclass
class _Fault:
    status: int | None  # None: drop the connection
    description: str = ""
    retry_after: int | None = None
    migrate_to_chat_id: int | None = None

    @property
    def label(self) -> str:
        return "drop" if self.status is None else f"error {self.status}"


@dataclass
class _StoredFile:
    data: bytes
    file_path: str
    info: dict[str, Any]  # file_id, file_unique_id, file_size


@dataclass
class _PhotoScan:
    """What Telegram's servers learn from an uploaded photo before storing it."""

    width: int
    height: int
    suffix: str
    thumbnail: Image.Image = field(repr=False)


@dataclass
class _AlbumItem:
    """One InputMedia of a sendMediaGroup call, as far as it has been read."""

    type: str
    media: Any
    caption: str | None
    parse_mode: str | None
    has_spoiler: bool
    caption_above: bool
    data: bytes | None = field(default=None, repr=False)  # the bytes to send, once resolved
    filename: str = ""
    known_sizes: list[dict[str, Any]] | None = None  # a photo sent again by file_id
    known_info: dict[str, Any] | None = None  # a document sent again by file_id
    scan: _PhotoScan | None = None


@dataclass
class _CallbackQuery:
    answered: bool = False
    expired: bool = False


class _ApiError(Exception):
    def __init__(
        self, code: int, description: str, retry_after: int | None = None, migrate_to_chat_id: int | None = None
    ):
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after
        self.migrate_to_chat_id = migrate_to_chat_id

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        if self.migrate_to_chat_id is not None:
            body["parameters"] = {"migrate_to_chat_id": self.migrate_to_chat_id}
        return body


def _bad_request(detail: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {detail}")


class _Signal:
    """Wakes every waiter once; waiters re-check their condition afterwards."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


class _TelegramHtml(HTMLParser):
    """Strips the HTML subset Telegram accepts and rejects what Telegram rejects."""

    def __init__(self, source: str):
        super().__init__(convert_charrefs=True)
        self._source = source
        self._open: list[str] = []
        self._parts: list[str] = []

    def text(self) -> str:
        self.feed(self._source)
        self.close()
        if self._open:
            raise _entity_error(f'Can\'t find end tag corresponding to start tag "{self._open[-1]}"')
        return "".join(self._parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_TAGS:
            raise _entity_error(f'Unsupported start tag "{tag}" at byte offset {self._byte_offset()}')
        self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self._open or self._open[-1] != tag:
            raise _entity_error(f'Unmatched end tag at byte offset {self._byte_offset()}, found "</{tag}>"')
        self._open.pop()

    def handle_data(self, data: str) -> None:
        self._parts.append(data)

    def _byte_offset(self) -> int:
        line, column = self.getpos()
        lines = self._source.split("\n")
        index = sum(len(text) + 1 for text in lines[: line - 1]) + column
        return len(self._source[:index].encode())


def _entity_error(detail: str) -> _ApiError:
    return _bad_request(f"can't parse entities: {detail}")


def _visible_text(text: str, parse_mode: str | None) -> str:
    # Only HTML is parsed; Markdown text is kept as sent.
    if parse_mode and parse_mode.upper() == "HTML":
        return _TelegramHtml(text).text()
    return text


def _utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _command_entities(text: str) -> list[dict[str, Any]] | None:
    if not text.startswith("/"):
        return None
    command = text.split(maxsplit=1)[0]
    return [{"type": "bot_command", "offset": 0, "length": _utf16_length(command)}]


def _flag(value: Any) -> bool:
    """A boolean parameter as the official server reads it (JSON true, or "true"/"1" in a form)."""
    return str(value).lower() in ("true", "1")


def _scan_photo(data: bytes) -> _PhotoScan:
    """Telegram's server-side photo checks (the Bot API server and TDLib pass photos through)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            suffix = f".{(image.format or 'bin').lower()}"
            thumbnail = image.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise _bad_request("IMAGE_PROCESS_FAILED") from error
    if width + height > 10_000:
        raise _bad_request("PHOTO_INVALID_DIMENSIONS")
    return _PhotoScan(width, height, suffix, thumbnail)


def _decode_form_value(name: str, value: str) -> Any:
    if name in _STRING_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _inline_markup(markup: Any) -> dict[str, Any] | None:
    """The inline keyboard a message keeps, validated like Telegram; reply keyboards are not kept."""
    if not isinstance(markup, dict) or not markup.get("inline_keyboard"):
        return None
    for row in markup["inline_keyboard"]:
        for button in row:
            if len(button.get("callback_data", "").encode()) > MAX_CALLBACK_DATA_BYTES:
                raise _bad_request("BUTTON_DATA_INVALID")
            if set(button) == {"text"}:
                raise _bad_request("text buttons are unallowed in the inline keyboard")
    return markup


class FakeTelegram:
    """A fake Bot API server for one bot; `async with FakeTelegram() as tg:` starts and stops it."""

    def __init__(self, token: str = "123:ABC", *, bot_username: str = "easelbot", bot_first_name: str = "Easel"):
        self.token = token
        bot_id = token.split(":", 1)[0]
        self.bot_user: dict[str, Any] = {
            "id": int(bot_id) if bot_id.isdigit() else 1,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.calls: list[Call] = []
        self._calls_changed = _Signal()
        self._updates: list[dict[str, Any]] = []
        self._updates_changed = _Signal()
        self._next_update_id = 1
        self._poll_generation = 0
        self._chats: dict[int, dict[str, Any]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._messages: dict[int, dict[int, ChatMessage]] = {}
        self._next_message_id: dict[int, int] = {}
        self._files: dict[str, _StoredFile] = {}
        self.downloads: list[str] = []  # file paths the bot downloaded, in order
        self._photo_sets: dict[str, list[dict[str, Any]]] = {}
        self._next_media_group_id = 13_000_000_000_000_001
        self._callback_queries: dict[str, _CallbackQuery] = {}
        self._next_callback_query_id = 1
        self._commands: dict[str, list[dict[str, Any]]] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._closing = False
        self._member_status: dict[tuple[int, int], str] = {}
        self._handlers: dict[str, Callable[[Call], Any]] = {
            "getMe": lambda call: self.bot_user,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": lambda call: {"url": "", "has_custom_certificate": False, "pending_update_count": 0},
            "getUpdates": self._get_updates,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendDocument": self._send_document,
            "sendMediaGroup": self._send_media_group,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageMedia": self._edit_message_media,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": lambda call: self._commands.get(call.params.get("language_code", ""), []),
            "deleteMyCommands": self._delete_my_commands,
            "sendChatAction": self._send_chat_action,
            "getFile": self._get_file,
            "getChatMember": self._get_chat_member,
        }
        self._handler_names = {name.lower(): name for name in self._handlers}

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        # handler_cancellation ends long polls whose client went away (PTB cancels them on stop).
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._closing = True
        self._updates_changed.fire()  # long polls answer now instead of holding up the shutdown
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """For `ApplicationBuilder().base_url(...)`, which appends the token."""
        return f"http://127.0.0.1:{self._require_port()}/bot"

    @property
    def base_file_url(self) -> str:
        """For `ApplicationBuilder().base_file_url(...)`."""
        return f"http://127.0.0.1:{self._require_port()}/file/bot"

    def _require_port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeTelegram is not started")
        return self._port

    # -- what the bot did --------------------------------------------------------------------

    def calls_of(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    async def wait_for(
        self, method: str, predicate: Callable[[Call], bool] | None = None, timeout: float = 10.0
    ) -> Call:
        """The first recorded call (earlier ones included) of `method` matching `predicate`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for call in self.calls:
                if call.method == method and (predicate is None or predicate(call)):
                    return call
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(
                    f"no matching {method} call within {timeout}s; calls seen: {self._summarise_calls()}"
                )
            await self._calls_changed.wait(remaining)

    def _summarise_calls(self) -> str:
        labels = [call.method + (f" [{call.fault or call.error}]" if not call.ok else "") for call in self.calls]
        runs: list[list[Any]] = []
        for label in labels:
            if runs and runs[-1][0] == label:
                runs[-1][1] += 1
            else:
                runs.append([label, 1])
        return ", ".join(label if count == 1 else f"{label} x{count}" for label, count in runs) or "none"

    def chat_messages(self, chat_id: int) -> list[ChatMessage]:
        """The bot's messages in a chat as they stand now, oldest first; deleted ones are gone."""
        messages = self._messages.get(chat_id, {})
        return [messages[message_id] for message_id in sorted(messages) if messages[message_id].from_bot]

    def message(self, chat_id: int, message_id: int) -> ChatMessage:
        return self._messages[chat_id][message_id]

    def my_commands(self, language_code: str = "") -> list[dict[str, Any]]:
        """The command list last set for a language ("" is the default list); scopes are ignored."""
        return self._commands.get(language_code, [])

    def unconfirmed_update_ids(self) -> list[int]:
        """Updates Telegram still holds: a getUpdates with offset 0 (a restarted bot) receives them."""
        return [update["update_id"] for update in self._updates]

    # -- what users do -----------------------------------------------------------------------

    def send_user_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        chat_type: str = "private",
        username: str | None = None,
        first_name: str = "Tester",
        language_code: str = "en",
        reply_to_message_id: int | None = None,
        is_bot: bool = False,
    ) -> int:
        """A user writes `text`; returns the update_id. A leading /command gets its entity."""
        if (chat_type == "private") != (chat_id > 0) or (chat_type == "private" and chat_id != user_id):
            raise ValueError(f"a {chat_type} chat cannot have id {chat_id} for user {user_id}")
        chat = self._chat(chat_id, chat_type)
        user = self._remember_user(user_id, username, first_name, language_code, is_bot)
        if chat_type == "private":
            chat.update({key: user[key] for key in ("first_name", "username") if key in user})
        if reply_to_message_id is not None and reply_to_message_id not in self._messages.get(chat_id, {}):
            raise ValueError(f"chat {chat_id} has no message {reply_to_message_id} to reply to")
        message = self._add_message(
            chat["id"],
            sender=user,
            from_bot=False,
            text=text,
            entities=_command_entities(text),
            reply_to_message_id=reply_to_message_id,
        )
        return self.inject_raw_update({"message": self._message_json(message)})

    def send_user_picture(
        self,
        chat_id: int,
        user_id: int,
        data: bytes,
        caption: str | None = None,
        *,
        as_document: bool = False,
        mime_type: str = "image/png",
        reported_size: int | None = None,
        chat_type: str = "private",
        reply_to_message_id: int | None = None,
        unsized: bool = False,
        file_size: int | None | str = "stored",
    ) -> int:
        """A user sends a photo (or, `as_document`, a file of type `mime_type`) with an optional
        caption; returns the message's id.  The bytes are kept for getFile and the file download;
        `reported_size` is the `file_size` Telegram reports (a test may claim more than it stores).
        A photo must be a readable picture (Telegram's clients re-encode photos); a file need not.
        `unsized`: the document comes with no `file_size` (the Bot API may leave it out); `file_size`:
        what getFile reports then ("stored": the stored bytes' length, None: nothing)."""
        chat = self._chat(chat_id, chat_type)
        user = self._remember_user(user_id, None, "Tester", "en", False)
        size = {} if reported_size is None else {"file_size": reported_size}
        if as_document:
            info = {**self._store_file(data, "documents", ".bin"), "file_name": "picture", "mime_type": mime_type}
            if file_size != "stored":
                stored_info = self._files[info["file_id"]].info
                stored_info.pop("file_size", None)
                stored_info.update({} if file_size is None else {"file_size": file_size})
            if unsized:
                info.pop("file_size", None)
            fields: dict[str, Any] = {"document": data, "document_info": {**info, **size}}
        else:
            scan = _scan_photo(data)
            stored = {**self._store_file(data, "photos", scan.suffix), "width": scan.width, "height": scan.height}
            fields = {"photo": data, "photo_sizes": [{**stored, **size}]}
        message = self._add_message(
            chat["id"], sender=user, from_bot=False, caption=caption, reply_to_message_id=reply_to_message_id, **fields
        )
        self.inject_raw_update({"message": self._message_json(message)})
        return message.message_id

    def press_button(
        self, chat_id: int, user_id: int, message_id: int, data: str, *, language_code: str = "en", forged: bool = False
    ) -> str:
        """A user presses the inline button carrying `data`; returns the callback query id.

        `forged`: a modified client sends callback data the message's buttons do not carry (the data
        is the client's to write), so the bot must not trust it to match the message."""
        message = self._messages.get(chat_id, {}).get(message_id)
        if message is None or not message.from_bot:
            raise ValueError(f"chat {chat_id} has no bot message {message_id}")
        if not forged and data not in message.button_data():
            raise ValueError(f"message {message_id} has no button with data {data!r} (has {message.button_data()})")
        known = self._users.get(user_id, {})
        user = self._remember_user(
            user_id, known.get("username"), known.get("first_name", "Tester"), language_code, False
        )
        query_id = str(self._next_callback_query_id)
        self._next_callback_query_id += 1
        self._callback_queries[query_id] = _CallbackQuery()
        self.inject_raw_update(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user,
                    "message": self._message_json(message),
                    "chat_instance": str(chat_id),
                    "data": data,
                }
            }
        )
        return query_id

    def expire_callback_queries(self) -> None:
        """Make every open callback query too old to answer, as after ~15 minutes."""
        for query in self._callback_queries.values():
            query.expired = True

    def inject_raw_update(self, update: dict[str, Any]) -> int:
        """Queue an update as given; an update_id is assigned unless present. Returns the update_id."""
        update = dict(update)
        update.setdefault("update_id", self._next_update_id)
        self._next_update_id = max(self._next_update_id, update["update_id"]) + 1
        self._updates.append(update)
        self._updates_changed.fire()
        return update["update_id"]

    # -- faults ------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int = 1,
        description: str | None = None,
        count: int = 1,
        migrate_to_chat_id: int | None = None,
    ) -> None:
        """Answer the next `count` calls of `method` with an error (429 carries `retry_after`; a 400
        with `migrate_to_chat_id` says the group became that supergroup, as Telegram does)."""
        if description is None:
            description = {
                429: f"Too Many Requests: retry after {retry_after}",
                400: "Bad Request: injected fault",
                403: "Forbidden: bot was blocked by the user",
            }.get(status, f"{HTTPStatus(status).phrase}: injected fault")
        fault = _Fault(status, description, retry_after if status == 429 else None, migrate_to_chat_id)
        self._faults.setdefault(method, []).extend([fault] * count)

    def drop_next(self, method: str, count: int = 1) -> None:
        """Close the connection of the next `count` calls of `method` without answering."""
        self._faults.setdefault(method, []).extend([_Fault(None)] * count)

    def clear_faults(self) -> None:
        self._faults.clear()

    # -- HTTP --------------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = self._handler_names.get(request.match_info["method"].lower(), request.match_info["method"])
        params, files, filenames = await self._read_params(request)
        call = Call(len(self.calls), method, params, files, filenames, time.monotonic())
        self.calls.append(call)
        self._calls_changed.fire()
        try:
            if request.match_info["token"] != self.token:
                raise _ApiError(401, "Unauthorized")
            faults = self._faults.get(method)
            if faults:
                fault = faults.pop(0)
                call.fault = fault.label
                if fault.status is None:
                    request.transport.close()
                    return web.Response()  # never reaches the client
                raise _ApiError(fault.status, fault.description, fault.retry_after, fault.migrate_to_chat_id)
            handler = self._handlers.get(method)
            if handler is None:
                raise _ApiError(404, f"Not Found: the fake does not implement {method}")
            result = handler(call)
            if asyncio.iscoroutine(result):
                result = await result
            call.result = result
            return web.json_response({"ok": True, "result": result})
        except _ApiError as error:
            call.error = error.description
            return web.json_response(error.body(), status=error.code)
        finally:
            self._calls_changed.fire()

    async def _handle_file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        for stored in self._files.values():
            if stored.file_path == request.match_info["path"]:
                self.downloads.append(stored.file_path)
                return web.Response(body=stored.data)
        return web.Response(status=404)

    @staticmethod
    async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes], dict[str, str]]:
        params: dict[str, Any] = {name: _decode_form_value(name, value) for name, value in request.query.items()}
        files: dict[str, bytes] = {}
        filenames: dict[str, str] = {}
        if request.method != "POST" or not request.can_read_body:
            return params, files, filenames
        if request.content_type == "application/json":
            params.update(await request.json())
            return params, files, filenames
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                files[name] = value.file.read()
                value.file.close()
                filenames[name] = value.filename
            else:
                params[name] = _decode_form_value(name, value)
        return params, files, filenames

    # -- Bot API methods ---------------------------------------------------------------------

    def _delete_webhook(self, call: Call) -> bool:
        if call.params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_updates(self, call: Call) -> list[dict[str, Any]]:
        offset = int(call.params.get("offset", 0))
        limit = min(max(int(call.params.get("limit", 100)), 1), 100)
        self._poll_generation += 1
        generation = self._poll_generation
        self._updates_changed.fire()  # an older long poll now ends with 409
        if offset > 0:
            self._updates = [update for update in self._updates if update["update_id"] >= offset]
        elif offset < 0:
            self._updates = self._updates[offset:]
        deadline = asyncio.get_running_loop().time() + float(call.params.get("timeout", 0))
        while True:
            if generation != self._poll_generation:
                raise _ApiError(409, _CONFLICT)
            if self._updates or self._closing:
                return self._updates[:limit]
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return []
            await self._updates_changed.wait(remaining)

    def _send_message(self, call: Call) -> dict[str, Any]:
        chat_id = self._chat_id(call)
        text = self._checked_text(call.params.get("text", ""), call.params.get("parse_mode"))
        message = self._add_message(
            chat_id,
            sender=self.bot_user,
            from_bot=True,
            text=text,
            parse_mode=call.params.get("parse_mode"),
            reply_markup=_inline_markup(call.params.get("reply_markup")),
            reply_to_message_id=self._reply_target(call, chat_id),
        )
        return self._message_json(message)

    def _send_photo(self, call: Call) -> dict[str, Any]:
        photo, sizes = self._photo_input(call, call.params.get("photo"), "photo")
        spoiler = _flag(call.params.get("has_spoiler"))
        return self._send_media(call, photo=photo, photo_sizes=sizes, has_media_spoiler=spoiler)

    def _send_document(self, call: Call) -> dict[str, Any]:
        document, info = self._document_input(call, call.params.get("document"), "document")
        return self._send_media(call, document=document, document_info=info)

    def _send_media(self, call: Call, **media: Any) -> dict[str, Any]:
        chat_id = self._chat_id(call)
        message = self._add_message(
            chat_id,
            sender=self.bot_user,
            from_bot=True,
            caption=self._checked_caption(call),
            parse_mode=call.params.get("parse_mode"),
            reply_markup=_inline_markup(call.params.get("reply_markup")),
            reply_to_message_id=self._reply_target(call, chat_id),
            **media,
        )
        return self._message_json(message)

    def _send_media_group(self, call: Call) -> list[dict[str, Any]]:
        """An album, checked in the order the official server and TDLib check it; all or nothing."""
        # 1. The Bot API server parses every InputMedia.
        items = [self._album_item(call, raw) for raw in self._album_media(call)]
        # 2. It checks the chat and the message to reply to.
        chat_id = self._chat_id(call)
        reply_to = self._reply_target(call, chat_id)
        # 3. TDLib checks the album as a whole, after reading each item's caption and file.
        if not items:
            raise _bad_request("there are no messages to send")
        if len(items) > MAX_ALBUM_ITEMS:
            raise _bad_request("too many messages to send as an album")
        for item in items:
            self._resolve_album_file(call, item)
        if len({item.caption_above for item in items if item.type in ("photo", "video")}) > 1:
            raise _bad_request("parameter show_caption_above_media must be the same for all messages")
        if len({item.type for item in items}) > 1:
            for item in items:
                if item.type in ("document", "audio"):
                    raise _bad_request(f"{item.type} can't be mixed with other media types")
        unsupported = sorted({item.type for item in items} - {"photo", "document"})
        if unsupported:
            raise _bad_request(f"the fake supports only photo and document media, not {', '.join(unsupported)}")
        # 4. Telegram's servers process the uploads and report the first failure with its position.
        for position, item in enumerate(items, start=1):
            if item.type == "photo" and item.known_sizes is None:
                try:
                    item.scan = _scan_photo(item.data or b"")
                except _ApiError as error:
                    detail = error.description.removeprefix("Bad Request: ")
                    raise _bad_request(
                        f'failed to send message #{position} with the error message "{detail}"'
                    ) from error
        # 5. One message per item; a single item is an ordinary message outside any album.
        media_group_id = self._new_media_group_id() if len(items) > 1 else None
        sent = []
        for item in items:
            if item.type == "photo":
                sizes = item.known_sizes or self._store_photo(item.data or b"", item.scan)
                media: dict[str, Any] = {"photo": item.data, "photo_sizes": sizes}
            else:
                info = item.known_info or self._store_document(item.data or b"", item.filename)
                media = {"document": item.data, "document_info": info}
            message = self._add_message(
                chat_id,
                sender=self.bot_user,
                from_bot=True,
                caption=item.caption,
                parse_mode=item.parse_mode,
                reply_to_message_id=reply_to,
                has_media_spoiler=item.has_spoiler and item.type == "photo",
                media_group_id=media_group_id,
                **media,
            )
            sent.append(self._message_json(message))
        return sent

    def _edit_message_text(self, call: Call) -> dict[str, Any]:
        message = self._editable_message(call)
        if message.text is None:
            raise _bad_request("there is no text in the message to edit")
        text = self._checked_text(call.params.get("text", ""), call.params.get("parse_mode"))
        markup = _inline_markup(call.params.get("reply_markup"))
        if (text, markup) == (message.text, message.reply_markup):
            raise _bad_request(_NOT_MODIFIED)
        message.text, message.reply_markup, message.parse_mode = text, markup, call.params.get("parse_mode")
        return self._edited(message)

    def _edit_message_caption(self, call: Call) -> dict[str, Any]:
        message = self._editable_message(call)
        if message.photo is None and message.document is None:
            raise _bad_request("there is no caption in the message to edit")
        caption = self._checked_caption(call)
        markup = _inline_markup(call.params.get("reply_markup"))
        if (caption, markup) == (message.caption, message.reply_markup):
            raise _bad_request(_NOT_MODIFIED)
        message.caption, message.reply_markup, message.parse_mode = caption, markup, call.params.get("parse_mode")
        return self._edited(message)

    def _edit_message_media(self, call: Call) -> dict[str, Any]:
        message = self._editable_message(call)
        media = call.params.get("media")
        if not isinstance(media, dict) or media.get("type") not in ("photo", "document"):
            raise _bad_request("the fake supports only photo and document media")
        if message.text is not None:
            raise _bad_request("there is no media in the message to edit")
        caption = media.get("caption")
        if caption is not None:
            caption = _visible_text(caption, media.get("parse_mode"))
            if len(caption) > MAX_CAPTION_CHARS:
                raise _bad_request("message caption is too long")
        markup = _inline_markup(call.params.get("reply_markup"))
        message.photo = message.photo_sizes = message.document = message.document_info = None
        message.has_media_spoiler = False
        if media["type"] == "photo":
            message.photo, message.photo_sizes = self._photo_input(call, media.get("media"), "media")
            message.has_media_spoiler = _flag(media.get("has_spoiler"))
        else:
            message.document, message.document_info = self._document_input(call, media.get("media"), "media")
        message.caption, message.reply_markup = caption, markup
        return self._edited(message)

    def _edit_message_reply_markup(self, call: Call) -> dict[str, Any]:
        message = self._editable_message(call)
        markup = _inline_markup(call.params.get("reply_markup"))
        if markup == message.reply_markup:
            raise _bad_request(_NOT_MODIFIED)
        message.reply_markup = markup
        return self._edited(message)

    def _send_chat_action(self, call: Call) -> bool:
        self._chat_id(call)
        return True

    def _delete_message(self, call: Call) -> bool:
        messages = self._messages.get(self._chat_id(call), {})
        if messages.pop(int(call.params.get("message_id", 0)), None) is None:
            raise _bad_request("message to delete not found")
        return True

    def _answer_callback_query(self, call: Call) -> bool:
        query = self._callback_queries.get(str(call.params.get("callback_query_id", "")))
        if query is None or query.answered or query.expired:
            raise _ApiError(400, _QUERY_INVALID)
        query.answered = True
        return True

    def _set_my_commands(self, call: Call) -> bool:
        commands = call.params.get("commands", [])
        for command in commands:
            name = command.get("command", "")
            if not (1 <= len(name) <= 32) or not all(c.islower() or c.isdigit() or c == "_" for c in name):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not (1 <= len(command.get("description", "")) <= 256):
                raise _bad_request("command description must be 1-256 characters")
        self._commands[call.params.get("language_code", "")] = commands
        return True

    def _delete_my_commands(self, call: Call) -> bool:
        self._commands.pop(call.params.get("language_code", ""), None)
        return True

    def _get_file(self, call: Call) -> dict[str, Any]:
        stored = self._files.get(str(call.params.get("file_id", "")))
        if stored is None:
            raise _bad_request("invalid file_id")
        return {**stored.info, "file_path": stored.file_path}

    # -- state helpers -----------------------------------------------------------------------

    def _chat(self, chat_id: int, chat_type: str | None = None) -> dict[str, Any]:
        """The chat with this id, created on first sight (a private chat for positive ids)."""
        if chat_id not in self._chats:
            chat_type = chat_type or ("private" if chat_id > 0 else "supergroup")
            chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
            if chat_type == "private":
                chat["first_name"] = "Tester"
            else:
                chat["title"] = f"Group {chat_id}"
            self._chats[chat_id] = chat
        return self._chats[chat_id]

    def _chat_id(self, call: Call) -> int:
        chat_id = call.params.get("chat_id")
        if not isinstance(chat_id, int):
            raise _bad_request("chat not found")
        self._chat(chat_id)
        return chat_id

    def set_member_status(self, chat_id: int, user_id: int, status: str = "administrator") -> None:
        """What getChatMember answers for this user in this chat: creator, administrator, member..."""
        self._member_status[(chat_id, user_id)] = status

    def _get_chat_member(self, call: Call) -> dict[str, Any]:
        chat_id, user_id = self._chat_id(call), int(call.params["user_id"])
        user = self._users.get(user_id) or {"id": user_id, "is_bot": False, "first_name": "Someone"}
        status = self._member_status.get((chat_id, user_id), "member")
        member: dict[str, Any] = {"status": status, "user": user}
        if status == "creator":
            member["is_anonymous"] = False
        elif status == "administrator":
            rights = (
                "can_be_edited is_anonymous can_manage_chat can_delete_messages can_manage_video_chats"
                " can_restrict_members can_promote_members can_change_info can_invite_users can_post_stories"
                " can_edit_stories can_delete_stories"
            )
            member.update({right: right != "can_be_edited" and right != "is_anonymous" for right in rights.split()})
        elif status == "restricted":
            raise _bad_request("the fake supports creator, administrator, member, left and kicked only")
        return member

    def _remember_user(
        self, user_id: int, username: str | None, first_name: str, language_code: str, is_bot: bool
    ) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
        if username:
            user["username"] = username
        user["language_code"] = language_code
        self._users[user_id] = user
        return user

    def _add_message(self, chat_id: int, *, sender: dict[str, Any], from_bot: bool, **fields: Any) -> ChatMessage:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        message = ChatMessage(chat_id, message_id, sender, int(time.time()), from_bot, **fields)
        self._messages.setdefault(chat_id, {})[message_id] = message
        return message

    def _editable_message(self, call: Call) -> ChatMessage:
        if "inline_message_id" in call.params:
            raise _bad_request("the fake does not support inline messages")
        message = self._messages.get(self._chat_id(call), {}).get(int(call.params.get("message_id", 0)))
        if message is None:
            raise _bad_request("message to edit not found")
        if not message.from_bot:
            raise _bad_request("message can't be edited")
        return message

    def _edited(self, message: ChatMessage) -> dict[str, Any]:
        message.edit_count += 1
        return self._message_json(message)

    def _reply_target(self, call: Call, chat_id: int) -> int | None:
        reply = call.params.get("reply_parameters") or {}
        message_id = reply.get("message_id", call.params.get("reply_to_message_id"))
        if message_id is None:
            return None
        if message_id in self._messages.get(reply.get("chat_id", chat_id), {}):
            return message_id
        if reply.get("allow_sending_without_reply", call.params.get("allow_sending_without_reply")):
            return None
        raise _bad_request("message to be replied not found")

    @staticmethod
    def _checked_text(text: str, parse_mode: str | None) -> str:
        visible = _visible_text(text, parse_mode)
        if not visible.strip():
            raise _bad_request("message text is empty")
        if len(visible) > MAX_TEXT_CHARS:
            raise _bad_request("message is too long")
        return visible

    @staticmethod
    def _checked_caption(call: Call) -> str | None:
        caption = call.params.get("caption")
        if caption is None:
            return None
        visible = _visible_text(caption, call.params.get("parse_mode"))
        if len(visible) > MAX_CAPTION_CHARS:
            raise _bad_request("message caption is too long")
        return visible

    def _uploaded(self, call: Call, value: Any, part_name: str) -> tuple[bytes, str] | None:
        """The bytes and filename of a file sent with this call, or None if `value` is not an upload."""
        if isinstance(value, str) and value.startswith("attach://"):
            part_name = value.removeprefix("attach://")
        elif value is not None:
            return None
        if part_name not in call.files:
            raise _bad_request(f"there is no file in the request for {part_name}")
        return call.files[part_name], call.filenames.get(part_name, part_name)

    def _store_file(self, data: bytes, folder: str, suffix: str, **extra: Any) -> dict[str, Any]:
        """Keep an uploaded file for getFile and downloads; returns its Telegram description."""
        number = len(self._files) + 1
        info = {"file_id": f"{folder}-{number}", "file_unique_id": f"u{number}", "file_size": len(data), **extra}
        self._files[info["file_id"]] = _StoredFile(data, f"{folder}/file_{number}{suffix}", info)
        return info

    def _photo_input(self, call: Call, value: Any, part_name: str) -> tuple[bytes, list[dict[str, Any]]]:
        uploaded = self._uploaded(call, value, part_name)
        if uploaded is None:
            if value not in self._photo_sets:
                raise _bad_request("wrong file identifier/HTTP URL specified")
            sizes = self._photo_sets[value]
            return self._files[sizes[-1]["file_id"]].data, sizes
        data = uploaded[0]
        return data, self._store_photo(data, _scan_photo(data))

    def _store_photo(self, data: bytes, scan: _PhotoScan | None) -> list[dict[str, Any]]:
        """Keep an uploaded photo; returns its PhotoSize list."""
        scan = scan or _scan_photo(data)
        # Telegram answers with several sizes, largest last. The largest keeps the exact upload here
        # (the real server re-encodes it as JPEG) so tests can compare bytes.
        sizes = []
        if max(scan.width, scan.height) > THUMBNAIL_SIDE:
            thumbnail = scan.thumbnail
            thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            thumbnail.save(buffer, "JPEG")
            small = self._store_file(buffer.getvalue(), "photos", ".jpg")
            sizes.append({**small, "width": thumbnail.width, "height": thumbnail.height})
        sizes.append({**self._store_file(data, "photos", scan.suffix), "width": scan.width, "height": scan.height})
        for size in sizes:
            self._photo_sets[size["file_id"]] = sizes
        return sizes

    @staticmethod
    def _album_media(call: Call) -> list[Any]:
        media = call.params.get("media")
        if media is None or media == "":
            raise _bad_request('parameter "media" is required')
        if isinstance(media, str):
            raise _bad_request("can't parse media JSON object")
        if not isinstance(media, list):
            raise _bad_request("expected an Array of InputMedia")
        return media

    def _album_item(self, call: Call, raw: Any) -> _AlbumItem:
        """Read one InputMedia as the Bot API server's get_input_media does (for_album=true)."""
        try:
            if not isinstance(raw, dict):
                raise _bad_request("expected an Object")
            caption, parse_mode = raw.get("caption"), raw.get("parse_mode")
            if caption:
                try:
                    caption = _visible_text(caption, parse_mode)
                except _ApiError as error:
                    # TDLib words it "Can't parse entities: ..."; only the outer message is lowercased.
                    detail = error.description.removeprefix("Bad Request: ")
                    raise _bad_request(detail[:1].upper() + detail[1:]) from error
            media = raw.get("media")
            if not media or not isinstance(media, str):
                raise _bad_request("media not found")
            if media.startswith("attach://") and media.removeprefix("attach://") not in call.files:
                raise _bad_request("media not found")
            media_type = raw.get("type")
            if not media_type:
                raise _bad_request('Can\'t find field "type"')
            if media_type == "animation":
                raise _bad_request('type "animation" can\'t be used in sendMediaGroup')
            if media_type not in ("photo", "video", "audio", "document"):
                raise _bad_request(f'type "{media_type}" is unsupported')
        except _ApiError as error:
            raise _bad_request(f"can't parse InputMedia: {error.description.removeprefix('Bad Request: ')}") from error
        return _AlbumItem(
            type=media_type,
            media=media,
            caption=caption or None,
            parse_mode=parse_mode,
            has_spoiler=_flag(raw.get("has_spoiler")),
            caption_above=_flag(raw.get("show_caption_above_media")),
        )

    def _resolve_album_file(self, call: Call, item: _AlbumItem) -> None:
        """TDLib's per-item checks: the caption's length and a usable upload or file_id."""
        if item.caption is not None and len(item.caption) > MAX_CAPTION_CHARS:
            raise _bad_request("message caption is too long")
        uploaded = self._uploaded(call, item.media, "")
        if uploaded is not None:
            item.data, item.filename = uploaded
        elif item.type == "photo" and item.media in self._photo_sets:
            item.known_sizes = self._photo_sets[item.media]
            item.data = self._files[item.known_sizes[-1]["file_id"]].data
        elif item.type != "photo" and item.media in self._files:
            stored = self._files[item.media]
            item.data, item.known_info = stored.data, stored.info
        else:
            raise _bad_request("wrong file identifier/HTTP URL specified")

    def _new_media_group_id(self) -> str:
        media_group_id = str(self._next_media_group_id)
        self._next_media_group_id += 1
        return media_group_id

    def _store_document(self, data: bytes, filename: str) -> dict[str, Any]:
        mime_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        return self._store_file(data, "documents", "_" + filename, file_name=filename, mime_type=mime_type)

    def _document_input(self, call: Call, value: Any, part_name: str) -> tuple[bytes, dict[str, Any]]:
        uploaded = self._uploaded(call, value, part_name)
        if uploaded is None:
            if value not in self._files:
                raise _bad_request("wrong file identifier/HTTP URL specified")
            stored = self._files[value]
            return stored.data, stored.info
        data, filename = uploaded
        return data, self._store_document(data, filename)

    def _message_json(self, message: ChatMessage, *, with_reply: bool = True) -> dict[str, Any]:
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": self._chats[message.chat_id],
            "from": message.sender,
        }
        optional = {
            "text": message.text,
            "entities": message.entities,
            "photo": message.photo_sizes,
            "document": message.document_info,
            "caption": message.caption,
            "media_group_id": message.media_group_id,
            "has_media_spoiler": message.has_media_spoiler or None,  # Telegram leaves out false
            "reply_markup": message.reply_markup,
            "edit_date": int(time.time()) if message.edit_count else None,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        replied = self._messages.get(message.chat_id, {}).get(message.reply_to_message_id or 0)
        if with_reply and replied is not None:
            data["reply_to_message"] = self._message_json(replied, with_reply=False)
        return data
