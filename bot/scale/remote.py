"""`easel worker`: one process per GPU that draws the jobs a Redis-backed bot hands out.

It loads the engine once, announces itself (`easel:worker:<id>`, refreshed every heartbeat), and
then loops: take over a job whose worker stopped heartbeating (XAUTOCLAIM), else wait for a new
one (XREADGROUP).  While drawing it heartbeats the entry (so nobody takes it over), publishes
progress and polls the cancel flag; the finished picture goes back as PNG bytes in the job's hash
and the entry is acknowledged in the same atomic step.  It needs no database and no chat token.

LoRA: the worker installs the files of its own EASEL_LORA_DIR and announces each by name and sha256
(read again every heartbeat, between jobs); it reads the stream of every LoRA set the bot has used
whose files it holds (bot/scale/protocol.py), and draws a job from one only while its files still
match.

SIGTERM/SIGINT: finish the job in hand, then leave; a second signal leaves at once (the job is
taken over by another worker after EASEL_CLAIM_IDLE_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from bot.core.cost import Unit, request_cost
from bot.runtime.logs import safe_url
from bot.runtime.settings import Settings
from bot.runtime.worker import Failure, GpuThread, engine_loader, failure_of
from bot.scale.config import ScaleSettings
from bot.scale.protocol import JOBS, Broker, Handout, Needs, RedisTooOld, WorkerInfo, connect, serves
from bot.scale.results import done_meta, encode_png
from engine.errors import EngineError
from engine.loras import content_hash
from engine.request import DrawRequest
from storage.jobs import JobStatus

log = logging.getLogger(__name__)


class _Progress:
    """The latest (step, total) the engine reported (on the loop, through `GpuThread`), read by the heartbeat."""

    latest: tuple[int, int] | None = None

    def update(self, step: int, total: int) -> None:
        self.latest = (step, total)


class RemoteWorker:
    """Draws jobs from `easel:jobs` with one loaded engine, one job at a time."""

    def __init__(
        self, config: ScaleSettings, engine_factory: Callable[[], Any] | None = None, redis: Redis | None = None
    ) -> None:
        self.config = config
        self.id = config.worker_id
        self.broker = Broker(redis or connect(config.redis_url))
        loras = (config.loras_path, config.max_lora_mb, config.max_loaded_loras, config.max_lora_memory_mb)
        self._gpu = GpuThread(engine_factory or engine_loader(config.model, config.device, loras, config.weights()))
        self._info: WorkerInfo | None = None
        self._busy: int | None = None
        self._busy_since: float | None = None
        self._busy_timeout = config.job_timeout_s  # of the job in hand: EASEL_JOB_TIMEOUT_S per work unit
        self._stopping = asyncio.Event()
        self._redis_ok = True
        self._server_checked = False
        self._block_ms = int(min(1.0, config.claim_idle_s / 4) * 1000)
        self._tick = min(0.25, config.heartbeat_s)
        self._loras: dict[str, str] = {}  # its LoRA files, name -> sha256, as last read
        self._streams: dict[str, Needs] = {}  # the LoRA streams it reads, and what each needs
        self._refreshed_at: float | None = None

    async def run(self) -> None:
        # 1. Check the server before the slow model load: an old Redis fails every take (RedisTooOld)
        try:
            await self._check_server()
        except RedisTooOld:
            self._gpu.shutdown()
            await self.broker.redis.aclose()
            raise
        except RedisError as exc:  # not up yet: checked again before the first take
            self._set_redis_ok(False, exc)

        # 2. Load the model once, off the event loop
        await self._gpu.load()
        self._loras = await self._gpu.call(_lora_files, self._gpu.engine)
        self._info = self._describe()
        log.info("worker %s ready: %s, model %s", self.id, self._info.device, self._info.model)

        # 3. Announce, then take jobs until told to stop
        announcer = asyncio.create_task(self._announce_loop(), name="easel-announce")
        try:
            await self._serve()
        finally:
            announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await announcer
            with contextlib.suppress(RedisError):
                await self.broker.withdraw(self.id)  # gone from /stats at once, not after the TTL
            self._gpu.shutdown()
            await self.broker.redis.aclose()
            log.info("worker %s stopped", self.id)

    def stop(self) -> None:
        """Finish the job in hand, then return from `run`."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- taking jobs ----------------------------------------------------------------------------

    async def _serve(self) -> None:
        failures = 0
        need_group = True
        while not self._stopping.is_set():
            try:
                if need_group:
                    await self._check_server()
                    await self.broker.ensure_group()
                    self._refreshed_at, self._streams = None, {}  # the LoRA streams' groups too
                    need_group = False
                await self._refresh_loras()
                handout = await self._next()
                if handout is not None:
                    await self._process(handout)
                failures = 0
                self._set_redis_ok(True)
                continue
            except RedisTooOld:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc) or "UNBLOCKED" in str(exc):  # a fresh, restarted or flushed Redis
                    need_group = True
                    continue
                log.exception("Redis refused a command")
            except RedisError as exc:
                self._set_redis_ok(False, exc)
            except Exception:  # a job we cannot even read: its entry is taken over, then dead-lettered
                log.exception("unexpected error while taking a job")
            failures += 1
            await self._sleep(min(5.0, 0.1 * 2**failures))

    async def _refresh_loras(self) -> None:
        """Between jobs, once a heartbeat: read the LoRA folder again (what is announced), and which
        LoRA streams this worker can serve now."""
        now = time.monotonic()
        if self._refreshed_at is not None and now - self._refreshed_at < self.config.heartbeat_s:
            return
        self._refreshed_at = now
        self._loras = await self._gpu.call(_lora_files, self._gpu.engine)
        sets = await self.broker.lora_sets()
        streams = {stream: needs for stream, needs in sets.items() if serves(self._loras, needs)}
        for stream in streams.keys() - self._streams.keys():
            await self.broker.ensure_group(stream)
        self._streams = streams

    async def _next(self) -> Handout | None:
        """A job whose worker died (unless it has died too often), else a new one: LoRA streams are
        polled, the plain stream waited on (at most 250 ms while there are LoRA streams to poll)."""
        idle_ms = int(self.config.claim_idle_s * 1000)
        handout = None
        for stream in [JOBS, *self._streams]:
            handout = handout or await self.broker.claim_stale(self.id, idle_ms, stream)
        if handout is None:
            for stream in self._streams:
                if (handout := await self.broker.read_new(self.id, None, stream)) is not None:
                    return handout
            return await self.broker.read_new(self.id, min(self._block_ms, 250) if self._streams else self._block_ms)
        if handout.deliveries > self.config.max_deliveries:
            if await self.broker.dead_letter(handout, self.config.result_ttl_s):
                log.error("job %s: dead-lettered after %d deliveries", handout.job_id, handout.deliveries - 1)
            return None
        log.warning("job %s: taking it over (delivery %d)", handout.job_id, handout.deliveries)
        return handout

    async def _process(self, handout: Handout) -> None:
        if handout.job_id is None:
            await self.broker.drop(handout.entry, handout.stream)
            return
        verdict, payload, source = await self.broker.begin(handout, self.id)
        if verdict != "run":
            log.info("job %s: not drawing it (%s)", handout.job_id, verdict)
            return
        request = DrawRequest.from_dict(json.loads(payload))
        log.info("job %s: drawing (seed %s)", handout.job_id, request.seed)
        self._busy, self._busy_since = handout.job_id, time.monotonic()
        self._busy_timeout = self.timeout_for(request)
        stop, progress = threading.Event(), _Progress()
        watcher = asyncio.create_task(self._watch(handout, stop, progress, self._busy_timeout))
        try:
            with tempfile.TemporaryDirectory(prefix="easel-source-") as folder:
                if source:
                    path = Path(folder) / "source.png"
                    path.write_bytes(source)
                    request = replace(request, source_image=str(path))
                state, meta, images = await self._draw_if_held(handout, request, stop, progress)
        finally:
            watcher.cancel()
            self._busy = self._busy_since = None
        await self._report(handout, state, meta, images)

    def timeout_for(self, request: DrawRequest) -> float:
        """How long this job may run here before it is given up (see ScaleSettings.job_timeout_for)."""
        try:
            cost = request_cost(request, Unit.of(getattr(self._gpu.engine, "profile", None)))
        except (TypeError, ValueError):  # not validated (an older bot): count it as one unit
            cost = 1
        return self.config.job_timeout_for(cost)

    async def _draw_if_held(
        self, handout: Handout, request: DrawRequest, stop: threading.Event, progress: _Progress
    ) -> tuple[JobStatus, dict, list[bytes]]:
        """Draw, unless the job needs LoRA files this worker no longer holds as the bot's (one
        replaced or removed since it was announced): then it fails, refunded, rather than drawing
        with another file under the same name."""
        needs = self._streams.get(handout.stream, ()) if handout.stream != JOBS else ()
        if needs and not serves(await self._gpu.call(_lora_files, self._gpu.engine), needs):
            names = ", ".join(name for name, _ in needs)
            log.warning("job %s: LoRA files %s changed here since announced; not drawing it", handout.job_id, names)
            meta = {"error_key": "error.lora_not_on_workers", "error_params": {"names": names}, "worker": self.id}
            return JobStatus.FAILED, meta, []
        return await self._draw(handout.job_id, request, stop, progress)

    async def _draw(
        self, job_id: int, request: DrawRequest, stop: threading.Event, progress: _Progress
    ) -> tuple[JobStatus, dict, list[bytes]]:
        """Draw on the GPU thread, then encode the PNGs there too (off the event loop)."""
        try:
            result = await self._gpu.generate(request, stop, progress.update)
            images = await self._gpu.call(_encode_all, result.images)
        except Exception as error:
            # The bot has no traceback to show: a crash here is told as "our side, #job, refunded".
            failure = failure_of(error, job_id, crash=Failure(JobStatus.FAILED, "error.internal", {"job_id": job_id}))
            return failure.status, _failure_meta(failure, self.id), []
        return JobStatus.DONE, done_meta(result, self.id), images

    async def _report(self, handout: Handout, state: JobStatus, meta: dict, images: list[bytes]) -> None:
        """Record the outcome; retried while Redis is away (a result for a lost job is simply late)."""
        failures = 0
        while True:
            try:
                decided = await self.broker.finish(handout, state, meta, images, self.config.result_ttl_s)
                log.info("job %s: %s%s", handout.job_id, state.value, "" if decided else " (already decided)")
                return
            except RedisError as exc:
                failures += 1
                refused = isinstance(exc, ResponseError)  # Redis is there but said no: not worth waiting for
                if not refused:
                    self._set_redis_ok(False, exc)
                if (refused or self._stopping.is_set()) and failures > 3:
                    log.error("job %s: could not report (%s); it will be handed out again", handout.job_id, exc)
                    return
                await asyncio.sleep(min(5.0, 0.1 * 2**failures))

    # -- while drawing: heartbeat, progress, cancel ---------------------------------------------

    async def _watch(self, handout: Handout, stop: threading.Event, progress: _Progress, timeout: float) -> None:
        started = last_beat = time.monotonic()
        sent = None
        while True:
            await asyncio.sleep(self._tick)
            now = time.monotonic()
            # A job past its timeout (EASEL_JOB_TIMEOUT_S per unit) stops heartbeating: another
            # worker takes it over.
            beat = now - last_beat >= self.config.heartbeat_s / 2 and now - started < timeout
            try:
                latest = progress.latest
                if latest is not None and latest != sent:
                    await self.broker.progress(handout.job_id, *latest)
                    sent = latest
                verdict = await self.broker.heartbeat(handout, self.id, beat)
            except RedisError:
                continue
            if beat:
                last_beat = now
            if verdict == 1 and not stop.is_set():
                log.info("job %s: cancel requested", handout.job_id)
                stop.set()
            elif verdict == -1 and not stop.is_set():
                # Another worker took the job over (we looked dead): stop drawing it twice.
                log.warning("job %s: taken over by another worker; stopping here", handout.job_id)
                stop.set()

    async def _check_server(self) -> None:
        if not self._server_checked:
            version = await self.broker.check_server()
            log.info("Redis %s at %s", version, safe_url(self.config.redis_url))
            self._server_checked = True

    # -- announcing ------------------------------------------------------------------------------

    async def _announce_loop(self) -> None:
        """Refresh the announcement; a worker stuck past its job's timeout stops counting as live."""
        while True:
            stuck = self._busy_since is not None and time.monotonic() - self._busy_since > self._busy_timeout
            try:
                if not stuck:
                    info = replace(self._info, busy=self._busy, loras=self._loras)
                    await self.broker.announce(info, self.config.worker_ttl_s)
            except RedisError as exc:
                self._set_redis_ok(False, exc)
            await asyncio.sleep(self.config.heartbeat_s)

    def _describe(self) -> WorkerInfo:
        engine = self._gpu.engine
        device = getattr(engine, "device", self.config.device)
        try:
            facts = engine.device_facts()
            if facts.is_gpu:
                device = f"{device} ({facts.name}, {facts.total_vram_gb:.0f} GB)"
        except Exception:
            pass
        model = getattr(getattr(engine, "profile", None), "name", "") or self.config.model
        recipe = str(getattr(engine, "recipe", ""))
        host = socket.gethostname()
        return WorkerInfo(id=self.id, host=host, device=device, slots=1, model=model, since=time.time(), recipe=recipe)

    def _set_redis_ok(self, ok: bool, exc: Exception | None = None) -> None:
        if ok and not self._redis_ok:
            log.info("Redis is reachable again")
        elif not ok and self._redis_ok:
            log.warning("Redis is unreachable (%s); retrying", exc)
        self._redis_ok = ok

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()


