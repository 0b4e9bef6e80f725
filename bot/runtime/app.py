"""Wiring: settings -> database, image store, GPU worker, service, adapters.  Built in one place."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bot.community.moderation import check_files
from bot.contract import Worker
from bot.core.service import Service
from bot.runtime.health import Health
from bot.runtime.settings import Settings
from bot.runtime.worker import GpuWorker, engine_loader
from engine.request import profile_for
from storage.db import Database
from storage.images import ImageStore

log = logging.getLogger(__name__)


@dataclass
class App:
    settings: Settings
    db: Database
    worker: Worker
    service: Service
    health: Health = field(init=False)

    def __post_init__(self) -> None:
        self.health = Health(self.service)

    async def stop(self, finish_s: float = 0.0, then: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop taking jobs; give the running one `finish_s` to finish (then it is handed back); `then`
        runs once its delivery went out (closing the adapters), before the rest is closed."""
        await self.service.stop(finish_s=finish_s)
        if then is not None:
            await then()
        await self.health.stop()
        await self.worker.close()
        await self.db.close()


async def build_app(settings: Settings, factory: Callable[[], Any] | None = None) -> App:
    """Open storage and start the service; the model loads on the GPU thread in the background.

    Raises WordListUnreadable, before opening anything, when a configured word-list file cannot be
    read: the bot never runs without the list its admins set."""
    check_files(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = await Database.open(settings.database_path)
    images = ImageStore(settings.images_dir)
    if settings.redis_url:  # scale-out: `easel worker` processes draw; this process only hands out
        from bot.scale.pool import WorkerPool

        worker: Worker = WorkerPool.from_settings(settings)
    else:
        loras = (settings.loras_path, settings.max_lora_mb, settings.max_loaded_loras, settings.max_lora_memory_mb)
        worker = GpuWorker(factory or engine_loader(settings.model, settings.device, loras, settings.weights()))
    service = Service(settings, db, images, worker, profile_for(settings.model), model_name=_model_name(settings))
    if not settings.redis_url and factory is None:
        service.cannot_draw = await asyncio.to_thread(_why_drawing_cannot_run, settings)
    return App(settings, db, worker, service)


def _why_drawing_cannot_run(settings: Settings):
    from engine.device import probe_device, resolve_device
    from engine.engine import why_it_cannot_run

    return why_it_cannot_run(settings.model, probe_device(resolve_device(settings.device)))


def _model_name(settings: Settings) -> str:
    return settings.model.rstrip("/").rsplit("/", 1)[-1]


async def run_forever(app: App, adapters: list[Any]) -> None:
    """Start every adapter, then the service (which recovers unfinished jobs), and wait: until the
    adapters end, or SIGTERM / SIGINT, which drains (docs/OPERATIONS.md, "Stopping")."""
    for adapter in adapters:
        app.service.register(adapter)
    warm_up = asyncio.create_task(_load_model(app))
    await app.service.start()
    if app.settings.metrics_port:
        await app.health.start(app.settings.metrics_port)
        log.info("metrics and health on :%d (/metrics, /healthz, /readyz)", app.settings.metrics_port)
    adapters_task = asyncio.ensure_future(asyncio.gather(*(adapter.run() for adapter in adapters)))
    stop = asyncio.Event()
    signalled = _stop_on_signals(stop)
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([adapters_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
        if signalled:
            log.info("stopping: no new jobs; the running one has %.0f s to finish", app.settings.stop_grace_s)
        else:
            adapters_task.result()  # the adapters ended by themselves: what one raised is raised here
    finally:
        stop_task.cancel()
        warm_up.cancel()
        # The adapters stay open through the drain: the picture the running job finishes goes out
        # through them before they close (closed first, it would wait for the restart).
        await app.stop(finish_s=app.settings.stop_grace_s, then=lambda: _close_adapters(adapters_task))


async def _close_adapters(adapters_task: asyncio.Future) -> None:
    if adapters_task.done():  # they ended by themselves; what one raised was raised already
        return
    adapters_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await adapters_task


def _stop_on_signals(stop: asyncio.Event) -> list[int]:
    """SIGTERM (docker stop) and SIGINT set `stop`; `run_forever` then drains and closes the
    adapters last.  The list it returns fills with the signals received."""
    loop, received = asyncio.get_running_loop(), []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread, or Windows
            loop.add_signal_handler(signum, on_signal, signum)
    return received


async def _load_model(app: App) -> None:
    """Load the model at start so the first picture is not slow; a failure is logged here (and shown
    by /readyz) and then reaches each user as a friendly message when their job runs."""
    try:
        await app.worker.start()
    except Exception as exc:
        log.warning("model not loaded at start: %s", exc)
        app.health.model.error = str(exc)[:300]
    else:
        app.health.model.loaded = True
