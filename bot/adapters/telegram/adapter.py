"""Telegram through python-telegram-bot: long polling in (incoming.py), answers out (outbox.py).

`TelegramAdapter` wires the two to one PTB `Application`, runs it until `close()`, and is what the
service calls to show progress, deliver pictures and report failures.  The service may call before
polling has started (it redelivers on start-up): deliveries wait until the bot is ready, progress
is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from telegram import BotCommand
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from bot.adapters.telegram.fitting import file_url_for
from bot.adapters.telegram.incoming import Incoming
from bot.adapters.telegram.outbox import Outbox
from bot.adapters.telegram.texts import command_menu, menu_languages
from bot.contract import ChatService, Delivery
from bot.runtime.settings import Settings
from storage.jobs import Job

log = logging.getLogger(__name__)

EDIT_INTERVAL_S = 3.0  # at most one progress edit per chat this often (edits count towards flood limits)
POLL_TIMEOUT_S = 30.0
READY_TIMEOUT_S = 60.0
ALLOWED_UPDATES = ["message", "callback_query"]


class TelegramAdapter:
    platform = "telegram"

    def __init__(
        self,
        service: ChatService,
        settings: Settings,
        *,
        rate_limiter: bool = True,
        edit_interval: float = EDIT_INTERVAL_S,
        poll_timeout: float = POLL_TIMEOUT_S,
    ) -> None:
        self.service = service
        self.application = build_application(settings, rate_limiter=rate_limiter)
        self.outbox = Outbox(self.application.bot, service, edit_interval)
        Incoming(service, self.outbox, settings.max_upload_mb).register(self.application)
        self.ready = asyncio.Event()  # set while polling
        self._closing = asyncio.Event()
        self._poll_timeout = poll_timeout

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `close()`; an unreachable Bot API is retried, a rejected token ends only the
        Telegram side (and is never printed: PTB's own message would carry it)."""
        delay = 1.0
        while not self._closing.is_set():
            try:
                await self._serve()
                return
            except InvalidToken:
                log.error("telegram: the Bot API rejected TELEGRAM_TOKEN; the Telegram side stays off")
                return
            except NetworkError as error:
                log.warning("telegram: cannot reach the Bot API (%s); retrying in %.0fs", type(error).__name__, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
                delay = min(60.0, delay * 2)

    async def _serve(self) -> None:
        """Connect, publish the command menu, poll until `close()`, then shut PTB down cleanly."""
        application = self.application
        async with application:  # initialize() ... shutdown()
            await self._publish_menu()
            await application.start()
            await application.updater.start_polling(
                poll_interval=0,
                timeout=dt.timedelta(seconds=self._poll_timeout),
                allowed_updates=ALLOWED_UPDATES,
                error_callback=_polling_failed,
            )
            self.ready.set()
            log.info("telegram: polling as @%s", application.bot.username)
            try:
                await self._closing.wait()
            finally:
                self.ready.clear()
                # Stopping the updater confirms the updates already fetched, so they do not come back.
                if application.updater.running:
                    await application.updater.stop()
                if application.running:
                    await application.stop()

    async def close(self) -> None:
        self._closing.set()

    async def _publish_menu(self) -> None:
        for lang, language_code in menu_languages():
            commands = [BotCommand(name, description) for name, description in command_menu(lang)]
            try:
                await self.application.bot.set_my_commands(commands, language_code=language_code)
            except TelegramError as error:
                log.warning("telegram: the %s command menu was not set: %s", lang, error)

    # -- what the service calls -----------------------------------------------------------------

    async def show_status(self, job: Job, text: str) -> None:
        if self.ready.is_set():
            await self.outbox.show_status(job, text)

    async def deliver(self, delivery: Delivery) -> None:
        await self._until_ready()
        await self.outbox.deliver(delivery)

    async def notify_failure(self, job: Job, text: str) -> None:
        await self._until_ready()
        await self.outbox.notify_failure(job, text)

    async def tell_admin(self, user_id: str, text: str) -> bool:
        """A private message to a bot admin; False (logged) when it did not go out."""
        try:
            await self._until_ready()
            await self.outbox.send_text(int(user_id), text)
        except Exception as error:  # never started the bot, blocked it, a bad id, not connected
            log.warning("telegram: message to admin %s not sent: %s", user_id, error)
            return False
        return True

    async def _until_ready(self) -> None:
        # A TimeoutError here is a failed delivery: the service tries again later.
        await asyncio.wait_for(self.ready.wait(), READY_TIMEOUT_S)


def _polling_failed(error: TelegramError) -> None:
    # PTB retries by itself; one line instead of its default traceback for every network blip.
    log.warning("telegram: getting updates failed (%s); retrying", error)


def build_application(settings: Settings, *, rate_limiter: bool = True) -> Application:
    """One PTB application for the configured Bot API server (api.telegram.org or a self-hosted one)."""
    if settings.telegram_token is None:
        raise ValueError("TELEGRAM_TOKEN is not set")
    builder = ApplicationBuilder().token(settings.telegram_token.get_secret_value()).base_url(settings.telegram_api_url)
    file_url = file_url_for(settings.telegram_api_url)
    if file_url is not None:
        builder = builder.base_file_url(file_url)
    # Updates are handled concurrently: one flood-limited group waiting out a 429 must not stall
    # every other chat.  Idempotency keys keep a re-sent update from becoming two jobs.
    builder = builder.concurrent_updates(True)
    if rate_limiter:
        # Throttling only (max_retries=0): whether a 429 is waited out or skipped is decided per
        # message in the outbox, since a progress edit may be dropped and a picture may not.
        builder = builder.rate_limiter(AIORateLimiter(max_retries=0))
    return builder.build()
