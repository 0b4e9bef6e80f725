"""easel's engine: Z-Image-Turbo through diffusers, memory-planned and guarded.  Synchronous; no
asyncio, no chat library, no storage."""

import logging

from engine.errors import BadOutput, Cancelled, EngineError, InvalidRequest, ModelNotFound, NeedsGPU, OutOfMemory
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest, Kind, ModelProfile, profile_for, seed_for, validate

# torchao (the int8 backend, engine/quantize.py) announces on every import that its CUDA-only kernels
# and pickle-format classes are missing: irrelevant to safetensors weights, and alarming in a log.
for _name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
    logging.getLogger(_name).setLevel(logging.ERROR)


__all__ = [
    "TINY",
    "Z_IMAGE_TURBO",
    "BadOutput",
    "Cancelled",
    "DrawRequest",
    "EngineError",
    "InvalidRequest",
    "Kind",
    "ModelNotFound",
    "ModelProfile",
    "NeedsGPU",
    "OutOfMemory",
    "profile_for",
    "seed_for",
    "validate",
]
