"""The small-GPU matrix: the full-size Z-Image-Turbo architecture (random weights, built from its
config: no download; speed and memory do not depend on the weight values) and a same-size Qwen3-4B
text encoder, at 512/768/1024/1536 squares, under simulated VRAM budgets, each through the planner.

    python bench/gpu_matrix.py [--budgets 6,8,12,16,24,0] [--sizes 512,768,1024,1536] [--steps 8]

Budget 0 = unlimited.  A budget is enforced with torch.cuda.set_per_process_memory_fraction and
reported to the planner as the free memory.  Needs a CUDA GPU and ~40 GB of system RAM.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch  # noqa: E402

from engine.device import probe_device  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.errors import EngineError  # noqa: E402
from engine.request import Z_IMAGE_TURBO, DrawRequest  # noqa: E402
from engine.tiny import build_tokenizer  # noqa: E402

GB = 1024**3


def random_(module: torch.nn.Module) -> torch.nn.Module:
    """Materialise a meta-device module on the CPU in bf16 with small random weights (fast init)."""
    module = module.to(torch.bfloat16).to_empty(device="cpu")  # bf16 on meta first: no fp32 copy
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.02)
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.zero_()
    return module


def full_size_pipeline():
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    with torch.device("meta"):
        transformer = ZImageTransformer2DModel()  # the defaults are the 6B Turbo configuration
        text_encoder = Qwen3Model(
            Qwen3Config(
                vocab_size=151936,
                hidden_size=2560,
                intermediate_size=9728,
                num_hidden_layers=36,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=128,
                max_position_embeddings=40960,
                rope_theta=1000000.0,
            )
        )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[128, 256, 512, 512],
        layers_per_block=2,
        latent_channels=16,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        use_quant_conv=False,
        use_post_quant_conv=False,
    ).to(torch.bfloat16)
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=random_(text_encoder),
        tokenizer=build_tokenizer(),
        transformer=random_(transformer),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budgets", default="0,24,16,12,8,6")
    parser.add_argument("--sizes", default="512,768,1024,1536")
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_matrix needs a CUDA GPU")
    budgets = [float(b) for b in args.budgets.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]

    real = probe_device("cuda")
    started = time.perf_counter()
    pipeline = full_size_pipeline()
    print(f"built the full-size pipeline in {time.perf_counter() - started:.0f}s on {real.name}")
    budget_holder = {"gb": 0.0}

    def probe(device: str):
        facts = probe_device(device)
        if budget_holder["gb"]:
            return dataclasses.replace(facts, free_vram_gb=budget_holder["gb"] - 0.3, total_vram_gb=budget_holder["gb"])
        return facts

    with tempfile.TemporaryDirectory():
        engine = Engine(pipeline, "Z-Image-Turbo (random weights)", Z_IMAGE_TURBO, "cuda", probe=probe)
        unlimited: dict[int, float] = {}
        print(f"{'budget':>7}{'size':>6}  {'plan':<44}{'peak GB':>8}{'s/img':>7}{'x unl.':>7}  ok")
        for budget in budgets:
            budget_holder["gb"] = budget
            fraction = min(1.0, budget / real.total_vram_gb) if budget else 1.0
            torch.cuda.set_per_process_memory_fraction(fraction)
            for side in sizes:
                request = DrawRequest("a lighthouse at dusk", width=side, height=side, steps=args.steps, seed=1)
                try:
                    engine.generate(dataclasses.replace(request, steps=1))  # warm-up: placement, kernels
                    result = engine.generate(request)
                except EngineError as error:
                    print(f"{budget or 'unl.':>7}{side:>6}  {'-':<44}{'':>8}{'':>7}{'':>7}  {error.key}")
                    continue
                seconds = result.timings["total"]
                if not budget:
                    unlimited[side] = seconds
                ratio = seconds / unlimited[side] if side in unlimited else float("nan")
                # The engine refuses NaN/black output; a picture here is finite unless it said it retried.
                notes = "; ".join(result.fallbacks + result.retries)
                print(
                    f"{budget or 'unl.':>7}{side:>6}  {result.plan.describe():<44}{result.peak_memory_gb:>8.2f}"
                    f"{seconds:>7.2f}{ratio:>7.2f}  {'retried' if result.retries else 'yes'} {notes}"
                )
        torch.cuda.set_per_process_memory_fraction(1.0)


if __name__ == "__main__":
    main()
