"""The HTTP side door on EASEL_METRICS_PORT: /metrics (Prometheus), /healthz and /readyz.

- `/healthz`: the process and its event loop answer.  200 always (a hung loop never answers at all).
- `/readyz`: ready to take and draw jobs: the model is loaded or loadable, the database takes a
  write, Redis answers where configured, the disk is above EASEL_MIN_FREE_GB.  200 when every check
  passes, 503 otherwise; the JSON says which check failed and why.

Served by aiohttp on the bot's own loop, so a check sees exactly what the bot sees.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from bot.core.service import Service

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0


@dataclass
class ModelState:
    """What the start-up load of the model came to (bot/runtime/app.py sets it)."""

    loaded: bool = False
    error: str | None = None


@dataclass
class Health:
    service: Service
    model: ModelState = field(default_factory=ModelState)
    _runner: web.AppRunner | None = None

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def readiness(self) -> dict[str, Any]:
        """Every check with `ok` and, when not ok, `problem`; `ok` on top when all pass."""
        checks = {
            "model": self._check_model(),
            "database": await _bounded(self._check_database()),
            "redis": self._check_redis(),
            "disk": self._check_disk(),
        }
        return {"ok": all(check["ok"] for check in checks.values()), "checks": checks}

    def _check_model(self) -> dict[str, Any]:
        service = self.service
        if service.settings.redis_url:
            return {"ok": True, "detail": f"drawn by `easel worker`s: {service.live_workers()} live"}
        if service.cannot_draw is not None:
            return {"ok": False, "problem": service.cannot_draw.key}
        if self.model.error is not None:
            return {"ok": False, "problem": f"model failed to load: {self.model.error}"}
        return {"ok": True, "detail": "loaded" if self.model.loaded else "loading"}

    async def _check_database(self) -> dict[str, Any]:
        # BEGIN IMMEDIATE takes the write lock: a read-only file, a full disk or a stuck writer fails here.
        async with self.service.db.write() as tx:
            await tx.execute("UPDATE job_counts SET n = n WHERE 0")
        return {"ok": True}

    def _check_redis(self) -> dict[str, Any]:
        if not self.service.settings.redis_url:
            return {"ok": True, "detail": "not configured"}
        if self.service.worker.healthy():
            return {"ok": True}
        return {"ok": False, "problem": "Redis is unreachable"}

    def _check_disk(self) -> dict[str, Any]:
        disk = self.service.disk
        free = round(disk.free_gb(), 2)
        if disk.low():
            return {"ok": False, "free_gb": free, "problem": f"{free} GB free, under the {disk.min_free_gb} GB guard"}
        return {"ok": True, "free_gb": free}

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.service.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _readyz(self, request: web.Request) -> web.Response:
        report = await self.readiness()
        return web.json_response(report, status=200 if report["ok"] else 503)


async def _bounded(check) -> dict[str, Any]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check
    except TimeoutError:
        return {"ok": False, "problem": f"no answer in {CHECK_TIMEOUT_S:g} s"}
    except Exception as error:
        return {"ok": False, "problem": f"{type(error).__name__}: {error}"}
