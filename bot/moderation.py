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
from bot.watched import WatchedFile
from bot.wordlist import Prepared, WordList, term_key
from storage.moderation import ModerationStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    blocked: str | None  # the entry a prompt tripped (for logs and admins, never echoed to the user)
    sensitive: bool
    in_prompt: bool = False  # the prompt itself tripped the block list, not only the negative


def scope_for(caller: Caller) -> str:
    """Whose lists apply: a Discord server's, else the chat's (a Telegram group, a DM...)."""
    if caller.platform == "discord" and caller.guild_id:
        return f"discord:guild:{caller.guild_id}"
    return f"{caller.platform}:chat:{caller.chat_id or caller.user_id}"


class _FileList:
    """The terms from the settings plus a word list file, so admins edit the file without a restart."""

    def __init__(self, path: Path | None, inline: list[str]) -> None:
        self.file = WatchedFile(path)
        self.inline = list(inline)
        self.words = WordList(self.inline)

    def current(self) -> WordList:
        path = self.file.path
        try:
            changed, text = self.file.changed()
        except (OSError, UnicodeDecodeError) as error:
            log.error("word list %s unreadable (%s); keeping the previous terms", path, error)
            return self.words
        if not changed:
            return self.words
        if text is None:
            log.warning("word list %s is gone; keeping the terms from the settings only", path)
            self.words = WordList(self.inline)
            return self.words
        lines = text.splitlines()
        terms = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        self.words = WordList([*self.inline, *terms])
        log.info("word list %s: %d terms", path, len(terms))
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
        self._versions: dict[tuple[str, str], int] = {}  # bumped by every edit of a scope's list
        self._last_drawing: dict[int, float] = {}  # user id -> when their last drawing was accepted

    # -- word lists -------------------------------------------------------------------------------

    async def judge(self, scope: str, prompt: str, negative: str = "") -> Verdict:
        """Block lists see the prompt and the negative; the sensitive list only what the user asks
        to see (words to leave out do not make a picture sensitive)."""
        texts = [Prepared.of(prompt), *([Prepared.of(negative)] if negative else [])]
        for index, text in enumerate(texts):
            blocked = await self._find(scope, "blocked", text)
            if blocked is not None:
                return Verdict(blocked, False, in_prompt=index == 0)
        return Verdict(None, await self._find(scope, "sensitive", texts[0]) is not None)

    async def blocks(self, scope: str, text: str) -> bool:
        """Whether any block list trips on `text` (e.g. a command that failed to parse)."""
        return await self._find(scope, "blocked", Prepared.of(text)) is not None

    async def _find(self, scope: str, list_name: str, text: Prepared) -> str | None:
        """The entry of the settings' list, or else the scope's own, that `text` trips."""
        found = self._configured[list_name].current().find(text)
        return found if found is not None else (await self._list(scope, list_name)).find(text)

    async def _list(self, scope: str, list_name: str) -> WordList:
        key = (scope, list_name)
        if key not in self._scoped:
            version = self._versions.get(key, 0)
            words = WordList(await self.store.terms(scope, list_name))
            if self._versions.get(key, 0) != version:  # edited while we read: do not cache the old list
                return words
            self._scoped[key] = words
        return self._scoped[key]

    def _edited(self, scope: str, list_name: str) -> None:
        key = (scope, list_name)
        self._versions[key] = self._versions.get(key, 0) + 1
        self._scoped.pop(key, None)

    async def add(self, scope: str, list_name: str, term: str, added_by: int) -> bool:
        added = await self.store.add_term(scope, list_name, term, added_by)
        self._edited(scope, list_name)
        return added

    async def remove(self, scope: str, list_name: str, term: str) -> list[str]:
        """Remove every stored spelling of the term (`Teapot` goes with `teapot`); returns them."""
        wanted = term_key(term)
        removed = []
        for stored in await self.store.terms(scope, list_name):
            if term_key(stored) == wanted and await self.store.remove_term(scope, list_name, stored):
                removed.append(stored)
        self._edited(scope, list_name)
        return removed

    async def listing(self, scope: str, list_name: str) -> tuple[list[str], int]:
        """The scope's own terms, and how many more the settings and files add everywhere."""
        return await self.store.terms(scope, list_name), len(self._configured[list_name].current().entries)

    # -- pacing -----------------------------------------------------------------------------------

    async def strike(self, user_id: int, scope: str, idempotency_key: str | None = None) -> None:
        await self.store.add_strike(user_id, scope, self.clock(), idempotency_key)

    async def limited_for(self, user_id: int, scope: str) -> float:
        """Seconds left of the automatic rate limit in one chat or server (0 when none):
        `strike_limit` strikes there within `strike_window_s` keep the user from drawing there for
        `strike_penalty_s` after the last of them.  Per scope, so one server's list cannot lock a
        member out of every other."""
        limit, window, penalty = (
            self.settings.strike_limit,
            self.settings.strike_window_s,
            self.settings.strike_penalty_s,
        )
        if limit <= 0 or penalty <= 0:
            return 0.0
        now = self.clock()
        times = await self.store.strike_times(user_id, scope, now - window - penalty)
        until = max(
            (times[i] + penalty for i in range(limit - 1, len(times)) if times[i] - times[i - limit + 1] <= window),
            default=0.0,
        )
        return max(0.0, until - now)

    async def limited_users(self) -> list[tuple[int, str, int, float]]:
        """(user id, scope, strikes, seconds left) of everyone rate-limited now, somewhere."""
        since = self.clock() - self.settings.strike_window_s - self.settings.strike_penalty_s
        limited = []
        for user_id, scope, strikes, _ in await self.store.strikes_since(since):
            left = await self.limited_for(user_id, scope)
            if left > 0:
                limited.append((user_id, scope, strikes, left))
        return limited

    def cooldown_left(self, user_id: int) -> float:
        last = self._last_drawing.get(user_id)
        if last is None or self.settings.cooldown_s <= 0:
            return 0.0
        return max(0.0, last + self.settings.cooldown_s - self.clock())

    def start_cooldown(self, user_id: int) -> tuple[float | None, float]:
        """Mark a drawing as accepted now; returns (previous mark, this mark) for `undo_cooldown`."""
        previous = self._last_drawing.get(user_id)
        self._last_drawing[user_id] = mark = self.clock()
        return previous, mark

    def undo_cooldown(self, user_id: int, marks: tuple[float | None, float]) -> None:
        """Take back a mark for a drawing that was not accepted after all, unless a later one replaced it."""
        previous, mark = marks
        if self._last_drawing.get(user_id) != mark:
            return
        if previous is None:
            self._last_drawing.pop(user_id, None)
        else:
            self._last_drawing[user_id] = previous
