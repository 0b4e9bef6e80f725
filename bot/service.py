"""Every business rule, once: who may draw, quota, per-user limits, lineage, the job lifecycle.
Adapters translate platform events into calls here and render what comes back (bot/contract.py);
running jobs lives in bot/dispatch.py, sending outcomes in bot/delivery.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from bot.buttons import Action, parse_button_id
from bot.contract import Adapter, Caller, Delivery, Reply, Undeliverable
from bot.cost import Unit, guidance_factor, largest_count, largest_size, request_cost
from bot.delivery import Deliveries, sweep_gaps
from bot.dispatch import Dispatching
from bot.errors import UserError
from bot.eta import EtaEstimator, eta_for_position
from bot.messages import language_for, t
from bot.metrics import Metrics
from bot.moderation import Moderator, scope_for
from bot.queue import FairQueue
from bot.settings import Settings
from bot.styles import PLACEHOLDER, StyleBook
from engine.errors import EngineError
from engine.request import DrawRequest, Kind, ModelProfile, fit_size, seed_for, validate
from storage.db import Database
from storage.images import ImageStore
from storage.jobs import Job, JobStatus, Outcome
from storage.users import User

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # starts of one job across crashes before it is failed instead of run again
PICK = re.compile(r"#([1-9])(?:\s+|$)")  # "#3 at night" in reply to a batch: its third picture


class Service(Dispatching, Deliveries):
    def __init__(
        self,
        settings: Settings,
        db: Database,
        images: ImageStore,
        worker,
        profile: ModelProfile,
        model_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.db = db
        self.images = images
        self.worker = worker
        self.profile = profile
        self.model_name = model_name
        self.clock = clock
        self.queue = FairQueue()
        self.eta = EtaEstimator()
        self.adapters: dict[str, Adapter] = {}
        self._costs: dict[int, float] = {}
        self._running: dict[int, tuple[float, float]] = {}  # job id -> (started, estimated seconds)
        self._last_progress: dict[int, float] = {}
        self._last_position: dict[int, int] = {}
        self._delivering: set[int] = set()
        self._sweep_after = sweep_gaps()  # job -> monotonic time its next delivery round may start (bounded)
        self._tasks: set[asyncio.Task] = set()
        self._dispatcher: asyncio.Task | None = None
        self._sweeper: asyncio.Task | None = None
        self._stopping = False
        self._enqueued_at: dict[int, float] = {}
        self._dispatched: set[int] = set()  # taken from the queue, generation not yet returned
        self._cancel_requested: set[int] = set()  # user cancels of dispatched jobs
        self.metrics = Metrics(queue_depth=lambda: len(self.queue), live_workers=self.live_workers)
        # Set when this process's own GPU thread can never draw (the full model on a machine
        # without a GPU): every new job is refused with it instead of being queued to fail.
        self.cannot_draw: EngineError | None = None
        self.moderator = Moderator(settings, db.moderation, clock)
        self.styles = StyleBook(settings.styles_path, profile)
        self.unit = Unit.of(profile)  # what one work unit is (bot/cost.py)

    # -- lifecycle -----------------------------------------------------------------------------

    def live_workers(self) -> int:
        return self.worker.live_workers()

    def register(self, adapter: Adapter) -> None:
        self.adapters[adapter.platform] = adapter

    async def start(self) -> None:
        """Recover what a dead process left, then start dispatching."""
        for width, height, steps, seconds in await self.db.jobs.recent_durations():
            self.eta.record(width, height, steps, seconds)
        for job in await self.db.jobs.unfinished():
            # Remote workers keep drawing while the bot restarts, so there a restart proves nothing.
            crash_looping = self.worker.cancel_on_shutdown and job.attempts >= MAX_ATTEMPTS
            if job.status is JobStatus.RUNNING and crash_looping:
                # It was running every time the process died: it may be what kills it.  Stop the loop.
                log.error("job %s was running at %d crashes; giving up on it", job.id, job.attempts)
                await self._fail(job, "error.unexpected", {})
                continue
            if job.status is JobStatus.RUNNING:
                await self.db.jobs.requeue(job.id)
            if job.id not in self.queue:
                self._enqueue(job)
        if len(self.queue):
            log.info("recovered %d unfinished jobs", len(self.queue))
        self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="easel-dispatch")
        self._sweeper = asyncio.create_task(
            self._redeliver_every(self.settings.delivery_sweep_s), name="easel-redeliver"
        )
        await self.redeliver_pending()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop taking jobs, give in-flight deliveries a moment to finish, then cancel the rest.

        Whatever is cut short is still in the database and resumes at the next start."""
        self._stopping = True
        for loop_task in (self._dispatcher, self._sweeper):
            if loop_task:
                loop_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loop_task
        # An embedded GPU thread must be stopped to exit; remote workers finish the job and the
        # restarted bot adopts the result (WorkerPool.cancel_on_shutdown is False).
        if self.worker.cancel_on_shutdown:
            for job_id in self.worker_jobs():
                self.worker.cancel(job_id)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace_s)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            # Bounded: a task that ignores its cancel must not turn a stop into a hang.
            _, stuck = await asyncio.wait(list(self._tasks), timeout=grace_s)
            if stuck:
                log.warning("%d background tasks did not stop; leaving them", len(stuck))

    def worker_jobs(self) -> list[int]:
        return list(self._running)

    # -- who and where ---------------------------------------------------------------------------

    async def user_for(self, caller: Caller) -> User:
        language = language_for(caller.language) if caller.language else None
        return await self.db.users.get_or_create(caller.platform, caller.user_id, caller.name, language)

    def language(self, user: User) -> str:
        return user.language or self.settings.default_language

    def is_admin(self, caller: Caller) -> bool:
        return self.settings.is_admin(caller.platform, caller.user_id) or caller.platform == "console"

    def _chat_allowed(self, caller: Caller) -> bool:
        allowed = set(self.settings.allowed_chats)
        if not allowed or caller.platform == "console":
            return True
        places = [p for p in (caller.chat_id, caller.guild_id) if p]
        return any(p in allowed or f"{caller.platform}:{p}" in allowed for p in places)

    def daily_limit(self, caller: Caller, user: User) -> int | None:
        """None = unlimited.  Admins unlimited; then a per-user override, a role's, the default."""
        if self.is_admin(caller):
            return None
        if user.quota_override is not None:
            limit = user.quota_override
        else:
            limit = self.settings.role_quotas.get(user.role, self.settings.daily_quota)
        return None if limit == 0 else limit

    def today(self) -> str:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y-%m-%d")

    def resets_in(self) -> str:
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return _duration(int((midnight - now).total_seconds()))

    # -- entry points for adapters --------------------------------------------------------------

    async def handle(self, caller: Caller, command: Any, reply_to: dict, idempotency_key: str | None = None) -> Reply:
        """Run one parsed command (see bot/commands.py) and say what to answer."""
        refusal = await self.turned_away(caller)
        if refusal is not None:
            return refusal
        return await self._run(caller, command, reply_to, idempotency_key)

    async def turned_away(self, caller: Caller) -> Reply | None:
        """A banned user or a chat not on the allowlist: one short line, decided before anything
        they sent is read, so nothing they wrote is echoed and no user row is created for them.
        None: go on."""
        known = await self.db.users.find(caller.platform, caller.user_id)
        if known is not None and known.banned and not self.is_admin(caller):
            key = "banned"
        elif not self._chat_allowed(caller):
            key = "chat_not_allowed"
        else:
            return None
        lang = self._language_of(caller, known)
        return Reply(t(key, lang), lang, alert=True)

    async def language_of(self, caller: Caller) -> str:
        """The caller's language without creating a user row, for answering someone who may be a
        stranger (a forged press, a failure): their stored choice, else their client's."""
        return self._language_of(caller, await self.db.users.find(caller.platform, caller.user_id))

    def _language_of(self, caller: Caller, known: User | None) -> str:
        if known is not None:
            return self.language(known)
        return language_for(caller.language) if caller.language else self.settings.default_language

    async def _run(self, caller: Caller, command: Any, reply_to: dict, idempotency_key: str | None) -> Reply:
        from bot import handlers

        user = await self.user_for(caller)
        lang = self.language(user)
        try:
            return await handlers.run(self, caller, user, command, reply_to, idempotency_key)
        except (UserError, EngineError) as error:
            return Reply(t(error.key, lang, **error.params), lang, alert=True)

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
        from bot.commands import is_ours, parse

        refusal = await self.turned_away(caller)
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
        from bot.commands import Draw, parse

        found = await self.db.jobs.find_picture(caller.platform, chat_id, message_id)
        if found is None:
            return None
        parent, picture = found
        if parent.status is not JobStatus.DONE or parent.deleted or picture >= len(parent.image_paths):
            return None
        refusal = await self.turned_away(caller)
        if refusal is not None:
            return refusal  # before their words are read
        # A batch shown as one message (Discord's gallery, Telegram's button message): "#3 words"
        # names its picture.  Under one picture of the batch, "#3" is just words.
        pick = PICK.match(text)
        batch = len(parent.image_paths)
        if (
            pick
            and batch > 1
            and 1 <= int(pick[1]) <= batch
            and await self._shows_whole_batch(caller.platform, chat_id, message_id, parent, picture)
        ):
            picture, text = int(pick[1]) - 1, text[pick.end() :]
        try:
            command = parse(text, self.profile, bot_username=bot_username)
        except UserError as error:
            if caller.public and error.key == "error.unknown_command":
                return None  # in a group, most likely another bot's command: handle_text decides, quietly
            return await self._parse_error(caller, text, error)
        if not isinstance(command, Draw):
            return None
        request = replace(
            command.request,
            kind=Kind.VARIATION,
            source_image=str(self.images.resolve(parent.image_paths[picture])),
            strength=self.profile.strong_strength,
            **self._variation_size(parent),
        )
        draw = Draw(request, parent_id=parent.id, style=command.style)
        return await self._run(caller, draw, reply_to, idempotency_key)

    async def _shows_whole_batch(self, platform: str, chat_id: str, message_id: str, job: Job, picture: int) -> bool:
        """Whether a message of a batch job shows all of its pictures: one that shows a single
        picture carries no other picture's buttons (storage.jobs.Jobs.shows)."""
        other = (picture + 1) % len(job.image_paths)
        return await self.db.jobs.shows(platform, chat_id, message_id, job.id, other)

    async def _parse_error(self, caller: Caller, text: str, error: UserError) -> Reply:
        """How to fix the command, unless it holds a blocked word: the fix would repeat it back."""
        user = await self.user_for(caller)
        lang = self.language(user)
        if await self.moderator.blocks(scope_for(caller), text):
            return Reply(t("blocked_prompt", lang), lang, alert=True)
        return Reply(t(error.key, lang, **error.params), lang, alert=True)

    async def press(
        self,
        caller: Caller,
        data: str,
        reply_to: dict,
        idempotency_key: str | None = None,
        *,
        message_id: str | None,
    ) -> Reply:
        """A button press on `message_id` in the caller's chat.  The id is checked against the
        database and against the message it was pressed on: forged or stale ones get an alert,
        before a user row is made for whoever sent them."""
        from bot.handlers import ButtonPress, pressed_job

        refusal = await self.turned_away(caller)
        if refusal is not None:
            return refusal
        parsed = parse_button_id(data)
        press = None
        if parsed is not None:
            action, job_id, picture = parsed
            press = ButtonPress(action, job_id, picture, message_id=None if message_id is None else str(message_id))
        if press is None or await pressed_job(self, caller, press) is None:
            lang = await self.language_of(caller)
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

    # -- submission -----------------------------------------------------------------------------

    async def submit(
        self,
        caller: Caller,
        user: User,
        request: DrawRequest,
        reply_to: dict,
        *,
        parent_id: int | None = None,
        idempotency_key: str | None = None,
        style: str | None = None,
        own_words: bool = True,
    ) -> Reply:
        """Moderate the user's words, apply the style, validate and pace; then check quota and
        pending atomically, persist, and queue.  Stored before 'queued'.  `own_words` False: the
        words are someone else's (a button under their picture), refused but never a strike."""
        if self.cannot_draw is not None:  # known at start: queueing would only fail later
            raise self.cannot_draw
        lang = self.language(user)
        stored: dict[str, Any] = {}
        # A re-sent update must get its job back, never a cooldown or a second strike.
        resent = idempotency_key is not None and await self.db.jobs.find_by_key(idempotency_key) is not None
        sensitive = False
        if not resent:
            # The user's own words are judged, before a preset adds its (trusted) template.
            sensitive = await self._moderate(caller, user, request, parent_id, idempotency_key, own_words)
        if style is not None:
            request = await self._styled(caller, request, style)
            stored["style"] = style.lower()
        request = validate(request, self.profile)
        cost = self.cost_of(request)
        if not resent:
            self._check_job_cost(request, cost, lang)
        marks = None if resent else self._pace(caller, user)
        try:
            acceptance = await self.db.jobs.accept(
                user_id=user.id,
                platform=caller.platform,
                reply_to=reply_to,
                request={**request.to_dict(), **stored},
                kind=request.kind.value,
                day=self.today(),
                daily_limit=self.daily_limit(caller, user),
                max_pending=self.settings.max_pending,
                parent_id=parent_id,
                idempotency_key=idempotency_key,
                cost=cost,
                sensitive=sensitive,
            )
        except BaseException:
            if marks is not None:
                self.moderator.undo_cooldown(user.id, marks)
            raise
        if acceptance.outcome is not Outcome.ACCEPTED and marks is not None:
            self.moderator.undo_cooldown(user.id, marks)
        if acceptance.outcome is Outcome.QUOTA:
            limit = self.daily_limit(caller, user)
            left = max(0, (limit or 0) - acceptance.used)
            if left > 0:  # some left, not enough for the whole job
                raise UserError("quota_not_enough", cost=cost, left=left, hint=self._what_fits(request, left, lang))
            raise UserError("quota_exceeded", limit=limit, resets=self.resets_in())
        if acceptance.outcome is Outcome.PENDING:
            jobs = ", ".join(f"#{job.id}" for job in acceptance.pending)
            raise UserError("pending_limit", max_pending=self.settings.max_pending, jobs=jobs)
        job = acceptance.job
        if acceptance.outcome is Outcome.ACCEPTED:
            log.info(
                "accepted %s %sx%s from %s:%s",
                request.kind.value,
                request.width,
                request.height,
                caller.platform,
                caller.user_id,
                extra={"job": job.id},
            )
            self._enqueue(job)
            self.metrics.accepted.inc()
            self.metrics.work_units.labels("accepted").inc(cost)
            self._spawn(self._push_positions())
        if acceptance.outcome is Outcome.DUPLICATE and job.id not in self.queue:
            status = t(f"status.{job.status.value}", lang)
            return Reply(t("already_have", lang, job_id=job.id, status=status), lang, job_id=job.id)
        return Reply(self.queued_text(job, lang), lang, job_id=job.id)

    async def _moderate(
        self,
        caller: Caller,
        user: User,
        request: DrawRequest,
        parent_id: int | None,
        idempotency_key: str | None,
        own_words: bool = True,
    ) -> bool:
        """Refuse blocked words, and sensitive words outside age-restricted Discord channels when the
        server asks for that; True when the picture must go out behind a spoiler (as must anything
        made from a sensitive picture).  Every refused request is a strike: a blocked word in the
        prompt or in `--no`, in a reply to a picture, or through a button on one's own picture (its
        stored words may predate the list, but pressing again and again is what a raid looks like).
        A button on someone else's picture is refused without a strike: the words are not the
        presser's, and anyone in a group can press it."""
        admin = self.is_admin(caller)
        scope = scope_for(caller)
        if not admin and (left := await self.moderator.limited_for(user.id, scope)) > 0:
            raise UserError("rate_limited", wait=_duration(math.ceil(left)))
        verdict = await self.moderator.judge(scope, request.prompt, request.negative_prompt)
        if verdict.blocked is not None:
            log.info("refused a prompt from %s:%s: it matches a blocked entry", caller.platform, caller.user_id)
            self.metrics.refusals.labels("blocked").inc()
            if not admin and own_words:
                await self.moderator.strike(user.id, scope, idempotency_key)
            raise UserError("blocked_prompt")
        sensitive = verdict.sensitive
        if not sensitive and parent_id is not None:
            parent = await self.db.jobs.get(parent_id)
            sensitive = parent is not None and parent.sensitive
        needs_nsfw = self.settings.nsfw_channels_only and caller.platform == "discord"
        if sensitive and needs_nsfw and caller.nsfw_channel is not True:
            self.metrics.refusals.labels("sensitive").inc()
            raise UserError("sensitive_nsfw_only")
        return sensitive

    async def _styled(self, caller: Caller, request: DrawRequest, name: str) -> DrawRequest:
        preset = self.styles.get(name)
        if preset is None:
            if await self.moderator.blocks(scope_for(caller), name):  # never echo a blocked word
                raise UserError("blocked_prompt")
            names = ", ".join(style.name for style in self.styles.all())
            raise UserError("unknown_style", name=name[:40], styles=names, example="/styles")
        # The template's words count towards the model's limit, so the user's budget is smaller.
        budget = self.profile.max_prompt_chars - (len(preset.prompt) - len(PLACEHOLDER))
        if len(request.prompt) > budget:
            raise UserError("error.prompt_too_long", length=len(request.prompt), limit=budget)
        return preset.apply(request, self.profile)

    def _pace(self, caller: Caller, user: User) -> float | None:
        """The per-user cooldown against raids; admins never wait.  Returns the mark to undo with."""
        if self.is_admin(caller):
            return None
        left = self.moderator.cooldown_left(user.id)
        if left > 0:
            self.metrics.refusals.labels("cooldown").inc()
            raise UserError("cooldown", wait=_duration(math.ceil(left)))
        return self.moderator.start_cooldown(user.id)

    def cost_of(self, request: DrawRequest | dict) -> int:
        """What a request (or a stored job's request) costs in work units: bot/cost.py, in this model's unit."""
        return request_cost(request, self.unit)

    def _check_job_cost(self, request: DrawRequest, cost: int, lang: str) -> None:
        """EASEL_MAX_JOB_COST: refuse a job bigger than one turn may be, saying what would fit."""
        limit = self.settings.max_job_cost
        if limit and cost > limit:
            self.metrics.refusals.labels("too_big").inc()
            raise UserError("job_too_big", cost=cost, limit=limit, hint=self._what_fits(request, limit, lang))

    def _what_fits(self, request: DrawRequest, units: int, lang: str) -> str:
        """A hint for a job of at most `units`: fewer pictures at this size, else a smaller size."""
        w, h, steps, cfg, unit = request.width, request.height, request.steps, request.cfg, self.unit
        count = largest_count(w, h, steps, cfg, units, unit)
        if count >= 1:
            return t("fits_count", lang, count=count)
        for count in dict.fromkeys((request.count, 1)):
            size = largest_size(w, h, steps, cfg, count, units, unit, self.profile.multiple, self.profile.min_side)
            if size is not None:
                return t("fits_size", lang, count=count, width=size[0], height=size[1])
        return t("fits_fewer_steps", lang)

    def _enqueue(self, job: Job) -> None:
        request = job.request
        one = self.eta.estimate(request["width"], request["height"], request["steps"])
        self._costs[job.id] = one * job.count * guidance_factor(request.get("cfg") or 1.0)
        self.queue.push(job.id, f"{job.platform}:{job.user_id}", cost=self.cost_of(request))
        self._enqueued_at[job.id] = time.monotonic()

    def queued_text(self, job: Job, lang: str) -> str:
        position = self.queue.position(job.id)
        if position is None:
            return t("queued_next", lang, job_id=job.id)
        return t("queued", lang, job_id=job.id, position=position + 1, eta=_duration(self.eta_seconds(job.id)))

    def eta_seconds(self, job_id: int) -> float:
        position = self.queue.position(job_id)
        if position is None:
            return 0.0
        costs = [self._costs.get(j, 0.0) for j, _ in self.queue.snapshot()[: position + 1]]
        # The work ahead is shared by every slot; the job's own run is not.
        slots = max(1, self.live_workers())
        ahead = eta_for_position(position, self._running_remaining(), costs) - costs[-1]
        return ahead / slots + costs[-1]

    def _running_remaining(self) -> float:
        now = time.monotonic()
        return sum(max(0.0, estimate - (now - started)) for started, estimate in self._running.values())

    # -- cancel ---------------------------------------------------------------------------------

    async def cancel(self, caller: Caller, user: User, job_id: int | None) -> Reply:
        lang = self.language(user)
        if job_id is None:
            pending = await self.db.jobs.pending_for_user(user.id)
            if not pending:
                return Reply(t("cancel_none", lang), lang)
            job = pending[-1]
        else:
            job = await self.db.jobs.get(job_id)
            if job is None:
                raise UserError("job_not_found", job_id=job_id)
        if job.user_id != user.id and not self.is_admin(caller):
            raise UserError("cancel_not_yours")
        if self.queue.remove(job.id):
            self._enqueued_at.pop(job.id, None)
            self._costs.pop(job.id, None)
            await self._cancel_before_start(job)
            self._spawn(self._push_positions())
            return Reply(t("cancelled", lang, job_id=job.id), lang)
        if job.id in self._dispatched:  # about to start or generating: stop it within a step
            self._cancel_requested.add(job.id)
            self.worker.cancel(job.id)
            return Reply(t("cancelled", lang, job_id=job.id), lang)
        return Reply(t("cancel_none", lang), lang)

    # -- helpers --------------------------------------------------------------------------------

    async def _owner_language(self, job: Job) -> str:
        owner = await self.db.users.get(job.user_id)
        return self.language(owner) if owner else self.settings.default_language

    async def _tell_cancelled(self, job: Job) -> None:
        adapter = self.adapters.get(job.platform)
        if adapter is not None:
            lang = await self._owner_language(job)
            await self._status(adapter, job, t("cancelled", lang, job_id=job.id))

    async def _status(self, adapter: Adapter, job: Job, text: str) -> None:
        """A status line may be skipped; one that fails must not stop the updates for others."""
        try:
            await adapter.show_status(job, text)
        except Exception:
            log.warning("status update for job %s failed", job.id, exc_info=True)

    def _spawn(self, coroutine) -> None:
        if self._stopping:
            coroutine.close()
            return
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # -- buttons --------------------------------------------------------------------------------

    def request_for_action(self, action: Action, parent: Job, picture: int = 0) -> DrawRequest:
        """The new request a button press makes from a finished job (from one picture of a batch)."""
        base = DrawRequest.from_dict(parent.request)
        if action is Action.REROLL:  # the whole batch again
            return replace(base, seed=-1)
        source = str(self.images.resolve(parent.image_paths[picture]))
        if action in (Action.VARY_SUBTLE, Action.VARY_STRONG):
            strength = self.profile.subtle_strength if action is Action.VARY_SUBTLE else self.profile.strong_strength
            return replace(
                base, kind=Kind.VARIATION, source_image=source, strength=strength, seed=-1, count=1,
                **self._variation_size(parent),
            )  # fmt: skip
        width, height = self.upscaled_size(base.width, base.height)
        seed = seed_for(parent.seed, picture) if parent.seed is not None else -1
        return replace(
            base, kind=Kind.UPSCALE, source_image=source, width=width, height=height, strength=None, seed=seed, count=1
        )

    def upscaled_size(self, width: int, height: int) -> tuple[int, int]:
        """2x (every official size doubles exactly); a larger source as large as an upscale may be."""
        factor = self.profile.upscale_factor
        return fit_size(width * factor, height * factor, self.profile, upscale=True)

    def _variation_size(self, parent: Job) -> dict[str, int]:
        """The parent's size, scaled into what a variation may have (an upscaled parent is bigger)."""
        width, height = fit_size(parent.request["width"], parent.request["height"], self.profile)
        return {"width": width, "height": height}


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


__all__ = ["Adapter", "Caller", "Delivery", "Reply", "Service", "Undeliverable"]
