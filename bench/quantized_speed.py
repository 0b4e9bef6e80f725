"""Speed of quantized weights on the CPU, with the tiny model: seconds per picture for the model's
own weights, int8 (torchao) and int4 (GGUF Q4_0), and the ratio to the model's own, in one process.

    python bench/quantized_speed.py [--runs 5] [--side 256]

Rounds alternate the recipes so that a busy machine slows each alike.  The tiny model is mostly
overhead; what a CPU pays to dequantize full-size layers is in docs/PERFORMANCE.md's notes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing

from engine.engine import Engine  # noqa: E402
from engine.quantize import WeightsWanted  # noqa: E402
from engine.request import DrawRequest  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402

RECIPES = ("none", "int8", "int4")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--side", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        model = str(write_tiny_model(Path(directory) / "tiny"))
        cache = Path(directory) / "quantized"
        engines = {
            recipe: Engine.load(model, device="cpu", weights=WeightsWanted(recipe, None, cache)) for recipe in RECIPES
        }
        request = DrawRequest("a lighthouse at dusk", width=args.side, height=args.side, seed=1)
        for engine in engines.values():
            engine.generate(request)  # warm-up
        seconds: dict[str, list[float]] = {recipe: [] for recipe in RECIPES}
        for run in range(args.runs):
            for recipe, engine in engines.items():
                started = time.perf_counter()
                engine.generate(DrawRequest(f"a lighthouse at dusk {run}", width=args.side, height=args.side, seed=1))
                seconds[recipe].append(time.perf_counter() - started)
    base = statistics.median(seconds["none"])
    print(f"tiny model, {args.side}x{args.side}, 8 steps, CPU, median of {args.runs}")
    for recipe in RECIPES:
        median = statistics.median(seconds[recipe])
        print(f"{recipe:5}  {median:.3f} s/picture  x{median / base:.2f}")


if __name__ == "__main__":
    main()
