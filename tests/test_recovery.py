"""Restart recovery for real: a console process is SIGKILLed mid-job; a new one completes every
accepted job exactly once."""

from __future__ import annotations

import os
import re
import signal
import sqlite3

import pytest

from tests.support.console_process import PROGRESS, console, read_until

pytestmark = pytest.mark.slow


def test_sigkill_mid_job_then_restart_delivers_every_job_once(tmp_path, tiny_model_dir):
    first = console(tmp_path, tiny_model_dir)
    for i in range(3):
        first.stdin.write(f"/draw a slow picture number {i} --size 256x256 --steps 16 --seed {i}\n")
    first.stdin.flush()
    before = read_until(first, PROGRESS)  # job 1 is running
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    before += first.stdout.read().splitlines(keepends=True)
    accepted = [int(n) for n in re.findall(r"#(\d+)", "".join(line for line in before if "Queued" in line))]
    assert accepted == [1, 2, 3]

    database = sqlite3.connect(tmp_path / "data" / "easel.db")
    assert database.execute("SELECT status FROM jobs WHERE id = 1").fetchone()[0] == "running"

    second = console(tmp_path, tiny_model_dir)
    after, _ = second.communicate(input="", timeout=120)  # end of input: finish what was accepted, exit
    assert second.returncode == 0, after

    delivered = re.findall(r"job-(\d+)-[0-9a-f]+\.png", "".join(before) + after)
    assert sorted(int(n) for n in delivered) == [1, 2, 3]
    rows = database.execute("SELECT id, status, delivered_at IS NOT NULL, attempts FROM jobs ORDER BY id").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [(1, "done", 1), (2, "done", 1), (3, "done", 1)]
    assert rows[0][3] == 2  # job 1 started twice: before the kill and after the restart
