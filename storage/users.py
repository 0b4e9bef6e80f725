"""People who talk to the bot, one row per (platform, platform id)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.store import Store


@dataclass(frozen=True)
class User:
    id: int
    platform: str
    platform_id: str
    name: str | None
    role: str
    banned: bool
    language: str | None
    settings: dict[str, Any]
    quota_override: int | None
    created_at: str


def user_from_row(row: sqlite3.Row) -> User:
    return User(
        id=row["id"],
        platform=row["platform"],
        platform_id=row["platform_id"],
        name=row["name"],
        role=row["role"],
        banned=bool(row["banned"]),
        language=row["language"],
        settings=json.loads(row["settings"]),
        quota_override=row["quota_override"],
        created_at=row["created_at"],
    )


class Users:
    def __init__(self, db: Store) -> None:
        self._db = db

    async def get_or_create(
        self, platform: str, platform_id: str, name: str | None = None, language: str | None = None
    ) -> User:
        """The user for this platform identity, created on first sight.

        A changed display name is updated; `language` (the platform's locale hint) only fills an
        empty language, so a language the user chose is never overwritten.
        """
        found = await self.find(platform, platform_id)
        if found and _up_to_date(found, name, language):
            return found  # the common case costs one read and no write lock
        async with self._db.write() as tx:
            row = await tx.fetch_one(
                "INSERT INTO users (platform, platform_id, name, language) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (platform, platform_id) DO UPDATE SET"
                "  name = COALESCE(excluded.name, users.name),"
                "  language = COALESCE(users.language, excluded.language)"
                " RETURNING *",
                (platform, platform_id, name, language),
            )
        return user_from_row(row)

    async def get(self, user_id: int) -> User | None:
        row = await self._db.fetch_one("SELECT * FROM users WHERE id = ?", (user_id,))
        return user_from_row(row) if row else None

    async def find(self, platform: str, platform_id: str) -> User | None:
        row = await self._db.fetch_one(
            "SELECT * FROM users WHERE platform = ? AND platform_id = ?", (platform, platform_id)
        )
        return user_from_row(row) if row else None

    async def find_by_name(self, platform: str, name: str) -> User | None:
        """The user on `platform` whose display name or username is `name` (case-insensitive)."""
        row = await self._db.fetch_one(
            "SELECT * FROM users WHERE platform = ? AND lower(name) = lower(?) ORDER BY id LIMIT 1", (platform, name)
        )
        return user_from_row(row) if row else None

    async def set_banned(self, user_id: int, banned: bool) -> bool:
        """True if the user exists."""
        return await self._update(user_id, "banned = ?", int(banned))

    async def set_role(self, user_id: int, role: str) -> bool:
        return await self._update(user_id, "role = ?", role)

    async def set_quota_override(self, user_id: int, limit: int | None) -> bool:
        """`None` goes back to the role's limit."""
        return await self._update(user_id, "quota_override = ?", limit)

    async def set_language(self, user_id: int, lang: str | None) -> bool:
        return await self._update(user_id, "language = ?", lang)

    async def set_setting(self, user_id: int, key: str, value: Any) -> bool:
        """Merge one key into the user's settings; `value` must be JSON-serialisable."""
        async with self._db.write() as tx:
            row = await tx.fetch_one("SELECT settings FROM users WHERE id = ?", (user_id,))
            if row is None:
                return False
            settings = json.loads(row["settings"])
            settings[key] = value
            await tx.execute("UPDATE users SET settings = ? WHERE id = ?", (json.dumps(settings), user_id))
        return True

    async def count(self) -> int:
        row = await self._db.fetch_one("SELECT COUNT(*) FROM users")
        return int(row[0])

    async def _update(self, user_id: int, assignment: str, value: Any) -> bool:
        # `assignment` is always a literal from this class; only `value` comes from outside.
        async with self._db.write() as tx:
            changed = await tx.execute(f"UPDATE users SET {assignment} WHERE id = ?", (value, user_id))
        return changed == 1


def _up_to_date(user: User, name: str | None, language: str | None) -> bool:
    name_ok = name is None or user.name == name
    language_ok = language is None or user.language is not None
    return name_ok and language_ok
