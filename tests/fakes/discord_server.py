"""An in-process fake Discord (REST + gateway) that the real discord.py 2.7 client can talk to.

One aiohttp app on 127.0.0.1 serves the REST API under ``/api/v10``, the gateway WebSocket at
``/gateway`` (and ``/resume-gateway``, the ``resume_gateway_url`` handed out in READY) and uploaded
files under ``/attachments``. Tests drive users from the outside (``send_slash_command``,
``press_button``, ``send_message``), set channels up (``set_channel_nsfw`` for age-restricted ones)
and assert on what the bot did (``requests``, ``wait_for``, ``messages_in``; a message's attachments
keep their order and ``SPOILER_`` names, see ``StoredMessage.filenames`` and
``StoredAttachment.is_spoiler``). The payload shapes follow what discord.py reads, checked against
its source; see the Discord section of /work/shared/FACTS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yarl
from aiohttp import WSMsgType, web
from discord.gateway import DiscordWebSocket
from discord.http import Route
from PIL import Image, UnidentifiedImageError

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
EPHEMERAL = 1 << 6
LOADING = 1 << 7
MESSAGE_CONTENT_INTENT = 1 << 15
DEFAULT_ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024
MAX_ATTACHMENTS = 10
SPOILER_PREFIX = "SPOILER_"
# Attachment flag IS_SPOILER: Discord sets it on files named SPOILER_*; discord.py reads either.
ATTACHMENT_IS_SPOILER = 1 << 3
# Every permission bit Discord currently defines; the fake never denies anything.
ALL_PERMISSIONS = str((1 << 51) - 1)

# Interaction callback types (discord-api-docs "Interaction Callback Type").
CALLBACK_MESSAGE = 4
CALLBACK_DEFERRED_MESSAGE = 5
CALLBACK_DEFERRED_UPDATE = 6
CALLBACK_UPDATE_MESSAGE = 7
CALLBACK_AUTOCOMPLETE_RESULT = 8
AUTOCOMPLETE = 4  # the interaction type Discord sends while a user types into an autocomplete option

RequestMatcher = Callable[["Recorded"], bool] | tuple[str, str]


@dataclass
class RecordedFile:
    """One ``files[n]`` part of a multipart upload, exactly as the client sent it."""

    index: int
    filename: str
    data: bytes
    content_type: str


@dataclass
class Recorded:
    """One REST call the bot made. ``json`` is the body, or ``payload_json`` for multipart uploads."""

    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[RecordedFile]
    status: int = 0
    at: float = field(default_factory=time.monotonic)

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}"


@dataclass(frozen=True)
class UserFile:
    """A file a user attaches to a slash command option (plain bytes work too): `reported_size` is
    the size Discord reports for it, when a test claims more than it sends."""

    data: bytes
    filename: str | None = None
    reported_size: int | None = None


@dataclass
class StoredAttachment:
    id: int
    filename: str
    data: bytes = field(repr=False)
    content_type: str
    width: int | None = None
    height: int | None = None
    description: str | None = None  # alt text, from the ``attachments`` entry of the upload
    reported_size: int | None = None  # the ``size`` Discord reports, when a test claims more than it holds

    @property
    def is_spoiler(self) -> bool:
        """Blurred until clicked: discord.py's ``File(spoiler=True)`` names the file ``SPOILER_...``."""
        return self.filename.startswith(SPOILER_PREFIX)

    def to_json(self, base_url: str) -> dict[str, Any]:
        url = f"{base_url}/attachments/{self.id}/{self.filename}"
        payload: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": len(self.data) if self.reported_size is None else self.reported_size,
            "url": url,
            "proxy_url": url,
            "content_type": self.content_type,
        }
        if self.width is not None:
            payload.update(width=self.width, height=self.height)
        if self.description is not None:
            payload["description"] = self.description
        if self.is_spoiler:
            payload["flags"] = ATTACHMENT_IS_SPOILER
        return payload


@dataclass
class StoredMessage:
    """A message as the fake server holds it; ``to_json`` renders what Discord would return."""

    id: int
    channel_id: int
    guild_id: int | None
    author: dict[str, Any]
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    mentions: list[dict[str, Any]] = field(default_factory=list)
    reference_message_id: int | None = None
    webhook_id: int | None = None
    created_at: str = field(default_factory=lambda: _iso_now())
    edited_at: str | None = None
    deleted: bool = False

    @property
    def custom_ids(self) -> list[str]:
        """custom_ids of every component, in order, across all rows."""
        found: list[str] = []
        for row in self.components:
            for component in [row, *row.get("components", [])]:
                if "custom_id" in component:
                    found.append(component["custom_id"])
        return found

    @property
    def is_ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def filenames(self) -> list[str]:
        """The attachments' filenames in message order, ``SPOILER_`` prefixes included."""
        return [attachment.filename for attachment in self.attachments]


@dataclass
class _InteractionState:
    id: int
    token: str
    type: int
    channel_id: int
    guild_id: int | None
    source_message_id: int | None
    response_type: int | None = None
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float
    code: int
    remaining: int


