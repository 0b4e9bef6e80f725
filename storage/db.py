"""The database: one writer connection behind a lock, one read connection, and the repositories.

SQLite allows one writer at a time.  Funnelling every write through one connection and an
`asyncio.Lock` turns "database is locked" surprises into an orderly queue, and `BEGIN IMMEDIATE`
takes the write lock up front so a check-then-insert (quota!) can never interleave with another.
Reads use their own connection: in WAL mode they see the last committed state and never wait.
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import IO

import aiosqlite

from storage.audit import AuditLog
from storage.jobs import Jobs
from storage.migrations import apply_migrations, current_version
from storage.moderation import ModerationStore
from storage.quota import Quota
from storage.store import Params, Tx  # Tx and Params are also importable from here, as before
from storage.users import Users

_BUSY_TIMEOUT_MS = 5000


class Database:
    """Open with `await Database.open(path)`; close with `await db.close()`."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, lock: IO | None = None) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = lock  # a shared lock on <db>.lock while open: `easel restore` waits for none
        self._write_lock = asyncio.Lock()
        self.users = Users(self)
        self.jobs = Jobs(self)
        self.quota = Quota(self)
        self.audit = AuditLog(self)
        self.moderation = ModerationStore(self)

    @classmethod
    async def open(cls, path: Path) -> Database:
        """Create the file (and its folder) if needed and bring the schema up to date."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock = _lock_file(path, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatabaseInUse(f"{path} is being restored (`easel restore`)") from None
        writer = await _connect(path)
        try:
            await writer.execute("PRAGMA journal_mode = WAL")
            # FULL: an accepted job must survive a power cut, and we write rarely enough to afford it.
            await writer.execute("PRAGMA synchronous = FULL")
            await apply_migrations(writer)
            reader = await _connect(path)
        except BaseException:
            await writer.close()
            lock.close()
            raise
        await reader.execute("PRAGMA query_only = ON")
        return cls(writer, reader, lock)

    async def close(self) -> None:
        # Taking the lock lets a write in progress finish instead of being cut off mid-transaction.
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()
            if self._lock is not None:
                self._lock.close()  # closing the file releases the lock
                self._lock = None

    async def schema_version(self) -> int:
        async with self._write_lock:
            return await current_version(self._writer)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                yield Tx(self._writer)
                # Inside the try: a failed COMMIT must roll back too, or every later BEGIN would fail.
                await asyncio.shield(self._writer.execute("COMMIT"))
            except BaseException:
                # Shielded so a second cancellation cannot leave the transaction open for the next writer.
                await asyncio.shield(self._rollback())
                raise

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """A read on the read connection: never waits for a writer."""
        return list(await self._reader.execute_fetchall(sql, params))

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def _rollback(self) -> None:
        # BEGIN itself may have failed, in which case there is nothing to roll back.
        with suppress(sqlite3.OperationalError):
            await self._writer.execute("ROLLBACK")


class DatabaseInUse(RuntimeError):
    """Another process (a running bot) has the database open."""


@contextmanager
def exclusive_use(path: Path) -> Iterator[None]:
    """Hold the database for one process alone (to replace it); DatabaseInUse while any has it open."""
    try:
        lock = _lock_file(Path(path), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DatabaseInUse(f"{path} is open in a running easel") from None
    with lock:
        yield


def _lock_file(path: Path, operation: int) -> IO:
    # flock on a file beside the database: released by the kernel when the process ends, however.
    lock = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - held for the database's life
    try:
        fcntl.flock(lock.fileno(), operation)
    except BaseException:
        lock.close()
        raise
    return lock


async def _connect(path: Path) -> aiosqlite.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves instead of sqlite3's implicit transactions.
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA foreign_keys = ON")
    await conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    return conn
