"""The full-size Z-Image-Turbo architecture with random weights, built from its configuration.

For measuring speed and memory without the 20 GB download (neither depends on the weight values):
`bench/gpu_matrix.py` draws with it, and `tests/test_full_size.py` checks on the meta device (no
memory, no compute) that its sizes are the ones the planner's `ModelProfile` assumes.
"""

from __future__ import annotations

import torch

# Qwen3-4B, the text encoder Z-Image-Turbo ships (its config.json).
TEXT_ENCODER_CONFIG = dict(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=40960,
    rope_theta=1000000.0,
    tie_word_embeddings=True,  # published: the LM head is the embedding matrix (engine/rewriter.py)
)

# The Flux-style VAE Z-Image uses: four blocks, so sides stay multiples of 16.
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=16,
    sample_size=1024,  # also the tile size when tiling: diffusers' default of 32 would decode in 4-latent tiles
    scaling_factor=0.3611,
    shift_factor=0.1159,
    use_quant_conv=False,
    use_post_quant_conv=False,
)


def full_size_modules(device: str = "meta") -> dict[str, torch.nn.Module]:
    """The transformer, text encoder and VAE at full size, uninitialised on `device` (meta: free)."""
    from diffusers import AutoencoderKL, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    with torch.device(device):
        return {
            "transformer": ZImageTransformer2DModel(),  # the defaults are the 6B Turbo configuration
            "text_encoder": Qwen3Model(Qwen3Config(**TEXT_ENCODER_CONFIG)),
            "vae": AutoencoderKL(**VAE_CONFIG),
        }


def size_gb(module: torch.nn.Module, bytes_per_param: int = 2) -> float:
    """Weights in GiB at `bytes_per_param` (bf16: 2): the unit of `ModelProfile`'s sizes."""
    return sum(p.numel() for p in module.parameters()) * bytes_per_param / 1024**3


def randomised(module: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> torch.nn.Module:
    """Materialise a meta-device module on the CPU in `dtype` with small random weights: cast on
    meta first, so no fp32 copy is ever allocated.  Filled on the GPU when there is one (`normal_`
    runs on one CPU thread: ~110 s for the full model, a second or two on a GPU)."""
    fill_on = "cuda" if torch.cuda.is_available() else "cpu"
    module = module.to(dtype).to_empty(device=fill_on)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0.0, 0.02)
        for buffer in module.buffers():
            if buffer.is_floating_point():
                buffer.zero_()
    module = module.to("cpu")
    if fill_on == "cuda":
        torch.cuda.empty_cache()
    return module


def full_size_pipeline(dtype: torch.dtype = torch.bfloat16):
    """A ZImagePipeline at full size on the CPU with random weights (~20 GB of RAM in bf16)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline

    from engine.tiny import build_tokenizer

    modules = full_size_modules("meta")
    return ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=AutoencoderKL(**VAE_CONFIG).to(dtype),  # small (0.16 GB): built for real, default init
        text_encoder=randomised(modules["text_encoder"], dtype),
        tokenizer=build_tokenizer(),
        transformer=randomised(modules["transformer"], dtype),
    )
