"""The small-GPU matrix: the full-size Z-Image-Turbo architecture (random weights, built from its
config by `engine/full_size.py`: no download; speed and memory do not depend on the weight values)
at 512/768/1024/1536 squares under simulated VRAM budgets, each through the planner, plus one batch
of `--batch` pictures at 1024 per budget.

    python bench/gpu_matrix.py [--budgets 0,6,8,12,16,24] [--sizes 512,768,1024,1536] [--steps 8]
                               [--batch 4] [--markdown FILE] [--deadline SECONDS] [--ram GB] [--tiny]
                               [--recipes none,int8,int4] [--model-dir DIR]

Budget 0 = unlimited; it always runs first, in this process, as the baseline of every ratio.  A
budget is enforced with torch.cuda.set_per_process_memory_fraction and reported to the planner as
the free memory.  Needs a CUDA GPU and ~40 GB of system RAM.  `--deadline` stops starting cells
after that many seconds (a device call has a hard limit; the rows so far are already written).
`--ram 24` has the planner believe the machine has 24 GB of RAM and no swap, so that it picks group
offload's low-RAM variant (pinning layer by layer), whose speed is otherwise unmeasured.
`--recipes` adds rows for quantized weights (engine/quantize.py) after the model's own: the model is
written to `--model-dir` in the hub layout (~20 GB of disk, once), quantized once next to it and
loaded through `Engine.load` as a bot start does; "x unl." stays the ratio to unlimited bf16.
`--tiny` runs the tiny test model instead (on the CPU when there is no GPU, budgets then not
enforced): a rehearsal of this script, which `tests/test_full_size.py` runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
import time
import traceback
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from engine.device import probe_device  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.errors import EngineError  # noqa: E402
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest  # noqa: E402

COLUMNS = [
    "budget",
    "size",
    "n",
    "plan",
    "est. GB",
    "peak GB",
    "reserved GB",
    "s/img",
    "x unl.",
    "encode s",
    "ok",
    "notes",
]


@dataclasses.dataclass
class Cell:
    budget: float
    side: int
    count: int
    recipe: str = "none"


class Report:
    """Prints each row as it comes and appends it to the markdown file at once, so a run killed at
    its time limit still leaves every finished row behind."""

    def __init__(self, markdown: str | None, header: str) -> None:
        self.path = Path(markdown) if markdown else None
        print(header)
        print("  ".join(COLUMNS))
        if self.path:
            with self.path.open("a") as file:
                file.write(f"\n{header}\n\n| {' | '.join(COLUMNS)} |\n|{'---|' * len(COLUMNS)}\n")

    def unmeasured(self, cell: Cell, ok: str, note: str) -> None:
        """A cell that has no figures: skipped, failed or crashed, and why."""
        self.row([budget_label(cell.budget), str(cell.side), str(cell.count), "-", *[""] * 6, ok, note])

    def row(self, values: list[str]) -> None:
        print("  ".join(values), flush=True)
        if self.path:
            with self.path.open("a") as file:
                file.write(f"| {' | '.join(values)} |\n")


def budget_label(budget: float) -> str:
    return f"{budget:g} GB" if budget else "unlimited"


def build_engine(tiny: bool, device: str, budget_holder: dict, recipe: str = "none", model_dir: Path | None = None):
    """The engine for one recipe: the model's own weights built in memory; a quantized recipe loaded
    from the model written to `model_dir` (its quantized copy beside it), as `easel run` would."""
    if recipe != "none":
        from engine.quantize import WeightsWanted

        model_dir = Path(model_dir or "/tmp/easel-full-size")
        if tiny:
            from engine.tiny import write_tiny_model

            if not (model_dir / "model_index.json").is_file():
                write_tiny_model(model_dir)
        else:
            from bench.quantized_ram import build

            build(model_dir)
        cache = model_dir.parent / f"{model_dir.name}-quantized"
        engine = Engine.load(str(model_dir), device=device, allow_cpu=True, weights=WeightsWanted(recipe, None, cache))
        engine.model = f"{'tiny-z-image' if tiny else 'Z-Image-Turbo'} (random weights, {recipe})"
        engine._probe = budget_probe(budget_holder)
        return engine
    if tiny:
        from engine.tiny import build_pipeline

        pipeline, name, profile = build_pipeline(), "tiny-z-image (random weights)", TINY
    else:
        from engine.full_size import full_size_pipeline

        pipeline, name, profile = full_size_pipeline(), "Z-Image-Turbo (random weights)", Z_IMAGE_TURBO
    return Engine(pipeline, name, profile, device, probe=budget_probe(budget_holder))


def budget_probe(budget_holder: dict):
    """The device as the planner must see it under the current cell's budget."""

    def probe(device: str):
        facts = probe_device(device)
        if budget_holder.get("ram_gb"):  # a smaller machine's RAM: the planner's low-RAM choices
            facts = dataclasses.replace(facts, system_ram_gb=budget_holder["ram_gb"], swap_gb=0.0)
        if budget_holder["gb"] and facts.is_gpu:
            # Free as the card would report it: the budget less what this process already holds (the
            # engine adds its own reserved memory back, as it does with a real reading).
            free = budget_holder["gb"] - 0.3 - torch.cuda.memory_reserved() / 1024**3
            return dataclasses.replace(facts, free_vram_gb=free, total_vram_gb=budget_holder["gb"])
        return facts

    return probe


