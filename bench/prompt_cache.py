"""The embedding cache: a reroll (the same words again) against a new prompt, the tiny model through
`engine.generate`, interleaved in one process.  With the tiny text encoder the saving is small; on a
GPU under offload it is the 7.5 GB text encoder's trip to the GPU (the GPU matrix's "encode s").

    python bench/prompt_cache.py [--runs 30] [--size 256] [--steps 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing

from engine.engine import Engine  # noqa: E402
from engine.request import DrawRequest  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    size = dict(width=args.size, height=args.size, steps=args.steps)

    with tempfile.TemporaryDirectory() as directory:
        engine = Engine.load(str(write_tiny_model(Path(directory) / "tiny")), device="cpu")
        engine.generate(DrawRequest("a red fox in snow", seed=0, **size))  # warm-up, and the reroll's words
        timings: dict[str, dict[str, list[float]]] = {"new words": {}, "reroll": {}}
        for run in range(args.runs):
            for kind, words in (("new words", f"a red fox in snow, take {run}"), ("reroll", "a red fox in snow")):
                result = engine.generate(DrawRequest(words, seed=run + 1, **size))
                assert result.prompt_cached is (kind == "reroll")
                for phase in ("encode", "total"):
                    timings[kind].setdefault(phase, []).append(result.timings[phase] * 1000)

    print(f"prompt cache, tiny Z-Image, {args.size}x{args.size}, {args.steps} steps, {args.runs} interleaved runs, CPU")
    print(f"{'job':<12}{'encode ms':>11}{'total ms':>10}")
    medians = {}
    for kind, phases in timings.items():
        medians[kind] = {phase: statistics.median(values) for phase, values in phases.items()}
        print(f"{kind:<12}{medians[kind]['encode']:>11.2f}{medians[kind]['total']:>10.1f}")
    print(f"reroll/new words, total: {medians['reroll']['total'] / medians['new words']['total']:.3f}")


if __name__ == "__main__":
    main()
