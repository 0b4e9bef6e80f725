"""`BoundedMap`: a dict for per-user and per-chat state that cannot grow without end.

Maps keyed by who wrote (cooldowns, pacing per chat, caches per server) would otherwise keep one
entry for everyone ever seen.  This one holds at most `max_size` entries, dropping the least recently
written first, and with `ttl_s` forgets an entry that long after it was written: state that only
matters for a while (a cooldown, a flood wait) is gone once it no longer matters.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, MutableMapping
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class BoundedMap(MutableMapping[K, V], Generic[K, V]):
    """At most `max_size` entries, each forgotten `ttl_s` after it was last written (if given).

    Entries stay in order of writing, so both limits drop from the front.  Not thread-safe: use it
    from the event loop thread only."""

    def __init__(self, max_size: int, ttl_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1 (got {max_size})")
        self.max_size = max_size
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __getitem__(self, key: K) -> V:
        written, value = self._data[key]
        if self._expired(written, self._clock()):
            del self._data[key]
            raise KeyError(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        self._data[key] = (self._clock(), value)
        self._data.move_to_end(key)
        self._prune()

    def __delitem__(self, key: K) -> None:
        del self._data[key]

    def __iter__(self) -> Iterator[K]:
        self._prune()
        return iter(list(self._data))

    def __len__(self) -> int:
        self._prune()
        return len(self._data)

    def __repr__(self) -> str:
        return f"BoundedMap(max_size={self.max_size}, ttl_s={self.ttl_s}, entries={len(self)})"

    def _expired(self, written: float, now: float) -> bool:
        return self.ttl_s is not None and now - written >= self.ttl_s

    def _prune(self) -> None:
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)
        if self.ttl_s is None:
            return
        now = self._clock()
        while self._data and self._expired(next(iter(self._data.values()))[0], now):
            self._data.popitem(last=False)
