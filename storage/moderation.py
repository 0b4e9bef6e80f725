"""Moderation records: the block and sensitive word lists admins keep per chat or server, and the
strikes of users whose prompts tripped a block list (what the automatic rate limit counts)."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.store import Store

LISTS = ("blocked", "sensitive")


class ModerationStore:
    def __init__(self, db: Store) -> None:
        self._db = db

    async def terms(self, scope: str, list_name: str) -> list[str]:
        """The terms of one list in one scope, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT term FROM moderation_terms WHERE scope = ? AND list = ? ORDER BY id", (scope, _checked(list_name))
        )
        return [row["term"] for row in rows]

    async def count_terms(self, scope: str, list_name: str) -> int:
        row = await self._db.fetch_one(
            "SELECT COUNT(*) AS n FROM moderation_terms WHERE scope = ? AND list = ?", (scope, _checked(list_name))
        )
        return int(row["n"]) if row is not None else 0

    async def add_term(self, scope: str, list_name: str, term: str, added_by: int | None) -> bool:
        """True when the term is new to that list."""
        async with self._db.write() as tx:
            try:
                await tx.insert(
                    "INSERT INTO moderation_terms (scope, list, term, added_by) VALUES (?, ?, ?, ?)",
                    (scope, _checked(list_name), term, added_by),
                )
            except sqlite3.IntegrityError:
                return False
        return True

    async def remove_term(self, scope: str, list_name: str, term: str) -> bool:
        """True when the term was on that list."""
        async with self._db.write() as tx:
            removed = await tx.execute(
                "DELETE FROM moderation_terms WHERE scope = ? AND list = ? AND term = ?",
                (scope, _checked(list_name), term),
            )
        return removed == 1

    async def add_strike(self, user_id: int, scope: str, at: float, idempotency_key: str | None = None) -> bool:
        """False when this update already struck (a re-sent one)."""
        async with self._db.write() as tx:
            added = await tx.execute(
                "INSERT OR IGNORE INTO strikes (user_id, scope, at, idempotency_key) VALUES (?, ?, ?, ?)",
                (user_id, scope, at, idempotency_key),
            )
        return added == 1

    async def strike_times(self, user_id: int, scope: str, since: float) -> list[float]:
        """When the user's strikes in one scope since `since` happened, oldest first."""
        rows = await self._db.fetch_all(
            "SELECT at FROM strikes WHERE user_id = ? AND scope = ? AND at >= ? ORDER BY at", (user_id, scope, since)
        )
        return [float(row["at"]) for row in rows]

    async def strikes_since(self, since: float) -> list[tuple[int, str, int, float]]:
        """(user id, scope, strikes, latest strike) for everyone with strikes since `since`, most first."""
        rows = await self._db.fetch_all(
            "SELECT user_id, scope, COUNT(*) AS n, MAX(at) AS latest FROM strikes WHERE at >= ?"
            " GROUP BY user_id, scope ORDER BY n DESC, latest DESC",
            (since,),
        )
        return [(int(row["user_id"]), row["scope"], int(row["n"]), float(row["latest"])) for row in rows]


def _checked(list_name: str) -> str:
    if list_name not in LISTS:
        raise ValueError(f"unknown moderation list {list_name!r}")
    return list_name
