"""A drawing request on its way in: moderate -> style -> validate -> pace -> accept.

Accepting writes the job and its quota in one transaction (storage.jobs.accept: duplicate, pending
and quota checked there) BEFORE the user hears "queued"; then the job joins the scheduler's queue."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from bot.community.moderation import Moderator, scope_for
from bot.community.styles import PLACEHOLDER, StyleBook
from bot.contract import Caller, Reply
from bot.core.background import Background
from bot.core.cost import largest_count, largest_size
from bot.core.enhancer import PromptEnhancer
from bot.core.members import Members
from bot.core.notices import Notices
from bot.core.scheduler import Scheduler
from bot.language.errors import UserError
from bot.language.messages import t
from bot.language.text import duration
from bot.runtime.metrics import Metrics
from bot.runtime.settings import Settings
from engine.errors import EngineError
from engine.loras import LoraRegistry, resolve
from engine.request import DrawRequest, ModelProfile, validate
from storage.disk import DiskGuard
from storage.jobs import Acceptance, Job, Jobs, Outcome
from storage.quota import Quota
from storage.users import User

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        settings: Settings,
        jobs: Jobs,
        profile: ModelProfile,
        moderator: Moderator,
        styles: StyleBook,
        members: Members,
        scheduler: Scheduler,
        notices: Notices,
        metrics: Metrics,
        background: Background,
        disk: DiskGuard | None = None,
        loras: LoraRegistry | None = None,
        quota: Quota | None = None,
        lora_gap: Callable[[tuple], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs
        self.profile = profile
        self.moderator = moderator
        self.styles = styles
        self.members = members
        self.scheduler = scheduler
        self.notices = notices
        self.metrics = metrics
        self.background = background
        self.disk = disk
        self.quota = quota  # read by `precheck` (accept decides again, atomically); None: not checked early
        self.loras = loras  # the installed LoRAs (engine/loras.py); None: --lora names nothing
        # Which of a job's LoRAs no live worker can draw with (scale-out: Worker.missing_loras).
        self.lora_gap = lora_gap
        # Set when this process's own GPU thread can never draw (the full model on a machine
        # without a GPU): every new job is refused with it instead of being queued to fail.
        self.cannot_draw: EngineError | None = None
        self.stopping = False  # set when the service stops taking jobs (SIGTERM's drain)
        self.enhancer = PromptEnhancer.from_settings(settings)  # None: no prompt enhancer configured

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
        lang = self.members.language(user)
        stored: dict[str, Any] = {}
        # A re-sent update must get its job back, never a cooldown or a second strike.
        resent = idempotency_key is not None and await self.jobs.find_by_key(idempotency_key) is not None
        if not resent:
            self._refuse_while_stopping()
        if not resent and self.disk is not None and self.disk.low():  # accepted jobs still run
            self._refuse_for_disk(caller)
        sensitive = False
        if not resent:
            # The user's own words are judged, before a preset adds its (trusted) template.
            sensitive = await self._moderate(caller, user, request, parent_id, idempotency_key, own_words)
        request = validate(await self._with_style_and_loras(caller, request, style, stored), self.profile)
        cost = self.scheduler.cost_of(request)
        if not resent:
            await self._check_styled(caller, user, request, cost, sensitive, lang)
        marks = None if resent else self._pace(caller, user)
        try:
            if not resent:  # after the cheap refusals (size, cooldown): a refused job never waits for it
                request = validate(await self._expanded(caller, request, sensitive, stored), self.profile)
            acceptance = await self.jobs.accept(
                user_id=user.id,
                platform=caller.platform,
                reply_to=reply_to,
                request={**request.to_dict(), **stored},
                kind=request.kind.value,
                day=self.members.today(),
                daily_limit=self.members.daily_limit(caller, user),
                max_pending=self.settings.max_pending,
                parent_id=parent_id,
                idempotency_key=idempotency_key,
                cost=cost,
                sensitive=sensitive or self._sensitive_lora(request),  # a preset's LoRA too
            )
        except BaseException:
            if marks is not None:
                self.moderator.undo_cooldown(user.id, marks)
            raise
        if acceptance.outcome is not Outcome.ACCEPTED and marks is not None:
            self.moderator.undo_cooldown(user.id, marks)
        return self._answer(caller, user, request, cost, acceptance, lang)

    async def precheck(self, caller: Caller, user: User) -> None:
        """The refusals a new job would meet, checked before anything costly is done for it (an
        upload's download and decode): cannot draw, disk, strikes, cooldown, pending, and quota (at
        least one unit left).  Raises UserError; `accept` still decides atomically."""
        if self.cannot_draw is not None:
            raise self.cannot_draw
        self._refuse_while_stopping()
        if self.disk is not None and self.disk.low():
            self._refuse_for_disk(caller)
        if self.members.is_admin(caller):
            return
        if (left := await self.moderator.limited_for(user.id, scope_for(caller))) > 0:
            raise UserError("rate_limited", wait=duration(math.ceil(left)))
        if (wait := self.moderator.cooldown_left(user.id)) > 0:
            self.metrics.refusals.labels("cooldown").inc()
            raise UserError("cooldown", wait=duration(math.ceil(wait)))
        await self._check_room(caller, user, None, 1)

    async def _check_room(self, caller: Caller, user: User, request: DrawRequest | None, cost: int) -> None:
        """Refuse early a job the user has no room for: at EASEL_MAX_PENDING, or over the day's quota."""
        pending = await self.jobs.pending_for_user(user.id)
        if len(pending) >= self.settings.max_pending:
            self._refuse(caller, user, request, cost, Outcome.PENDING, 0, pending)
        limit = self.members.daily_limit(caller, user)
        if limit is not None and self.quota is not None:
            used = await self.quota.used(user.id, self.members.today())
            if used + cost > limit:
                self._refuse(caller, user, request, cost, Outcome.QUOTA, used, pending)

    def _refuse(
        self,
        caller: Caller,
        user: User,
        request: DrawRequest | None,
        cost: int,
        outcome: Outcome,
        used: int,
        pending: list[Job],
    ) -> None:
        """Raise the answer to a job over the quota (`outcome` QUOTA) or at the pending limit."""
        if outcome is Outcome.QUOTA:
            limit = self.members.daily_limit(caller, user)
            left = max(0, (limit or 0) - used)
            if left > 0 and request is not None:  # some left, not enough for the whole job
                lang = self.members.language(user)
                raise UserError("quota_not_enough", cost=cost, left=left, hint=self._what_fits(request, left, lang))
            raise UserError("quota_exceeded", limit=limit, resets=self.members.resets_in())
        jobs = ", ".join(f"#{job.id}" for job in pending)
        raise UserError("pending_limit", max_pending=self.settings.max_pending, jobs=jobs)

    def _answer(
        self, caller: Caller, user: User, request: DrawRequest, cost: int, acceptance: Acceptance, lang: str
    ) -> Reply:
        """Queue an accepted job and say where it stands; refuse one over quota or pending."""
        if acceptance.outcome in (Outcome.QUOTA, Outcome.PENDING):
            self._refuse(caller, user, request, cost, acceptance.outcome, acceptance.used, acceptance.pending)
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
            self.scheduler.enqueue(job)
            self.metrics.accepted.inc()
            self.metrics.work_units.labels("accepted").inc(cost)
            self.background.spawn(self.notices.push_positions())
        if acceptance.outcome is Outcome.DUPLICATE and job.id not in self.scheduler.queue:
            status = t(f"status.{job.status.value}", lang)
            return Reply(t("already_have", lang, job_id=job.id, status=status), lang, job_id=job.id)
        return Reply(self.scheduler.queued_text(job, lang), lang, job_id=job.id)

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
        admin = self.members.is_admin(caller)
        scope = scope_for(caller)
        if not admin and (left := await self.moderator.limited_for(user.id, scope)) > 0:
            raise UserError("rate_limited", wait=duration(math.ceil(left)))
        # LoRA names are words like any other: a blocked one is refused before it is looked up.
        lora_words = " ".join(name.replace("_", " ").replace("-", " ") for name, _ in request.loras)
        verdict = await self.moderator.judge(scope, f"{request.prompt} {lora_words}".strip(), request.negative_prompt)
        if verdict.blocked is not None:
            log.info("refused a prompt from %s:%s: it matches a blocked entry", caller.platform, caller.user_id)
            self.metrics.refusals.labels("blocked").inc()
            if not admin and own_words:
                await self.moderator.strike(user.id, scope, idempotency_key)
            raise UserError("blocked_prompt")
        sensitive = verdict.sensitive or self._sensitive_lora(request)
        if not sensitive and parent_id is not None:
            parent = await self.jobs.get(parent_id)
            sensitive = parent is not None and parent.sensitive
        if sensitive:
            self._refuse_outside_nsfw(caller)
        return sensitive

    async def _check_styled(
        self, caller: Caller, user: User, request: DrawRequest, cost: int, sensitive: bool, lang: str
    ) -> None:
        """The refusals that need the styled request: a preset's sensitive LoRA outside NSFW channels
        (no strike: not the user's words), LoRAs no worker holds, the job's size; then pending and
        quota, before the cooldown mark and the enhancer's call: a user with no room left must not
        make the bot call a language model (nor hold their cooldown) for nothing."""
        if not sensitive and self._sensitive_lora(request):
            self._refuse_outside_nsfw(caller)
        await self._check_loras_drawable(request)
        self._check_job_cost(request, cost, lang)
        await self._check_room(caller, user, request, cost)

    def _refuse_outside_nsfw(self, caller: Caller) -> None:
        """Sensitive pictures only in age-restricted Discord channels, when the server asks for that."""
        needs_nsfw = self.settings.nsfw_channels_only and caller.platform == "discord"
        if needs_nsfw and caller.nsfw_channel is not True:
            self.metrics.refusals.labels("sensitive").inc()
            raise UserError("sensitive_nsfw_only")

    async def _with_style_and_loras(
        self, caller: Caller, request: DrawRequest, style: str | None, stored: dict[str, Any]
    ) -> DrawRequest:
        """The style preset applied (its name kept in `stored`), and each LoRA's weight filled in from
        its settings, so /show, the PNG and a reroll say them; an unknown LoRA is refused with the
        closest installed names."""
        if style is not None:
            request = await self._styled(caller, request, style)
            stored["style"] = style.lower()
        return replace(request, loras=resolve(request.loras, self.loras))

    async def _check_loras_drawable(self, request: DrawRequest) -> None:
        """With workers: refuse at once, before anything is charged, a job whose LoRA files no live
        worker holds (docs/SCALE_OUT.md)."""
        if request.loras and self.lora_gap is not None and (missing := await self.lora_gap(request.loras)):
            self.metrics.refusals.labels("lora").inc()
            raise UserError("lora_not_on_workers", names=", ".join(missing))

    def _sensitive_lora(self, request: DrawRequest) -> bool:
        """A LoRA its admin marked sensitive puts every picture drawn with it behind a spoiler."""
        found = [self.loras.get(name) for name, _ in request.loras] if self.loras is not None else []
        return any(lora is not None and lora.sensitive for lora in found)

    def _refuse_while_stopping(self) -> None:
        """Stopping (SIGTERM's drain): a new job would only wait for the restart behind a "queued"
        that is not true now; say so, charge nothing.  A re-sent update still gets its job back."""
        if self.stopping:
            self.metrics.refusals.labels("stopping").inc()
            raise UserError("stopping")

    def _refuse_for_disk(self, caller: Caller) -> None:
        """The disk is under EASEL_MIN_FREE_GB: members hear "try later", an admin what to do about it."""
        self.metrics.refusals.labels("disk").inc()
        if self.members.is_admin(caller):
            free, guard = f"{self.disk.free_gb():.1f}", f"{self.disk.min_free_gb:g}"
            raise UserError("stats_disk_low", free=free, guard=guard)
        raise UserError("disk_full")

    async def _expanded(
        self, caller: Caller, request: DrawRequest, sensitive: bool, stored: dict[str, Any]
    ) -> DrawRequest:
        """The prompt enhancer's rewrite (bot/core/enhancer.py), moderated like the user's words: with a
        blocked word in it, or a sensitive one the user did not write, the picture is drawn from the
        user's words, as it is when the enhancer fails; `stored["enhancer"]` then says why (a note)."""
        if self.enhancer is None or not request.enhance or request.expanded:  # --raw, or a reroll's own
            return request
        expansion = await self.enhancer.expand(request.prompt, request.negative_prompt)
        note = expansion.note
        if expansion.text is not None:
            verdict = await self.moderator.judge(scope_for(caller), expansion.text)
            if verdict.blocked is None and (sensitive or not verdict.sensitive):
                return replace(request, expanded=expansion.text)
            log.info("the prompt enhancer wrote a word this chat does not allow; drawing from the user's words")
            self.enhancer.forget(request.prompt, request.negative_prompt)
            note = "blocked"
        stored["enhancer"] = note
        return request

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

    def _pace(self, caller: Caller, user: User) -> tuple[float | None, float] | None:
        """The per-user cooldown against raids; admins never wait.  Returns the marks to undo with."""
        if self.members.is_admin(caller):
            return None
        left = self.moderator.cooldown_left(user.id)
        if left > 0:
            self.metrics.refusals.labels("cooldown").inc()
            raise UserError("cooldown", wait=duration(math.ceil(left)))
        return self.moderator.start_cooldown(user.id)

    def _check_job_cost(self, request: DrawRequest, cost: int, lang: str) -> None:
        """EASEL_MAX_JOB_COST: refuse a job bigger than one turn may be, saying what would fit."""
        limit = self.settings.max_job_cost
        if limit and cost > limit:
            self.metrics.refusals.labels("too_big").inc()
            raise UserError("job_too_big", cost=cost, limit=limit, hint=self._what_fits(request, limit, lang))

    def _what_fits(self, request: DrawRequest, units: int, lang: str) -> str:
        """A hint for a job of at most `units`: fewer pictures at this size, else a smaller size."""
        w, h, steps, cfg, unit = request.width, request.height, request.steps, request.cfg, self.scheduler.unit
        count = largest_count(w, h, steps, cfg, units, unit)
        if count >= 1:
            return t("fits_count", lang, count=count)
        for count in dict.fromkeys((request.count, 1)):
            size = largest_size(w, h, steps, cfg, count, units, unit, self.profile.multiple, self.profile.min_side)
            if size is not None:
                return t("fits_size", lang, count=count, width=size[0], height=size[1])
        return t("fits_fewer_steps", lang)
