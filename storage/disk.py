"""The disk guard (EASEL_MIN_FREE_GB): is there room for the next pictures and database pages?

Below the threshold new jobs are refused; what was accepted still runs (a picture that then cannot
be saved fails cleanly and is refunded).  The reading is cached for a few seconds so the intake can
ask on every job, and a change of state is logged once, not on every refusal.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

GB = 1e9
CACHE_S = 5.0


class DiskGuard:
    def __init__(
        self,
        path: Path,
        min_free_gb: float,
        measure: Callable[[Path], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.min_free_gb = min_free_gb
        self._measure = measure or _free_gb
        self._clock = clock
        self._read_at = float("-inf")
        self._free = float("inf")
        self.low_since: float | None = None  # clock time the disk went low, None while it is fine
        # Called once per edge with (low, free GB): the disk went low, or space came back.
        self.on_change: Callable[[bool, float], None] | None = None

    def free_gb(self) -> float:
        """Free space where the data lives, at most CACHE_S old."""
        now = self._clock()
        if now - self._read_at >= CACHE_S:
            self._free = self._measure(self.path)
            self._read_at = now
        return self._free

    def forget(self) -> None:
        """Drop the cached reading: the next question measures again."""
        self._read_at = float("-inf")

    def low(self) -> bool:
        """True while the free space is under the guard (never, with the guard at 0)."""
        if self.min_free_gb <= 0:
            return False
        free = self.free_gb()
        is_low = free < self.min_free_gb
        if is_low and self.low_since is None:
            self.low_since = self._clock()
            log.error(
                "disk low: %.2f GB free under %s, guard %.2f GB: new jobs are refused until space returns",
                free,
                self.path,
                self.min_free_gb,
            )
            self._changed(True, free)
        elif not is_low and self.low_since is not None:
            self.low_since = None
            log.warning("disk space back: %.2f GB free under %s; taking jobs again", free, self.path)
            self._changed(False, free)
        return is_low

    def _changed(self, low: bool, free: float) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(low, free)
        except Exception:  # telling someone must never stop the guard from answering
            log.warning("disk guard: the change callback failed", exc_info=True)


def _free_gb(path: Path) -> float:
    """Free GB on the file system holding `path` (its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / GB
