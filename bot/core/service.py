"""The service: what adapters call (bot/contract.py `ChatService`), a thin front over parts that each
own their state: members, intake, scheduler, dispatcher, deliverer, notices, background (one module
each, docs/ARCHITECTURE.md).  Commands go to one handler each (bot/core/handlers.py) with a Context."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bot.community.moderation import Moderator, scope_for
from bot.community.styles import StyleBook
from bot.contract import Adapter, Caller, Delivery, Reply, Undeliverable, Upload, Worker
from bot.core import handlers
from bot.core.background import Background
from bot.core.context import Context
from bot.core.cost import Unit
from bot.core.delivery import Deliverer
from bot.core.dispatch import Dispatcher
from bot.core.intake import Intake
from bot.core.members import Members
from bot.core.notices import Notices
from bot.core.retention import Retention
from bot.core.scheduler import Scheduler
from bot.core.uploads import Uploads
from bot.core.variations import is_enhance, picked_picture, replied_picture, reply_variation
from bot.language.buttons import Action
from bot.language.commands import ButtonPress, Draw, is_ours, parse
from bot.language.errors import UserError
from bot.language.messages import t
from bot.runtime.metrics import Metrics
from bot.runtime.settings import Settings
from engine.errors import EngineError
from engine.loras import scan
from engine.request import ModelProfile
from storage.db import Database
from storage.disk import DiskGuard
from storage.images import ImageStore
from storage.users import User

log = logging.getLogger(__name__)


class Service:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        images: ImageStore,
        worker: Worker,
        profile: ModelProfile,
        model_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings, self.db, self.images, self.worker = settings, db, images, worker
        self.profile, self.model_name = profile, model_name
        self.adapters: dict[str, Adapter] = {}
        self.background = Background()
        self.members = Members(settings, db.users, clock)
        self.scheduler = Scheduler(Unit.of(profile), self.live_workers)
        self.metrics = Metrics(
            queue_depth=lambda: len(self.scheduler.queue), live_workers=self.live_workers, recipes=self.worker.recipes
        )
        self.disk = DiskGuard(settings.data_dir, settings.min_free_gb)
        self.retention = Retention(settings.keep_days, db.jobs, images, self.metrics) if settings.keep_days else None
        self.metrics.watch_disk(self.disk.free_gb, lambda: self.disk.low())
        self.moderator = Moderator(settings, db.moderation, clock)
        self.styles = StyleBook(settings.styles_path, profile)
        # The files are checked against the transformer where the engine loads them (engine/loras.py).
        self.loras = scan(settings.loras_path, settings.max_lora_mb)
        worker.loras = self.loras  # scale-out: the reference a worker's files must match
        self.uploads = Uploads(settings, profile, images)
        self.notices = Notices(db.jobs, self.adapters, self.members, self.scheduler)
        self.disk.on_change = self._disk_changed
        self.deliverer = Deliverer(settings, db, images, self.adapters, self.members, self.metrics, self.background)
        self.dispatcher = Dispatcher(
            db.jobs, images, worker, self.scheduler, self.deliverer, self.notices, self.metrics, self.background,
            model_name, loras=self.loras,
        )  # fmt: skip
        self.intake = Intake(
            settings, db.jobs, profile, self.moderator, self.styles, self.members, self.scheduler, self.notices,
            self.metrics, self.background, self.disk, self.loras, quota=db.quota, lora_gap=worker.missing_loras,
        )  # fmt: skip
        self._context = partial(
            Context, settings=settings, db=db, images=images, profile=profile, model_name=model_name,
            members=self.members, moderator=self.moderator, styles=self.styles, intake=self.intake,
            scheduler=self.scheduler, dispatcher=self.dispatcher, worker=worker, metrics=self.metrics,
            adapters=self.adapters, disk=self.disk, loras=self.loras,
        )  # fmt: skip

    @property
    def cannot_draw(self) -> EngineError | None:
        """Set when this process's own GPU thread can never draw: every new job is refused with it."""
        return self.intake.cannot_draw

    @cannot_draw.setter
    def cannot_draw(self, error: EngineError | None) -> None:
        self.intake.cannot_draw = error

    # -- lifecycle -----------------------------------------------------------------------------

    def register(self, adapter: Adapter) -> None:
        self.adapters[adapter.platform] = adapter

    async def start(self) -> None:
        """Recover what a dead process left, then start dispatching and sweeping deliveries."""
        self.scheduler.learn(await self.db.jobs.recent_durations())
        recovered = await self.dispatcher.recover()
        if recovered:
            log.info("recovered %d unfinished jobs", recovered)
        self.background.run_loop("dispatch", self.dispatcher.dispatch_loop())
        self.background.run_loop("redeliver", self.deliverer.redeliver_every(self.settings.delivery_sweep_s))
        if self.retention is not None:
            self.background.run_loop("retention", self.retention.run_every())
        await self.redeliver_pending()

    async def stop(self, grace_s: float = 5.0, finish_s: float = 0.0) -> None:
        """Stop taking jobs, give the running ones `finish_s` to finish (SIGTERM: EASEL_STOP_GRACE_S),
        hand back the rest, give in-flight deliveries a moment to finish, then cancel the rest.

        Whatever is cut short is still in the database and resumes at the next start."""
        self.intake.stopping = True
        await self.background.stop_loops()
        if finish_s > 0:
            await self.background.settle(finish_s)
        self.dispatcher.stop_running()
        await self.background.drain(grace_s)

    async def redeliver_pending(self) -> None:
        """Deliver what finished while an adapter was away (call after registering one)."""
        await self.deliverer.redeliver_pending()

    def _disk_changed(self, low: bool, free: float) -> None:
        """The disk guard saw an edge: tell the admins once, off the request path."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # asked outside the bot's loop (a CLI check): the log line is enough
            return
        key = "admin_disk_low" if low else "admin_disk_back"
        self.background.spawn(self.notices.tell_admins(key, free=f"{free:.1f}", guard=f"{self.disk.min_free_gb:g}"))

    def live_workers(self) -> int:
        return self.worker.live_workers()

    def today(self) -> str:
        """The quota day (UTC)."""
        return self.members.today()

    async def user_for(self, caller: Caller) -> User:
        return await self.members.user_for(caller)

    def lora_names(self) -> list[str]:
        """The installed LoRA names as last scanned (no disk access: autocomplete answers in 3 s)."""
        return self.loras.names() if self.loras is not None else []

    async def language_of(self, caller: Caller) -> str:
        """The caller's language without creating a user row (for a stranger, a forged press...)."""
        return await self.members.language_of(caller)

    # -- entry points for adapters --------------------------------------------------------------

    async def handle(self, caller: Caller, command: Any, reply_to: dict, idempotency_key: str | None = None) -> Reply:
        """Run one parsed command (see bot/language/commands.py) and say what to answer."""
        refusal = await self.members.turned_away(caller)
        if refusal is not None:
            return refusal
        return await self._run(caller, command, reply_to, idempotency_key)

    async def handle_text(
        self,
        caller: Caller,
        text: str,
        reply_to: dict,
        idempotency_key: str | None = None,
        bot_username: str | None = None,
        shared_chat: bool = False,
    ) -> Reply | None:
        """Parse and run a line of the command language; None when it was not meant for us.

        In a shared chat (a group), a command we do not know was most likely meant for another bot:
        stay quiet rather than answer every `/foo` in the room."""
        refusal = await self.members.turned_away(caller)
        if refusal is not None:
            # Read no further.  In a group, only our own commands hear the one line.
            quiet = (shared_chat or caller.public) and not is_ours(text, bot_username)
            return None if quiet else refusal
        try:
            command = parse(text, self.profile, bot_username=bot_username)
        except UserError as error:
            addressed = bool(bot_username) and f"@{bot_username}".lower() in text.split(maxsplit=1)[0].lower()
            if shared_chat and error.key == "error.unknown_command" and not addressed:
                return None
            return await self._parse_error(caller, text, error)
        if command is None:
            return None
        return await self._run(caller, command, reply_to, idempotency_key)

    async def vary_from_picture(
        self,
        caller: Caller,
        text: str,
        chat_id: str,
        message_id: str,
        reply_to: dict,
        idempotency_key: str | None,
        bot_username: str | None = None,
    ) -> Reply | None:
        """A reply to one of our pictures with a new prompt: a variation of that picture."""
        found = await replied_picture(self.db.jobs, caller.platform, chat_id, message_id)
        if found is None:
            return None
        refusal = await self.members.turned_away(caller)
        if refusal is not None:
            return refusal  # before their words are read
        parent, picture = found
        if parent.expired:  # retention removed the picture this reply would start from
            lang = await self.members.language_of(caller)
            return Reply(t("picture_expired", lang, job_id=parent.id), lang, alert=True)
        picture, text = await picked_picture(self.db.jobs, caller.platform, chat_id, message_id, parent, picture, text)
        if is_enhance(text) and parent.request.get("draft"):  # "#3 enhance": the Enhance button, typed
            press = ButtonPress(Action.ENHANCE, parent.id, picture, message_id=str(message_id))
            return await self._run(caller, press, reply_to, idempotency_key)
        try:
            command = parse(text, self.profile, bot_username=bot_username)
        except UserError as error:
            if caller.public and error.key == "error.unknown_command":
                return None  # in a group, most likely another bot's command: handle_text decides, quietly
            return await self._parse_error(caller, text, error)
        if not isinstance(command, Draw):
            return None
        draw = reply_variation(command, parent, picture, self.profile, self.images)
        return await self._run(caller, draw, reply_to, idempotency_key)

    async def draw_from_upload(
        self,
        caller: Caller,
        text: str,
        upload: Upload,
        reply_to: dict,
        idempotency_key: str | None,
        bot_username: str | None = None,
    ) -> Reply | None:
        """/draw words with a picture of the user's own: image to image from it.  The words are read,
        and what would refuse the job checked (Intake.precheck: quota, pending, cooldown...), before
        the file is fetched; a refused file or job leaves nothing stored."""
        refusal = await self.members.turned_away(caller)
        if refusal is not None:
            return refusal
        try:
            command = parse(text, self.profile, bot_username=bot_username)
        except UserError as error:
            return await self._parse_error(caller, text, error)
        if not isinstance(command, Draw):
            return None
        if idempotency_key is not None and await self.db.jobs.find_by_key(idempotency_key) is not None:
            return await self._run(caller, command, reply_to, idempotency_key)  # re-sent: its job, no download
        refused = await self._precheck(caller)  # no download, no decode for a job that would be refused
        if refused is not None:
            return refused
        try:
            draw, path, animated = await self.uploads.take(command, upload)
        except UserError as error:
            lang = await self.members.language_of(caller)
            return Reply(t(error.key, lang, **error.params), lang, alert=True)
        reply = await self._run(caller, draw, reply_to, idempotency_key)
        job = await self.db.jobs.get(reply.job_id) if reply.job_id is not None else None
        if job is None or job.request.get("source_image") != draw.request.source_image:  # refused, or re-sent
            await asyncio.to_thread(self.images.delete, path)
        elif animated:
            reply = dataclasses.replace(reply, text=f"{reply.text}\n{t('upload_first_frame', reply.language)}")
        return reply

    async def press(
        self, caller: Caller, data: str, reply_to: dict, idempotency_key: str | None = None, *, message_id: str | None
    ) -> Reply:
        """A button press on `message_id` in the caller's chat.  The id is checked against the
        database and against the message it was pressed on: forged or stale ones get an alert,
        before a user row is made for whoever sent them."""
        refusal = await self.members.turned_away(caller)
        if refusal is not None:
            return refusal
        press = ButtonPress.of(data, message_id)
        if press is None or await handlers.pressed_job(self.db.jobs, caller, press) is None:
            lang = await self.members.language_of(caller)
            return Reply(t("stale_button", lang), lang, alert=True)
        return await self._run(caller, press, reply_to, idempotency_key)

    async def attach_status_message(self, job_id: int, **where: Any) -> None:
        """Remember the status message an adapter posted, so progress edits find it after a restart."""
        job = await self.db.jobs.get(job_id)
        if job is not None:
            await self.db.jobs.update_reply_to(job_id, {**job.reply_to, **where})

    async def record_message(
        self, job_id: int, platform: str, chat_id: str, message_id: str, picture: int = 0, whole_batch: bool = False
    ) -> None:
        """Remember a posted message of a job: replies and button presses are honoured only there."""
        await self.db.jobs.record_message(job_id, platform, chat_id, message_id, picture, whole_batch)

    async def messages_of(self, job_id: int, platform: str) -> list[tuple[str, str]]:
        """Every message posted for a job (the picture, a lossless PNG...), e.g. to delete them all."""
        return await self.db.jobs.messages_of(job_id, platform)

    # -- helpers --------------------------------------------------------------------------------

    async def _run(self, caller: Caller, command: Any, reply_to: dict, idempotency_key: str | None) -> Reply:
        user = await self.user_for(caller)
        lang = self.members.language(user)
        ctx = self._context(caller=caller, user=user, language=lang, reply_to=reply_to, idempotency_key=idempotency_key)
        try:
            return await handlers.run(ctx, command)
        except (UserError, EngineError) as error:
            return Reply(t(error.key, lang, **error.params), lang, alert=True)

    async def _precheck(self, caller: Caller) -> Reply | None:
        """The refusal a new job would meet (Intake.precheck), as an answer; None: go on."""
        user = await self.user_for(caller)
        try:
            await self.intake.precheck(caller, user)
        except (UserError, EngineError) as error:
            lang = self.members.language(user)
            return Reply(t(error.key, lang, **error.params), lang, alert=True)
        return None

    async def _parse_error(self, caller: Caller, text: str, error: UserError) -> Reply:
        """How to fix the command, unless it holds a blocked word: the fix would repeat it back."""
        user = await self.user_for(caller)
        lang = self.members.language(user)
        if await self.moderator.blocks(scope_for(caller), text):
            return Reply(t("blocked_prompt", lang), lang, alert=True)
        return Reply(t(error.key, lang, **error.params), lang, alert=True)


__all__ = ["Adapter", "Caller", "Delivery", "Reply", "Service", "Undeliverable"]
