"""`WorkerPool`: the bot's side of scale-out, the same `Worker` (bot/contract.py) as `bot.runtime.worker.GpuWorker`.

The service keeps deciding fairness: it takes the next job from its own round-robin queue only after
`acquire_slot()` returns, and that waits until a live worker has a free slot.  So Redis never holds
more jobs than the workers can start, and the order users were promised is the order jobs start.

`run(job_id, request)` hands the job out once (seed resolved here, so a retry on another worker
draws the same picture), then follows it: progress and the finish arrive on `easel:events`, and a
periodic check notices a Redis that lost the job (restarted without persistence) and hands it out
again.  A job already in Redis from before a bot restart is adopted, not handed out twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import replace
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.contract import ProgressCallback
from bot.runtime.logs import safe_url
from bot.runtime.settings import Settings
from bot.scale.config import ScaleSettings
from bot.scale.protocol import TERMINAL, Broker, WorkerInfo, WorkerLost, connect, fingerprint
from bot.scale.results import decode_png, result_from
from engine.errors import Cancelled, EngineError, InvalidRequest
from engine.request import MAX_SEED, RANDOM_SEED, DrawRequest
from engine.result import Result
from storage.jobs import JobStatus

log = logging.getLogger(__name__)

# Once the bot has read an outcome it keeps it this long (not a day), for a crash before it is saved.
COLLECTED_TTL_S = 600


class _Follower:
    """What `run` waits on: woken by events for its job, by a cancel, or by its own timeout."""

    def __init__(self) -> None:
        self.woken = asyncio.Event()
        self.on_step: ProgressCallback | None = None
        self.cancel_requested = False
        self.cancel_sent = False

    def wake(self) -> None:
        self.woken.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as it
            # times out, and a follower that ignores cancel makes the bot's stop hang.
            async with asyncio.timeout(timeout):
                await self.woken.wait()
        self.woken.clear()


class WorkerPool:
    """Jobs run on `easel worker` processes; this side hands them out and collects the outcomes."""

    # Jobs keep running on the workers while the bot restarts, and the next start adopts them, so
    # a stopping service has no reason to cancel them (see "Limits" in docs/SCALE_OUT.md).
    cancel_on_shutdown = False

    def __init__(self, config: ScaleSettings, redis: Redis | None = None) -> None:
        self.config = config
        self.broker = Broker(redis or connect(config.redis_url))
        self.redis_ok = False
        self.redis_error: str | None = None
        self._workers: list[WorkerInfo] = []
        self._held = 0
        self._slots_changed = asyncio.Event()
        self._followers: dict[int, _Follower] = {}
        self._tasks: list[asyncio.Task] = []
        self._tick = min(1.0, config.heartbeat_s / 2)
        self._check_s = max(0.5, min(5.0, 2 * config.heartbeat_s))

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerPool:
        return cls(ScaleSettings.from_settings(settings))

    # -- the Worker interface -------------------------------------------------------------------

    async def start(self) -> None:
        """Start watching workers and events (idempotent; Redis may still be down)."""
        self._ensure_started()

    async def acquire_slot(self) -> None:
        """Wait until a live worker has a free slot, then take it (Redis down = no slots)."""
        self._ensure_started()
        while self._held >= self.capacity:
            self._slots_changed.clear()
            await self._slots_changed.wait()
        self._held += 1

    def release_slot(self) -> None:
        self._held = max(0, self._held - 1)
        self._slots_changed.set()

    @property
    def capacity(self) -> int:
        return sum(worker.slots for worker in self._workers) if self.redis_ok else 0

    def healthy(self) -> bool:
        return self.redis_ok

    def live_workers(self) -> int:
        return len(self._workers) if self.redis_ok else 0

    def workers(self) -> list[WorkerInfo]:
        return list(self._workers) if self.redis_ok else []

    async def run(self, job_id: int, request: DrawRequest, on_step: ProgressCallback | None = None) -> Result:
        """Hand the job to a worker (or adopt it if it already is) and wait for its outcome."""
        self._ensure_started()
        follower = self._followers.setdefault(job_id, _Follower())
        follower.on_step = on_step
        try:
            return await self._follow(job_id, request, follower)
        finally:
            self._followers.pop(job_id, None)

    def cancel(self, job_id: int) -> bool:
        """Ask the job's worker to stop within a step; False if this bot is not running that job."""
        follower = self._followers.get(job_id)
        if follower is None:
            return False
        follower.cancel_requested = True
        follower.wake()
        return True

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self.broker.redis.aclose()

    # -- following one job ----------------------------------------------------------------------

    async def _follow(self, job_id: int, request: DrawRequest, follower: _Follower) -> Result:
        print_ = fingerprint(job_id, request)
        handout = request
        if request.seed == RANDOM_SEED:  # chosen once: every delivery of this job draws the same picture
            handout = replace(request, seed=random.randint(0, MAX_SEED))
        source = await _read_source(request)
        submitted = force = False
        failures = 0
        while True:
            try:
                if not submitted:
                    state = await self.broker.submit(job_id, print_, handout, source, self.config.result_ttl_s, force)
                    submitted, force = True, False
                    if state == "new":
                        log.info("job %s: handed to the workers", job_id)
                    else:
                        log.info("job %s: already in Redis (%s), following it", job_id, state)
                check = await self.broker.check(job_id)
                if check is None or check.fingerprint != print_ or not (check.state in TERMINAL or check.entry_alive):
                    if follower.cancel_requested:
                        raise Cancelled()
                    log.warning("job %s: Redis lost it (restarted?); handing it out again", job_id)
                    submitted, force = False, check is not None
                    continue
                if check.state in TERMINAL:
                    result = await self._collect(job_id, request)
                    if result is not None:
                        return result
                    continue  # expired in between: the next check hands it out again
                if follower.cancel_requested and not follower.cancel_sent:
                    await self.broker.cancel(job_id)
                    follower.cancel_sent = True
                    continue
                failures = 0
                await follower.wait(self._check_s)
            except RedisError as exc:
                self._down(exc)
                failures += 1
                await asyncio.sleep(min(5.0, 0.25 * 2**failures))

    async def _collect(self, job_id: int, request: DrawRequest) -> Result | None:
        """The outcome as a result, or raised as the engine would raise it; None if it vanished."""
        fields = await self.broker.outcome(job_id)
        if b"state" not in fields:
            return None
        await self.broker.keep_for(job_id, COLLECTED_TTL_S)
        state = JobStatus(fields[b"state"].decode())
        if state is JobStatus.CANCELLED:
            raise Cancelled()
        meta = json.loads(fields.get(b"meta") or b"{}")
        if state is JobStatus.FAILED:
            key, params = meta.get("error_key", "error.internal"), meta.get("error_params") or {}
            raise WorkerLost(**params) if key == WorkerLost.key else EngineError(key, **params)
        count = int(fields.get(b"images", b"0"))
        blobs = [fields[f"image:{index}".encode()] for index in range(count)]
        images = await asyncio.to_thread(lambda: [decode_png(blob) for blob in blobs])
        result = result_from(fields, images, request.source_image)
        log.info("job %s: done by %s", job_id, meta.get("worker", "?"))
        return result

    # -- background: live workers, dead letters, events -----------------------------------------

    def _ensure_started(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._watch_workers(), name="easel-pool-workers"),
            asyncio.create_task(self._listen(), name="easel-pool-events"),
        ]

    async def _watch_workers(self) -> None:
        reaped_at = 0.0
        while True:
            try:
                self._set_workers(await self.broker.workers())
                self._up()
                if time.monotonic() - reaped_at >= self.config.claim_idle_s / 2:
                    reaped_at = time.monotonic()
                    await self._reap()
            except RedisError as exc:
                self._down(exc)
            except Exception:
                log.exception("watching workers failed; trying again")  # the watcher must not die
            await asyncio.sleep(self._tick)

    async def _reap(self) -> None:
        """Dead-letter jobs whose last allowed delivery died too (even with no worker left to notice)."""
        idle_ms = int(self.config.claim_idle_s * 1000)
        try:
            for handout in await self.broker.overdue(idle_ms, self.config.max_deliveries):
                if await self.broker.dead_letter(handout, self.config.result_ttl_s):
                    log.error("job %s: dead-lettered after %d deliveries", handout.job_id, handout.deliveries)
            await self.broker.forget_consumers({w.id for w in self._workers}, min_idle_ms=max(60_000, 10 * idle_ms))
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.broker.ensure_group()

    async def _listen(self) -> None:
        after: str | None = None
        while True:
            try:
                if after is None:
                    after = await self.broker.last_event_id()
                for entry, fields in await self.broker.read_events(after, block_ms=1000):
                    after = entry
                    self._on_event(fields)
            except RedisError as exc:
                self._down(exc)
                await asyncio.sleep(self._tick)
            except Exception:
                log.exception("reading worker events failed; trying again")
                await asyncio.sleep(self._tick)

    def _on_event(self, fields: dict[str, str]) -> None:
        try:
            follower = self._followers.get(int(fields.get("job", "")))
        except ValueError:
            return
        if follower is None:
            return
        if fields.get("type") == "progress" and follower.on_step is not None:
            try:
                follower.on_step(int(fields["step"]), int(fields["total"]))
            except Exception:
                log.exception("progress callback failed")
        elif fields.get("type") == "finished":
            follower.wake()

    def _set_workers(self, workers: list[WorkerInfo]) -> None:
        before = {w.id for w in self._workers}
        self._workers = workers
        if {w.id for w in workers} != before:
            log.info("live workers: %s", ", ".join(f"{w.id} ({w.device})" for w in workers) or "none")
        self._slots_changed.set()

    def _up(self) -> None:
        if not self.redis_ok:
            log.info("Redis at %s is reachable", safe_url(self.config.redis_url))
        self.redis_ok, self.redis_error = True, None

    def _down(self, exc: Exception) -> None:
        if self.redis_ok or self.redis_error is None:
            log.warning(
                "Redis at %s is unreachable (%s); accepted jobs wait in the bot's queue until it is back",
                safe_url(self.config.redis_url),
                exc,
            )
        self.redis_ok, self.redis_error = False, str(exc) or type(exc).__name__
        self._workers = []


async def _read_source(request: DrawRequest) -> bytes:
    """The picture an image-to-image job starts from: workers on other machines cannot read our disk."""
    if not request.source_image:
        return b""
    try:
        return await asyncio.to_thread(Path(request.source_image).read_bytes)
    except OSError as exc:
        raise InvalidRequest("error.source_missing") from exc
