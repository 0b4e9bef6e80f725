"""`WorkerPool`: the bot's side of scale-out, the same `Worker` (bot/contract.py) as `bot.runtime.worker.GpuWorker`.

The service keeps deciding fairness: it takes the next job from its own round-robin queue only after
`acquire_slot()` returns, and that waits until a live worker has a free slot.  So Redis never holds
more jobs than the workers can start, and the order users were promised is the order jobs start.

`run(job_id, request)` hands the job out once (seed resolved here, so a retry on another worker
draws the same picture), then follows it: progress and the finish arrive on `easel:events`, and a
periodic check notices a Redis that lost the job (restarted without persistence) and hands it out
again.  A job already in Redis from before a bot restart is adopted, not handed out twice.

A job with LoRAs goes to the stream of its set of files (bot/scale/protocol.py), which only workers
holding every file, byte for byte the bot's, read.  `missing_loras` lets the intake refuse at once a
job that no live worker can draw; a job accepted while one could, whose workers then all left, is
failed (and refunded) after EASEL_CLAIM_IDLE_S rather than waiting for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.contract import ProgressCallback
from bot.runtime.logs import safe_url
from bot.runtime.settings import Settings
from bot.scale.config import ScaleSettings
from bot.scale.protocol import (
    JOBS,
    TERMINAL,
    Broker,
    Needs,
    WorkerInfo,
    WorkerLost,
    connect,
    fingerprint,
    serves,
    stream_for,
)
from bot.scale.results import decode_png, result_from
from engine.errors import Cancelled, EngineError, InvalidRequest
from engine.loras import LoraRegistry, content_hash
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


@dataclass
class _Route:
    """Where one job goes: its stream, the LoRA files it needs, and since when no live worker has them."""

    stream: str
    needs: Needs
    unserved_since: float | None = None


class WorkerPool:
    """Jobs run on `easel worker` processes; this side hands them out and collects the outcomes."""

    # Jobs keep running on the workers while the bot restarts, and the next start adopts them, so
    # a stopping service has no reason to cancel them (see "Limits" in docs/SCALE_OUT.md).
    cancel_on_shutdown = False
    loads_here = False
    # The bot's installed LoRAs, set by the service: the files a worker's must match (docs/SCALE_OUT.md).
    loras: LoraRegistry | None = None

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

    def recipes(self) -> dict[str, int]:
        """Live workers by the weights each chose for its card; "?" for a worker too old to say."""
        return dict(Counter(worker.recipe or "?" for worker in self.workers()))

    async def missing_loras(self, loras: tuple) -> list[str]:
        """The job's LoRAs that keep every live worker from drawing it (no single worker holds them
        all, as the bot's files); [] when one can, or while Redis is away (every job waits then)."""
        needs = await self._needs(loras)
        if not needs or not self.redis_ok or any(serves(worker.loras, needs) for worker in self._workers):
            return []
        nowhere = [name for name, digest in needs if not any(serves(w.loras, ((name, digest),)) for w in self._workers)]
        return nowhere or [name for name, _ in needs]

    async def _needs(self, loras: tuple) -> Needs:
        """(name, sha256 of the bot's file) for each LoRA; an empty hash where the bot has no file."""
        needs = []
        for name, _ in loras:
            lora = self.loras.get(name) if self.loras is not None else None
            try:
                digest = await asyncio.to_thread(content_hash, lora.path) if lora is not None else ""
            except OSError:  # removed since the last scan
                digest = ""
            needs.append((name, digest))
        return tuple(needs)

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
        needs = await self._needs(request.loras)
        route: _Route | None = None
        submitted = force = False
        failures = 0
        while True:
            try:
                route = route or await self._route(job_id, needs)
                if route.needs:  # every check: workers find LoRA streams only through this record
                    await self.broker.register_needs(route.stream, route.needs)
                if not submitted:
                    ttl = self.config.result_ttl_s
                    state = await self.broker.submit(job_id, print_, handout, source, ttl, force, route.stream)
                    submitted, force = True, False
                    if state == "new":
                        log.info("job %s: handed to the workers", job_id)
                    else:
                        log.info("job %s: already in Redis (%s), following it", job_id, state)
                check = await self.broker.check(job_id, route.stream)
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
                    await self.broker.cancel(job_id, route.stream)
                    follower.cancel_sent = True
                    continue
                if route.needs and await self._given_up(job_id, route):
                    continue  # failed in Redis: the next check collects it
                failures = 0
                await follower.wait(self._check_s)
            except RedisError as exc:
                self._down(exc)
                failures += 1
                await asyncio.sleep(min(5.0, 0.25 * 2**failures))

    async def _route(self, job_id: int, needs: Needs) -> _Route:
        """Where the job goes: where it already is when this bot adopts it after a restart (the bot's
        file may have changed meanwhile, and the worker drawing it has the file it had), else the
        stream of the files it needs now."""
        stream = await self.broker.stream_of(job_id)
        if stream is not None and stream != JOBS:
            known = (await self.broker.lora_sets()).get(stream)
            if known:
                return _Route(stream, known)
        return _Route(stream_for(needs), needs)

    async def _given_up(self, job_id: int, route: _Route) -> bool:
        """Fail a LoRA job that no live worker has been able to draw for EASEL_CLAIM_IDLE_S (a worker
        restarting in that time keeps it); True when it was failed now."""
        if not self.redis_ok or any(serves(worker.loras, route.needs) for worker in self._workers):
            route.unserved_since = None  # (the live workers are not known while Redis is away)
            return False
        now = time.monotonic()
        if route.unserved_since is None:
            route.unserved_since = now
        if now - route.unserved_since < max(self.config.claim_idle_s, self.config.lora_wait_s):
            return False
        names = ", ".join(name for name, _ in route.needs)
        meta = {"error_key": "error.lora_not_on_workers", "error_params": {"names": names}}
        idle_ms = int(self.config.claim_idle_s * 1000)
        if not await self.broker.unserved(job_id, route.stream, meta, self.config.result_ttl_s, idle_ms):
            return False
        log.warning("job %s: no live worker has the LoRA files %s; failed (refunded)", job_id, names)
        return True

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
        """Dead-letter jobs whose last allowed delivery died too (even with no worker left to notice),
        in every stream."""
        idle_ms = int(self.config.claim_idle_s * 1000)
        for stream in [JOBS, *await self.broker.lora_sets()]:
            try:
                for handout in await self.broker.overdue(idle_ms, self.config.max_deliveries, stream):
                    if await self.broker.dead_letter(handout, self.config.result_ttl_s):
                        log.error("job %s: dead-lettered after %d deliveries", handout.job_id, handout.deliveries)
                live = {w.id for w in self._workers}
                await self.broker.forget_consumers(live, min_idle_ms=max(60_000, 10 * idle_ms), stream=stream)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self.broker.ensure_group(stream)

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
