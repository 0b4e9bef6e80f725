"""/healthz, /readyz and /metrics on EASEL_METRICS_PORT, over real HTTP: ready when the model, the
database and the disk are, and a JSON answer that names what is wrong when not."""

from __future__ import annotations

import asyncio
import socket

import aiohttp

from tests.support.service import started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def get(port: int, path: str) -> tuple[int, dict | str]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body


async def served(make_app, **settings):
    app, _ = await started(make_app, **settings)
    port = free_port()
    await app.health.start(port, host="127.0.0.1")
    return app, port


async def test_a_ready_bot_answers_every_endpoint(make_app):
    app, port = await served(make_app)
    await app.worker.start()
    app.health.model.loaded = True

    assert await get(port, "/healthz") == (200, {"ok": True})
    status, ready = await get(port, "/readyz")
    assert status == 200 and ready["ok"]
    assert set(ready["checks"]) == {"model", "database", "redis", "disk"}
    assert ready["checks"]["model"]["detail"] == "loaded"
    assert ready["checks"]["redis"]["detail"] == "not configured"
    assert ready["checks"]["disk"]["free_gb"] > 0
    status, metrics = await get(port, "/metrics")
    assert status == 200 and "easel_disk_free_gb" in metrics and "easel_queue_depth" in metrics


async def test_readyz_names_a_low_disk_a_failed_model_and_a_stuck_database(make_app, monkeypatch):
    app, port = await served(make_app, EASEL_MIN_FREE_GB="5")
    app.service.disk._measure = lambda path: 0.25
    app.service.disk.forget()
    app.health.model.error = "no such model: /nowhere"

    status, ready = await get(port, "/readyz")
    assert status == 503 and not ready["ok"]
    assert ready["checks"]["disk"] == {"ok": False, "free_gb": 0.25, "problem": "0.25 GB free, under the 5.0 GB guard"}
    assert ready["checks"]["model"] == {"ok": False, "problem": "model failed to load: no such model: /nowhere"}
    assert ready["checks"]["database"] == {"ok": True}
    assert (await get(port, "/healthz"))[0] == 200  # alive all the same: a restart would not help

    monkeypatch.setattr("bot.runtime.health.CHECK_TIMEOUT_S", 0.2)
    async with app.db.write():  # a writer that holds the lock: the database cannot take a write now
        status, ready = await get(port, "/readyz")
    assert status == 503 and ready["checks"]["database"] == {"ok": False, "problem": "no answer in 0.2 s"}


async def test_readyz_says_when_this_machine_can_never_draw(make_app):
    from engine.errors import EngineError

    app, port = await served(make_app)
    app.service.cannot_draw = EngineError("error.needs_gpu")
    status, ready = await get(port, "/readyz")
    assert status == 503 and ready["checks"]["model"] == {"ok": False, "problem": "error.needs_gpu"}


async def test_easel_health_is_what_docker_runs(make_app, make_settings, capsys):
    from bot.cli.probe import probe

    app, port = await served(make_app, EASEL_MIN_FREE_GB="5")
    settings = make_settings(EASEL_METRICS_PORT=str(port))
    assert await asyncio.to_thread(probe, settings, False) == 0
    assert await asyncio.to_thread(probe, settings, True) == 0
    app.service.disk._measure = lambda path: 0.25
    app.service.disk.forget()
    assert await asyncio.to_thread(probe, settings, True) == 1
    assert '"disk"' in capsys.readouterr().err
    await app.health.stop()
    assert await asyncio.to_thread(probe, settings, False) == 1  # nobody answers
    assert await asyncio.to_thread(probe, make_settings(), False) == 1  # no port configured
