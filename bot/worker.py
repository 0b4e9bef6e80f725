"""The one place that crosses from the event loop to the GPU thread.

`GpuWorker.run` hands a request to a dedicated thread and awaits the result; step progress hops back
to the loop with `call_soon_threadsafe`, and cancel is a thread-safe flag the engine polls per step.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from engine.request import DrawRequest

ProgressCallback = Callable[[int, int], None]


class GpuWorker:
    """Runs `engine.generate` on one thread, never on the event loop."""

    # The GPU thread must be told to stop for the process to exit; the job runs again after restart.
    cancel_on_shutdown = True

    def __init__(self, engine_factory: Callable[[], Any]) -> None:
        self._factory = engine_factory
        self._engine = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-gpu")
        self._stop_flags: dict[int, threading.Event] = {}
        self._slot = asyncio.Semaphore(1)

    @property
    def engine(self):
        return self._engine

    async def start(self) -> None:
        """Load the model on the GPU thread so start-up never blocks the loop."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._ensure_engine)

    async def acquire_slot(self) -> None:
        """One GPU, one job at a time: the dispatcher waits here before taking the next job."""
        await self._slot.acquire()

    def release_slot(self) -> None:
        self._slot.release()

    def live_workers(self) -> int:
        return 1

    async def run(self, job_id: int, request: DrawRequest, on_step: ProgressCallback | None = None) -> Any:
        """Generate on the GPU thread; `cancel(job_id)` stops it within a step."""
        loop = asyncio.get_running_loop()
        # Registered here and removed in `finally`, so no path leaves one behind.
        stop = self._stop_flags.setdefault(job_id, threading.Event())

        def step(index: int, total: int) -> None:
            if on_step is not None:
                loop.call_soon_threadsafe(on_step, index, total)

        try:
            # copy_context: the job id (bot/logs.py) follows the work onto the GPU thread.
            context = contextvars.copy_context()
            return await loop.run_in_executor(self._thread, context.run, self._generate, request, step, stop.is_set)
        except asyncio.CancelledError:
            stop.set()  # nobody awaits this generation any more: stop it at the next step
            raise
        finally:
            self._stop_flags.pop(job_id, None)

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run other GPU-side work (saving a picture) on the same thread, in order."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

    def cancel(self, job_id: int) -> bool:
        """Stop a running job within a step; False if this worker is not running it.  A job
        cancelled before it runs is the dispatcher's to skip (Service._cancel_requested): a flag
        kept for it here would stay for good if it never ran."""
        stop = self._stop_flags.get(job_id)
        if stop is None:
            return False
        stop.set()
        return True

    def _generate(self, request: DrawRequest, on_step: ProgressCallback, should_stop: Callable[[], bool]) -> Any:
        return self._ensure_engine().generate(request, on_step=on_step, should_stop=should_stop)

    def _ensure_engine(self):
        """Runs on the GPU thread only, so the model is loaded once however the calls interleave."""
        if self._engine is None:
            self._engine = self._factory()
        return self._engine

    def close(self) -> None:
        for flag in self._stop_flags.values():
            flag.set()
        self._thread.shutdown(wait=False, cancel_futures=True)
