"""Sending outcomes: a finished job's picture (or its failure) goes to its platform once.

The rules (docs/OPERATIONS.md, "Delivery"):
- A round is one attempt now and DELIVERY_RETRIES - 1 more in the background, `delivery_retry_s`
  apart and doubling.  A round that fails throughout is counted in `jobs.delivery_failures`.
- A sweep (every `delivery_sweep_s`, and at start) gives a counted job another round, but only
  once its gap has passed: the sweep interval, doubled after each failed round, at most an hour.
- After `max_delivery_sweeps` failed rounds the delivery is dead: `jobs.delivery_error` says why,
  nothing sends it again, and admins see it in /queue and /stats.
- No adapter for the job's platform (not started yet, or no longer configured) is a failed attempt
  like any other, so such a job ends dead too instead of being swept forever.
- An adapter that knows the platform will never take it raises Undeliverable: given up at once,
  the chat told where it can be.  The picture was drawn, so it is not refunded; it stays in /history."""

from __future__ import annotations

import asyncio
import logging
import time

from bot.contract import Adapter, Delivery, Undeliverable
from bot.core.background import Background
from bot.core.members import Members
from bot.language.buttons import BATCH_PER_PICTURE, BATCH_ROW, BUTTON_ROW, DRAFT_ROW, OUTPAINT_ROWS, button_id
from bot.language.messages import t
from bot.language.text import clip
from bot.runtime.bounded import BoundedMap
from bot.runtime.logs import current_job
from bot.runtime.metrics import Metrics
from bot.runtime.settings import Settings
from engine.request import DrawRequest, seed_for
from storage.db import Database
from storage.images import ImageStore
from storage.jobs import Job, JobStatus

log = logging.getLogger(__name__)

DELIVERY_RETRIES = 5  # attempts in one round
MAX_RETRY_GAP_S = 60.0
MAX_SWEEP_GAP_S = 3600.0
SWEEP_GAPS_KEPT = 10_000  # jobs between failed rounds remembered at once; one forgotten is swept sooner


def sweep_gaps() -> BoundedMap[int, float]:
    """Job -> monotonic time its next delivery round may start.  An entry is popped when the delivery
    ends, and forgotten MAX_SWEEP_GAP_S after it was written anyway (its time has passed by then)."""
    return BoundedMap(SWEEP_GAPS_KEPT, ttl_s=MAX_SWEEP_GAP_S)


class PictureMissing(Exception):
    """A finished job's image file is gone from disk: no platform and no retry can send it."""


