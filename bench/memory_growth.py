"""Memory leaks: RSS growth over 500 consecutive jobs through the service with the tiny model.
Target: < 5% growth between job 50 (warm) and the last job.

    python bench/memory_growth.py [--jobs 500] [--users 1]

`--users N` spreads the jobs over N distinct users, each in a chat of their own (with as many
users as jobs a cooldown is on too, so every user leaves per-user and per-chat state behind):
`--jobs 10000 --users 10000` checks that such state is bounded, not kept for everyone ever seen.
The in-memory maps of the service's parts (moderator included) are listed with their sizes at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import psutil  # noqa: E402

from bot.core.service import Caller  # noqa: E402
from bot.runtime.app import build_app  # noqa: E402
from bot.runtime.settings import Settings  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402

WARM = 50


class CountingAdapter:
    platform = "telegram"  # not the console: its users are admins, whom no cooldown applies to

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


async def run(jobs: int, users: int) -> None:
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
            EASEL_COOLDOWN_S=60 if users >= jobs else 0,  # on when nobody draws twice
        )
        app = await build_app(settings, factory=lambda: engine)
        adapter = CountingAdapter()
        app.service.register(adapter)
        await app.service.start()
        samples = {}
        started = time.perf_counter()
        for i in range(1, jobs + 1):
            who = i % users
            caller = Caller("telegram", str(1000 + who), chat_id=str(-1000 - who), public=users > 1)
            reply = await app.service.handle_text(caller, f"/draw picture {i} --steps 1 --size 64x64 --seed {i}", {})
            if reply is None or reply.job_id is None:
                raise SystemExit(f"job {i} was refused: {reply and reply.text}")
            while adapter.delivered < i:
                adapter.event.clear()
                await adapter.event.wait()
            if i in (WARM, jobs) or i % max(100, jobs // 10) == 0:
                gc.collect()
                samples[i] = process.memory_info().rss / 2**20
                print(f"  job {i}: {samples[i]:.1f} MiB RSS, {time.perf_counter() - started:.0f}s", flush=True)
        elapsed = time.perf_counter() - started
        service = app.service
        parts = ("scheduler", "dispatcher", "deliverer", "notices", "background", "moderator")
        sizes = state_sizes({**{name: getattr(service, name) for name in parts}, "worker": app.worker})
        await app.stop()

    print(f"RSS over {jobs} consecutive jobs from {users} users in as many chats (tiny model 64x64, 1 step)")
    print(f"{jobs / elapsed:.1f} jobs/s")
    print(f"{'after job':>10}{'RSS MiB':>10}")
    for i, rss in sorted(samples.items()):
        print(f"{i:>10}{rss:>10.1f}")
    print("entries left in per-job, per-user and per-chat maps:")
    print("  " + ", ".join(f"{name} {size}" for name, size in sizes.items()))
    growth = samples[jobs] / samples[WARM] - 1
    print(f"growth job {WARM} -> {jobs}: {growth * 100:+.2f}% (target < 5%)")


def state_sizes(owners: dict[str, object]) -> dict[str, int]:
    """Every map or set an object holds, by name, with how many entries it has now."""
    sizes = {}
    for owner_name, owner in owners.items():
        for name, value in vars(owner).items():
            if isinstance(value, Mapping | AbstractSet) and name not in ("adapters", "settings"):
                sizes[f"{owner_name}.{name}"] = len(value)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--users", type=int, default=1, help="distinct users (each in a chat of their own)")
    args = parser.parse_args()
    asyncio.run(run(args.jobs, max(1, args.users)))


if __name__ == "__main__":
    main()
