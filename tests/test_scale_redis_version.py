"""An `easel worker` pointed at a Redis too old for the hand-off (6.2: XAUTOCLAIM answers in two
parts) says so in one line and exits non-zero, instead of failing every take in a loop; `easel
doctor` says the same.  The old server is a fake speaking RESP on loopback; no redis-server needed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from bot.cli.doctor import _redis_status
from bot.runtime.logs import safe_url
from bot.scale.protocol import too_old

ROOT = Path(__file__).resolve().parent.parent


def _encode(value, resp3: bool = False) -> bytes:
    if value is None:
        return b"_\r\n" if resp3 else b"*-1\r\n"
    if isinstance(value, dict):
        return b"%%%d\r\n" % len(value) + b"".join(_encode(k, resp3) + _encode(v, resp3) for k, v in value.items())
    if isinstance(value, Exception):
        return f"-{value}\r\n".encode()
    if isinstance(value, int):
        return f":{value}\r\n".encode()
    if isinstance(value, str) and value in ("OK", "PONG"):
        return f"+{value}\r\n".encode()
    if isinstance(value, str | bytes):
        data = value.encode() if isinstance(value, str) else value
        return b"$%d\r\n%s\r\n" % (len(data), data)
    return b"*%d\r\n" % len(value) + b"".join(_encode(item, resp3) for item in value)


class FakeRedis:
    """Enough of a Redis `version` for a client to connect, ask INFO and (if it went on) take jobs
    the way 6.2 answers them.  Every command received is kept, in order."""

    def __init__(self, version: str = "6.2.14") -> None:
        self.version = version
        self.commands: list[list[str]] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> FakeRedis:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    def url(self, userinfo: str = "") -> str:
        return f"redis://{userinfo}127.0.0.1:{self.port}/0"

    def named(self, name: str) -> list[list[str]]:
        return [command for command in self.commands if command[0].upper() == name]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        resp3 = False
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                count = int(line[1:])
                args = []
                for _ in range(count):
                    size = int((await reader.readline())[1:])
                    args.append((await reader.readexactly(size + 2))[:-2].decode())
                self.commands.append(args)
                answer = await self._answer(args)
                resp3 = resp3 or (args[0].upper() == "HELLO" and args[1:2] == ["3"])
                writer.write(_encode(answer, resp3))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _answer(self, args: list[str]):
        name = args[0].upper()
        if name == "HELLO":  # redis-py 8 opens every connection with HELLO 3 (AUTH inside when a password is set)
            proto = int(args[1]) if len(args) > 1 else 2
            return {"server": "redis", "version": self.version, "proto": proto, "id": 1, "mode": "standalone",
                    "role": "master", "modules": []}  # fmt: skip
        if name == "PING":
            return "PONG"
        if name == "INFO":
            return f"# Server\r\nredis_version:{self.version}\r\nredis_mode:standalone\r\n"
        if name == "SCAN":
            return ["0", []]
        if name == "XAUTOCLAIM":  # 7.0 added a third part (deleted ids); 6.2 answers [cursor, entries]
            return ["0-0", []] if too_old(self.version) else ["0-0", [], []]
        if name == "XREADGROUP":
            await asyncio.sleep(0.05)
            return None
        return "OK"  # AUTH, CLIENT SETINFO, SELECT, XGROUP CREATE...


def test_versions_before_7_are_too_old():
    assert too_old("6.2.14") and too_old("5.0.7") and too_old("6.9.0")
    assert not too_old("7.0.0") and not too_old("7.2.4") and not too_old("8.0.2") and not too_old("10.0.0")
    assert not too_old("unknown")  # an unreadable answer does not stop anyone


async def test_a_worker_refuses_redis_6_2_in_one_line_and_exits(tmp_path, tiny_model_dir):
    async with FakeRedis("6.2.14") as redis:
        url = redis.url(":s3cret-pass@")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EASEL_", "TELEGRAM_", "DISCORD_"))}
        env.update(
            EASEL_REDIS_URL=url,
            EASEL_MODEL=str(tiny_model_dir),
            EASEL_DEVICE="cpu",
            EASEL_WORKER_ID="old-redis",
            EASEL_DATA_DIR=str(tmp_path / "data"),
            HF_HUB_OFFLINE="1",
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli.main", "worker", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(process.communicate(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
            pytest.fail(f"the worker kept running against Redis 6.2; it sent {redis.commands[-5:]}")
    text = output.decode()
    assert process.returncode == 1, text
    errors = [line for line in text.splitlines() if " ERROR " in line]
    assert len(errors) == 1, text
    assert "Redis 6.2.14 is too old" in errors[0] and "7.0 or newer" in errors[0]
    assert "s3cret-pass" not in text
    assert "loading model" not in text  # told before the slow part, not after
    assert redis.named("INFO") and not redis.named("XAUTOCLAIM") and not redis.named("XREADGROUP")


async def test_a_worker_on_redis_7_goes_on_to_take_jobs(tiny_model_dir):
    """The same fake saying 7.2: the check passes and the worker asks for work (no false alarm)."""
    from bot.scale.config import ScaleSettings
    from bot.scale.remote import RemoteWorker

    async with FakeRedis("7.2.4") as redis:
        config = ScaleSettings(_env_file=None, EASEL_REDIS_URL=redis.url(), EASEL_WORKER_ID="new-redis")
        worker = RemoteWorker(config, engine_factory=lambda: object())
        running = asyncio.create_task(worker.run())
        for _ in range(200):
            if redis.named("XREADGROUP"):
                break
            await asyncio.sleep(0.02)
        worker.stop()
        await asyncio.wait_for(running, 10)
    assert redis.named("INFO") and redis.named("XGROUP")
    assert redis.named("XREADGROUP")  # it got as far as waiting for a job


async def test_doctor_names_a_redis_too_old(tmp_path):
    async with FakeRedis("6.2.14") as redis:
        status = await asyncio.to_thread(_redis_status, redis.url("me:s3cret-pass@") + "?password=other-secret")
    assert status["ok"] and status["version"] == "6.2.14"
    assert "Redis 6.2.14 is too old" in status["too_old"]
    assert "s3cret" not in json.dumps(status) and "other-secret" not in json.dumps(status)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:ab/cd+ef=@redis:6379/0", "redis://***@redis:6379/0"),
        ("redis://:p@ss@host/0", "redis://***@host/0"),
        ("rediss://user:pw@h:1/2", "rediss://***@h:1/2"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://localhost:6379/0?password=hunter2", "redis://localhost:6379/0?password=***"),
        ("redis://h/0?db=1&Password=hunter2&x=y", "redis://h/0?db=1&Password=***&x=y"),
        ("redis://h/0?password=hun@ter2", "redis://h/0?password=***"),
        ("rediss://u:pw@h/0?ssl_cert_reqs=none&password=hunter2", "rediss://***@h/0?ssl_cert_reqs=none&password=***"),
        ("unix:///run/redis.sock?db=0&password=hunter2", "unix:///run/redis.sock?db=0&password=***"),
        ("unix://:hunter2@/run/redis.sock?db=0", "unix://***@/run/redis.sock?db=0"),
        ("", ""),
    ],
)
def test_safe_url_hides_every_password(url, shown):
    assert safe_url(url) == shown
    assert "hunter2" not in safe_url(url) and "pw@" not in safe_url(url)


def test_settings_do_not_print_the_redis_url():
    from bot.runtime.settings import Settings

    settings = Settings(_env_file=None, EASEL_REDIS_URL="redis://:hunter2@h/0")
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)


async def test_the_bot_logs_an_unreachable_redis_without_its_password(caplog):
    from bot.scale.config import ScaleSettings
    from bot.scale.pool import WorkerPool

    config = ScaleSettings(_env_file=None, EASEL_REDIS_URL="redis://:hunter2@127.0.0.1:1/0?password=hunter2")
    pool = WorkerPool(config)
    pool._down(ConnectionError("refused"))
    pool._up()
    await pool.broker.redis.aclose()
    assert "127.0.0.1:1" in caplog.text and "hunter2" not in caplog.text