class Deliverer:
    """Sends finished jobs' outcomes to their platforms, in rounds, and sweeps up what is left."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        images: ImageStore,
        adapters: dict[str, Adapter],
        members: Members,
        metrics: Metrics,
        background: Background,
    ) -> None:
        self.settings = settings
        self.db = db
        self.images = images
        self.adapters = adapters  # the service's own map: adapters registered later are seen
        self.members = members
        self.metrics = metrics
        self.background = background
        self._delivering: set[int] = set()  # an in-process guard: one round per job at a time
        self._sweep_after = sweep_gaps()  # job -> monotonic time its next delivery round may start

    async def redeliver_every(self, seconds: float) -> None:
        """A platform outage longer than one round must not strand pictures until a restart."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.redeliver_pending()
            except Exception:
                log.exception("redelivery sweep failed; trying again in %ss", seconds)

    async def redeliver_pending(self) -> None:
        """Deliver what finished while an adapter was away (call after registering one); a job whose
        last round failed waits out its gap first."""
        now = time.monotonic()
        for job in await self.db.jobs.undelivered():
            if job.id not in self._delivering and self._sweep_after.get(job.id, 0.0) <= now:
                self.background.spawn(self.deliver(job.id))

    async def deliver(self, job_id: int) -> None:
        """Start a round: one attempt now; if it fails, the rest of the round in the background."""
        current_job.set(job_id)
        if job_id in self._delivering:
            return
        self._delivering.add(job_id)
        failure = None
        try:
            failure = await self._attempt(job_id, 0)
        finally:
            if failure is None:
                self._delivering.discard(job_id)
        if failure is not None:
            self.background.spawn(self._finish_round(job_id, failure))

    async def _finish_round(self, job_id: int, failure: str) -> None:
        """The round's other attempts, backing off; if they all fail, the round is counted.  The job
        stays in `_delivering` (handed over by `deliver`) until the round ends, so no sweep doubles it."""
        current_job.set(job_id)
        try:
            for attempt in range(1, DELIVERY_RETRIES):
                await asyncio.sleep(min(MAX_RETRY_GAP_S, self.settings.delivery_retry_s * 2 ** (attempt - 1)))
                failure = await self._attempt(job_id, attempt)
                if failure is None:
                    return
            await self._round_failed(job_id, failure)
        finally:
            self._delivering.discard(job_id)

    async def _attempt(self, job_id: int, attempt: int) -> str | None:
        """Send the outcome once; None when that settled it (sent, given up, or nothing to send),
        else why it failed (worth another try)."""
        job = adapter = None
        try:
            job = await self.db.jobs.get(job_id)
            if job is None or job.delivered_at or job.delivery_error or job.deleted:
                self._sweep_after.pop(job_id, None)
                return None
            adapter = self.adapters.get(job.platform)
            if adapter is None:  # not started (yet), or no longer configured: a failed try like any other
                log.warning("job %s: no %s adapter to deliver with (attempt %d)", job_id, job.platform, attempt + 1)
                return f"no {job.platform} adapter running"
            lang = await self.members.owner_language(job)
            if job.status is JobStatus.DONE:
                await adapter.deliver(await self.delivery_for(job, lang))
            elif job.status is JobStatus.FAILED:
                await adapter.notify_failure(job, t(job.error_key or "error.internal", lang, **job.error_params))
            else:
                self._sweep_after.pop(job_id, None)
                return None
            await self.db.jobs.mark_delivered(job_id)
            self._sweep_after.pop(job_id, None)
            log.info("delivered to %s", job.platform)
            return None
        except asyncio.CancelledError:
            raise
        except Undeliverable as reason:
            log.warning("job %s: cannot be delivered, giving up: %s", job_id, reason)
            self.metrics.platform_errors.labels(job.platform).inc()
            # Drawn, so not refunded: the GPU work was spent, and the picture stays in /history.
            if await self._give_up(job_id, f"refused: {reason}") and job.status is JobStatus.DONE:
                await self._tell(adapter, job, "error.undeliverable")
            return None
        except PictureMissing as missing:
            log.error("job %s: %s; giving up its delivery", job_id, missing)
            if await self._give_up(job_id, str(missing)):
                await self.db.quota.refund(job_id, "picture file missing")  # our loss, not the user's
                await self._tell(adapter, job, "error.picture_missing")
            return None
        except Exception as error:
            log.exception("job %s: delivery failed (attempt %d of %d)", job_id, attempt + 1, DELIVERY_RETRIES)
            if job is not None:
                self.metrics.platform_errors.labels(job.platform).inc()
            return f"{type(error).__name__}: {error}"[:300]

    async def _round_failed(self, job_id: int, failure: str) -> None:
        """Count the failed round (persisted); past the limit the delivery is dead, else the next
        sweep waits a gap that doubles with every failed round."""
        failures = await self.db.jobs.record_delivery_failure(job_id)
        if failures == 0:  # delivered or given up meanwhile
            self._sweep_after.pop(job_id, None)
            return
        limit = self.settings.max_delivery_sweeps
        if failures >= limit:
            log.error("job %s: delivery failed %d rounds; given up (see /queue): %s", job_id, failures, failure)
            await self._give_up(job_id, f"failed {failures} delivery rounds; last: {failure}")
            return
        gap = min(MAX_SWEEP_GAP_S, self.settings.delivery_sweep_s * 2 ** (failures - 1))
        self._sweep_after[job_id] = time.monotonic() + gap
        log.warning("job %s: delivery round %d of %d failed; next try in %.0fs or later", job_id, failures, limit, gap)

    async def _give_up(self, job_id: int, reason: str) -> bool:
        """True for the one caller that gave this delivery up."""
        self._sweep_after.pop(job_id, None)
        gave_up = await self.db.jobs.give_up_delivery(job_id, reason[:500])
        if gave_up:
            self.metrics.dead_deliveries.inc()
        return gave_up

    async def _tell(self, adapter, job: Job, key: str) -> None:
        """A chat that refuses the picture (but not text) hears why its status went quiet; a chat that
        is gone refuses this too, which is fine."""
        try:
            lang = await self.members.owner_language(job)
            await adapter.notify_failure(job, t(key, lang, job_id=job.id))
        except Exception as error:
            log.info("job %s: could not say it was undeliverable either: %s", job.id, error)

    async def delivery_for(self, job: Job, lang: str) -> Delivery:
        owner = await self.db.users.get(job.user_id)
        paths = [self.images.resolve(path) for path in job.image_paths]
        if not paths or not all(path.is_file() for path in paths):
            raise PictureMissing(f"picture file missing: {', '.join(job.image_paths) or 'none recorded'}")
        return Delivery(
            job=job,
            image_paths=paths,
            caption=caption_for(job, lang),
            buttons=button_rows(job.id, len(job.image_paths), lang, draft=bool(job.request.get("draft"))),
            language=lang,
            send_png=bool(owner and owner.settings.get("png")),
            notes=notes_for(job, lang),
            spoiler=job.sensitive,
        )


