"""Scale-out helpers: a throwaway redis-server, bot apps on it with recording adapters, and polling."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.support.service import RecordingAdapter

FAST = {"EASEL_HEARTBEAT_S": 0.25, "EASEL_CLAIM_IDLE_S": 2, "EASEL_MAX_DELIVERIES": 2, "EASEL_LORA_WAIT_S": 2}


class RedisServer:
    """A throwaway redis-server on a free loopback port, without persistence (like a crash)."""

    def __init__(self, folder: Path) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server)")
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = self.client()
        for _ in range(250):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                return self
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_connect_timeout=1)


def scale_settings(make_settings, redis_url: str, **overrides):
    """Bot-side settings: the test's data dir and tiny model, plus Redis and fast scale knobs."""
    from bot.scale.config import ScaleSettings

    base = make_settings()
    values = {
        "EASEL_MODEL": base.model,
        "EASEL_DATA_DIR": str(base.data_dir),
        "EASEL_DEVICE": "cpu",
        "EASEL_REDIS_URL": redis_url,
        **FAST,
        **overrides,
    }
    return ScaleSettings(_env_file=None, **values)


class ScaleApps:
    """Real bot apps (SQLite, service, `WorkerPool`) on Redis, each with a recording adapter."""

    def __init__(self, make_settings) -> None:
        self.make_settings = make_settings
        self.apps = []

    async def make(self, redis_url: str, start: bool = True, **overrides):
        from bot.runtime.app import build_app

        app = await build_app(scale_settings(self.make_settings, redis_url, **overrides))
        self.apps.append(app)
        adapter = RecordingAdapter(service=app.service)
        app.service.register(adapter)
        if start:
            await app.service.start()
        return app, adapter

    async def close(self) -> None:
        for app in self.apps:
            with contextlib.suppress(Exception):
                await app.stop()
            await app.worker.close()


class WorkerLoops:
    """`easel worker` loops as tasks in this process, each on an engine of the test's choosing; jobs
    whose prompt contains `slow_on` take 0.2 s longer a step (tests/support/faults.py)."""

    def __init__(self, make_settings) -> None:
        self.make_settings = make_settings
        self.running: list[tuple[object, asyncio.Task]] = []

    def start(self, redis_url: str, engine, name: str, slow_on: str | None = None, **overrides):
        from bot.scale.remote import RemoteWorker
        from tests.support.faults import FaultyEngine

        config = scale_settings(self.make_settings, redis_url, EASEL_WORKER_ID=name, **overrides)
        drawing = FaultyEngine(engine, slow_on=slow_on) if slow_on else engine
        worker = RemoteWorker(config, engine_factory=lambda: drawing)
        self.running.append((worker, asyncio.create_task(worker.run())))
        return worker

    async def close(self) -> None:
        for worker, task in self.running:
            worker.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)


async def eventually(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def job_hash(server: RedisServer, job_id: int) -> dict[str, bytes]:
    return {k.decode(): v for k, v in server.client().hgetall(f"easel:job:{job_id}").items()}
