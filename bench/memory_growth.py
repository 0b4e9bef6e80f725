"""Memory leaks: RSS growth over 500 consecutive jobs through the service with the tiny model.
Target: < 5% growth between job 50 (warm) and job 500.

    python bench/memory_growth.py [--jobs 500]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import psutil  # noqa: E402

from bot.app import build_app  # noqa: E402
from bot.service import Caller  # noqa: E402
from bot.settings import Settings  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402

WARM = 50


class CountingAdapter:
    platform = "console"

    def __init__(self) -> None:
        self.delivered = 0
        self.event = asyncio.Event()

    async def show_status(self, job, text):
        return None

    async def deliver(self, delivery):
        self.delivered += 1
        self.event.set()

    async def notify_failure(self, job, text):
        self.delivered += 1
        self.event.set()


async def run(jobs: int) -> None:
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as directory:
        model = str(write_tiny_model(Path(directory) / "tiny"))
        engine = Engine.load(model, device="cpu")
        settings = Settings(
            _env_file=None,
            EASEL_MODEL=model,
            EASEL_DATA_DIR=str(Path(directory) / "data"),
            EASEL_DAILY_QUOTA=0,
            EASEL_LOG_LEVEL="WARNING",
        )
        app = await build_app(settings, factory=lambda: engine)
        adapter = CountingAdapter()
        app.service.register(adapter)
        await app.service.start()
        caller = Caller("console", "bench")
        samples = {}
        for i in range(1, jobs + 1):
            await app.service.handle_text(caller, f"/draw picture {i} --steps 1 --size 64x64 --seed {i}", {})
            while adapter.delivered < i:
                adapter.event.clear()
                await adapter.event.wait()
            if i in (WARM, jobs) or i % 100 == 0:
                gc.collect()
                samples[i] = process.memory_info().rss / 2**20
        await app.stop()

    print(f"RSS over {jobs} consecutive jobs (tiny model 64x64, 1 step, full service path)")
    print(f"{'after job':>10}{'RSS MiB':>10}")
    for i, rss in sorted(samples.items()):
        print(f"{i:>10}{rss:>10.1f}")
    growth = samples[jobs] / samples[WARM] - 1
    print(f"growth job {WARM} -> {jobs}: {growth * 100:+.2f}% (target < 5%)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    asyncio.run(run(parser.parse_args().jobs))


if __name__ == "__main__":
    main()
