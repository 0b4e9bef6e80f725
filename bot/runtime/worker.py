"""The one place that crosses from the event loop to the GPU thread, and the one reading of how a
generation that raised ends its job.  Both the embedded worker (`GpuWorker`) and `easel worker`
(bot/scale/remote.py) draw through `GpuThread` and read errors with `failure_of`.

`GpuThread.generate` hands a request to a dedicated thread and awaits the result; step progress hops
back to the loop with `call_soon_threadsafe`, and cancel is a thread-safe flag the engine polls per
step.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from bot.contract import ProgressCallback
from engine.errors import Cancelled, EngineError
from engine.heap import release_freed_memory
from engine.request import DrawRequest
from storage.jobs import JobStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """How a generation that raised ends its job: cancelled, or failed with a catalogue key."""

    status: JobStatus  # CANCELLED or FAILED
    key: str
    params: dict[str, Any] = field(default_factory=dict)


CRASHED = Failure(JobStatus.FAILED, "error.unexpected")  # a bug, told as "something went wrong"


def failure_of(error: Exception, job_id: int, crash: Failure = CRASHED) -> Failure:
    """What `engine.generate` raised, as its job's outcome: the engine's own errors carry their key;
    anything else is a bug, logged with its traceback and told as `crash`."""
    if isinstance(error, Cancelled):
        return Failure(JobStatus.CANCELLED, error.key, error.params)
    if isinstance(error, EngineError):
        return Failure(JobStatus.FAILED, error.key, error.params)
    log.error("job %s: generation crashed", job_id, exc_info=error)
    return crash


def engine_loader(model: str, device: str, loras: tuple | None = None, weights: Any = None) -> Callable[[], Any]:
    """Loads the engine when called (on the GPU thread): the real model, for `GpuThread`, in the
    `weights` asked for (engine.quantize.WeightsWanted); with `loras` (folder, max MB, how many kept
    loaded) its LoRA files installed (engine/loras.py)."""

    def load():
        from engine.engine import Engine

        log.info("loading model %s on %s", model, device)
        engine = Engine.load(model, device=device, weights=weights)
        if loras is not None:
            engine.install_loras(str(loras[0]), *loras[1:])
        return engine

    return load


class GpuThread:
    """One thread owns the engine: it loads it once, and every call runs there in order, carrying the
    caller's context (the job id in log lines, bot/runtime/logs.py)."""

    def __init__(self, engine_factory: Callable[[], Any]) -> None:
        self._factory = engine_factory
        self._engine = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-gpu")

    @property
    def engine(self):
        """The loaded engine, or None before `load`."""
        return self._engine

    async def load(self) -> Any:
        """Load the model (once) without blocking the loop."""
        return await self.call(self._ensure_engine)

    async def generate(
        self, request: DrawRequest, should_stop: threading.Event, on_step: ProgressCallback | None = None
    ) -> Any:
        """`engine.generate` on the GPU thread; `on_step` runs on the loop, `should_stop` is polled per step."""
        loop = asyncio.get_running_loop()

        def step(index: int, total: int) -> None:
            if on_step is not None:
                loop.call_soon_threadsafe(on_step, index, total)

        return await self.call(self._generate, request, step, should_stop.is_set)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run other GPU-side work (saving or encoding a picture) on the same thread, in order."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, function, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _generate(self, request: DrawRequest, on_step: ProgressCallback, should_stop: Callable[[], bool]) -> Any:
        try:
            return self._ensure_engine().generate(request, on_step=on_step, should_stop=should_stop)
        finally:
            release_freed_memory()  # months of jobs must not creep up in RSS (engine/heap.py)

    def _ensure_engine(self):
        """Runs on the GPU thread only, so the model is loaded once however the calls interleave."""
        if self._engine is None:
            self._engine = self._factory()
        return self._engine


class GpuWorker:
    """The embedded `Worker` (bot/contract.py): one job at a time on this process's GPU thread."""

    # The GPU thread must be told to stop for the process to exit; the job runs again after restart.
    cancel_on_shutdown = True
    loads_here = True
    loras = None  # unused: this process's engine reads the LoRA folder itself

    def __init__(self, engine_factory: Callable[[], Any]) -> None:
        self._gpu = GpuThread(engine_factory)
        self._stop_flags: dict[int, threading.Event] = {}
        self._slot = asyncio.Semaphore(1)

    @property
    def engine(self):
        return self._gpu.engine

    async def start(self) -> None:
        """Load the model on the GPU thread so start-up never blocks the loop."""
        await self._gpu.load()

    async def acquire_slot(self) -> None:
        """One GPU, one job at a time: the dispatcher waits here before taking the next job."""
        await self._slot.acquire()

    def release_slot(self) -> None:
        self._slot.release()

    def healthy(self) -> bool:
        return True

    def live_workers(self) -> int:
        return 1

    def recipes(self) -> dict[str, int]:
        engine = self._gpu.engine
        return {str(engine.recipe): 1} if engine is not None and hasattr(engine, "recipe") else {}

    async def missing_loras(self, loras: tuple) -> list[str]:
        """None: the engine here reads the same folder the intake checked the names against."""
        return []

    async def run(self, job_id: int, request: DrawRequest, on_step: ProgressCallback | None = None) -> Any:
        """Generate on the GPU thread; `cancel(job_id)` stops it within a step."""
        # Registered here and removed in `finally`, so no path leaves one behind.
        stop = self._stop_flags.setdefault(job_id, threading.Event())
        try:
            return await self._gpu.generate(request, stop, on_step)
        except asyncio.CancelledError:
            stop.set()  # nobody awaits this generation any more: stop it at the next step
            raise
        finally:
            self._stop_flags.pop(job_id, None)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run other GPU-side work (saving a picture) on the same thread, in order."""
        return await self._gpu.call(function, *args)

    def cancel(self, job_id: int) -> bool:
        """Stop a running job within a step; False if this worker is not running it.  A job
        cancelled before it runs is the dispatcher's to skip (Dispatcher._cancel_requested): a flag
        kept for it here would stay for good if it never ran."""
        stop = self._stop_flags.get(job_id)
        if stop is None:
            return False
        stop.set()
        return True

    async def close(self) -> None:
        for flag in self._stop_flags.values():
            flag.set()
        self._gpu.shutdown()
