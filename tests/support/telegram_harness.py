"""The Telegram harness: real apps and PTB adapters against the fake Bot API, with helpers to act and wait."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from bot.adapters.telegram import TelegramAdapter
from bot.language.messages import t
from storage.jobs import Job
from tests.fakes.telegram_server import Call, FakeTelegram

TOKEN = "123:ABC"
ALICE, BOB, ADMIN = 100, 200, 900
GROUP, OTHER_GROUP = -1001, -1002
SLOW = 30.0  # seconds a picture may take: the CPU is often shared with other test runs


# -- the harness ---------------------------------------------------------------------------------


class Harness:
    """Apps and polling adapters against one fake Telegram; all stopped at teardown."""

    def __init__(self, make_app, tg: FakeTelegram) -> None:
        self.make_app = make_app
        self.tg = tg
        self.apps = []
        self.running: dict[TelegramAdapter, asyncio.Task] = {}

    async def app(self, **settings):
        values = {"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": self.tg.base_url, "EASEL_ADMINS": f"telegram:{ADMIN}"}
        app = await self.make_app(**{**values, **settings})  # a test may name its own admins
        self.apps.append(app)
        return app

    async def connect(self, app, rate_limiter: bool = False) -> TelegramAdapter:
        """A new adapter for `app`, registered and polling."""
        adapter = TelegramAdapter(app.service, app.settings, rate_limiter=rate_limiter, edit_interval=0, poll_timeout=5)
        app.service.register(adapter)
        task = asyncio.create_task(adapter.run())
        self.running[adapter] = task
        ready = asyncio.create_task(adapter.ready.wait())
        await asyncio.wait({task, ready}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            raise AssertionError(f"the adapter did not start: {task.exception() if task.done() else 'timed out'}")
        return adapter

    async def start(self, serve: bool = True, rate_limiter: bool = False, **settings):
        """An app with a polling adapter; `serve=False` leaves the service stopped (jobs stay queued)."""
        app = await self.app(**settings)
        adapter = await self.connect(app, rate_limiter)
        if serve:
            await app.service.start()
        return app, adapter

    async def disconnect(self, adapter: TelegramAdapter) -> None:
        await adapter.close()
        await asyncio.wait_for(self.running.pop(adapter), 10)

    async def kill(self, adapter: TelegramAdapter) -> None:
        task = self.running.pop(adapter)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        try:
            for adapter in list(self.running):
                await self.disconnect(adapter)
        finally:
            for app in self.apps:
                await app.stop()
            await gpu_idle()


@pytest.fixture
async def tg():
    async with FakeTelegram(TOKEN) as fake:
        yield fake


@pytest.fixture
async def easel(make_app, tg):
    harness = Harness(make_app, tg)
    yield harness
    await harness.close()


class ProcessKilled(Exception):
    """Raised on the GPU thread of a bot that a test kills mid-picture."""


class Gate:
    """Holds the GPU thread at the `at`-th transformer forward until opened; then raises `error`, if given."""

    def __init__(self, engine, at: int = 1, error: BaseException | None = None) -> None:
        self.engine = engine
        self.at = at
        self.error = error
        self.calls = 0
        self.reached = threading.Event()
        self.opened = threading.Event()

    def __enter__(self) -> Gate:
        self.handle = self.engine.pipeline.transformer.register_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.opened.set()
        self.handle.remove()

    def _hook(self, module, args) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.reached.set()
            self.opened.wait(timeout=SLOW)
        if self.error is not None and self.calls >= self.at:
            raise self.error

    async def wait_reached(self) -> None:
        assert await asyncio.to_thread(self.reached.wait, SLOW), "the GPU never reached the gate"

    def open(self) -> None:
        self.opened.set()


# -- helpers: users, waiting, the database ----------------------------------------------------------


def said(tg: FakeTelegram, chat: int, user: int, text: str, **extra) -> int:
    """A user writes in a chat (private when chat == user); returns the call mark to wait from."""
    mark = len(tg.calls)
    tg.send_user_message(chat, user, text, chat_type="private" if chat > 0 else "supergroup", **extra)
    return mark


async def answer_after(tg: FakeTelegram, chat: int, mark: int) -> Call:
    """The bot's first text message in `chat` after `mark`."""
    return await tg.wait_for("sendMessage", lambda c: c.index >= mark and c.ok and c.params["chat_id"] == chat)


async def say(tg: FakeTelegram, chat: int, user: int, text: str, **extra) -> Call:
    return await answer_after(tg, chat, said(tg, chat, user, text, **extra))


async def press(tg: FakeTelegram, chat: int, user: int, message_id: int, data: str) -> Call:
    """A user presses a button; returns the bot's answerCallbackQuery."""
    query_id = tg.press_button(chat, user, message_id, data)
    return await tg.wait_for("answerCallbackQuery", lambda c: c.params["callback_query_id"] == query_id)


async def picture(tg: FakeTelegram, chat: int, mark: int = 0) -> Call:
    return await tg.wait_for(
        "sendPhoto", lambda c: c.index >= mark and c.ok and c.params["chat_id"] == chat, timeout=SLOW
    )


async def post_as_bot(tg: FakeTelegram, method: str, **params) -> dict:
    """Call the fake as the bot would (for messages whose buttons an old or forged client made)."""
    url = f"{tg.base_url}{TOKEN}/{method}"
    async with aiohttp.ClientSession() as session, session.post(url, json=params) as response:
        body = await response.json()
    assert body["ok"], body
    return body["result"]


def replying_to(call: Call) -> int | None:
    return (call.params.get("reply_parameters") or {}).get("message_id")


def answers_to(tg: FakeTelegram, chat: int, message_id: int) -> list[Call]:
    """Every text message the bot sent in reply to one message."""
    sent = [c for c in tg.calls_of("sendMessage") if c.ok and c.params["chat_id"] == chat]
    return [c for c in sent if replying_to(c) == message_id]


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = SLOW) -> None:
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def gpu_idle() -> None:
    """Wait until no GPU thread of any app is left (a stopped app's thread may still be finishing a job)."""

    def busy() -> bool:
        return any(thread.name.startswith("easel-gpu") for thread in threading.enumerate())

    for _ in range(int(SLOW / 0.02)):
        if not busy():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("a GPU thread is still running")


async def jobs_of(app, user: int) -> list[Job]:
    """The user's jobs, newest first."""
    found = await app.db.users.find("telegram", str(user))
    return [] if found is None else (await app.db.jobs.list_for_user(found.id, 0, 100))[0]


async def settled(app, job_id: int) -> Job:
    """The job once its answer has gone out and been marked delivered, or was given up."""

    async def delivered() -> bool:
        job = await app.db.jobs.get(job_id)
        return bool(job.delivered_at or job.delivery_error)

    await until(delivered)
    return await app.db.jobs.get(job_id)


async def attached(app, job_id: int) -> Job:
    async def known() -> bool:
        return (await app.db.jobs.get(job_id)).reply_to.get("status_message_id") is not None

    await until(known, timeout=10)
    return await app.db.jobs.get(job_id)


async def quota_used(app, user: int) -> int:
    found = await app.db.users.find("telegram", str(user))
    return await app.db.quota.used(found.id, app.service.today())


def prefix(key: str, lang: str = "en", **params) -> str:
    """A message up to its `{resets}` placeholder, which changes by the minute."""
    return t(key, lang, **params, resets="{resets}").split("{resets}")[0]


def markup(data: list[str]) -> dict:
    """An inline keyboard of one button a row, each item its label and its callback data."""
    return {"inline_keyboard": [[{"text": item, "callback_data": item}] for item in data]}
