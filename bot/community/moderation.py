"""What a community server needs before it invites a drawing bot: block lists (from the settings, a
file, and per chat or server), a sensitive list whose pictures go out behind a spoiler, a cooldown
between drawings, and an automatic rate limit for whoever keeps tripping the block list."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.community.watched import WatchedFile
from bot.community.wordlist import Prepared, WordList, term_key
from bot.contract import Caller
from bot.runtime.bounded import BoundedMap
from bot.runtime.settings import Settings
from storage.moderation import ModerationStore

log = logging.getLogger(__name__)

SCOPED_LISTS_CACHED = 1024  # chats' and servers' own word lists kept compiled
COOLDOWNS_KEPT = 100_000  # users within their cooldown (each entry also expires with it)


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


class WordListUnreadable(Exception):
    """A configured word-list file that is missing or cannot be read: the bot refuses to start
    rather than run without the list its admins set."""

    def __init__(self, variable: str, path: Path, reason: str) -> None:
        super().__init__(f"{variable} {path} cannot be read ({reason}): fix the path or unset it")
        self.variable = variable
        self.path = path


def configured_files(settings: Settings) -> list[tuple[str, Path]]:
    """(setting name, path) of every word-list file the settings name."""
    named = (
        ("EASEL_BLOCKED_WORDS_FILE", settings.blocked_words_file),
        ("EASEL_SENSITIVE_WORDS_FILE", settings.sensitive_words_file),
    )
    return [(variable, path) for variable, path in named if path is not None]


def read_terms(variable: str, path: Path) -> list[str]:
    """The terms of a word-list file, or WordListUnreadable (missing, unreadable, not UTF-8)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise WordListUnreadable(variable, path, _reason(error)) from error
    return _terms(text)


def check_files(settings: Settings) -> None:
    """Fail closed at start: every configured word-list file must be readable."""
    for variable, path in configured_files(settings):
        read_terms(variable, path)


def _terms(text: str) -> list[str]:
    lines = text.splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _reason(error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, UnicodeDecodeError):
        return "not UTF-8 text"
    return getattr(error, "strerror", None) or error.__class__.__name__


class _FileList:
    """The terms from the settings plus a word list file, so admins edit the file without a restart.

    Fails closed: a file that cannot be read at start raises WordListUnreadable; one that becomes
    unreadable or disappears later keeps the last good list (logged as an error) until it is back.
    A changed file is compiled on a worker thread, so a long list never stalls the event loop."""

    def __init__(self, variable: str, path: Path | None, inline: list[str]) -> None:
        self.variable = variable
        self.file = WatchedFile(path)
        self.inline = list(inline)
        self.words = WordList(self.inline)
        self._reloading = asyncio.Lock()
        if path is not None:
            try:
                changed, text = self.file.changed()
            except (OSError, UnicodeDecodeError) as error:
                raise WordListUnreadable(variable, path, _reason(error)) from error
            if text is None:
                raise WordListUnreadable(variable, path, "no such file")
            self.words = WordList([*self.inline, *_terms(text)])
            log.info("word list %s: %d terms", path, len(self.words.entries) - len(self.inline))

    async def current(self) -> WordList:
        path = self.file.path
        if path is None:
            return self.words
        async with self._reloading:
            try:
                changed, text = self.file.changed()
            except (OSError, UnicodeDecodeError) as error:
                log.error(
                    "%s %s unreadable (%s); KEEPING the last good list (%d terms) until it is fixed",
                    self.variable,
                    path,
                    _reason(error),
                    len(self.words.entries),
                )
                return self.words
            if not changed:
                return self.words
            if text is None:
                log.error(
                    "%s %s is gone; KEEPING the last good list (%d terms) until it is back",
                    self.variable,
                    path,
                    len(self.words.entries),
                )
                return self.words
            terms = _terms(text)
            self.words = await asyncio.to_thread(WordList, [*self.inline, *terms])
            log.info("word list %s: %d terms", path, len(terms))
        return self.words


class Moderator:
    def __init__(self, settings: Settings, store: ModerationStore, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self._configured = {
            "blocked": _FileList("EASEL_BLOCKED_WORDS_FILE", settings.blocked_words_file, settings.blocked_words),
            "sensitive": _FileList(
                "EASEL_SENSITIVE_WORDS_FILE", settings.sensitive_words_file, settings.sensitive_words
            ),
        }
        # Per chat or server, so bounded (bot/runtime/bounded.py): a list dropped from the cache is read again.
        self._scoped: BoundedMap[tuple[str, str], WordList] = BoundedMap(SCOPED_LISTS_CACHED)
        self._compiling: dict[tuple[str, str], asyncio.Future[WordList]] = {}
        # bumped by every edit of a scope's list
        self._versions: BoundedMap[tuple[str, str], int] = BoundedMap(4 * SCOPED_LISTS_CACHED)
        # user id -> when their last drawing was accepted, kept only while it still holds them back
        self._last_drawing: BoundedMap[int, float] = BoundedMap(COOLDOWNS_KEPT, ttl_s=settings.cooldown_s, clock=clock)

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
        found = (await self._configured[list_name].current()).find(text)
        return found if found is not None else (await self._list(scope, list_name)).find(text)

    async def _list(self, scope: str, list_name: str) -> WordList:
        """The scope's own list, compiled once on a worker thread (an old database may hold a list
        of any length) and shared by every prompt that asks meanwhile."""
        key = (scope, list_name)
        cached = self._scoped.get(key)
        if cached is not None:
            return cached
        compiling = self._compiling.get(key)
        if compiling is None:
            compiling = asyncio.ensure_future(self._compile(key))
            self._compiling[key] = compiling
            compiling.add_done_callback(lambda done: self._compiled(key, done))
        return await asyncio.shield(compiling)

    async def _compile(self, key: tuple[str, str]) -> WordList:
        version = self._versions.get(key, 0)
        terms = await self.store.terms(*key)
        words = await asyncio.to_thread(WordList, terms)
        if self._versions.get(key, 0) == version:  # edited while we read: do not cache the old list
            self._scoped[key] = words
        return words

    def _compiled(self, key: tuple[str, str], done: asyncio.Future[WordList]) -> None:
        if self._compiling.get(key) is done:
            del self._compiling[key]
        if not done.cancelled() and done.exception() is not None:
            log.error("word list %s/%s could not be loaded", *key, exc_info=done.exception())

    def _edited(self, scope: str, list_name: str) -> None:
        key = (scope, list_name)
        self._versions[key] = self._versions.get(key, 0) + 1
        self._scoped.pop(key, None)
        self._compiling.pop(key, None)

    async def is_full(self, scope: str, list_name: str) -> bool:
        """Whether the scope's own list holds `max_chat_terms` terms already."""
        return await self.store.count_terms(scope, list_name) >= self.settings.max_chat_terms

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
        return await self.store.terms(scope, list_name), len((await self._configured[list_name].current()).entries)

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
