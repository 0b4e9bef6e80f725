"""A year of data: 1,000,000 jobs from 10,000 users, then every query a user or a start-up makes.

Fills a fresh database through the storage layer (the real schema and triggers; rows written in
batches of a transaction each, as a year of single `accept`s would have left them: one reserve
per job, a refund per failed job, lineage, a few undelivered and given-up jobs), then times:

- /history page 1 and page 500 of the heaviest user, /show (lineage + children), /quota, /stats;
- the start-up recovery scan (unfinished + undelivered + recent durations);
- the daily quota check (read) and a whole `accept` (the write a /draw makes, fsync included;
  it adds a queued job each time, so a --reuse'd database has a few hundred more to recover);
- the retention sweep's next batch; the database file size.

Each is run `--repeat` times (p50 / p99 / max in ms), and the SQL it ran is printed with SQLite's
EXPLAIN QUERY PLAN.  Goal: user-facing p99 under 10 ms, start-up recovery under 1 s.

Run: `python bench/history_scale.py` (about 2-4 minutes; `--jobs 100000` for a quick look).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from storage.db import Database  # noqa: E402
from storage.migrations import MIGRATIONS  # noqa: E402
from storage.retention import cutoff  # noqa: E402

SEED = 7
HEAVY_JOBS = 10_000  # the heaviest user: 27 pictures a day for a year (page 500 of 5 exists)
BATCH = 20_000
REQUEST = {"prompt": "", "width": 1024, "height": 1024, "steps": 8, "cfg": 1.0, "count": 1, "seed": -1}


def job_row(job_id: int, user: int, when: datetime, rng: random.Random) -> tuple:
    roll = rng.random()
    status = "done" if roll < 0.95 else "failed" if roll < 0.98 else "cancelled"
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    request = json.dumps({**REQUEST, "prompt": f"a fox number {job_id} in the snow, watercolor"})
    paths = json.dumps([f"{when:%Y/%m/%d}/job-{job_id}-0a1b2c3d.png"]) if status == "done" else "[]"
    parent = job_id - rng.randint(1, 50) if job_id > 50 and rng.random() < 0.2 else None
    delivered = None if job_id % 100_000 == 0 else stamp  # a handful never arrived
    given_up = "refused: chat not found" if job_id % 200_000 == 0 else None
    timings = json.dumps({"total": 2.5}) if status == "done" else None
    return (job_id, user, "telegram", "{}", request, "draw" if parent is None else "variation", parent, status,
            rng.randint(0, 2**31) if status == "done" else None, paths, timings, stamp, stamp, stamp, delivered,
            1, given_up)  # fmt: skip


async def fill(db: Database, jobs: int, users: int, rng: random.Random) -> int:
    """Users, then jobs with their ledger rows, oldest first over the past year; the heavy user's id."""
    async with db.write() as tx:
        await tx.execute_many(
            "INSERT INTO users (id, platform, platform_id, name) VALUES (?, 'telegram', ?, ?)",
            [(n, str(10_000_000 + n), f"user{n}") for n in range(1, users + 1)],
        )
    start = datetime.now(UTC) - timedelta(days=365)
    step = timedelta(days=365) / jobs
    heavy = 1
    for first in range(1, jobs + 1, BATCH):
        rows = []
        for job_id in range(first, min(first + BATCH, jobs + 1)):
            user = heavy if rng.random() < HEAVY_JOBS / jobs else rng.randint(2, users)
            rows.append(job_row(job_id, user, start + step * job_id, rng))
        await write_batch(db, rows)
    return heavy


async def write_batch(db: Database, rows: list[tuple]) -> None:
    ledger = [(r[1], r[0], r[11][:10], 1, "reserve") for r in rows]
    ledger += [(r[1], r[0], r[11][:10], -1, "system failure: error.oom") for r in rows if r[7] == "failed"]
    messages = [("telegram", str(-100 - r[1]), str(r[0]), r[0]) for r in rows if r[14] is not None]
    async with db.write() as tx:
        await tx.execute_many(
            "INSERT INTO jobs (id, user_id, platform, reply_to, request, kind, parent_id, status, seed,"
            " image_paths, timings, created_at, started_at, finished_at, delivered_at, attempts, delivery_error)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        await tx.execute_many(
            "INSERT INTO quota_ledger (user_id, job_id, day, delta, reason) VALUES (?, ?, ?, ?, ?)", ledger
        )
        await tx.execute_many(
            "INSERT INTO messages (platform, chat_id, message_id, job_id) VALUES (?, ?, ?, ?)", messages
        )


