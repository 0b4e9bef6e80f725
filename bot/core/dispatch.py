"""Running jobs: the dispatcher takes the next job from the scheduler only when a worker slot is
free, runs it, records the outcome and refunds system failures.  It also recovers what a dead
process left, and stops jobs that users cancel."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
import time
from dataclasses import replace

from bot.contract import Worker
from bot.core.background import Background
from bot.core.cost import guidance_factor
from bot.core.delivery import Deliverer
from bot.core.notices import Notices
from bot.core.scheduler import Scheduler
from bot.runtime.logs import current_job
from bot.runtime.metrics import Metrics
from bot.runtime.worker import failure_of
from engine.errors import LoraUnusable
from engine.loras import LoraRegistry
from engine.metadata import parameters_text
from engine.request import DrawRequest, seed_for
from storage.images import ImageStore
from storage.jobs import Job, Jobs, JobStatus

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 1.0
MAX_ATTEMPTS = 3  # starts of one job across crashes before it is failed instead of run again


def disk_full(error: BaseException) -> bool:
    """Whether saving failed for lack of space: ENOSPC from the picture, or SQLite's "disk is full"."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(error, sqlite3.OperationalError) and "full" in str(error):
        return True
    cause = error.__cause__ or error.__context__
    return cause is not None and disk_full(cause)


