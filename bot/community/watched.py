"""A file admins edit while the bot runs (word lists, style presets): read again only when it changes."""

from __future__ import annotations

from pathlib import Path


class WatchedFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[float, int] | None = None  # (mtime, size) when last read; None: not there

    def changed(self) -> tuple[bool, str | None]:
        """(whether it changed since the last call, its text: None once it is gone).  A file that
        changed but cannot be read raises OSError or UnicodeDecodeError; the next call tries again
        only after a further change."""
        if self.path is None:
            return False, None
        try:
            stat = self.path.stat()
        except OSError:
            was_there, self._stamp = self._stamp is not None, None
            return was_there, None
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._stamp:
            return False, None
        self._stamp = stamp
        return True, self.path.read_text(encoding="utf-8")