def _lora_files(engine) -> dict[str, str]:
    """On the GPU thread: the engine's LoRA folder read again, and each accepted file's sha256 (read
    once per file version); {} for an engine without LoRAs."""
    registry = getattr(engine, "loras", None)
    if registry is None:
        return {}
    registry.rescan()
    files = {}
    for name in registry.names():
        try:
            files[name] = content_hash(registry.get(name).path)
        except OSError:  # removed since the scan
            continue
    return files


def _encode_all(images: list) -> list[bytes]:
    return [encode_png(image) for image in images]


def _failure_meta(failure: Failure, worker_id: str) -> dict[str, Any]:
    """A failure on the wire; the pool raises it again as the engine would have (bot/scale/pool.py)."""
    if failure.status is JobStatus.CANCELLED:
        return {"worker": worker_id}
    return {"error_key": failure.key, "error_params": failure.params, "worker": worker_id}


def main(settings: Settings) -> int:
    """`easel worker`: serve until SIGTERM/SIGINT."""
    config = ScaleSettings.from_settings(settings)
    if not config.redis_url:
        print(
            "easel worker needs EASEL_REDIS_URL (the Redis the bot uses), e.g. redis://bot-host:6379/0", file=sys.stderr
        )
        return 2
    try:
        asyncio.run(_serve(config))
    except (EngineError, RedisTooOld) as error:
        log.error("worker %s cannot start: %s", config.worker_id, error)
        return 1
    return 0


async def _serve(config: ScaleSettings) -> None:
    worker = RemoteWorker(config)
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if worker.stopping:
            log.warning("second signal: leaving now")
            os._exit(1)
        log.info("stopping after the job in hand (signal again to leave now)")
        worker.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)
    await worker.run()