class Tracer:
    """Collects the SQL (parameters expanded) that SQLite runs on the bench's connections."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.on = False

    def __call__(self, sql: str) -> None:
        if self.on and sql.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "INSERT")):
            self.statements.append(sql)


async def timed(name: str, operation, repeat: int, tracer: Tracer, explain) -> dict:
    tracer.statements.clear()
    tracer.on = True
    await operation()  # once to capture the SQL (and warm the cache, as a running bot's is)
    tracer.on = False
    plans = [(sql, await explain(sql)) for sql in dict.fromkeys(tracer.statements)]
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        await operation()
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return {"name": name, "p50": statistics.median(times), "p99": p99, "max": times[-1], "plans": plans}


def operations(db: Database, heavy: int, rng: random.Random, jobs: int) -> dict:
    """What each measured step runs, exactly as the handlers and the start-up call it."""
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    fresh = iter(range(10**9))

    async def show():
        job_id = rng.randint(jobs // 2, jobs)
        await db.jobs.get(job_id)
        await db.jobs.lineage(job_id)
        await db.jobs.children(job_id)

    async def stats():
        await db.jobs.counts_by_status()
        await db.users.count()
        await db.quota.spent(today)
        await db.jobs.dead_deliveries(limit=0)

    async def recovery():
        await db.jobs.unfinished()
        await db.jobs.undelivered()
        await db.jobs.recent_durations()

    async def press():  # a button under a picture: which job, shown on that message?, then delete's look-up
        job_id = rng.randint(jobs // 2, jobs)
        user = (await db.jobs.get(job_id)).user_id
        await db.jobs.find_picture("telegram", str(-100 - user), str(job_id))
        await db.jobs.shows("telegram", str(-100 - user), str(job_id), job_id, 0)
        await db.jobs.messages_of(job_id, "telegram")

    async def accept():  # a light user, as most are (a heavy one only adds its few pending jobs)
        await db.jobs.accept(
            user_id=rng.randint(2, 10_000), platform="telegram", reply_to={}, request=REQUEST, kind="draw", day=today,
            daily_limit=10**9, max_pending=10**9, idempotency_key=f"bench-{next(fresh)}-{time.time_ns()}",
        )  # fmt: skip

    return {
        "/history page 1 (heavy user)": lambda: db.jobs.list_for_user(heavy, 0, 5),
        "/history page 500 (heavy user)": lambda: db.jobs.list_for_user(heavy, 499, 5),
        "/show (lineage + children)": show,
        "/quota (daily usage)": lambda: db.quota.used(rng.randint(2, 10_000), today),
        "/stats": stats,
        "button press (+ delete's messages)": press,
        "/stats before v6 (GROUP BY jobs)": lambda: db.fetch_all("SELECT status, COUNT(*) FROM jobs GROUP BY status"),
        "start-up recovery scan": recovery,
        "daily quota check (accept, fsync)": accept,
        "retention: next sweep batch": lambda: db.jobs.expirable(cutoff(30), 200),
    }


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(SEED)
    folder = Path(args.dir or tempfile.mkdtemp(prefix="easel-history-"))
    path = folder / "easel.db"
    if not args.reuse:
        path.unlink(missing_ok=True)
    reused = path.exists()
    db = await Database.open(path)
    began = time.perf_counter()
    heavy = 1 if reused else await fill(db, args.jobs, args.users, rng)
    filled = time.perf_counter() - began
    await prepare(db, args)
    size = sum(p.stat().st_size for p in folder.glob("easel.db*"))
    tracer = Tracer()
    for conn in (db._reader, db._writer):
        await conn.set_trace_callback(tracer)
    how = f"reused {path}" if reused else f"filled in {filled:.0f} s"
    print(f"# {args.jobs:,} jobs, {args.users:,} users (heavy user: {HEAVY_JOBS:,} jobs); {how}")
    print(f"# database: {size / 1e6:.0f} MB ({size / args.jobs:.0f} bytes a job), {path}")
    results = []
    for name, operation in operations(db, heavy, rng, args.jobs).items():
        repeat = max(3, args.repeat // 20) if "before v6" in name else args.repeat
        results.append(await timed(name, operation, repeat, tracer, lambda sql: explain(db, sql)))
    await db.close()
    report(results)


async def prepare(db: Database, args: argparse.Namespace) -> None:
    """Planner statistics only with --analyze: a running bot never runs ANALYZE, so by default the
    plans are the ones it gets.  A --reuse'd database gets back any schema v6 index it lacks."""
    async with db.write() as tx:
        await tx.execute("DROP TABLE IF EXISTS sqlite_stat1")
        if args.analyze:
            await tx.execute("ANALYZE")
        for statement in MIGRATIONS[5].split(";"):
            if "CREATE INDEX" in statement:
                await tx.execute(statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))


async def explain(db: Database, sql: str) -> list[str]:
    rows = await db.fetch_all(f"EXPLAIN QUERY PLAN {sql}")
    return [row["detail"] for row in rows]


def report(results: list[dict]) -> None:
    print(f"\n{'query':<38} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}")
    for r in results:
        print(f"{r['name']:<38} {r['p50']:>9.3f} {r['p99']:>9.3f} {r['max']:>9.3f}")
    print("\n# EXPLAIN QUERY PLAN")
    for r in results:
        print(f"\n## {r['name']}")
        for sql, plan in r["plans"]:
            print(f"  {sql[:150]}{'...' if len(sql) > 150 else ''}")
            print("".join(f"      {step}\n" for step in plan), end="")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=200, help="timed runs of each query")
    parser.add_argument("--dir", help="where to build the database (default: a new temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="measure the database already in --dir (no fill)")
    parser.add_argument("--analyze", action="store_true", help="run ANALYZE first (the bot never does)")
    asyncio.run(main(parser.parse_args()))
