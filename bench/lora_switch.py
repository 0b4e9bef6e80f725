"""What switching LoRA sets between jobs costs, the tiny model through `engine.generate` on the CPU.

Four job sequences, each on an engine of its own, their jobs interleaved one by one in one process
so drift hits them alike; the figures are the median time per job, its ratio to `none` (no LoRA in
any job), and the median of the engine's "plan" phase, where the switch happens:

- `none`:      no job names a LoRA (the LoRAs are installed, none is used)
- `same`:      every job draws with LoRA A (loaded once, then nothing to switch)
- `alternate`: A, B, none, A, B, none... (adapters kept loaded; `set_adapters` / `disable_lora` per job)
- `reload`:    five LoRAs in turn with three kept loaded: every job loads its file again (LRU)

    python bench/lora_switch.py [--runs 10] [--jobs 6] [--size 256] [--steps 8]   (runs x jobs per sequence)
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing

from engine.engine import Engine  # noqa: E402
from engine.request import DrawRequest  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402
from tests.support.loras import write_lora  # noqa: E402

NAMES = ["a", "b", "c", "d", "e"]
PATTERNS = {
    "none": [()],
    "same": [(("a", 1.0),)],
    "alternate": [(("a", 1.0),), (("b", 1.0),), ()],
    "reload": [((name, 1.0),) for name in NAMES],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=6, help="jobs per run of one sequence")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    size = dict(width=args.size, height=args.size, steps=args.steps)
    warnings.filterwarnings("ignore")  # diffusers warns, per load, of the other adapters' keys
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as directory:
        model = str(write_tiny_model(Path(directory) / "tiny"))
        folder = Path(directory) / "loras"
        # One engine per sequence, the jobs interleaved one by one: each engine sees only its own
        # sequence (what a switch costs depends on the job before), and noise hits all four alike.
        engines = {name: Engine.load(model, device="cpu") for name in PATTERNS}
        for seed, name in enumerate(NAMES, start=1):
            write_lora(folder / f"{name}.safetensors", engines["none"].pipeline.transformer, seed=seed, rank=8)
        for engine in engines.values():
            engine.install_loras(str(folder), max_mb=64, max_loaded=3)
            engine.generate(DrawRequest("a red fox in snow", seed=0, **size))  # warm-up
        sequences = {name: itertools.cycle(sequence) for name, sequence in PATTERNS.items()}
        totals: dict[str, list[float]] = {name: [] for name in PATTERNS}
        switches: dict[str, list[float]] = {name: [] for name in PATTERNS}
        for job in range(args.runs * args.jobs):
            for name, engine in engines.items():
                request = DrawRequest("a red fox in snow", seed=job, loras=next(sequences[name]), **size)
                started = time.perf_counter()
                result = engine.generate(request)
                totals[name].append((time.perf_counter() - started) * 1000)
                switches[name].append(result.timings["plan"] * 1000)  # the LoRA switch happens in "plan"

    print(
        f"LoRA switch cost, tiny Z-Image, {args.size}x{args.size}, {args.steps} steps, "
        f"{args.runs * args.jobs} jobs per sequence interleaved, CPU"
    )
    print(f"{'sequence':<12}{'median ms/job':>15}{'vs none':>9}{'switch ms':>11}")
    base = statistics.median(totals["none"])
    for name in PATTERNS:
        median = statistics.median(totals[name])
        print(f"{name:<12}{median:>15.1f}{median / base:>9.3f}{statistics.median(switches[name]):>11.2f}")


if __name__ == "__main__":
    main()
