"""Event-loop lag while a chat's own block list is compiled, the way it was (on the loop) and the
way the Moderator does it now (on a worker thread, once for every prompt that asks meanwhile).
Sizes: the cap's default (1,000), 5,000, and 100,000 (an old database from before the cap).

    python bench/chat_list_lag.py [--sizes 1000,5000,100000]

Prints figures only: lag depends on the machine and on what else it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from bot.community.moderation import Moderator  # noqa: E402
from bot.community.wordlist import Prepared, WordList  # noqa: E402
from bot.runtime.settings import Settings  # noqa: E402
from storage.db import Database  # noqa: E402

TICK_S = 0.005
SCOPE = "telegram:chat:1"


async def sample_lag(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(time.perf_counter() - start - TICK_S)


async def measured(work) -> tuple[float, list[float]]:
    """Seconds `work` took, and the loop's lag samples meanwhile."""
    stop, lags = asyncio.Event(), []
    sampler = asyncio.create_task(sample_lag(stop, lags))
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    await work()
    seconds = time.perf_counter() - started
    stop.set()
    await sampler
    return seconds, lags or [0.0]


def row(name: str, size: int, seconds: float, lags: list[float]) -> str:
    ordered = sorted(lags)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return (
        f"{name:<26}{size:>8}{seconds * 1000:>10.0f}{len(lags):>9}"
        f"{statistics.median(lags) * 1000:>9.1f}{p99 * 1000:>9.1f}{max(lags) * 1000:>9.1f}"
    )


async def run(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        db = await Database.open(Path(directory) / "easel.db")
        settings = Settings(_env_file=None, EASEL_DATA_DIR=directory)
        print(f"event-loop lag while a chat list compiles (tick {TICK_S * 1000:.0f} ms)")
        print(f"{'path':<26}{'terms':>8}{'wall ms':>10}{'samples':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
        for size in sizes:
            scope = f"{SCOPE}:{size}"
            async with db.write() as tx:  # straight into storage: an old database, from before the cap
                await tx.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
                    "INSERT INTO moderation_terms (scope, list, term, added_by) "
                    "SELECT ?, 'blocked', printf('forbidden%06dword', i), NULL FROM n",
                    (size, scope),
                )
            terms = await db.moderation.terms(scope, "blocked")

            async def on_the_loop(terms=terms):
                WordList(terms).find(Prepared.of("a calm lake"))  # what _list did before

            moderator = Moderator(settings, db.moderation, time.time)

            async def moderator_now(scope=scope, moderator=moderator):
                # Ten prompts arrive while the list compiles: one compile, on a worker thread.
                await asyncio.gather(*(moderator.judge(scope, f"a calm lake {n}") for n in range(10)))

            print(row("before: on the loop", size, *await measured(on_the_loop)))
            print(row("after: worker thread", size, *await measured(moderator_now)))
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,5000,100000")
    args = parser.parse_args()
    asyncio.run(run([int(size) for size in args.sizes.split(",")]))


if __name__ == "__main__":
    main()
