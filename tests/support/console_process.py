"""`easel console` as a real subprocess on the tiny model, and reading its output up to a line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

PROGRESS = r"\[#+\.*\]"  # a progress bar: a job is running


def console(tmp_path: Path, model: str, **settings: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "EASEL_MODEL": model,
        "EASEL_DATA_DIR": str(tmp_path / "data"),
        "EASEL_DEVICE": "cpu",
        "PYTHONUNBUFFERED": "1",
        "EASEL_LOG_LEVEL": "WARNING",
        **settings,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli.main", "console"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )


def read_until(process: subprocess.Popen, pattern: str, timeout: float = 60.0) -> list[str]:
    """The output lines up to and including the first that matches `pattern`."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"never saw {pattern!r}; output was:\n{''.join(lines)}")
