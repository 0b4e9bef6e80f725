"""SIGTERM (what `docker stop` sends) drains for real: a console process stops taking jobs, finishes
or hands back the running one within EASEL_STOP_GRACE_S, exits 0, and after the restart every job
is delivered exactly once."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from bot.language.messages import t
from bot.runtime.app import build_app, run_forever
from tests.support.console_process import PROGRESS, console, read_until
from tests.support.service import RecordingAdapter, alice, bob
from tests.support.telegram_harness import Gate

pytestmark = pytest.mark.slow


def terminated_mid_job(tmp_path: Path, model: str, grace_s: float) -> tuple[str, float]:
    """Two jobs accepted, SIGTERM while the first runs; the output and how long the exit took."""
    first = console(tmp_path, model, EASEL_STOP_GRACE_S=str(grace_s))
    first.stdin.write("/draw a slow picture --size 256x256 --steps 16 --seed 1\n")
    first.stdin.write("/draw another slow picture --size 256x256 --steps 16 --seed 2\n")
    first.stdin.close()  # the console now waits for its jobs; SIGTERM comes while it does
    first.stdin = None  # (so communicate() leaves it alone)
    before = "".join(read_until(first, PROGRESS))
    sent = time.monotonic()
    first.send_signal(signal.SIGTERM)
    rest, _ = first.communicate(timeout=grace_s + 30)
    assert first.returncode == 0, before + rest
    return before + rest, time.monotonic() - sent


def delivered(output: str) -> list[int]:
    return sorted(int(n) for n in re.findall(r"job-(\d+)-[0-9a-f]+\.png", output))


@pytest.mark.parametrize("grace_s", [0.0, 60.0], ids=["hands-back", "finishes"])
def test_sigterm_mid_job_exits_0_and_every_job_is_delivered_once_after_the_restart(tmp_path, tiny_model_dir, grace_s):
    before, took = terminated_mid_job(tmp_path, tiny_model_dir, grace_s)
    database = sqlite3.connect(tmp_path / "data" / "easel.db")
    states = dict(database.execute("SELECT id, status FROM jobs").fetchall())
    if grace_s == 0:
        assert took < 20  # handed back at once, not after the picture
        assert states == {1: "queued", 2: "queued"} and delivered(before) == []
    else:
        assert states == {1: "done", 2: "queued"}  # the running one finished; the waiting one was not started
        assert delivered(before) == [1]
        sent = database.execute("SELECT delivered_at IS NOT NULL FROM jobs WHERE id = 1").fetchone()
        assert sent == (1,)  # recorded as delivered by the process that stopped, not left for the restart

    second = console(tmp_path, tiny_model_dir, EASEL_STOP_GRACE_S=str(grace_s))
    after, _ = second.communicate(input="", timeout=120)  # end of input: finish what was accepted, exit
    assert second.returncode == 0, after
    assert delivered(before + after) == [1, 2]  # each exactly once, across the stop
    rows = database.execute("SELECT status, delivered_at IS NOT NULL FROM jobs ORDER BY id").fetchall()
    assert rows == [("done", 1), ("done", 1)]


class ClosingAdapter(RecordingAdapter):
    """A platform client as the real ones are: once `run` is ended (the adapter closed), nothing more
    can be sent through it."""

    def __init__(self, service) -> None:
        super().__init__(service=service)
        self.closed = False

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self.closed = True

    async def deliver(self, delivery) -> None:
        if self.closed:
            raise ConnectionError("the client is closed")
        await super().deliver(delivery)


async def test_sigterm_delivers_the_finished_picture_before_the_adapters_close(make_settings, engine):
    """In process, with a real SIGTERM: the drain finishes the running job, its picture goes out
    through the adapter, and only then is the adapter closed."""
    app = await build_app(make_settings(EASEL_STOP_GRACE_S="60"), factory=lambda: engine)
    adapter = ClosingAdapter(app.service)
    default = signal.getsignal(signal.SIGTERM)
    with Gate(engine, at=2) as gate:
        stopped = asyncio.create_task(run_forever(app, [adapter]))
        for _ in range(1000):  # until run_forever has taken SIGTERM over
            if signal.getsignal(signal.SIGTERM) is not default:
                break
            await asyncio.sleep(0.01)
        else:
            stopped.cancel()
            pytest.skip("SIGTERM could not be handled here")
        reply = await app.service.handle_text(alice(), "/draw a fox --size 64x64 --steps 3", {"chat_id": "1"})
        await gate.wait_reached()
        signal.raise_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)  # the stop is under way while the picture is still being drawn
        # A new job now would only wait for the restart: refused, nothing stored or charged.
        late = await app.service.handle_text(bob(), "/draw a late owl --size 64x64", {"chat_id": "1"})
        assert late.job_id is None and late.text == t("stopping", "zh")
        assert app.service.metrics.value("easel_refusals_total", reason="stopping") == 1
        gate.open()
        await asyncio.wait_for(stopped, 60)
    assert [delivery.job.id for delivery in adapter.delivered] == [reply.job_id]
    assert adapter.closed
    with sqlite3.connect(app.settings.database_path) as database:
        assert database.execute("SELECT status, delivered_at IS NOT NULL FROM jobs").fetchall() == [("done", 1)]


def test_sigterm_does_not_wait_for_a_line_of_input(tmp_path, tiny_model_dir):
    """An interactive console (input still open, nobody typing) stops on SIGTERM all the same."""
    process = console(tmp_path, tiny_model_dir, EASEL_STOP_GRACE_S="0.0")
    process.stdin.write("/draw a slow picture --size 256x256 --steps 16 --seed 1\n")
    process.stdin.flush()  # and left open
    read_until(process, PROGRESS)
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert time.monotonic() - sent < 20
    process.stdin.close()
    database = sqlite3.connect(tmp_path / "data" / "easel.db")
    assert database.execute("SELECT status FROM jobs").fetchall() == [("queued",)]  # handed back
