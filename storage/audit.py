"""Who did what to whom: admin actions (ban, quota change, purge) kept for later questions."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.store import Store


@dataclass(frozen=True)
class AuditEntry:
    id: int
    actor_user_id: int | None
    action: str
    target: str
    details: dict[str, Any]
    created_at: str


def entry_from_row(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        actor_user_id=row["actor_user_id"],
        action=row["action"],
        target=row["target"],
        details=json.loads(row["details"]),
        created_at=row["created_at"],
    )


class AuditLog:
    def __init__(self, db: Store) -> None:
        self._db = db

    async def record(
        self, actor_user_id: int | None, action: str, target: str, details: dict[str, Any] | None = None
    ) -> int:
        """Append one entry (`actor_user_id=None` for the system itself); return its id."""
        async with self._db.write() as tx:
            return await tx.insert(
                "INSERT INTO audit (actor_user_id, action, target, details) VALUES (?, ?, ?, ?)",
                (actor_user_id, action, target, json.dumps(details or {})),
            )

    async def recent(self, limit: int = 20) -> list[AuditEntry]:
        """Newest first."""
        rows = await self._db.fetch_all("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        return [entry_from_row(row) for row in rows]
