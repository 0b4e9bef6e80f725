"""easel's engine: Z-Image-Turbo through diffusers, memory-planned and guarded.  Synchronous; no
asyncio, no chat library, no storage."""

from engine.errors import BadOutput, Cancelled, EngineError, InvalidRequest, ModelNotFound, NeedsGPU, OutOfMemory
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest, Kind, ModelProfile, profile_for, seed_for, validate

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
