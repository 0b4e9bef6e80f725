"""What a community server needs before it invites a drawing bot: block lists (from the settings, a
file, and per chat or server), a sensitive list whose pictures go out behind a spoiler, a cooldown
between drawings, and an automatic rate limit for whoever keeps tripping the block list."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.contract import Caller
from bot.settings import Settings
from bot.wordlist import WordList
from storage.moderation import ModerationStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    blocked: str | None  # the entry a prompt tripped (for logs and admins, never echoed to the user)
    sensitive: bool


def scope_for(caller: Caller) -> str:
    """Whose lists apply: a Discord server's, else the chat's (a Telegram group, a DM...)."""
    if caller.platform == "discord" and caller.guild_id:
        return f"discord:guild:{caller.guild_id}"
    return f"{caller.platform}:chat:{caller.chat_id or caller.user_id}"


class _FileList:
    """A word list file, read again when it changes, so admins edit it without a restart."""

    def __init__(self, path: Path | None, inline: list[str]) -> None:
        self.path = path
        self.inline = list(inline)
        self._stamp: tuple[float, int] | None = None
        self.words = WordList(self.inline)

    def current(self) -> WordList:
        if self.path is None:
            return self.words
        try:
            stat = self.path.stat()
        except OSError:
            if self._stamp is not None:
                log.warning("word list %s is gone; keeping the terms from the settings only", self.path)
                self._stamp, self.words = None, WordList(self.inline)
            return self.words
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                lines = self.path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                log.error("word list %s unreadable (%s); keeping the previous terms", self.path, error)
                return self.words
            terms = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
            self.words = WordList([*self.inline, *terms])
            log.info("word list %s: %d terms", self.path, len(terms))
        return self.words


class Moderator:
    def __init__(self, settings: Settings, store: ModerationStore, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._configured = {
            "blocked": _FileList(settings.blocked_words_file, settings.blocked_words),
            "sensitive": _FileList(settings.sensitive_words_file, settings.sensitive_words),
        }
        self._scoped: dict[tuple[str, str], WordList] = {}
        self._last_drawing: dict[int, float] = {}  # user id -> when their last drawing was accepted

    # -- word lists -------------------------------------------------------------------------------

    async def judge(self, scope: str, *texts: str) -> Verdict:
        blocked = self._configured["blocked"].current().find(*texts)
        if blocked is None:
            blocked = (await self._list(scope, "blocked")).find(*texts)
        sensitive = bool(
            self._configured["sensitive"].current().find(*texts) or (await self._list(scope, "sensitive")).find(*texts)
        )
        return Verdict(blocked, sensitive)

    async def _list(self, scope: str, list_name: str) -> WordList:
        key = (scope, list_name)
        if key not in self._scoped:
            self._scoped[key] = WordList(await self.store.terms(scope, list_name))
        return self._scoped[key]

    async def add(self, scope: str, list_name: str, term: str, added_by: int) -> bool:
        added = await self.store.add_term(scope, list_name, term, added_by)
        self._scoped.pop((scope, list_name), None)
        return added

    async def remove(self, scope: str, list_name: str, term: str) -> bool:
        removed = await self.store.remove_term(scope, list_name, term)
        self._scoped.pop((scope, list_name), None)
        return removed

    async def listing(self, scope: str, list_name: str) -> tuple[list[str], int]:
        """The scope's own terms, and how many more the settings and files add everywhere."""
        return await self.store.terms(scope, list_name), len(self._configured[list_name].current().entries)

    # -- pacing -----------------------------------------------------------------------------------

    async def strike(self, user_id: int, scope: str) -> None:
        await self.store.add_strike(user_id, scope, self.clock())

    async def limited_for(self, user_id: int) -> float:
        """Seconds left of the automatic rate limit (0 when none): `strike_limit` strikes within
        `strike_window_s` keep the user from drawing for `strike_penalty_s` after the last of them."""
        limit, window, penalty = (
            self.settings.strike_limit,
            self.settings.strike_window_s,
            self.settings.strike_penalty_s,
        )
        if limit <= 0 or penalty <= 0:
            return 0.0
        now = self.clock()
        times = await self.store.strike_times(user_id, now - window - penalty)
        until = max(
            (times[i] + penalty for i in range(limit - 1, len(times)) if times[i] - times[i - limit + 1] <= window),
            default=0.0,
        )
        return max(0.0, until - now)

    async def limited_users(self) -> list[tuple[int, int, float]]:
        """(user id, strikes in the window, seconds left) of everyone rate-limited now."""
        since = self.clock() - self.settings.strike_window_s - self.settings.strike_penalty_s
        limited = []
        for user_id, strikes, _ in await self.store.strikes_since(since):
            left = await self.limited_for(user_id)
            if left > 0:
                limited.append((user_id, strikes, left))
        return limited

    def cooldown_left(self, user_id: int) -> float:
        last = self._last_drawing.get(user_id)
        if last is None or self.settings.cooldown_s <= 0:
            return 0.0
        return max(0.0, last + self.settings.cooldown_s - self.clock())

    def start_cooldown(self, user_id: int) -> float | None:
        """Mark a drawing as accepted now; returns the previous mark, to undo with `undo_cooldown`."""
        previous = self._last_drawing.get(user_id)
        self._last_drawing[user_id] = self.clock()
        return previous

    def undo_cooldown(self, user_id: int, previous: float | None) -> None:
        if previous is None:
            self._last_drawing.pop(user_id, None)
        else:
            self._last_drawing[user_id] = previous
