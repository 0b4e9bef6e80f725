"""Sending outcomes: a finished job's picture (or its failure) goes to its platform once, retried
with backoff, swept again every minute and after a restart.  Mixed into `Service`."""

from __future__ import annotations

import asyncio
import logging

from bot.buttons import BUTTON_ROW, button_id
from bot.contract import Delivery, Undeliverable
from bot.logs import current_job
from bot.messages import t
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
        except Exception:
            log.exception("job %s: delivery failed (attempt %d)", job_id, attempt + 1)
            if job is not None:
                self.metrics.platform_errors.labels(job.platform).inc()
            if attempt + 1 < DELIVERY_RETRIES:
                self._spawn(self._deliver_later(job_id, attempt + 1))
        finally:
            self._delivering.discard(job_id)

    async def _deliver_later(self, job_id: int, attempt: int) -> None:
        await asyncio.sleep(min(60, 2**attempt))
        await self._deliver(job_id, attempt)

    async def delivery_for(self, job: Job, lang: str) -> Delivery:
        request = job.request
        prompt = request["prompt"]
        excerpt = prompt if len(prompt) <= 200 else prompt[:199] + "…"
        seconds = (job.timings or {}).get("total", 0.0)
        caption = t(
            "done_caption",
            lang,
            prompt=excerpt,
            seed=job.seed,
            width=request["width"],
            height=request["height"],
            seconds=f"{seconds:.1f}",
            job_id=job.id,
        )
        notes = []
        plan = job.plan or {}
        if plan.get("fallbacks"):
            notes.append(t("fallback_note", lang, fallback=plan.get("placement", "")))
        if plan.get("retries"):
            notes.append(t("retry_note", lang))
        owner = await self.db.users.get(job.user_id)
        buttons = [(button_id(action, job.id), t(f"button.{action.value}", lang)) for action in BUTTON_ROW]
        return Delivery(
            job=job,
            image_path=self.images.resolve(job.image_paths[0]),
            caption=caption,
            buttons=buttons,
            language=lang,
            send_png=bool(owner and owner.settings.get("png")),
            notes=notes,
        )
