"""Engine overhead: the same tiny model and request as a bare ZImagePipeline call and through
`engine.generate`, interleaved in one process.  Target: engine / bare <= 1.03.

    python bench/engine_overhead.py [--runs 30] [--size 256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing

import torch  # noqa: E402

from engine.engine import Engine, turbo_sigmas  # noqa: E402
from engine.request import DrawRequest  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    with tempfile.TemporaryDirectory() as directory:
        engine = Engine.load(str(write_tiny_model(Path(directory) / "tiny")), device="cpu")
        pipe = engine.pipeline
        request = DrawRequest(
            "a red fox in snow", width=args.size, height=args.size, steps=args.steps, seed=1, enhance=False
        )

        def bare() -> None:
            pipe(
                prompt=request.prompt,
                height=args.size,
                width=args.size,
                num_inference_steps=args.steps,
                sigmas=turbo_sigmas(args.steps),
                guidance_scale=0.0,
                generator=torch.Generator("cpu").manual_seed(1),
            )

        def through_engine() -> None:
            engine.generate(request)

        for warm in (bare, through_engine, bare, through_engine):
            warm()
        bare_times, engine_times = [], []
        for _ in range(args.runs):
            for fn, times in ((bare, bare_times), (through_engine, engine_times)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)

    bare_median = statistics.median(bare_times)
    engine_median = statistics.median(engine_times)
    print(
        f"engine overhead, tiny Z-Image, {args.size}x{args.size}, {args.steps} steps, {args.runs} interleaved runs, CPU"
    )
    print(f"{'path':<18}{'median ms':>12}{'p90 ms':>10}")
    for name, times in (("bare pipeline", bare_times), ("engine.generate", engine_times)):
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"{name:<18}{statistics.median(times) * 1000:>12.1f}{p90 * 1000:>10.1f}")
    print(f"ratio engine/bare: {engine_median / bare_median:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()
