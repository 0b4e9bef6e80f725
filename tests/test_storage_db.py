"""Database plumbing: migrations, transactions, and reads that never wait for the writer."""

import asyncio
import sqlite3

import aiosqlite
import pytest

from storage import Database, SchemaTooNew
from storage.migrations import MIGRATIONS, apply_migrations, current_version


@pytest.fixture
async def db(tmp_path):
    database = await Database.open(tmp_path / "easel.db")
    yield database
    await database.close()


async def _tables(path) -> set[str]:
    async with aiosqlite.connect(path) as conn:
        rows = await conn.execute_fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {row[0] for row in rows}


async def test_fresh_database_gets_every_migration_and_its_folder(tmp_path):
    path = tmp_path / "nested" / "dir" / "easel.db"
    db = await Database.open(path)
    try:
        assert await db.schema_version() == len(MIGRATIONS) >= 2
    finally:
        await db.close()
    assert {"users", "jobs", "messages", "quota_ledger", "audit", "schema_version"} <= await _tables(path)


async def test_pragmas_wal_foreign_keys_and_busy_timeout(db):
    assert (await db.fetch_one("PRAGMA journal_mode"))[0] == "wal"
    assert (await db.fetch_one("PRAGMA foreign_keys"))[0] == 1
    assert (await db.fetch_one("PRAGMA busy_timeout"))[0] > 0


async def test_reopening_applies_nothing_new(tmp_path):
    path = tmp_path / "easel.db"
    await (await Database.open(path)).close()
    async with aiosqlite.connect(path) as conn:
        assert await apply_migrations(conn) == []
        rows = await conn.execute_fetchall("SELECT version FROM schema_version ORDER BY version")
    assert [row[0] for row in rows] == list(range(1, len(MIGRATIONS) + 1))


async def test_a_v1_database_upgrades_and_keeps_its_rows(tmp_path):
    path = tmp_path / "easel.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await apply_migrations(conn, MIGRATIONS[:1]) == [1]
        await conn.execute("INSERT INTO users (platform, platform_id, name) VALUES ('telegram', '42', 'Ada')")
    assert "audit" not in await _tables(path)

    db = await Database.open(path)
    try:
        assert await db.schema_version() == len(MIGRATIONS)
        ada = await db.users.find("telegram", "42")
        assert ada is not None and ada.name == "Ada"
        await db.audit.record(ada.id, "ban", "user:1")
        assert [entry.action for entry in await db.audit.recent()] == ["ban"]
    finally:
        await db.close()


async def test_a_later_migration_is_applied_once_on_top(tmp_path):
    path = tmp_path / "easel.db"
    await (await Database.open(path)).close()
    extra = (*MIGRATIONS, "CREATE TABLE later_feature (id INTEGER PRIMARY KEY);")
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await apply_migrations(conn, extra) == [len(extra)]
        assert await apply_migrations(conn, extra) == []
        assert await current_version(conn) == len(extra)


async def test_a_failing_migration_leaves_the_old_version_intact(tmp_path):
    path = tmp_path / "easel.db"
    await (await Database.open(path)).close()
    broken = (*MIGRATIONS, "CREATE TABLE half_done (id INTEGER); THIS IS NOT SQL;")
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        with pytest.raises(sqlite3.OperationalError):
            await apply_migrations(conn, broken)
        assert await current_version(conn) == len(MIGRATIONS)
    assert "half_done" not in await _tables(path)


async def test_a_database_from_a_newer_easel_is_refused(tmp_path):
    path = tmp_path / "easel.db"
    await (await Database.open(path)).close()
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        await conn.execute("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS) + 5,))
    with pytest.raises(SchemaTooNew):
        await Database.open(path)


async def test_a_write_that_raises_is_rolled_back(db):
    with pytest.raises(RuntimeError):
        async with db.write() as tx:
            await tx.execute("INSERT INTO users (platform, platform_id) VALUES ('discord', '1')")
            raise RuntimeError("boom")
    assert await db.users.count() == 0
    await db.users.get_or_create("discord", "1")  # the writer is usable again
    assert await db.users.count() == 1


async def test_reads_do_not_wait_while_a_write_transaction_is_open(db):
    async with db.write() as tx:
        await tx.execute("INSERT INTO users (platform, platform_id) VALUES ('discord', '7')")
        # The write lock is held and the transaction is open; a read must still finish, and see
        # only committed data.
        assert await asyncio.wait_for(db.users.count(), timeout=2) == 0
        assert await asyncio.wait_for(db.users.find("discord", "7"), timeout=2) is None
    assert await db.users.count() == 1


async def test_writes_queue_behind_the_open_transaction(db):
    release = asyncio.Event()
    order = []

    async def long_write():
        async with db.write() as tx:
            await tx.execute("INSERT INTO users (platform, platform_id) VALUES ('discord', 'first')")
            await release.wait()
            order.append("first")

    holder = asyncio.create_task(long_write())
    await asyncio.sleep(0.05)
    second = asyncio.create_task(db.users.get_or_create("discord", "second"))
    await asyncio.sleep(0.05)
    assert not second.done()  # waiting for the lock, not failing with "database is locked"
    release.set()
    await holder
    await second
    order.append("second")
    assert order == ["first", "second"]
    assert await db.users.count() == 2


async def test_the_read_connection_refuses_writes(db):
    with pytest.raises(sqlite3.OperationalError):
        await db.fetch_all("DELETE FROM users")


async def test_a_cancelled_write_is_rolled_back_and_frees_the_writer(db):
    inside = asyncio.Event()

    async def stuck_write():
        async with db.write() as tx:
            await tx.execute("INSERT INTO users (platform, platform_id) VALUES ('discord', 'ghost')")
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck_write())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(db.users.get_or_create("discord", "real"), timeout=2)
    assert await db.users.find("discord", "ghost") is None
    assert await db.users.count() == 1
