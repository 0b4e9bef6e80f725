"""Running jobs: the dispatcher takes the next job from the fair queue only when a worker slot is
free, runs it, records the outcome and refunds system failures.  Mixed into `Service`."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from bot.cost import guidance_factor
from bot.logs import current_job
from bot.messages import t
from engine.errors import Cancelled, EngineError
from engine.metadata import parameters_text
from engine.request import DrawRequest, seed_for
from storage.jobs import Job, JobStatus

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
POSITION_PUSH_LIMIT = 10


class Dispatching:
    """Needs from its host (`Service`): queue, worker, db, images, eta, metrics, adapters,
    model_name, the bookkeeping dicts and sets set up in `Service.__init__`, `_spawn`, `_status`,
    `_owner_language`, `_deliver`, `_tell_cancelled`, `queued_text`, `cost_of`."""

    async def _dispatch_loop(self) -> None:
        """Fairness is decided when a slot frees up, so the queue order holds however many GPUs serve it."""
        while True:
            await self.worker.acquire_slot()
            try:
                job_id, _ = await self.queue.get()
            except BaseException:
                self.worker.release_slot()
                raise
            self._spawn(self._run_in_slot(job_id))

    async def _run_in_slot(self, job_id: int) -> None:
        current_job.set(job_id)  # this task's own context: every line it logs names the job
        self._dispatched.add(job_id)
        try:
            await self._run_job(job_id)
        except Exception:
            log.exception("job %s: unexpected failure in dispatch", job_id)
        finally:
            self._dispatched.discard(job_id)
            self._cancel_requested.discard(job_id)
            self.worker.release_slot()

    async def _run_job(self, job_id: int) -> None:
        cost = self._costs.pop(job_id, 0.0)
        enqueued = self._enqueued_at.pop(job_id, None)
        if not await self.db.jobs.mark_running(job_id):
            return
        job = await self.db.jobs.get(job_id)
        if job_id in self._cancel_requested:  # cancelled between leaving the queue and starting
            await self._cancel_before_start(job)
            return
        # No await from here until worker.run registers the job: a later cancel reaches the worker.
        self._running[job_id] = (time.monotonic(), cost)
        if enqueued is not None:
            self.metrics.wait_seconds.observe(time.monotonic() - enqueued)
        self._spawn(self._push_positions())
        try:
            request = DrawRequest.from_dict(job.request)
            result = await self.worker.run(job_id, request, on_step=lambda step, total: self._on_step(job, step, total))
        except Cancelled:
            if self._stopping and job_id not in self._cancel_requested:
                await self.db.jobs.requeue(job_id)  # shutting down, not a user's cancel: runs after the restart
            elif await self.db.jobs.mark_cancelled(job_id):
                self.metrics.jobs.labels("cancelled").inc()
                await self._tell_cancelled(job)
            return
        except EngineError as error:
            await self._fail(job, error.key, error.params)
            return
        except Exception:
            log.exception("job %s: generation crashed", job_id)
            await self._fail(job, "error.unexpected", {})
            return
        finally:
            self._running.pop(job_id, None)
            self._last_progress.pop(job_id, None)
            self._dispatched.discard(job_id)  # from here on it is too late to cancel
        try:
            await self._finish(job, result)
        except Exception:
            log.exception("job %s: saving the finished picture failed", job_id)
            await self._fail(job, "error.unexpected", {})

    async def _finish(self, job: Job, result) -> None:
        request = result.request
        paths = []
        for index, image in enumerate(result.images):
            # Each picture of a batch carries its own seed, so any one can be drawn again alone.
            parameters = parameters_text(request, seed_for(result.seed, index), self.model_name)
            paths.append(self.images.relative(await asyncio.to_thread(self.images.save, job.id, image, parameters)))
        timings = dict(result.timings)
        plan = {
            **result.plan.to_dict(),
            "fallbacks": result.fallbacks,
            "retries": result.retries,
            "peak_memory_gb": result.peak_memory_gb,
            "learned_start": result.learned_start,
        }
        # A worker of an older version may draw one picture of a batch: charge only what came back.
        missing = max(0, job.count - len(paths))
        if missing:
            log.warning("%d of %d pictures missing from the result; refunding them", missing, job.count)
        await self.db.jobs.mark_done(
            job.id, seed=result.seed, image_paths=paths, plan=plan, timings=timings, missing=missing
        )
        log.info(
            "done in %.2fs, plan %s, fallbacks %s, retries %s",
            timings["total"],
            result.plan.describe(),
            result.fallbacks or "none",
            result.retries or "none",
        )
        # The estimator learns unguided seconds per picture; a guided one ran the model twice per step.
        seconds = timings["total"] / max(1, len(paths)) / guidance_factor(request.cfg)
        self.eta.record(request.width, request.height, request.steps, seconds)
        if paths:
            self.metrics.work_units.labels("done").inc(self.cost_of(replace(request, count=len(paths))))
        self.metrics.job_done(
            request.width,
            request.height,
            timings["total"],
            len(result.fallbacks),
            len(result.retries),
            result.peak_memory_gb,
            learned_start=result.learned_start,
            prompt_cached=result.prompt_cached,
        )
        await self._deliver(job.id)

    async def _fail(self, job: Job, key: str, params: dict) -> None:
        log.warning("failed: %s %s", key, params or "")
        if await self.db.jobs.mark_failed(job.id, key, params, refund=f"system failure: {key}"):
            self.metrics.jobs.labels("failed").inc()
        await self._deliver(job.id)

    async def _cancel_before_start(self, job: Job) -> None:
        if await self.db.jobs.mark_cancelled(job.id, refund="cancelled before start"):
            self.metrics.jobs.labels("cancelled").inc()
            self._spawn(self._tell_cancelled(job))

    def _on_step(self, job: Job, step: int, total: int) -> None:
        if job.id not in self._running:  # a step that hopped over after the job ended: nothing to show
            return
        now = time.monotonic()
        if step < total and now - self._last_progress.get(job.id, 0.0) < PROGRESS_INTERVAL_S:
            return
        self._last_progress[job.id] = now
        self._spawn(self._show_progress(job.id, step, total))

    async def _show_progress(self, job_id: int, step: int, total: int) -> None:
        job = await self.db.jobs.get(job_id)
        adapter = self.adapters.get(job.platform) if job else None
        if adapter is None or job.status is not JobStatus.RUNNING:
            return
        lang = await self._owner_language(job)
        await self._status(adapter, job, t("running", lang, job_id=job_id, step=step, steps=total))

    async def _push_positions(self) -> None:
        """Tell the first few queued users their new place in line, once per change."""
        positions = self.queue.positions()
        for job_id, position in sorted(positions.items(), key=lambda item: item[1])[:POSITION_PUSH_LIMIT]:
            if self._last_position.get(job_id) == position:
                continue
            self._last_position[job_id] = position
            job = await self.db.jobs.get(job_id)
            adapter = self.adapters.get(job.platform) if job else None
            if adapter is not None and job.reply_to.get("status_message_id") is not None:
                await self._status(adapter, job, self.queued_text(job, await self._owner_language(job)))
        for job_id in list(self._last_position):
            if job_id not in positions:
                del self._last_position[job_id]