class Dispatcher:
    def __init__(
        self,
        jobs: Jobs,
        images: ImageStore,
        worker: Worker,
        scheduler: Scheduler,
        deliverer: Deliverer,
        notices: Notices,
        metrics: Metrics,
        background: Background,
        model_name: str,
        loras: LoraRegistry | None = None,
    ) -> None:
        self.jobs = jobs
        self.images = images
        self.worker = worker
        self.scheduler = scheduler
        self.deliverer = deliverer
        self.notices = notices
        self.metrics = metrics
        self.background = background
        self.model_name = model_name
        self.loras = loras  # the bot's installed LoRAs: one that failed to load is no longer offered
        self._dispatched: set[int] = set()  # taken from the queue, generation not yet returned
        self._cancel_requested: set[int] = set()  # user cancels of dispatched jobs
        self._last_progress: dict[int, float] = {}

    async def recover(self) -> int:
        """Queue again what a dead process left unfinished; fail a job that was running at every
        crash.  Returns how many jobs are queued now."""
        for job in await self.jobs.unfinished():
            # Remote workers keep drawing while the bot restarts, so there a restart proves nothing.
            crash_looping = self.worker.cancel_on_shutdown and job.attempts >= MAX_ATTEMPTS
            if job.status is JobStatus.RUNNING and crash_looping:
                # It was running every time the process died: it may be what kills it.  Stop the loop.
                log.error("job %s was running at %d crashes; giving up on it", job.id, job.attempts)
                await self._fail(job, "error.unexpected", {})
                continue
            if job.status is JobStatus.RUNNING:
                await self.jobs.requeue(job.id)
            if job.id not in self.scheduler.queue:
                self.scheduler.enqueue(job)
        return len(self.scheduler.queue)

    async def cancel(self, job: Job) -> bool:
        """A user's cancel: a queued job is dropped and refunded, a dispatched one stopped within a
        step.  False when it is neither (finished, or not ours to stop)."""
        if self.scheduler.remove(job.id):
            await self._cancel_before_start(job)
            self.background.spawn(self.notices.push_positions())
            return True
        if job.id in self._dispatched:  # about to start or generating: stop it within a step
            self._cancel_requested.add(job.id)
            self.worker.cancel(job.id)
            return True
        return False

    def stop_running(self) -> None:
        """At shutdown: an embedded GPU thread must be stopped to exit; remote workers finish the job
        and the restarted bot adopts the result (WorkerPool.cancel_on_shutdown is False)."""
        if self.worker.cancel_on_shutdown:
            for job_id in self.scheduler.running_jobs():
                self.worker.cancel(job_id)

    async def dispatch_loop(self) -> None:
        """Fairness is decided when a slot frees up, so the queue order holds however many GPUs serve it."""
        while True:
            await self.worker.acquire_slot()
            try:
                job_id = await self.scheduler.next_job()
            except BaseException:
                self.worker.release_slot()
                raise
            self.background.spawn(self._run_in_slot(job_id))

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
        estimate, enqueued = self.scheduler.taken(job_id)
        if not await self.jobs.mark_running(job_id):
            return
        job = await self.jobs.get(job_id)
        if job_id in self._cancel_requested:  # cancelled between leaving the queue and starting
            await self._cancel_before_start(job)
            return
        # No await from here until worker.run registers the job: a later cancel reaches the worker.
        waited = self.scheduler.started(job_id, estimate, enqueued)
        if waited is not None:
            self.metrics.wait_seconds.observe(waited)
        self.background.spawn(self.notices.push_positions())
        try:
            request = DrawRequest.from_dict(job.request)
            if request.source_image:  # kept relative to the images root (an upload), absolute in older rows
                request = replace(request, source_image=str(self.images.resolve(request.source_image)))
            result = await self.worker.run(job_id, request, on_step=lambda step, total: self._on_step(job, step, total))
        except Exception as error:
            failure = failure_of(error, job_id)
            if failure.key == LoraUnusable.key and self.loras is not None and self.worker.loads_here:
                # It failed in this process's engine: listed and offered no more.  On a remote worker
                # it may be that worker's own trouble; that worker stops announcing the file.
                self.loras.mark_bad(str(failure.params.get("name", "")), "failed to load into the model")
            if failure.status is JobStatus.CANCELLED:
                await self._cancelled(job)
            else:
                await self._fail(job, failure.key, failure.params)
            return
        finally:
            self.scheduler.ended(job_id)
            self._last_progress.pop(job_id, None)
            self._dispatched.discard(job_id)  # from here on it is too late to cancel
        try:
            await self._finish(job, result)
        except Exception as error:
            full = disk_full(error)
            log.error("job %s: saving the finished picture failed%s", job_id, ": disk full" * full, exc_info=not full)
            # Refunded like any system failure; the transaction that failed left nothing half-written.
            await self._fail(job, "error.disk_full" if full else "error.unexpected", {})

    async def _cancelled(self, job: Job) -> None:
        """The worker stopped the job: a user's cancel, or the bot shutting down."""
        if self.background.stopping and job.id not in self._cancel_requested:
            await self.jobs.requeue(job.id)  # shutting down, not a user's cancel: runs after the restart
        elif await self.jobs.mark_cancelled(job.id):
            self.metrics.jobs.labels("cancelled").inc()
            await self.notices.tell_cancelled(job)

    async def _finish(self, job: Job, result) -> None:
        """Save the pictures, record the job done (refunding pictures missing from the result), learn
        its run time, then deliver it."""
        request = result.request
        paths = await self._save_pictures(job, result)
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
        try:
            await self.jobs.mark_done(
                job.id, seed=result.seed, image_paths=paths, plan=plan, timings=timings, missing=missing
            )
        except Exception:
            # The transaction failed: no row points to them, they would only fill the disk.  A cancel
            # (CancelledError) is let through untouched: it may land while the commit is done already,
            # and a done row must never lose its pictures (an unrecorded one is left to `prune --orphans`).
            await asyncio.to_thread(self._remove, paths)
            raise
        log.info(
            "done in %.2fs, plan %s, fallbacks %s, retries %s",
            timings["total"],
            result.plan.describe(),
            result.fallbacks or "none",
            result.retries or "none",
        )
        # The estimator learns unguided seconds per picture; a guided one ran the model twice per step.
        seconds = timings["total"] / max(1, len(paths)) / guidance_factor(request.cfg)
        self.scheduler.eta.record(request.width, request.height, request.steps, seconds)
        self._count_done(result, len(paths))
        await self.deliverer.deliver(job.id)

    async def _save_pictures(self, job: Job, result) -> list[str]:
        """Each picture of a batch carries its own seed, so any one can be drawn again alone."""
        paths: list[str] = []
        try:
            for index, image in enumerate(result.images):
                parameters = parameters_text(result.request, seed_for(result.seed, index), self.model_name)
                saved = await asyncio.to_thread(self.images.save, job.id, image, parameters)
                paths.append(self.images.relative(saved))
        except BaseException:
            await asyncio.to_thread(self._remove, paths)  # half a batch is no answer: the job fails whole
            raise
        return paths

    def _remove(self, paths: list[str]) -> None:
        for path in paths:
            with contextlib.suppress(OSError, ValueError):
                self.images.remove(path)

    def _count_done(self, result, pictures: int) -> None:
        request = result.request
        if pictures:
            self.metrics.work_units.labels("done").inc(self.scheduler.cost_of(replace(request, count=pictures)))
        self.metrics.job_done(
            request.width,
            request.height,
            result.timings["total"],
            len(result.fallbacks),
            len(result.retries),
            result.peak_memory_gb,
            learned_start=result.learned_start,
            prompt_cached=result.prompt_cached,
            recipe=str(result.plan.to_dict().get("recipe", "none")),  # a worker of an older version: none
        )

    async def _fail(self, job: Job, key: str, params: dict) -> None:
        log.warning("failed: %s %s", key, params or "")
        if await self.jobs.mark_failed(job.id, key, params, refund=f"system failure: {key}"):
            self.metrics.jobs.labels("failed").inc()
        await self.deliverer.deliver(job.id)

    async def _cancel_before_start(self, job: Job) -> None:
        if await self.jobs.mark_cancelled(job.id, refund="cancelled before start"):
            self.metrics.jobs.labels("cancelled").inc()
            self.background.spawn(self.notices.tell_cancelled(job))

    def _on_step(self, job: Job, step: int, total: int) -> None:
        if not self.scheduler.is_running(job.id):  # a step that hopped over after the job ended: nothing to show
            return
        now = time.monotonic()
        if step < total and now - self._last_progress.get(job.id, 0.0) < PROGRESS_INTERVAL_S:
            return
        self._last_progress[job.id] = now
        self.background.spawn(self.notices.show_progress(job.id, step, total))
