"""The Discord harness: the real app and discord.py adapter against the fake Discord, with helpers to act and wait."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from PIL import Image

from bot.adapters.discord import DiscordAdapter
from bot.language.buttons import Action, button_id
from storage.jobs import Job
from tests.fakes.discord_server import FakeDiscord, Recorded, StoredMessage

GUILD_ID = 1_300_000_000_000_000_001
CHANNEL_ID = 1_300_000_000_000_000_002
USER_ID = 1_300_000_000_000_000_003
OTHER_ID = 1_300_000_000_000_000_004
ZH_ID = 1_300_000_000_000_000_005
ADMIN_ID = 900


@dataclass
class Bot:
    app: object
    adapter: DiscordAdapter
    task: asyncio.Task

    async def stop(self) -> None:
        await self.adapter.close()
        await asyncio.wait_for(self.task, 5)
        await self.app.stop()


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        with server.patch_discord():
            yield server


@pytest.fixture
async def start_bot(make_app, fake: FakeDiscord) -> AsyncIterator[Callable[..., Awaitable[Bot]]]:
    """`await start_bot(**settings)`: the app and the adapter connected to the fake; stopped at teardown."""
    bots: list[Bot] = []

    async def start(**overrides: str) -> Bot:
        app = await make_app(EASEL_ADMINS=f"discord:{ADMIN_ID}", DISCORD_TOKEN="x", **overrides)
        adapter = DiscordAdapter(app.service, app.settings)
        app.service.register(adapter)
        await app.service.start()
        fake.ready.clear()
        bot = Bot(app, adapter, asyncio.create_task(adapter.run()))
        bots.append(bot)
        await asyncio.wait_for(fake.ready.wait(), 10)
        return bot

    yield start
    for bot in bots:
        if not bot.task.done():
            await bot.stop()


# -- helpers ------------------------------------------------------------------------------------


async def draw(fake: FakeDiscord, user_id: int = USER_ID, **options: object) -> dict:
    """/draw with few steps (fast on CPU) unless told otherwise."""
    options.setdefault("prompt", "a red fox in the snow")
    options.setdefault("steps", 2)
    return await command(fake, "draw", user_id, **options)


async def command(
    fake: FakeDiscord, name: str, user_id: int = USER_ID, locale: str = "en-US", limit: int | None = None, **options
) -> dict:
    """A user in the test guild runs /name; `limit` is the interaction's attachment_size_limit."""
    extra = {} if limit is None else {"attachment_size_limit": limit}
    return await fake.send_slash_command(
        name, options, user_id=user_id, guild_id=GUILD_ID, channel_id=CHANNEL_ID, locale=locale, **extra
    )


def callback_of(interaction: dict) -> Callable[[Recorded], bool]:
    path = f"/interactions/{interaction['id']}/{interaction['token']}/callback"
    return lambda r: r.method == "POST" and r.path == path


async def answer(fake: FakeDiscord, interaction: dict) -> str:
    """The text the bot put into the (deferred) original response of this interaction."""
    edit = await fake.wait_for(("PATCH", f"/{interaction['token']}/messages/@original"))
    return edit.json["content"]


async def until(check: Callable[[], Awaitable[object]], timeout: float = 20) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def delivered(app, job_id: int) -> Job:
    async def check():
        job = await app.db.jobs.get(job_id)
        return job if job is not None and (job.delivered_at or job.delivery_error) else None

    return await until(check)


async def child(app, parent_id: int, count: int = 1) -> Job:
    """The parent's `count`-th child job, once delivered."""

    async def check():
        children = await app.db.jobs.children(parent_id)
        return children[count - 1] if len(children) >= count else None

    job = await until(check)
    return await delivered(app, job.id)


def picture_of(fake: FakeDiscord, job_id: int, channel_id: int = CHANNEL_ID) -> StoredMessage:
    [message] = [m for m in fake.messages_in(channel_id) if button_id(Action.REROLL, job_id) in m.custom_ids]
    return message


def image_size(message: StoredMessage) -> tuple[int, int]:
    [attachment] = message.attachments
    with Image.open(io.BytesIO(attachment.data)) as image:
        return image.size


async def drawn(fake: FakeDiscord, bot: Bot, **options: object) -> tuple[Job, StoredMessage]:
    """Draw and wait for the picture."""
    job_id = await job_count(bot.app) + 1
    await draw(fake, **options)
    job = await delivered(bot.app, job_id)
    return job, picture_of(fake, job.id)


async def job_count(app) -> int:
    return sum((await app.db.jobs.counts_by_status()).values())


def bot_reply(fake: FakeDiscord, picture: StoredMessage, content: str) -> dict:
    """A MESSAGE_CREATE from another bot, replying to our picture and mentioning us."""
    author = {"id": "777", "username": "otherbot", "discriminator": "0", "global_name": None, "avatar": None}
    return {
        "id": str(picture.id + 1000),
        "channel_id": str(CHANNEL_ID),
        "guild_id": str(GUILD_ID),
        "author": {**author, "bot": True, "public_flags": 0},
        "content": f"<@{fake.application_id}> {content}",
        "embeds": [],
        "attachments": [],
        "components": [],
        "mentions": [fake.bot_user],
        "mention_roles": [],
        "mention_everyone": False,
        "pinned": False,
        "tts": False,
        "timestamp": picture.created_at,
        "edited_timestamp": None,
        "type": 19,
        "flags": 0,
        "message_reference": {"type": 0, "message_id": str(picture.id), "channel_id": str(CHANNEL_ID)},
    }


def hold_gpu(bot: Bot) -> threading.Event:
    """Keep the GPU thread busy until the returned event is set: jobs queue up behind it."""
    gate = threading.Event()
    asyncio.get_running_loop().create_task(bot.app.worker.call(gate.wait))
    return gate
