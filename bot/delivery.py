"""Sending outcomes: a finished job's picture (or its failure) goes to its platform once, retried
with backoff, swept again every minute and after a restart.  Mixed into `Service`."""

from __future__ import annotations

import asyncio
import logging

from bot.buttons import BATCH_PER_PICTURE, BATCH_ROW, BUTTON_ROW, button_id
from bot.contract import Delivery, Undeliverable
from bot.logs import current_job
from bot.messages import t
from engine.request import seed_for
from storage.jobs import Job, JobStatus

log = logging.getLogger(__name__)

DELIVERY_RETRIES = 5
REDELIVERY_SWEEP_S = 60.0


class Deliveries:
    """Needs from its host: db, adapters, images, metrics, _delivering, _spawn,
    _owner_language (all on `Service`)."""

    async def _redeliver_every(self, seconds: float) -> None:
        """A platform outage longer than the retry backoff must not strand pictures until a restart."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.redeliver_pending()
            except Exception:
                log.exception("redelivery sweep failed; trying again in %ss", seconds)

    async def redeliver_pending(self) -> None:
        """Deliver what finished while an adapter was away (call after registering one)."""
        for job in await self.db.jobs.undelivered():
            self._spawn(self._deliver(job.id))

    async def _deliver(self, job_id: int, attempt: int = 0) -> None:
        """Send a finished job's outcome once; retried with backoff, and again after a restart."""
        current_job.set(job_id)
        if job_id in self._delivering:
            return
        self._delivering.add(job_id)
        job = None
        try:
            job = await self.db.jobs.get(job_id)
            adapter = self.adapters.get(job.platform) if job else None
            if job is None or job.delivered_at or job.deleted or adapter is None:
                return
            lang = await self._owner_language(job)
            if job.status is JobStatus.DONE:
                await adapter.deliver(await self.delivery_for(job, lang))
            elif job.status is JobStatus.FAILED:
                await adapter.notify_failure(job, t(job.error_key or "error.internal", lang, **job.error_params))
            else:
                return
            await self.db.jobs.mark_delivered(job_id)
            log.info("delivered to %s", job.platform)
        except asyncio.CancelledError:
            raise
        except Undeliverable as reason:
            log.warning("job %s: cannot be delivered, giving up: %s", job_id, reason)
            self.metrics.platform_errors.labels(job.platform).inc()
            await self.db.jobs.mark_delivered(job_id)
            if job.status is JobStatus.DONE:
                # Nobody saw the picture: it is not charged (unless part of it was refunded already).
                await self.db.quota.refund(job.id, "picture could not be delivered")
                await self._say_undeliverable(adapter, job)
        except Exception:
            log.exception("job %s: delivery failed (attempt %d)", job_id, attempt + 1)
            if job is not None:
                self.metrics.platform_errors.labels(job.platform).inc()
            if attempt + 1 < DELIVERY_RETRIES:
                self._spawn(self._deliver_later(job_id, attempt + 1))
        finally:
            self._delivering.discard(job_id)

    async def _say_undeliverable(self, adapter, job) -> None:
        """A chat that refuses the picture (but not text) hears why its status went quiet; a chat that
        is gone refuses this too, which is fine."""
        try:
            lang = await self._owner_language(job)
            await adapter.notify_failure(job, t("error.undeliverable", lang, job_id=job.id))
        except Exception as error:
            log.info("job %s: could not say it was undeliverable either: %s", job.id, error)

    async def _deliver_later(self, job_id: int, attempt: int) -> None:
        await asyncio.sleep(min(60, 2**attempt))
        await self._deliver(job_id, attempt)

    async def delivery_for(self, job: Job, lang: str) -> Delivery:
        request = job.request
        prompt = request["prompt"]
        excerpt = prompt if len(prompt) <= 200 else prompt[:199] + "…"
        seconds = (job.timings or {}).get("total", 0.0)
        pictures = len(job.image_paths)
        shared = dict(prompt=excerpt, width=request["width"], height=request["height"], seconds=f"{seconds:.1f}")
        if pictures > 1:
            last = seed_for(job.seed, pictures - 1)
            seeds = dict(first_seed=job.seed, last_seed=last)
            caption = t("batch_caption", lang, job_id=job.id, count=pictures, **seeds, **shared)
        else:
            caption = t("done_caption", lang, job_id=job.id, seed=job.seed, **shared)
        notes = []
        plan = job.plan or {}
        if plan.get("fallbacks"):
            notes.append(t("fallback_note", lang, fallback=plan.get("placement", "")))
        if plan.get("retries"):
            notes.append(t("retry_note", lang))
        if job.sensitive:
            notes.append(t("spoiler_note", lang))
        if job.count > pictures:
            notes.append(t("missing_note", lang, drawn=pictures, count=job.count))
        owner = await self.db.users.get(job.user_id)
        return Delivery(
            job=job,
            image_paths=[self.images.resolve(path) for path in job.image_paths],
            caption=caption,
            buttons=button_rows(job.id, pictures, lang),
            language=lang,
            send_png=bool(owner and owner.settings.get("png")),
            notes=notes,
            spoiler=job.sensitive,
        )


def button_rows(job_id: int, pictures: int, lang: str) -> list[list[tuple[str, str]]]:
    """One picture: its six buttons in two rows.  A batch: U1..Un, V1..Vn, then the whole batch's."""
    if pictures <= 1:
        row = [(button_id(action, job_id), t(f"button.{action.value}", lang)) for action in BUTTON_ROW]
        return [row[:3], row[3:]]
    rows = []
    for action in BATCH_PER_PICTURE:
        label = "button.upscale_n" if action.value == "upscale" else "button.vary_n"
        rows.append([(button_id(action, job_id, i), t(label, lang, n=i + 1)) for i in range(pictures)])
    rows.append([(button_id(action, job_id), t(f"button.{action.value}", lang)) for action in BATCH_ROW])
    return rows
