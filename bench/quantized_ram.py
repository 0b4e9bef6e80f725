"""Quantized weights at full size, on the CPU: how much RAM quantizing once and loading back take.

    python bench/quantized_ram.py --dir /tmp/z-image-full   # ~20 GB of disk for the bf16 model

Writes the full-size Z-Image-Turbo architecture with random weights (engine/full_size.py) to `--dir`
in the hub layout (component by component: never the whole model in RAM), then in a fresh process
per step: quantizes it once (the first start with EASEL_QUANTIZE=int8 or int4) and loads the
quantized pipeline back (every later start), as the engine does on a GPU machine (bf16 around the
quantized layers).  Prints each step's peak RSS, seconds and the files' size, next to what the
planner's RAM check assumes (engine/planner.py `fits_in_ram`).  Random weights: sizes and memory are
real, pictures are not, so no quality is measured here.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # run from a checkout; bench/queue.py must not shadow the stdlib


def build(folder: Path) -> None:
    """The full-size model in the hub layout, one component in RAM at a time."""
    import gc

    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

    from engine.full_size import VAE_CONFIG, full_size_modules, randomised
    from engine.tiny import build_tokenizer

    if (folder / "model_index.json").is_file():
        return
    modules = full_size_modules("meta")
    for name in ("transformer", "text_encoder"):
        started = time.perf_counter()
        module = randomised(modules.pop(name), torch.bfloat16)
        module.save_pretrained(folder / name)
        del module
        gc.collect()
        print(f"wrote {name} in {time.perf_counter() - started:.0f} s", flush=True)
    from diffusers import AutoencoderKL

    # The index and the small parts, written by a pipeline around meta-free stand-ins of the big two.
    small = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=AutoencoderKL(**VAE_CONFIG).to(torch.bfloat16),
        text_encoder=None,
        tokenizer=build_tokenizer(),
        transformer=None,
    )
    for name in ("scheduler", "vae", "tokenizer"):
        getattr(small, name).save_pretrained(folder / name)
    index = {
        "_class_name": "ZImagePipeline",
        "_diffusers_version": "0.42.1",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Qwen3Model"],
        "tokenizer": ["transformers", type(small.tokenizer).__name__],
        "transformer": ["diffusers", "ZImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


class PeakMemory:
    """Samples /proc/self/status every 50 ms: the peak of anonymous memory (what the kernel cannot
    drop: weights copied, quantized, allocated) and of all RSS (plus pages of memory-mapped
    safetensors files, which the page cache can give back under pressure)."""

    def __init__(self) -> None:
        import threading

        self.anon_gb = self.total_gb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
            anon = int(fields["RssAnon"].split()[0]) / 1024**2
            self.anon_gb = max(self.anon_gb, anon)
            self.total_gb = max(self.total_gb, int(fields["VmRSS"].split()[0]) / 1024**2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def child(step: str, folder: str, recipe: str, cache: str) -> None:
    """One step in this (fresh) process; prints a JSON line with its peak memory and seconds."""
    import torch

    from engine.quantize import Recipe, WeightsWanted, load_components, quantize_once

    memory = PeakMemory()
    started = time.perf_counter()
    if step == "quantize":
        quantize_once(Path(folder), Recipe(recipe), Path(cache), progress=False)
    else:
        from diffusers import ZImagePipeline

        weights = WeightsWanted(recipe, None, Path(cache))
        components = load_components(Path(folder), Recipe(recipe), weights, torch.bfloat16)
        pipeline = ZImagePipeline.from_pretrained(folder, dtype=torch.bfloat16, **components)
        # Weights read from safetensors stay memory-mapped until used: read every one, as placing
        # the pipeline (or the first job) does, so the figure is what a working bot holds.
        for name in ("transformer", "text_encoder", "vae"):
            for tensor in getattr(pipeline, name).state_dict().values():
                touch(tensor)
    seconds = time.perf_counter() - started
    memory.stop()
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    figures = {"seconds": seconds, "peak_gb": peak_gb, "anon_gb": memory.anon_gb}
    print(json.dumps({"step": step, "recipe": recipe, **figures}))


def touch(tensor) -> None:
    """Read every byte of a tensor (a quantized one's inner tensors too)."""
    if hasattr(tensor, "__tensor_flatten__") and type(tensor).__name__ != "Tensor":
        names, _ = tensor.__tensor_flatten__()
        for name in names:
            touch(getattr(tensor, name))
    elif tensor.numel():
        plain = tensor.as_subclass(__import__("torch").Tensor)  # a GGUFParameter's raw bytes
        plain.reshape(-1)[:: max(1, 4096 // plain.element_size())].sum()  # one number a page


def run_child(step: str, folder: Path, recipe: str, cache: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        step,
        "--dir",
        str(folder),
        "--recipe",
        recipe,
        "--cache",
        str(cache),
    ]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def size_gb(path: Path) -> float:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 1024**3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--recipes", default="int8,int4")
    parser.add_argument("--fresh", action="store_true", help="quantize again (delete earlier quantized copies)")
    parser.add_argument("--later-only", action="store_true", help="only the later start (quantized already)")
    parser.add_argument("--child", default=None)
    parser.add_argument("--recipe", default=None)
    args = parser.parse_args()
    cache = args.cache or args.dir.parent / f"{args.dir.name}-quantized"
    if args.child:
        child(args.child, str(args.dir), args.recipe, str(cache))
        return

    from engine.planner import DeviceFacts, Placement, plan_for, plan_ram_gb, quantized
    from engine.quantize import Recipe, cache_folder, parts
    from engine.request import Z_IMAGE_TURBO

    build(args.dir)
    if args.fresh:
        import shutil

        shutil.rmtree(cache, ignore_errors=True)
    print(f"bf16 model on disk: {size_gb(args.dir):.2f} GB")
    print(
        "| recipe | files GB | quantize once: peak RSS (anonymous) GB, s "
        "| later start: peak RSS (anonymous) GB, s | RAM check plans GB |"
    )
    print("|---|---|---|---|---|")
    for name in args.recipes.split(","):
        recipe = Recipe(name)
        once = {"peak_gb": 0.0, "anon_gb": 0.0, "seconds": 0.0}
        if not args.later_only:
            once = run_child("quantize", args.dir, name, cache)
        later = run_child("load", args.dir, name, cache)
        copies = [cache_folder(args.dir, cache) / name for name in parts(recipe).values()]
        files = sum(size_gb(path) if path.is_dir() else path.stat().st_size / 1024**3 for path in copies)
        # What the planner's RAM check assumes for the load (weights x 1.1) on a resident GPU plan.
        profile = quantized(Z_IMAGE_TURBO, recipe)
        card = DeviceFacts("cuda", "any", 24.0, 23.6, (8, 9), True, 64.0)
        resident = plan_for(card, Z_IMAGE_TURBO, 1024, 1024, recipe=recipe)
        planned = max(profile.model_gb * 1.1, plan_ram_gb(resident, profile))
        print(
            f"| {name} | {files:.2f} | {once['peak_gb']:.2f} ({once['anon_gb']:.2f}), {once['seconds']:.0f} | "
            f"{later['peak_gb']:.2f} ({later['anon_gb']:.2f}), {later['seconds']:.0f} | {planned:.1f} "
            f"({resident.placement.value if resident.placement is not Placement.GPU else 'gpu'}) |",
            flush=True,
        )


if __name__ == "__main__":
    main()
