"""Batches: `count` pictures as one pipeline call vs one call per picture (and a lone picture for
reference), the tiny model through `engine.generate`, interleaved in one process.

    python bench/batch.py [--runs 30] [--size 256] [--steps 8] [--count 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing

import torch  # noqa: E402

from engine.engine import Engine  # noqa: E402
from engine.request import DrawRequest  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--count", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        engine = Engine.load(str(write_tiny_model(Path(directory) / "tiny")), device="cpu")

        def draw(count: int, one_call: bool):
            engine.one_call_batches = one_call
            size = dict(width=args.size, height=args.size, steps=args.steps)
            result = engine.generate(DrawRequest("a red fox in snow", seed=1, count=count, **size))
            assert len(result.images) == count and result.batched == (one_call and count > 1)
            return result

        paths = {
            "1 picture": lambda: draw(1, True),
            f"{args.count} in one call": lambda: draw(args.count, True),
            f"{args.count}, one call each": lambda: draw(args.count, False),
        }
        for run in list(paths.values()) * 2:  # warm-up
            run()
        times: dict[str, list[float]] = {name: [] for name in paths}
        phases: dict[str, list[dict]] = {name: [] for name in paths}
        for _ in range(args.runs):
            for name, run in paths.items():
                start = time.perf_counter()
                result = run()
                times[name].append(time.perf_counter() - start)
                phases[name].append(result.timings)

    print(
        f"batches, tiny Z-Image, {args.size}x{args.size}, {args.steps} steps, {args.runs} interleaved runs, "
        f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"
    )
    print(f"{'path':<20}{'median ms':>11}{'p90 ms':>9}{'ms/picture':>12}{'denoise ms':>12}{'decode ms':>11}")
    for name, values in times.items():
        pictures = 1 if name == "1 picture" else args.count
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        denoise = statistics.median(t["denoise"] for t in phases[name]) * 1000
        decode = statistics.median(t["decode"] for t in phases[name]) * 1000
        median = statistics.median(values) * 1000
        print(f"{name:<20}{median:>11.1f}{p90 * 1000:>9.1f}{median / pictures:>12.1f}{denoise:>12.1f}{decode:>11.1f}")
    one_call, each = (statistics.median(times[name]) for name in list(paths)[1:])
    print(f"ratio one call each / one call: {each / one_call:.3f}  (> 1: one call is faster)")


if __name__ == "__main__":
    main()
