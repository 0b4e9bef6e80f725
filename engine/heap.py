"""Give freed memory back to the system after each job.

glibc's malloc keeps what Python, SQLite and torch free in per-thread arenas and returns it to the
system only from the top of each heap. A bot that draws for months, with the loop, the database and
the GPU thread all allocating, slowly holds on to more and more freed pages: RSS grows although
nothing is leaked (bench/memory_growth.py, 10,000 users: docs/PERFORMANCE.md). `malloc_trim(0)`
hands every arena's free pages back. It takes about a millisecond, far below one picture's time.
Elsewhere (macOS, musl) there is nothing to call, and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)


def _glibc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_trim = _glibc_trim()


def release_freed_memory() -> bool:
    """Return free heap pages to the system; True when the allocator could (glibc only)."""
    if _trim is None:
        return False
    try:
        return bool(_trim(0))
    except OSError:  # never let housekeeping fail a job
        log.debug("malloc_trim failed", exc_info=True)
        return False
