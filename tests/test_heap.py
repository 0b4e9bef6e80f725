"""Freed memory goes back to the system after every job, drawn or failed (engine/heap.py)."""

from __future__ import annotations

import platform
import threading

import pytest

from bot.runtime import worker as worker_module
from bot.runtime.worker import GpuThread
from engine.errors import BadOutput
from engine.heap import release_freed_memory
from engine.request import DrawRequest


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_glibc_gives_freed_pages_back():
    garbage = [bytes(4096) for _ in range(20_000)]  # ~80 MB in many small blocks, then freed
    del garbage
    assert release_freed_memory() is True


class _Engine:
    def __init__(self, fail: bool) -> None:
        self.fail = fail

    def generate(self, request, on_step, should_stop):
        if self.fail:
            raise BadOutput()
        return "drawn"


@pytest.mark.parametrize("fail", [False, True])
async def test_the_gpu_thread_trims_after_every_job(monkeypatch, fail):
    trims = []
    monkeypatch.setattr(worker_module, "release_freed_memory", lambda: trims.append(threading.current_thread().name))
    gpu = GpuThread(lambda: _Engine(fail))
    try:
        if fail:
            with pytest.raises(BadOutput):
                await gpu.generate(DrawRequest(prompt="a cat"), threading.Event())
        else:
            assert await gpu.generate(DrawRequest(prompt="a cat"), threading.Event()) == "drawn"
    finally:
        gpu.shutdown()
    assert len(trims) == 1 and trims[0].startswith("easel-gpu")  # on the GPU thread, never the loop
