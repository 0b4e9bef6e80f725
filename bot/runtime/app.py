"""Wiring: settings -> database, image store, GPU worker, service, adapters.  Built in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.community.moderation import check_files
from bot.contract import Worker
from bot.core.service import Service
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

    async def stop(self) -> None:
        await self.service.stop()
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
        worker = GpuWorker(factory or engine_loader(settings.model, settings.device))
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
    """Start every adapter, then the service (which recovers unfinished jobs), and wait."""
    for adapter in adapters:
        app.service.register(adapter)
    warm_up = asyncio.create_task(_load_model(app))
    await app.service.start()
    if app.settings.metrics_port:
        app.service.metrics.serve(app.settings.metrics_port)
        log.info("metrics on :%d/metrics", app.settings.metrics_port)
    try:
        await asyncio.gather(*(adapter.run() for adapter in adapters))
    finally:
        warm_up.cancel()
        await app.stop()


async def _load_model(app: App) -> None:
    """Load the model at start so the first picture is not slow; a failure is logged here and then
    reaches each user as a friendly message when their job runs."""
    try:
        await app.worker.start()
    except Exception as exc:
        log.warning("model not loaded at start: %s", exc)
