"""The service's background work: its long-running loops (dispatch, redelivery sweeps) and the short
tasks it starts on the side (a job in its worker slot, a delivery round, a status line), all tracked
so that a stop can end them, boundedly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Background:
    def __init__(self) -> None:
        self.loops: dict[str, asyncio.Task] = {}
        self.tasks: set[asyncio.Task] = set()
        self.stopping = False  # set at stop: nothing new starts

    def run_loop(self, name: str, coroutine: Coroutine[Any, Any, None]) -> None:
        """Start a loop that runs until the stop (task name `easel-<name>`)."""
        self.loops[name] = asyncio.create_task(coroutine, name=f"easel-{name}")

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Run a task on the side; once stopping, it is dropped unstarted."""
        if self.stopping:
            coroutine.close()
            return
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    async def stop_loops(self) -> None:
        """Stop starting anything: cancel the loops and wait for them."""
        self.stopping = True
        for task in self.loops.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def settle(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the tasks to end by themselves (a running job finishing and
        being delivered); True when none is left."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout_s)
        return not self.tasks

    async def drain(self, grace_s: float) -> None:
        """Give the tasks `grace_s` to finish, then cancel the rest and wait as long again."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=grace_s)
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            # Bounded: a task that ignores its cancel must not turn a stop into a hang.
            _, stuck = await asyncio.wait(list(self.tasks), timeout=grace_s)
            if stuck:
                log.warning("%d background tasks did not stop; leaving them", len(stuck))

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())
