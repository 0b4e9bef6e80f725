"""Prompt embeddings of recent prompts, kept on the CPU.

Reroll, upscale and a batch's retries draw the same words again.  Encoding them again runs the
4B-parameter text encoder, and under offload (the 6-12 GB cards) first moves its 7.5 GB onto the
GPU: seconds per job for nothing.  The embeddings are small (a few thousand numbers per token, about
half a megabyte for a long prompt), so a few dozen recent ones cost a few tens of megabytes of RAM.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

Embeds = tuple[list[torch.Tensor], list[torch.Tensor]]  # (prompt, negative) as encode_prompt returns them
Key = tuple  # (prompt, negative prompt, guidance on, dtype)


MAX_BYTES = 64 * 1024**2


class EmbeddingCache:
    def __init__(self, size: int = 64, max_bytes: int = MAX_BYTES) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._entries: OrderedDict[Key, Embeds] = OrderedDict()
        self._bytes: dict[Key, int] = {}
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return sum(self._bytes.values())

    def get(self, key: Key, device: torch.device) -> Embeds | None:
        """Copies on `device` (the pipeline may not keep its inputs untouched), or None."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return tuple([t.to(device, copy=True) for t in tensors] for tensors in entry)

    def put(self, key: Key, embeds: Embeds) -> None:
        """Keep a copy on the CPU, unless it holds NaN or inf (never hand out a bad encoding twice)."""
        tensors = [t for part in embeds for t in part]
        if not all(torch.isfinite(t).all() for t in tensors):
            return
        self._entries[key] = tuple([t.detach().to("cpu", copy=True) for t in part] for part in embeds)
        self._bytes[key] = sum(t.numel() * t.element_size() for t in tensors)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size or (len(self._entries) > 1 and self.nbytes > self._max_bytes):
            oldest, _ = self._entries.popitem(last=False)
            del self._bytes[oldest]