RECORDED_KEY = web.RequestKey("recorded", Recorded)


class _DiscordError(Exception):
    """Raised inside handlers; the middleware turns it into Discord's JSON error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()


def _json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly "application/json";
    # web.json_response would append "; charset=utf-8" and the client would get a str back.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):  # Discord reports no size then
        return None


def _infer_option_type(value: Any) -> int:
    """Discord's option type for a Python value, used when the command was never synced."""
    if isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return 4
    if isinstance(value, float):
        return 10
    if isinstance(value, bytes | UserFile):
        return 11
    return 3


def _as_predicate(matcher: RequestMatcher) -> Callable[[Recorded], bool]:
    if not isinstance(matcher, tuple):
        return matcher
    method, fragment = matcher

    def matches(recorded: Recorded) -> bool:
        return recorded.method == method.upper() and fragment in recorded.path

    return matches


def _find_named(entries: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    return next((entry for entry in entries if entry.get("name") == name), None)


class FakeDiscord:
    """A fake Discord server for one test. Use ``async with FakeDiscord() as fake, fake.patch_discord():``."""

    def __init__(
        self,
        *,
        application_id: int = 1_100_000_000_000_000_001,
        bot_name: str = "easel",
        bot_token: str | None = None,
        heartbeat_interval_ms: int = 41_250,
    ) -> None:
        self.application_id = application_id
        self.bot_token = bot_token
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.bot_user: dict[str, Any] = {
            "id": str(application_id),
            "username": bot_name,
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "bot": True,
            "public_flags": 0,
            "flags": 0,
        }
        self.requests: list[Recorded] = []
        self.gateway_received: list[dict[str, Any]] = []
        self.identify_count = 0
        self.resume_count = 0
        self.ready = asyncio.Event()
        self.commands: dict[int | None, list[dict[str, Any]]] = {}
        self.port = 0

        self._messages: dict[int, StoredMessage] = {}
        self._member_permissions: dict[int, int] = {}
        self._attachments: dict[int, StoredAttachment] = {}
        self.downloads: list[int] = []  # ids of the attachments the bot fetched, in order
        self._channel_guilds: dict[int, int | None] = {}
        self._nsfw_channels: set[int] = set()
        self._interactions: dict[str, _InteractionState] = {}
        self._expired_tokens: set[str] = set()
        self._faults: list[_Fault] = []
        self._new_request = asyncio.Event()
        self._snowflake_counter = itertools.count()
        self._last_snowflake = 0
        self._socket: web.WebSocketResponse | None = None
        self._all_sockets: set[web.WebSocketResponse] = set()
        self._session_id: str | None = None
        self._sequence = 0
        self._intents = 0
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self._add_routes(app.router)
        # A short shutdown keeps teardown fast when a client still holds a connection.
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        for socket in list(self._all_sockets):
            await socket.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this server; restore them on exit."""
        saved_base, saved_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
        Route.BASE = self.api_base
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved_base, saved_gateway

    # ------------------------------------------------------------------ test controls

    def expire_token(self, token: str) -> None:
        """Make this interaction token dead, as Discord does 15 minutes after the interaction."""
        self._expired_tokens.add(token)

    def set_member_permissions(self, user_id: int, permissions: int) -> None:
        """The member's resolved permissions in interactions (default: every permission), e.g.
        ``1 << 11`` (Send Messages) alone for a member who may not manage the server."""
        self._member_permissions[user_id] = permissions

    def set_channel_nsfw(self, channel_id: int, nsfw: bool = True, *, guild_id: int | None = None) -> None:
        """Mark a guild channel age-restricted (or not); ``guild_id`` also makes the channel known to
        ``GET /channels/{id}``. Discord has no age restriction for DMs, so a known DM channel is refused.
        """
        if guild_id is not None:
            self._channel_guilds[channel_id] = guild_id
        elif channel_id in self._channel_guilds and self._channel_guilds[channel_id] is None:
            raise ValueError(f"channel {channel_id} is a DM; only guild channels can be age-restricted")
        if nsfw:
            self._nsfw_channels.add(channel_id)
        else:
            self._nsfw_channels.discard(channel_id)

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int = 429,
        *,
        retry_after: float = 0.05,
        count: int = 1,
        code: int = 0,
    ) -> None:
        """Answer the next ``count`` calls whose path (without /api/v10) matches the regex with ``status``."""
        self._faults.append(
            _Fault(method.upper(), re.compile(path_pattern), status, retry_after, code, remaining=count)
        )

    async def close_gateway(self, code: int = 4000) -> None:
        """Close the gateway socket from the server side; discord.py should RESUME (4000) or re-IDENTIFY."""
        socket = self._socket
        if socket is None:
            raise AssertionError("close_gateway: no client is connected to the fake gateway")
        self._socket = None
        self.ready.clear()
        await socket.close(code=code, message=b"closed by the test")

    async def wait_for(self, matcher: RequestMatcher, timeout: float = 10, *, since: int = 0) -> Recorded:
        """First recorded request from index ``since`` on that matches, waiting for it if needed.

        ``matcher`` is a predicate or ``(method, path_substring)``.
        """
        predicate = _as_predicate(matcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for recorded in self.requests[since:]:
                if predicate(recorded):
                    return recorded
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = "\n  ".join(str(r) for r in self.requests[since:]) or "(nothing)"
                raise AssertionError(f"no request matching {matcher!r} within {timeout}s; saw:\n  {seen}")
            self._new_request.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_request.wait(), remaining)

    def messages_in(self, channel_id: int) -> list[StoredMessage]:
        """Messages currently in a channel (deleted ones left out), oldest first."""
        return [m for m in self._messages.values() if m.channel_id == channel_id and not m.deleted]

    def message(self, message_id: int) -> StoredMessage:
        return self._messages[message_id]

    def add_message(
        self,
        channel_id: int,
        *,
        guild_id: int | None = None,
        content: str = "",
        components: list[dict[str, Any]] | None = None,
        embeds: list[dict[str, Any]] | None = None,
    ) -> StoredMessage:
        """Seed a bot message, e.g. one a previous run of the bot posted before a restart."""
        self._channel_guilds[channel_id] = guild_id
        message = self._new_message(channel_id, author=self.bot_user)
        message.content, message.components, message.embeds = content, components or [], embeds or []
        return message

    # ------------------------------------------------------------------ user actions (gateway dispatches)

    async def send_slash_command(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        locale: str = "en-US",
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        roles: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        """A user runs ``/name``; ``name`` may hold subcommands ("draw fast"). Returns the interaction sent.

        Option types come from the synced command when there is one, else from the Python values
        (bytes become an attachment option whose file this server hosts).
        """
        command_name, *sub_path = name.split()
        command, command_guild_id = self._find_synced_command(command_name, guild_id)
        data: dict[str, Any] = {
            "id": command["id"] if command else str(self._snowflake()),
            "name": command_name,
            "type": 1,
        }
        if command_guild_id is not None:
            data["guild_id"] = str(command_guild_id)
        definitions = command.get("options", []) if command else []
        built, resolved = self._build_options(sub_path, definitions, options or {})
        data["options"] = built
        if resolved:
            data["resolved"] = {"attachments": resolved}
        payload = self._interaction_payload(
            2,
            data,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
            roles=roles,
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def send_autocomplete(
        self,
        name: str,
        options: dict[str, Any],
        focused: str,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        locale: str = "en-US",
        timeout: float = 3,
    ) -> list[dict[str, Any]]:
        """A user types into option ``focused`` of ``/name`` (``options`` holds what is typed so far,
        ``focused`` included, as strings). Returns the choices the bot answered, which Discord wants
        within 3 seconds."""
        command, command_guild_id = self._find_synced_command(name, guild_id)
        definitions = command.get("options", []) if command else []
        built, _ = self._build_options([], definitions, options)
        for option in built:
            option["value"] = str(option["value"])  # Discord sends partial input as typed text
            if option["name"] == focused:
                option["focused"] = True
        data: dict[str, Any] = {
            "id": command["id"] if command else str(self._snowflake()),
            "name": name,
            "type": 1,
            "options": built,
        }
        if command_guild_id is not None:
            data["guild_id"] = str(command_guild_id)
        payload = self._interaction_payload(
            AUTOCOMPLETE,
            data,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            locale=locale,
            attachment_size_limit=DEFAULT_ATTACHMENT_SIZE_LIMIT,
            roles=(),
        )
        path = f"/interactions/{payload['id']}/{payload['token']}/callback"
        since = len(self.requests)
        await self.dispatch("INTERACTION_CREATE", payload)
        answer = await self.wait_for(("POST", path), timeout, since=since)
        return answer.json["data"]["choices"]

    async def press_button(
        self,
        custom_id: str,
        message_id: int,
        *,
        user_id: int,
        component_type: int = 2,
        values: list[str] | None = None,
        locale: str = "en-US",
        attachment_size_limit: int = DEFAULT_ATTACHMENT_SIZE_LIMIT,
        roles: tuple[int, ...] = (),
    ) -> dict[str, Any]:
        """A user clicks a component on a stored message (see ``add_message`` for messages of past runs)."""
        try:
            message = self._messages[message_id]
        except KeyError:
            raise AssertionError(
                f"press_button: the fake holds no message {message_id}; seed it with add_message"
            ) from None
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        payload = self._interaction_payload(
            3,
            data,
            user_id=user_id,
            guild_id=message.guild_id,
            channel_id=message.channel_id,
            locale=locale,
            attachment_size_limit=attachment_size_limit,
            roles=roles,
            message=message,
        )
        await self.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def send_message(
        self,
        channel_id: int,
        author_id: int,
        content: str,
        *,
        guild_id: int | None = None,
        reference_message_id: int | None = None,
        mentions_bot: bool = False,
        files: list[UserFile] | None = None,
    ) -> StoredMessage:
        """A user posts a message. Like Discord, without the MESSAGE_CONTENT intent the bot gets empty
        content unless the message is a DM or mentions the bot (a reply that pings counts: pass mentions_bot).
        """
        guild_id = guild_id if guild_id is not None else self._channel_guilds.get(channel_id)
        self._channel_guilds.setdefault(channel_id, guild_id)
        if mentions_bot and f"<@{self.application_id}>" not in content:
            content = f"<@{self.application_id}> {content}"
        message = self._new_message(channel_id, author=self._user_json(author_id), content=content)
        for file in files or []:
            attachment = self._store_attachment(file.filename or self._guess_filename(file.data), file.data)
            attachment.reported_size = file.reported_size
            message.attachments.append(attachment)
        if mentions_bot:
            message.mentions = [self.bot_user]
        if reference_message_id is not None:
            message.type, message.reference_message_id = 19, reference_message_id
        event = self._message_json(message)
        content_visible = self._intents & MESSAGE_CONTENT_INTENT or guild_id is None or mentions_bot
        if not content_visible:
            event.update(content="", embeds=[], attachments=[], components=[])
        if guild_id is not None:
            event["member"] = self._member_json(author_id, roles=())
            del event["member"]["user"]
        await self.dispatch("MESSAGE_CREATE", event)
        return message

    async def dispatch(self, event: str, data: dict[str, Any], timeout: float = 10) -> None:
        """Send a DISPATCH (op 0) on the live gateway session, waiting for one if the client is reconnecting."""
        try:
            await asyncio.wait_for(self.ready.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no gateway session to dispatch {event} on within {timeout}s") from None
        assert self._socket is not None
        await self._send_dispatch(self._socket, event, data)

    def synced_command_names(self, guild_id: int | None = None) -> list[str]:
        return [command["name"] for command in self.commands.get(guild_id, [])]

    # ------------------------------------------------------------------ payload builders

    def _snowflake(self) -> int:
        now_ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        candidate = (now_ms << 22) | (next(self._snowflake_counter) & 0x3FFFFF)
        self._last_snowflake = max(candidate, self._last_snowflake + 1)
        return self._last_snowflake

    def _user_json(self, user_id: int) -> dict[str, Any]:
        return {
            "id": str(user_id),
            "username": f"user{user_id}",
            "discriminator": "0",
            "global_name": None,
            "avatar": None,
            "public_flags": 0,
        }

    def _member_json(self, user_id: int, roles: tuple[int, ...]) -> dict[str, Any]:
        return {
            "user": self._user_json(user_id),
            "roles": [str(role) for role in roles],
            "joined_at": "2024-01-01T00:00:00+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "nick": None,
            "avatar": None,
            "flags": 0,
            "permissions": str(self._member_permissions.get(user_id, ALL_PERMISSIONS)),
        }

    def _channel_json(self, channel_id: int, guild_id: int | None, user_id: int | None = None) -> dict[str, Any]:
        if guild_id is None:
            recipients = [self._user_json(user_id)] if user_id is not None else []
            return {"id": str(channel_id), "type": 1, "recipients": recipients, "last_message_id": None, "flags": 0}
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": f"channel-{channel_id}",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": channel_id in self._nsfw_channels,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
            "permissions": ALL_PERMISSIONS,
        }

    def _message_json(self, message: StoredMessage) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "author": message.author,
            "content": message.content,
            "embeds": message.embeds,
            "components": message.components,
            "attachments": [a.to_json(self.base_url) for a in message.attachments],
            "timestamp": message.created_at,
            "edited_timestamp": message.edited_at,
            "type": message.type,
            "flags": message.flags,
            "tts": False,
            "mention_everyone": False,
            "mentions": message.mentions,
            "mention_roles": [],
            "pinned": False,
        }
        if message.guild_id is not None:
            payload["guild_id"] = str(message.guild_id)
        if message.webhook_id is not None:
            payload["webhook_id"] = payload["application_id"] = str(message.webhook_id)
        if message.reference_message_id is not None:
            payload["message_reference"] = {
                "type": 0,
                "message_id": str(message.reference_message_id),
                "channel_id": str(message.channel_id),
            }
            referenced = self._messages.get(message.reference_message_id)
            if referenced is not None and referenced.reference_message_id is None:
                payload["referenced_message"] = self._message_json(referenced)
        return payload

    def _interaction_payload(
        self,
        interaction_type: int,
        data: dict[str, Any],
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        locale: str,
        attachment_size_limit: int,
        roles: tuple[int, ...],
        message: StoredMessage | None = None,
    ) -> dict[str, Any]:
        self._channel_guilds.setdefault(channel_id, guild_id)
        interaction_id = self._snowflake()
        # Real tokens are long opaque strings; keep this one URL-safe since it travels in paths.
        token = f"itok{interaction_id}{secrets.token_hex(16)}"
        self._interactions[token] = _InteractionState(
            id=interaction_id,
            token=token,
            type=interaction_type,
            channel_id=channel_id,
            guild_id=guild_id,
            source_message_id=message.id if message else None,
        )
        payload: dict[str, Any] = {
            "id": str(interaction_id),
            "application_id": str(self.application_id),
            "type": interaction_type,
            "data": data,
            "token": token,
            "version": 1,
            "channel_id": str(channel_id),
            "channel": self._channel_json(channel_id, guild_id, user_id),
            "locale": locale,
            "app_permissions": ALL_PERMISSIONS,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id or 0)},
            "context": 0 if guild_id is not None else 1,
            "attachment_size_limit": attachment_size_limit,
        }
        if guild_id is not None:
            payload["guild_id"] = str(guild_id)
            payload["guild"] = {"id": str(guild_id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = self._member_json(user_id, roles)
        else:
            payload["user"] = self._user_json(user_id)
        if message is not None:
            payload["message"] = self._message_json(message)
        return payload

    def _find_synced_command(self, name: str, guild_id: int | None) -> tuple[dict[str, Any] | None, int | None]:
        if guild_id is not None:
            command = _find_named(self.commands.get(guild_id, []), name)
            if command is not None:
                return command, guild_id
        return _find_named(self.commands.get(None, []), name), None

    def _build_options(
        self, sub_path: list[str], definitions: list[dict[str, Any]], values: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        # Walk down to the subcommand's own option definitions, remembering the wrappers to build.
        wrappers: list[tuple[str, int]] = []
        for part in sub_path:
            definition = _find_named(definitions, part) or {"type": 1, "options": []}
            wrappers.append((part, definition["type"]))
            definitions = definition.get("options", [])
        resolved: dict[str, Any] = {}
        options: list[dict[str, Any]] = []
        for option_name, value in values.items():
            declared = _find_named(definitions, option_name)
            option_type = declared["type"] if declared else _infer_option_type(value)
            if option_type == 11:
                file = value if isinstance(value, UserFile) else UserFile(value)
                attachment = self._store_attachment(file.filename or self._guess_filename(file.data), file.data)
                attachment.reported_size = file.reported_size
                resolved[str(attachment.id)] = attachment.to_json(self.base_url)
                value = str(attachment.id)
            elif option_type in (6, 7, 8, 9):
                value = str(value)
            options.append({"name": option_name, "type": option_type, "value": value})
        for part, part_type in reversed(wrappers):
            options = [{"name": part, "type": part_type, "options": options}]
        return options, resolved

    @staticmethod
    def _guess_filename(data: bytes) -> str:
        try:
            with Image.open(io.BytesIO(data)) as image:
                return f"upload.{(image.format or 'bin').lower()}"
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            return "upload.bin"

    # ------------------------------------------------------------------ storage helpers

    def _new_message(self, channel_id: int, *, author: dict[str, Any], content: str = "") -> StoredMessage:
        message = StoredMessage(
            id=self._snowflake(),
            channel_id=channel_id,
            guild_id=self._channel_guilds.get(channel_id),
            author=author,
            content=content,
        )
        self._messages[message.id] = message
        return message

    def _store_attachment(self, filename: str, data: bytes, description: str | None = None) -> StoredAttachment:
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        attachment = StoredAttachment(self._snowflake(), filename, data, content_type, description=description)
        if content_type.startswith("image/") and (size := _image_size(data)) is not None:
            attachment.width, attachment.height = size
        self._attachments[attachment.id] = attachment
        return attachment

    def _resolve_attachments(
        self, spec: list[dict[str, Any]] | None, files: list[RecordedFile], existing: list[StoredAttachment]
    ) -> list[StoredAttachment]:
        """Apply Discord's rule: ``attachments`` lists what to keep (by id) and describes new ``files[n]``."""
        uploads = {upload.index: upload for upload in files}
        kept_by_id = {attachment.id: attachment for attachment in existing}
        # Kept attachments, or (filename, data, description) of new ones, in message order.
        planned: list[StoredAttachment | tuple[str, bytes, str | None]] = []
        if spec is None:
            planned = list(existing)
            spec = []
        for entry in spec:
            ident = int(entry["id"])
            if ident in kept_by_id:
                planned.append(kept_by_id[ident])
            elif ident in uploads:
                upload = uploads.pop(ident)
                planned.append((entry.get("filename") or upload.filename, upload.data, entry.get("description")))
        planned.extend((upload.filename, upload.data, None) for upload in uploads.values())
        if len(planned) > MAX_ATTACHMENTS:
            raise _DiscordError(400, 30015, f"Maximum number of attachments in a message reached ({MAX_ATTACHMENTS})")
        return [item if isinstance(item, StoredAttachment) else self._store_attachment(*item) for item in planned]

    def _apply_payload(self, message: StoredMessage, payload: dict[str, Any], files: list[RecordedFile]) -> None:
        # Attachments first: a refused upload must leave the message as it was.
        if "attachments" in payload or files:
            message.attachments = self._resolve_attachments(payload.get("attachments"), files, message.attachments)
        for key in ("embeds", "components"):
            if key in payload:
                setattr(message, key, payload[key] or [])
        if "content" in payload:
            message.content = payload["content"] or ""
        if "flags" in payload:
            # Ephemerality is fixed when a message is created; edits cannot toggle it.
            message.flags = (message.flags & EPHEMERAL) | (int(payload["flags"] or 0) & ~EPHEMERAL)
        message.flags &= ~LOADING

    def _bot_message(
        self, channel_id: int, payload: dict[str, Any], files: list[RecordedFile], *, webhook: bool = False
    ) -> StoredMessage:
        message = self._new_message(channel_id, author=self.bot_user)
        message.flags = int(payload.get("flags") or 0)
        if webhook:
            message.webhook_id = self.application_id
        try:
            self._apply_payload(message, payload, files)
        except _DiscordError:
            del self._messages[message.id]  # Discord creates nothing for a refused message
            raise
        reference = payload.get("message_reference")
        if reference:
            message.type, message.reference_message_id = 19, int(reference["message_id"])
        return message

    # ------------------------------------------------------------------ HTTP plumbing

    def _add_routes(self, router: web.UrlDispatcher) -> None:
        api = API_PREFIX
        hook = api + "/webhooks/{app_id}/{token}"
        routes = [
            ("GET", "/gateway", self._gateway),
            ("GET", "/resume-gateway", self._gateway),
            ("GET", "/attachments/{attachment_id}/{filename}", self._get_attachment),
            ("GET", api + "/users/@me", self._get_me),
            ("GET", api + "/oauth2/applications/@me", self._get_application),
            ("GET", api + "/gateway", self._get_gateway),
            ("GET", api + "/gateway/bot", self._get_gateway_bot),
            ("PUT", api + "/applications/{app_id}/commands", self._put_commands),
            ("PUT", api + "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("GET", api + "/applications/{app_id}/commands", self._get_commands),
            ("GET", api + "/applications/{app_id}/guilds/{guild_id}/commands", self._get_commands),
            ("POST", api + "/interactions/{interaction_id}/{token}/callback", self._interaction_callback),
            ("POST", hook, self._webhook_execute),
            ("GET", hook + "/messages/{message_id}", self._webhook_message),
            ("PATCH", hook + "/messages/{message_id}", self._webhook_message),
            ("DELETE", hook + "/messages/{message_id}", self._webhook_message),
            ("GET", api + "/channels/{channel_id}", self._get_channel),
            ("POST", api + "/channels/{channel_id}/typing", self._typing),
            ("POST", api + "/channels/{channel_id}/messages", self._post_channel_message),
            ("GET", api + "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("PATCH", api + "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("DELETE", api + "/channels/{channel_id}/messages/{message_id}", self._channel_message),
            ("POST", api + "/users/@me/channels", self._create_dm),
        ]
        for method, path, handler in routes:
            router.add_route(method, path, handler)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX):
            return await handler(request)
        recorded = await self._read_request(request)
        request[RECORDED_KEY] = recorded
        try:
            response = self._take_fault(recorded) or self._check_auth(request) or await handler(request)
        except _DiscordError as error:
            response = _json_response({"message": error.message, "code": error.code}, error.status)
        except web.HTTPException as error:
            response = _json_response({"message": f"{error.status}: {error.reason}", "code": 0}, error.status)
        recorded.status = response.status
        self.requests.append(recorded)
        self._new_request.set()
        return response

    async def _read_request(self, request: web.Request) -> Recorded:
        body: Any = None
        files: list[RecordedFile] = []
        if request.content_type == "application/json":
            body = await request.json()
        elif request.content_type == "multipart/form-data":
            reader = await request.multipart()
            async for part in reader:
                data = await part.read()  # type: ignore[union-attr]
                if part.name == "payload_json":
                    body = json.loads(data)
                elif part.name and (match := re.fullmatch(r"files\[(\d+)\]", part.name)):
                    content_type = part.headers.get("Content-Type", "application/octet-stream")
                    files.append(RecordedFile(int(match[1]), part.filename or "", bytes(data), content_type))
        path = request.path.removeprefix(API_PREFIX)
        return Recorded(request.method, path, dict(request.query), body, files)

    def _take_fault(self, recorded: Recorded) -> web.Response | None:
        for fault in self._faults:
            if fault.method == recorded.method and fault.pattern.search(recorded.path):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return self._fault_response(fault)
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> web.Response:
        if fault.status != 429:
            return _json_response({"message": f"{fault.status}: injected failure", "code": fault.code}, fault.status)
        # discord.py only retries a 429 that carries a Via header (otherwise it assumes a Cloudflare ban).
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, math.ceil(fault.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": f"{time.time() + fault.retry_after:.3f}",
            "X-RateLimit-Reset-After": f"{fault.retry_after:.3f}",
            "X-RateLimit-Bucket": f"fake-{abs(hash(fault.pattern.pattern)):x}",
            "X-RateLimit-Scope": "user",
        }
        body = {"message": "You are being rate limited.", "retry_after": fault.retry_after, "global": False}
        return _json_response(body, 429, headers)

    def _check_auth(self, request: web.Request) -> web.Response | None:
        # Webhook and interaction routes are authorised by the token in their path, not the bot token.
        if self.bot_token is None or request.path.startswith((API_PREFIX + "/webhooks", API_PREFIX + "/interactions")):
            return None
        if request.headers.get("Authorization") != f"Bot {self.bot_token}":
            return _json_response({"message": "401: Unauthorized", "code": 0}, 401)
        return None

    # ------------------------------------------------------------------ REST handlers

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json_response({**self.bot_user, "verified": True, "mfa_enabled": False, "locale": "en-US"})

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json_response(
            {
                "id": str(self.application_id),
                "name": self.bot_user["username"],
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self._user_json(1),
                "verify_key": "0" * 64,
                "flags": 0,
                "team": None,
                "summary": "",
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return _json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _put_commands(self, request: web.Request) -> web.Response:
        guild_id = int(request.match_info["guild_id"]) if "guild_id" in request.match_info else None
        previous = {command["name"]: command["id"] for command in self.commands.get(guild_id, [])}
        synced = []
        for command in request[RECORDED_KEY].json or []:
            entry = {
                "type": 1,
                "options": [],
                "default_member_permissions": None,
                "nsfw": False,
                **command,
                # Discord keeps a command's id across re-syncs of the same name.
                "id": previous.get(command["name"]) or str(self._snowflake()),
                "application_id": str(self.application_id),
                "version": str(self._snowflake()),
            }
            if guild_id is not None:
                entry["guild_id"] = str(guild_id)
            synced.append(entry)
        self.commands[guild_id] = synced
        return _json_response(synced)

    async def _get_commands(self, request: web.Request) -> web.Response:
        guild_id = int(request.match_info["guild_id"]) if "guild_id" in request.match_info else None
        return _json_response(self.commands.get(guild_id, []))

    async def _interaction_callback(self, request: web.Request) -> web.StreamResponse:
        recorded: Recorded = request[RECORDED_KEY]
        token = request.match_info["token"]
        state = self._interactions.get(token)
        if state is None or str(state.id) != request.match_info["interaction_id"] or token in self._expired_tokens:
            raise _DiscordError(404, 10062, "Unknown interaction")
        if state.response_type is not None:
            raise _DiscordError(400, 40060, "Interaction has already been acknowledged.")
        body = recorded.json or {}
        callback_type = int(body["type"])
        data = body.get("data") or {}
        message: StoredMessage | None = None
        if (callback_type == CALLBACK_AUTOCOMPLETE_RESULT) != (state.type == AUTOCOMPLETE):
            raise _DiscordError(400, 50035, "Invalid Form Body: autocomplete results answer autocomplete only")
        if callback_type == CALLBACK_MESSAGE:
            message = self._bot_message(state.channel_id, data, recorded.files, webhook=True)
            message.type = 20 if state.type == 2 else 0
            state.original_message_id = message.id
        elif callback_type == CALLBACK_DEFERRED_MESSAGE:
            # Discord shows a "thinking..." message that a later edit or the first follow-up fills in.
            message = self._bot_message(state.channel_id, {}, [], webhook=True)
            message.flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
            message.type = 20 if state.type == 2 else 0
            state.original_message_id = message.id
        elif callback_type in (CALLBACK_DEFERRED_UPDATE, CALLBACK_UPDATE_MESSAGE):
            if state.source_message_id is None:
                raise _DiscordError(400, 50035, "Invalid Form Body: update types need a component interaction")
            state.original_message_id = state.source_message_id
            if callback_type == CALLBACK_UPDATE_MESSAGE:
                message = self._messages[state.source_message_id]
                self._apply_payload(message, data, recorded.files)
                message.edited_at = _iso_now()
        state.response_type = callback_type  # only a callback Discord accepted acknowledges the interaction
        if recorded.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        interaction = {
            "id": str(state.id),
            "type": state.type,
            "activity_instance_id": None,
            "response_message_id": str(message.id) if message else None,
            "response_message_loading": bool(message and message.flags & LOADING),
            "response_message_ephemeral": bool(message and message.is_ephemeral),
        }
        resource: dict[str, Any] = {"type": callback_type}
        if message is not None:
            resource["message"] = self._message_json(message)
        return _json_response({"interaction": interaction, "resource": resource})

    def _webhook_state(self, request: web.Request) -> _InteractionState:
        token = request.match_info["token"]
        state = self._interactions.get(token)
        if token in self._expired_tokens or state is None:
            raise _DiscordError(401, 50027, "Invalid Webhook Token")
        if request.match_info["app_id"] != str(self.application_id) or state.response_type is None:
            # The interaction webhook only exists once the interaction has been acknowledged.
            raise _DiscordError(404, 10015, "Unknown Webhook")
        return state

    async def _webhook_execute(self, request: web.Request) -> web.StreamResponse:
        recorded: Recorded = request[RECORDED_KEY]
        state = self._webhook_state(request)
        payload = recorded.json or {}
        original = self._messages.get(state.original_message_id or 0)
        if state.response_type == CALLBACK_DEFERRED_MESSAGE and original is not None and original.flags & LOADING:
            # The first follow-up after a deferral replaces the "thinking..." message, keeping its id
            # and its ephemerality.
            self._apply_payload(original, {k: v for k, v in payload.items() if k != "flags"}, recorded.files)
            message = original
        else:
            message = self._bot_message(state.channel_id, payload, recorded.files, webhook=True)
            state.followup_ids.append(message.id)
        if recorded.query.get("wait") in ("0", "false", "False"):
            return web.Response(status=204)
        return _json_response(self._message_json(message))

    async def _webhook_message(self, request: web.Request) -> web.StreamResponse:
        recorded: Recorded = request[RECORDED_KEY]
        state = self._webhook_state(request)
        raw_id = request.match_info["message_id"]
        message_id = state.original_message_id if raw_id == "@original" else int(raw_id)
        allowed = {state.original_message_id, *state.followup_ids}
        message = self._messages.get(message_id or 0)
        if message is None or message.deleted or message_id not in allowed:
            raise _DiscordError(404, 10008, "Unknown Message")
        return self._message_operation(request.method, message, recorded)

    def _message_operation(self, method: str, message: StoredMessage, recorded: Recorded) -> web.Response:
        if method == "DELETE":
            message.deleted = True
            return web.Response(status=204)
        if method == "PATCH":
            self._apply_payload(message, recorded.json or {}, recorded.files)
            message.edited_at = _iso_now()
        return _json_response(self._message_json(message))

    async def _get_channel(self, request: web.Request) -> web.Response:
        channel_id = int(request.match_info["channel_id"])
        if channel_id not in self._channel_guilds:
            raise _DiscordError(404, 10003, "Unknown Channel")
        return _json_response(self._channel_json(channel_id, self._channel_guilds[channel_id]))

    async def _typing(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def _post_channel_message(self, request: web.Request) -> web.Response:
        recorded: Recorded = request[RECORDED_KEY]
        channel_id = int(request.match_info["channel_id"])
        message = self._bot_message(channel_id, recorded.json or {}, recorded.files)
        return _json_response(self._message_json(message))

    async def _channel_message(self, request: web.Request) -> web.Response:
        message = self._messages.get(int(request.match_info["message_id"]))
        if message is None or message.deleted or str(message.channel_id) != request.match_info["channel_id"]:
            raise _DiscordError(404, 10008, "Unknown Message")
        if request.method != "GET" and message.author["id"] != self.bot_user["id"]:
            raise _DiscordError(403, 50005, "Cannot edit a message authored by another user")
        return self._message_operation(request.method, message, request[RECORDED_KEY])

    async def _create_dm(self, request: web.Request) -> web.Response:
        recipient_id = int(request[RECORDED_KEY].json["recipient_id"])
        # One stable DM channel per user, like Discord.
        channel_id = recipient_id + 1
        self._channel_guilds[channel_id] = None
        return _json_response(self._channel_json(channel_id, None, recipient_id))

    async def _get_attachment(self, request: web.Request) -> web.Response:
        attachment = self._attachments.get(int(request.match_info["attachment_id"]))
        if attachment is None:
            raise web.HTTPNotFound()
        self.downloads.append(attachment.id)
        return web.Response(body=attachment.data, headers={"Content-Type": attachment.content_type})

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._all_sockets.add(socket)
        try:
            # Plain text frames: discord.py asks for zlib-stream but also accepts uncompressed text.
            await self._send(socket, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
            async for frame in socket:
                if frame.type is WSMsgType.TEXT:
                    await self._on_gateway_op(socket, json.loads(frame.data), request.path)
        finally:
            self._all_sockets.discard(socket)
            if self._socket is socket:
                self._socket = None
                self.ready.clear()
        return socket

    async def _on_gateway_op(self, socket: web.WebSocketResponse, payload: dict[str, Any], path: str) -> None:
        self.gateway_received.append({**payload, "path": path})
        op, data = payload.get("op"), payload.get("d") or {}
        if op == 1:
            await self._send(socket, {"op": 11})
        elif op == 2:
            self.identify_count += 1
            self._intents = int(data.get("intents", 0))
            self._session_id = secrets.token_hex(16)
            self._socket = socket
            await self._send_dispatch(socket, "READY", self._ready_payload(data.get("shard") or [0, 1]))
            self.ready.set()
        elif op == 6:
            if data.get("session_id") != self._session_id:
                # op 9 with d=false: the session cannot be resumed, identify again.
                await self._send(socket, {"op": 9, "d": False})
                return
            self.resume_count += 1
            self._socket = socket
            await self._send_dispatch(socket, "RESUMED", {})
            self.ready.set()

    def _ready_payload(self, shard: list[int]) -> dict[str, Any]:
        return {
            "v": 10,
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False},
            "guilds": [],
            "session_id": self._session_id,
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/resume-gateway",
            "shard": shard,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
        }

    async def _send_dispatch(self, socket: web.WebSocketResponse, event: str, data: dict[str, Any]) -> None:
        self._sequence += 1
        await self._send(socket, {"op": 0, "t": event, "s": self._sequence, "d": data})

    @staticmethod
    async def _send(socket: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        await socket.send_str(json.dumps({"s": None, "t": None, **payload}))
