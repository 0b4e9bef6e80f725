"""Helpers for tests on the tiny real pipeline: pictures as arrays, and faults injected into its transformer."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@contextlib.contextmanager
def transformer_fault(
    engine, *, at_call: int, fault: str, times: int = 1, min_batch: int = 1, picture: int | None = None
):
    """Inject a fault into the real transformer's k-th forward, `times` times over.  `min_batch`
    fires only on forwards carrying at least that many pictures; `picture` turns only that picture
    of the batch to NaN."""
    calls = {"n": 0, "fired": 0}

    def armed(args) -> bool:
        return calls["n"] >= at_call and calls["fired"] < times and len(args[0]) >= min_batch

    def pre_hook(module, args, kwargs):
        calls["n"] += 1
        if fault == "oom" and armed(args):
            calls["fired"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")

    def post_hook(module, args, kwargs, output):
        if fault == "nan" and armed(args):
            calls["fired"] += 1
            outputs = output[0]
            return ([torch.full_like(t, float("nan")) if picture in (None, i) else t for i, t in enumerate(outputs)],)
        return output

    transformer = engine.pipeline.transformer
    handles = [
        transformer.register_forward_pre_hook(pre_hook, with_kwargs=True),
        transformer.register_forward_hook(post_hook, with_kwargs=True),
    ]
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()
