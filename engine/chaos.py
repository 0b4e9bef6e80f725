"""`--chaos`: seed variety for a model whose seeds look alike.

Z-Image-Turbo draws nearly the same composition from every seed of one prompt (Tongyi-MAI/Z-Image
#16, #27).  The answer InvokeAI (PR #8753) and ComfyUI's SeedVarianceEnhancer give: add seeded noise
to part of the prompt's embedding for the first steps, where the composition is decided, then hand the
model the clean embedding so the details still follow the words.  The noise is a function of the
picture's own seed, so a picture is redrawn exactly from its Params; chaos 0 never gets here.
"""

from __future__ import annotations

import math

import torch

NOISY_SHARE = 0.5  # of the steps see the noisy embedding; the rest the clean one
MASKED_SHARE = 0.5  # of the embedding's values get noise
SALT = 0x5EED_C4A0  # the noise must not be the same stream as the picture's starting latents


def noisy_embeds(clean: torch.Tensor, seed: int, chaos: int) -> torch.Tensor:
    """`clean` (tokens x features) plus noise drawn from `seed`: at chaos 100 as strong as the
    embedding's own spread, on about half of its values."""
    generator = torch.Generator("cpu").manual_seed((seed ^ SALT) & 0xFFFF_FFFF)
    noise = torch.randn(clean.shape, generator=generator, dtype=torch.float32)
    mask = torch.rand(clean.shape, generator=generator) < MASKED_SHARE
    values = clean.detach().float()
    scale = chaos / 100 * float(values.std())
    noisy = values + (noise * mask).to(values.device) * scale
    return noisy.to(clean.dtype)


def per_picture(clean: list[torch.Tensor], seeds: list[int], chaos: int) -> list[torch.Tensor]:
    """One noisy copy of the (single) prompt's embedding per picture, each from that picture's seed."""
    return [noisy_embeds(clean[0], seed, chaos) for seed in seeds]


class CleanLater:
    """A step callback around the engine's StepWatch: after the first NOISY_SHARE of the steps
    (counted as the pipeline runs them: img2img runs fewer), the transformer sees `clean` again."""

    def __init__(self, watch, clean: list[torch.Tensor]) -> None:
        self._watch = watch
        self._clean = clean

    def __call__(self, pipe, index: int, timestep, callback_kwargs: dict) -> dict:
        callback_kwargs = self._watch(pipe, index, timestep, callback_kwargs)
        if index + 1 >= math.ceil(pipe.num_timesteps * NOISY_SHARE):
            callback_kwargs["prompt_embeds"] = self._clean
        return callback_kwargs
