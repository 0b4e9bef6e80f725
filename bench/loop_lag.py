"""Event-loop lag while the tiny model generates through the service's GPU thread.
Target: p99 < 20 ms.  A baseline with the loop idle is measured in the same process.

    python bench/loop_lag.py [--jobs 6] [--size 384]
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

from bot.runtime.worker import GpuWorker  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.request import DrawRequest  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402

TICK_S = 0.005


async def sample_lag(stop: asyncio.Event) -> list[float]:
    lags = []
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(time.perf_counter() - start - TICK_S)
    return lags


def summary(name: str, lags: list[float]) -> str:
    ordered = sorted(lags)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return (
        f"{name:<22}{len(lags):>8}{statistics.median(lags) * 1000:>10.2f}{p99 * 1000:>10.2f}{max(lags) * 1000:>10.2f}"
    )


async def run(args) -> None:
    with tempfile.TemporaryDirectory() as directory:
        model = str(write_tiny_model(Path(directory) / "tiny"))
        worker = GpuWorker(lambda: Engine.load(model, device="cpu"))
        await worker.start()

        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_lag(stop))
        await asyncio.sleep(2.0)
        stop.set()
        idle = await sampler

        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_lag(stop))
        steps = []
        started = time.perf_counter()
        for i in range(args.jobs):
            request = DrawRequest(f"picture {i}", width=args.size, height=args.size, seed=i)
            await worker.run(i, request, on_step=lambda step, total: steps.append(step))
        busy_seconds = time.perf_counter() - started
        stop.set()
        busy = await sampler
        await worker.close()

    print(
        f"event-loop lag, tick {TICK_S * 1000:.0f} ms; {args.jobs} jobs {args.size}x{args.size} in {busy_seconds:.1f}s"
    )
    print(f"{'loop':<22}{'samples':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    print(summary("idle (baseline)", idle))
    print(summary("while generating", busy))
    busy_p99 = sorted(busy)[int(0.99 * (len(busy) - 1))]
    print(f"progress callbacks received on the loop: {len(steps)}")
    print(f"p99 while generating: {busy_p99 * 1000:.2f} ms (target < 20 ms)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--size", type=int, default=384)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