def cells(budgets: list[float], sizes: list[int], batch: int, recipes: list[str] | None = None) -> list[Cell]:
    """Unlimited first (the baseline), then each budget: every size, then the batch at 1024 (or the
    largest size below it); then the same budgets for each quantized recipe."""
    ordered = [0.0] + [b for b in budgets if b]
    batch_side = max([s for s in sizes if s <= 1024] or [min(sizes)])
    out = []
    for recipe in ["none", *[r for r in recipes or [] if r != "none"]]:
        for budget in ordered:
            out += [Cell(budget, side, 1, recipe) for side in sizes]
            if batch > 1:
                out.append(Cell(budget, batch_side, batch, recipe))
    return out


def measure(engine: Engine, cell: Cell, steps: int) -> tuple[object, float | None, list[str]]:
    """The measured run after a one-step warm-up (placement, kernels, allocator; an OOM there teaches
    the engine the rung to start on, as a first job would); its notes say what the warm-up met."""
    # Words of its own per cell and per run: every measured job encodes its prompt afresh, as a new
    # /draw does (a reroll reuses the embeddings and saves the "encode s" column).
    words = f"a lighthouse at dusk, {cell.budget:g} {cell.side} {cell.count}"
    request = DrawRequest(words, width=cell.side, height=cell.side, steps=steps, seed=1, count=cell.count)
    warm_up = engine.generate(dataclasses.replace(request, prompt=f"{words}, warm-up", steps=1, count=1))
    notes = [f"warm-up: {note}" for note in warm_up.fallbacks + warm_up.retries]
    on_gpu = engine.device.startswith("cuda")
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    result = engine.generate(request)
    reserved = torch.cuda.max_memory_reserved() / 1024**3 if on_gpu else None
    if next(engine.pipeline.transformer.parameters()).is_pinned():
        notes.append("weights pinned")  # left so by group offload: sequential offload then copies faster
    return result, reserved, notes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default="0,6,8,12,16,24")
    parser.add_argument("--sizes", default="512,768,1024,1536")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--markdown", default=None)
    parser.add_argument("--deadline", type=float, default=0.0)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--ram", type=float, default=0.0, help="pretend this much system RAM (GB), no swap")
    parser.add_argument("--recipes", default="none", help="also quantized weights: none,int8,int4")
    parser.add_argument("--model-dir", type=Path, default=None, help="where quantized recipes' model is written")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.tiny:
        sys.exit("gpu_matrix needs a CUDA GPU (--tiny rehearses it on the CPU)")
    device = "cuda" if on_gpu else "cpu"
    real = probe_device(device)
    budget_holder = {"gb": 0.0, "ram_gb": args.ram}
    engines = {"none": build_engine(args.tiny, device, budget_holder)}
    engine = engines["none"]
    import diffusers

    header = (
        f"{engine.model} on {real.name}"
        + (f" ({real.total_vram_gb:.0f} GB)" if on_gpu else "")
        + f", torch {torch.__version__}, diffusers {diffusers.__version__}, {args.steps} steps, "
        f"{datetime.date.today().isoformat()}; built in {time.perf_counter() - started:.0f} s"
        + (f"; the planner told of {args.ram:g} GB RAM, no swap" if args.ram else "")
    )
    report = Report(args.markdown, header)
    unlimited: dict[tuple[int, int], float] = {}
    placements: dict[tuple[str, float, int], str] = {}  # (recipe, budget, side) -> the single picture's placement
    budgets, sizes = [float(b) for b in args.budgets.split(",")], [int(s) for s in args.sizes.split(",")]
    for cell in cells(budgets, sizes, args.batch, args.recipes.split(",")):
        label = budget_label(cell.budget) + ("" if cell.recipe == "none" else f" {cell.recipe}")
        if args.deadline and time.perf_counter() - started > args.deadline:
            report.unmeasured(cell, "skipped", "deadline")
            continue
        budget_holder["gb"] = cell.budget
        if on_gpu:
            torch.cuda.empty_cache()
            fraction = min(1.0, cell.budget / real.total_vram_gb) if cell.budget else 1.0
            torch.cuda.set_per_process_memory_fraction(fraction)
        if cell.count > 1 and placements.get((cell.recipe, cell.budget, cell.side)) == "sequential_offload":
            # One call per picture there: n times the single row, minutes of a device call's ten.
            report.unmeasured(cell, "skipped", "sequential")
            continue
        try:
            if cell.recipe not in engines:
                engines.pop("none", None)  # the bf16 pipeline's RAM back before loading the next
                engines[cell.recipe] = build_engine(args.tiny, device, budget_holder, cell.recipe, args.model_dir)
            result, reserved, notes = measure(engines[cell.recipe], cell, args.steps)
        except EngineError as error:
            report.unmeasured(cell, "failed", error.key)
            continue
        except Exception as error:  # one broken cell must not lose the rest of the matrix
            traceback.print_exc()
            report.unmeasured(cell, "crashed", type(error).__name__)
            continue
        if cell.count == 1:
            placements[(cell.recipe, cell.budget, cell.side)] = result.plan.placement.value
        seconds = result.timings["total"] / cell.count
        key = (cell.side, cell.count)
        if not cell.budget and cell.recipe == "none":
            unlimited[key] = seconds
        ratio = f"{seconds / unlimited[key]:.2f}" if key in unlimited else "-"
        # The engine refuses non-finite or black output (it retries once in a safer precision).
        notes = [*notes, *result.fallbacks, *result.retries]
        if cell.count > 1:
            notes.append("one call" if result.batched else "one call per picture")
        report.row(
            [
                label,
                str(cell.side),
                str(cell.count),
                result.plan.describe().split(" (~")[0],
                f"{result.plan.estimated_peak_gb:.1f}",
                f"{result.peak_memory_gb:.2f}" if result.peak_memory_gb is not None else "-",
                f"{reserved:.2f}" if reserved is not None else "-",
                f"{seconds:.2f}",
                ratio,
                f"{result.timings.get('encode', 0.0):.3f}",
                "retried" if result.retries else "yes",
                "; ".join(notes),
            ]
        )
    if on_gpu:
        torch.cuda.set_per_process_memory_fraction(1.0)


if __name__ == "__main__":
    main()
