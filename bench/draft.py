"""Draft and Enhance: a `--draft` picture vs a full-size one, then Enhance (image to image at full
size from the draft), and the cost of `--chaos`; the tiny model through `engine.generate`,
interleaved in one process.

    python bench/draft.py [--runs 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])  # run from a checkout without installing

from bot.language.commands import parse_draw_args  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.request import DrawRequest, Kind  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as directory:
        engine = Engine.load(str(write_tiny_model(Path(directory) / "tiny")), device="cpu")
        profile = engine.profile
        full = parse_draw_args("a red fox in snow --seed 1", profile)
        draft = parse_draw_args("a red fox in snow --seed 1 --draft", profile)
        source = Path(directory) / "draft.png"
        engine.generate(draft).image.save(source)
        enhance = DrawRequest(
            "a red fox in snow", seed=1, kind=Kind.VARIATION, source_image=str(source),
            strength=profile.enhance_strength, steps=profile.default_steps,
        )  # fmt: skip
        runs = {
            "full size": lambda: engine.generate(full),
            "draft": lambda: engine.generate(draft),
            "enhance": lambda: engine.generate(enhance),
            "full size, chaos 60": lambda: engine.generate(
                parse_draw_args("a red fox in snow --seed 1 --chaos 60", profile)
            ),
        }
        for run in list(runs.values()) * 2:  # warm-up
            run()
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.runs):
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                times[name].append((time.perf_counter() - started) * 1000)

    sizes = {"full size": full, "draft": draft, "enhance": full, "full size, chaos 60": full}
    base = statistics.median(times["full size"])
    print(f"{args.runs} interleaved runs each, tiny model, CPU")
    print("| run | size, steps | median ms | p90 ms | / full size |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        request = sizes[name]
        steps = request.steps or profile.default_steps
        width, height = request.width or profile.default_size[0], request.height or profile.default_size[1]
        p90 = statistics.quantiles(values, n=10)[-1]
        median = statistics.median(values)
        print(f"| {name} | {width}x{height}, {steps} | {median:.1f} | {p90:.1f} | {median / base:.3f} |")


if __name__ == "__main__":
    main()
