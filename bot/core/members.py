"""Who is talking: their user row and language, whether they are an admin, whether this chat may use
the bot at all, and how much they may draw today."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from bot.contract import Caller, Reply
from bot.language.messages import language_for, t
from bot.language.text import duration
from bot.runtime.settings import Settings
from storage.jobs import Job
from storage.users import User, Users


class Members:
    def __init__(self, settings: Settings, users: Users, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.users = users
        self.clock = clock

    async def user_for(self, caller: Caller) -> User:
        language = language_for(caller.language) if caller.language else None
        return await self.users.get_or_create(caller.platform, caller.user_id, caller.name, language)

    def language(self, user: User) -> str:
        return user.language or self.settings.default_language

    async def language_of(self, caller: Caller) -> str:
        """The caller's language without creating a user row, for answering someone who may be a
        stranger (a forged press, a failure): their stored choice, else their client's."""
        return self.language_known(caller, await self.users.find(caller.platform, caller.user_id))

    def language_known(self, caller: Caller, known: User | None) -> str:
        if known is not None:
            return self.language(known)
        return language_for(caller.language) if caller.language else self.settings.default_language

    async def owner_language(self, job: Job) -> str:
        owner = await self.users.get(job.user_id)
        return self.language(owner) if owner else self.settings.default_language

    def is_admin(self, caller: Caller) -> bool:
        return self.settings.is_admin(caller.platform, caller.user_id) or caller.platform == "console"

    def chat_allowed(self, caller: Caller) -> bool:
        allowed = set(self.settings.allowed_chats)
        if not allowed or caller.platform == "console":
            return True
        places = [p for p in (caller.chat_id, caller.guild_id) if p]
        return any(p in allowed or f"{caller.platform}:{p}" in allowed for p in places)

    async def turned_away(self, caller: Caller) -> Reply | None:
        """A banned user or a chat not on the allowlist: one short line, decided before anything
        they sent is read, so nothing they wrote is echoed and no user row is created for them.
        None: go on."""
        known = await self.users.find(caller.platform, caller.user_id)
        if known is not None and known.banned and not self.is_admin(caller):
            key = "banned"
        elif not self.chat_allowed(caller):
            key = "chat_not_allowed"
        else:
            return None
        lang = self.language_known(caller, known)
        return Reply(t(key, lang), lang, alert=True)

    def daily_limit(self, caller: Caller, user: User) -> int | None:
        """None = unlimited.  Admins unlimited; then a per-user override, a role's, the default."""
        if self.is_admin(caller):
            return None
        if user.quota_override is not None:
            limit = user.quota_override
        else:
            limit = self.settings.role_quotas.get(user.role, self.settings.daily_quota)
        return None if limit == 0 else limit

    def today(self) -> str:
        """The quota day (UTC)."""
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).strftime("%Y-%m-%d")

    def resets_in(self) -> str:
        now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        midnight = (now + dt.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        return duration(int((midnight - now).total_seconds()))
