"""Errors the engine raises.  Each carries a message key and its parameters, never prose for users:
the bot's message catalogue turns the key into English or Chinese."""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base class: `key` names a catalogue message, `params` fill it in."""

    key = "error.engine"

    def __init__(self, key: str | None = None, **params: Any) -> None:
        self.key = key or self.key
        self.params = params
        super().__init__(f"{self.key} {params}" if params else self.key)


class InvalidRequest(EngineError):
    """The request breaks the model profile (size, steps, cfg, prompt)."""

    key = "error.invalid"


class OutOfMemory(EngineError):
    """Every rung of the memory ladder failed; `params['fits']` is a size that would fit, if known."""

    key = "error.oom"


class BadOutput(EngineError):
    """The picture stayed non-finite or black after the safer-precision retry."""

    key = "error.bad_output"


class Cancelled(EngineError):
    """`should_stop()` said stop; raised within one denoising step."""

    key = "error.cancelled"


class ModelNotFound(EngineError):
    """The model id or directory could not be loaded (missing files, no network)."""

    key = "error.model_not_found"


class NeedsGPU(EngineError):
    """The full-size model on a machine without an accelerator."""

    key = "error.needs_gpu"


class LoraUnusable(EngineError):
    """A LoRA file passed the folder's checks but the pipeline could not load it (wrong shapes, say)."""

    key = "error.lora_bad"
