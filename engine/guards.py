"""Guards around a run: per-step cancel and NaN checks, decoded-image checks, OOM recognition and
the fp16 overflow clamp for cards without real bf16."""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.errors import Cancelled

FP16_LIMIT = 65000.0
BLACK_LEVEL = 0.02  # decoded pixel values live in [-1, 1]; this is below 1% brightness


class NonFiniteOutput(Exception):
    """Latents or pixels went NaN/inf (or the picture came out black); `stage` says where."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        super().__init__(stage)


class Progress:
    """Step reports that never go backwards: after a retry, or a batch that fell back to one call
    per picture, nothing is reported until the run passes the furthest point already reported."""

    def __init__(self, on_step: Callable[[int, int], None] | None) -> None:
        self._on_step = on_step
        self._reached = 0.0

    def report(self, step: int, total: int) -> None:
        if self._on_step and step / total > self._reached:
            self._reached = step / total
            self._on_step(step, total)

    def for_picture(self, index: int, count: int) -> Callable[[int, int], None]:
        """The step callback of picture `index` of `count` drawn one call each: steps * count in all."""
        return lambda step, steps: self.report(index * steps + step, count * steps)


class StepWatch:
    """The `callback_on_step_end` the engine hands to diffusers."""

    def __init__(self, pipe, on_step: Callable[[int, int], None] | None, should_stop: Callable[[], bool] | None):
        self._pipe = pipe
        self._on_step = on_step
        self._should_stop = should_stop

    def __call__(self, pipe, index: int, timestep, callback_kwargs: dict) -> dict:
        if self._should_stop and self._should_stop():
            raise Cancelled()
        # One reduction and one sync per step: cheap next to a transformer forward.
        if not bool(torch.isfinite(callback_kwargs["latents"]).all()):
            raise NonFiniteOutput("latents")
        if self._on_step:
            self._on_step(index + 1, self._pipe.num_timesteps)
        return callback_kwargs


def check_decoded(pixels: torch.Tensor) -> None:
    """Refuse NaN/inf pixels and all-black pictures before anyone sees them."""
    if not bool(torch.isfinite(pixels).all()):
        raise NonFiniteOutput("pixels")
    brightest = (pixels.float().clamp(-1, 1) + 1) / 2
    if float(brightest.amax()) < BLACK_LEVEL:
        raise NonFiniteOutput("black")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, or the CPU allocator failing (a RuntimeError with its own wording)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc).lower()


def _clamp_output(module, inputs, output):
    if isinstance(output, torch.Tensor) and output.dtype == torch.float16:
        return torch.nan_to_num(output, nan=0.0, posinf=FP16_LIMIT, neginf=-FP16_LIMIT).clamp_(-FP16_LIMIT, FP16_LIMIT)
    return output


def _clamp_first_input(module, args):
    return (_clamp_output(module, args, args[0]), *args[1:])


def _overflows_in_fp16(name: str, module: torch.nn.Module) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    is_block = type(module).__name__ == "ZImageTransformerBlock"
    return is_block or leaf in ("feed_forward", "attention") or name.startswith("all_final_layer.")


def install_fp16_clamp(transformer: torch.nn.Module) -> list:
    """Clamp where the Z-Image DiT overflows in fp16: the SwiGLU product going into `w2` (clamped
    before the projection, or inf - inf turns into NaN), the attention output, whole blocks and the
    final layer.  Upstream diffusers has no clamp; without it pre-Ampere cards decode NaN latents
    to black.  Returns the hook handles so a later plan can remove them.
    """
    handles = []
    for name, module in transformer.named_modules():
        if name.endswith("feed_forward.w2"):
            handles.append(module.register_forward_pre_hook(_clamp_first_input))
        elif _overflows_in_fp16(name, module):
            handles.append(module.register_forward_hook(_clamp_output))
    return handles