def caption_for(job: Job, lang: str) -> str:
    """What the picture (or the batch) says under it: its job, prompt, size, seed(s) and time."""
    request = DrawRequest.from_dict(job.request)
    excerpt = clip(request.prompt, 200)
    seconds = (job.timings or {}).get("total", 0.0)
    pictures = len(job.image_paths)
    shared = dict(prompt=excerpt, width=request.width, height=request.height, seconds=f"{seconds:.1f}")
    if pictures > 1:
        seeds = dict(first_seed=job.seed, last_seed=seed_for(job.seed, pictures - 1))
        return t("batch_caption", lang, job_id=job.id, count=pictures, **seeds, **shared)
    return t("done_caption", lang, job_id=job.id, seed=job.seed, **shared)


def notes_for(job: Job, lang: str) -> list[str]:
    """What else the owner should know: a fallback or retry, a spoiler, pictures missing from a batch."""
    notes = []
    plan = job.plan or {}
    if plan.get("fallbacks"):
        notes.append(t("fallback_note", lang, fallback=plan.get("placement", "")))
    if plan.get("retries"):
        notes.append(t("retry_note", lang))
    if job.sensitive:
        notes.append(t("spoiler_note", lang))
    if job.request.get("enhancer") in ENHANCER_NOTES:  # the prompt enhancer failed: drawn from the words
        notes.append(t(f"enhancer_note.{job.request['enhancer']}", lang))
    pictures = len(job.image_paths)
    if job.count > pictures:
        notes.append(t("missing_note", lang, drawn=pictures, count=job.count))
    return notes


ENHANCER_NOTES = ("timeout", "failed", "blocked")


def button_rows(job_id: int, pictures: int, lang: str, draft: bool = False) -> list[list[tuple[str, str]]]:
    """One picture: its six buttons in two rows, then Zoom out and Pan.  A batch: U1..Un, V1..Vn, then
    the whole batch's (a batch picture zooms and pans once upscaled or varied alone).  A draft first
    offers Enhance (E1..En on a batch)."""
    rows = draft_rows(job_id, pictures, lang) if draft else []
    if pictures <= 1:
        row = [(button_id(action, job_id), t(f"button.{action.value}", lang)) for action in BUTTON_ROW]
        grow = [[(button_id(action, job_id), t(f"button.{action.value}", lang)) for action in r] for r in OUTPAINT_ROWS]
        return [*rows, row[:3], row[3:], *grow]
    for action in BATCH_PER_PICTURE:
        label = "button.upscale_n" if action.value == "upscale" else "button.vary_n"
        rows.append([(button_id(action, job_id, i), t(label, lang, n=i + 1)) for i in range(pictures)])
    rows.append([(button_id(action, job_id), t(f"button.{action.value}", lang)) for action in BATCH_ROW])
    return rows


def draft_rows(job_id: int, pictures: int, lang: str) -> list[list[tuple[str, str]]]:
    """Enhance under a draft: one button, or one per picture of a batch."""
    if pictures <= 1:
        return [[(button_id(action, job_id), t(f"button.{action.value}", lang)) for action in DRAFT_ROW]]
    return [[(button_id(action, job_id, i), t(f"button.{action.value}_n", lang, n=i + 1)) for i in range(pictures)]
            for action in DRAFT_ROW]  # fmt: skip
