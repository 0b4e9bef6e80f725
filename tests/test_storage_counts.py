"""Schema v6 for a database that lives for years: job counts kept by triggers (so /stats never counts
the jobs table) that start right on an upgraded database and follow every state change, and the
queries the bench found scanning now searching an index."""

from __future__ import annotations

import random

import aiosqlite

from storage.db import Database
from storage.migrations import MIGRATIONS, apply_migrations
from storage.quota import refund_in

V6 = MIGRATIONS.index(next(m for m in MIGRATIONS if "job_counts" in m))


async def grouped(db: Database) -> dict[str, int]:
    counts = {status: 0 for status in ("queued", "running", "done", "failed", "cancelled")}
    for row in await db.fetch_all("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
        counts[row[0]] = row[1]
    return counts


async def accept(db: Database, user_id: int, n: int) -> int:
    accepted = await db.jobs.accept(
        user_id=user_id, platform="telegram", reply_to={}, request={"prompt": f"fox {n}"}, kind="draw",
        day="2026-01-01", daily_limit=None, max_pending=10**6,
    )  # fmt: skip
    return accepted.job.id


async def test_counts_start_right_on_an_upgraded_database_and_follow_every_change(tmp_path):
    path = tmp_path / "easel.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:  # a database from before v6, with jobs
        await apply_migrations(conn, MIGRATIONS[:V6])
        await conn.execute("INSERT INTO users (id, platform, platform_id) VALUES (1, 'telegram', '1')")
        for status in ["queued", "done", "done", "failed", "running"]:
            await conn.execute(
                "INSERT INTO jobs (user_id, platform, request, kind, status) VALUES (1, 'telegram', '{}', 'draw', ?)",
                (status,),
            )
    db = await Database.open(path)
    try:
        assert await db.jobs.counts_by_status() == await grouped(db) == {
            "queued": 1, "running": 1, "done": 2, "failed": 1, "cancelled": 0,
        }  # fmt: skip
        rng = random.Random(3)
        ids = [await accept(db, 1, n) for n in range(40)]
        for job_id in ids:
            await db.jobs.mark_running(job_id)
            move = rng.choice(["done", "failed", "cancelled", "requeue", "stay"])
            if move == "done":
                await db.jobs.mark_done(job_id, seed=1, image_paths=[], plan={}, timings={})
            elif move == "failed":
                await db.jobs.mark_failed(job_id, "error.oom", {}, refund="system failure")
            elif move == "cancelled":
                await db.jobs.mark_cancelled(job_id)
            elif move == "requeue":
                await db.jobs.requeue(job_id)
        async with db.write() as tx:  # an update that names the status without changing it counts nothing
            await tx.execute("UPDATE jobs SET status = status")
            await tx.execute("DELETE FROM quota_ledger WHERE job_id = ?", (ids[0],))
            await tx.execute("DELETE FROM messages WHERE job_id = ?", (ids[0],))
            await tx.execute("DELETE FROM jobs WHERE id = ?", (ids[0],))
        assert await db.jobs.counts_by_status() == await grouped(db)
    finally:
        await db.close()


async def test_the_year_long_queries_search_an_index(tmp_path):
    """The SQL the repositories really run (traced), planned as a running bot plans it (no ANALYZE):
    none reads a whole table that grows with every job."""
    db = await Database.open(tmp_path / "easel.db")
    statements: list[str] = []
    try:
        await db._reader.set_trace_callback(statements.append)
        await db.jobs.list_for_user(1, 499, 5)
        await db.jobs.unfinished()
        await db.jobs.undelivered()
        await db.jobs.dead_deliveries(limit=0)
        await db.jobs.expirable("2026-01-01T00:00:00.000Z", 200)
        await db.jobs.messages_of(1, "telegram")
        await db.jobs.lineage(1)
        await db.quota.spent("2026-01-01")
        await db.jobs.counts_by_status()
        await db._reader.set_trace_callback(None)
        assert len(statements) >= 10
        for sql in statements:
            steps = [row["detail"] for row in await db.fetch_all(f"EXPLAIN QUERY PLAN {sql}")]
            whole = [step for step in steps if step in ("SCAN jobs", "SCAN quota_ledger", "SCAN messages")]
            whole += [step for step in steps if "jobs_by_status" in step or "BLOOM" in step]
            assert not whole, f"{sql}: {steps}"
    finally:
        await db.close()


async def test_a_refund_still_cannot_exceed_the_charge_with_the_new_indexes(tmp_path):
    db = await Database.open(tmp_path / "easel.db")
    try:
        user = await db.users.get_or_create("telegram", "1", "alice")
        job_id = await accept(db, user.id, 0)
        async with db.write() as tx:
            assert await refund_in(tx, job_id, "first")
            assert not await refund_in(tx, job_id, "second")
        assert await db.quota.used(user.id, "2026-01-01") == 0 == await db.quota.spent("2026-01-01")
    finally:
        await db.close()
