"""What a repository needs from the database: reads, and a write transaction (`Tx`) to run SQL in.

`storage/db.py` builds the repositories (users, jobs, quota, audit, moderation) and hands itself to
them as a `Store`; they depend on this module, never on db.py, so no storage module imports back
the one that imports it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import aiosqlite

Params = Sequence[Any]


class Tx:
    """The writer connection inside one open transaction; only `Database.write()` makes these."""

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return how many rows it changed."""
        cursor = await self._conn.execute(sql, params)
        changed = cursor.rowcount
        await cursor.close()
        return changed

    async def execute_many(self, sql: str, rows: Sequence[Params]) -> None:
        """Run one statement for each row of parameters, in one hop to the database thread."""
        await self._conn.executemany(sql, rows)

    async def insert(self, sql: str, params: Params = ()) -> int:
        """Run one INSERT; return the new row's id."""
        cursor = await self._conn.execute(sql, params)
        row_id = cursor.lastrowid
        await cursor.close()
        return int(row_id)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return list(await self._conn.execute_fetchall(sql, params))

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None


class Store(Protocol):
    """The part of `Database` a repository uses."""

    def write(self) -> AbstractAsyncContextManager[Tx]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        ...

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """A read that sees the last committed state and never waits for a writer."""
        ...

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None: ...
