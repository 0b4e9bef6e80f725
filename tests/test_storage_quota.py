"""The quota ledger: usage is the sum of its rows, and a job's refunds add up to at most its charge."""

import asyncio
import sqlite3

import aiosqlite
import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage import Database
from storage.migrations import MIGRATIONS, apply_migrations
from storage.quota import refund_amount, refund_in

DAY = "2025-03-04"


@pytest.fixture
async def db(tmp_path):
    database = await Database.open(tmp_path / "easel.db")
    yield database
    await database.close()


async def accept(db, user_id, day=DAY):
    result = await db.jobs.accept(
        user_id=user_id,
        platform="discord",
        reply_to={},
        request={"prompt": "x"},
        kind="txt2img",
        day=day,
        daily_limit=3,
        max_pending=100,
    )
    return result.job


async def ledger_rows(db, job_id):
    rows = await db.fetch_all("SELECT day, delta, reason FROM quota_ledger WHERE job_id = ? ORDER BY id", (job_id,))
    return [tuple(row) for row in rows]


async def test_used_is_per_user_and_per_day(db):
    ada = await db.users.get_or_create("discord", "ada")
    bob = await db.users.get_or_create("discord", "bob")
    await accept(db, ada.id)
    await accept(db, ada.id)
    await accept(db, ada.id, day="2025-03-05")
    await accept(db, bob.id)
    assert await db.quota.used(ada.id, DAY) == 2
    assert await db.quota.used(ada.id, "2025-03-05") == 1
    assert await db.quota.used(bob.id, DAY) == 1
    assert await db.quota.used(bob.id, "2030-01-01") == 0


async def test_refund_happens_once_on_the_day_it_was_charged(db):
    user = await db.users.get_or_create("discord", "ada")
    job = await accept(db, user.id, day="2025-03-03")
    assert await db.quota.refund(job.id, "failed")
    assert not await db.quota.refund(job.id, "failed again")
    assert await ledger_rows(db, job.id) == [("2025-03-03", 1, "reserve"), ("2025-03-03", -1, "failed")]
    assert await db.quota.used(user.id, "2025-03-03") == 0


async def test_concurrent_refunds_still_refund_once(db):
    user = await db.users.get_or_create("discord", "ada")
    job = await accept(db, user.id)
    results = await asyncio.gather(*(db.quota.refund(job.id, "cancelled") for _ in range(10)))
    assert results.count(True) == 1
    assert await db.quota.used(user.id, DAY) == 0


async def test_a_job_without_a_reservation_is_not_refunded(db):
    assert not await db.quota.refund(12345, "unknown job")
    assert await db.fetch_all("SELECT * FROM quota_ledger") == []


async def test_a_refund_frees_room_under_the_limit(db):
    user = await db.users.get_or_create("discord", "ada")
    jobs = [await accept(db, user.id) for _ in range(3)]
    assert await accept(db, user.id) is None  # limit 3 reached
    await db.quota.refund(jobs[0].id, "failed")
    assert await accept(db, user.id) is not None


async def test_failing_or_cancelling_with_a_refund_is_one_transaction(db):
    user = await db.users.get_or_create("telegram", "7")
    day = "2026-11-25"
    jobs = []
    for i in range(3):
        acceptance = await db.jobs.accept(
            user_id=user.id,
            platform="telegram",
            reply_to={},
            request={"prompt": str(i)},
            kind="txt2img",
            day=day,
            daily_limit=None,
            max_pending=10,
        )
        jobs.append(acceptance.job.id)
    assert await db.jobs.mark_failed(jobs[0], "error.oom", {}, refund="system failure")
    assert await db.jobs.mark_cancelled(jobs[1], refund="cancelled before start")
    assert await db.quota.used(user.id, day) == 1
    # Already final: nothing changes and nothing more is refunded.
    assert not await db.jobs.mark_failed(jobs[0], "error.oom", {}, refund="again")
    assert not await db.jobs.mark_cancelled(jobs[1], refund="again")
    assert await db.quota.used(user.id, day) == 1


async def test_a_batch_reserves_its_count_and_is_refunded_whole_or_for_missing_pictures(db):
    user = await db.users.get_or_create("discord", "ada")

    async def batch(count):
        acceptance = await db.jobs.accept(
            user_id=user.id,
            platform="discord",
            reply_to={},
            request={"prompt": "x", "count": count},
            kind="txt2img",
            day=DAY,
            daily_limit=10,
            max_pending=100,
            cost=count,
        )
        return acceptance

    four, three = (await batch(4)).job, (await batch(3)).job
    assert await db.quota.used(user.id, DAY) == 7
    refused = await batch(4)  # 7 + 4 > 10: all of it fits or nothing
    assert refused.job is None and refused.used == 7
    assert await db.quota.refund(four.id, "failed") and not await db.quota.refund(four.id, "again")
    assert await ledger_rows(db, four.id) == [(DAY, 4, "reserve"), (DAY, -4, "failed")]

    await db.jobs.mark_running(three.id)
    assert await db.jobs.mark_done(three.id, seed=1, image_paths=["a.png"], plan={}, timings={}, missing=2)
    assert await ledger_rows(db, three.id) == [(DAY, 3, "reserve"), (DAY, -2, "pictures missing from the result")]
    assert await db.quota.used(user.id, DAY) == 1
    with pytest.raises(sqlite3.IntegrityError, match="exceeds"):  # 2 of 3 back already: the schema refuses 2 more
        async with db.write() as tx:
            await tx.execute(
                "INSERT INTO quota_ledger (user_id, job_id, day, delta, reason) VALUES (?, ?, ?, -2, 'x')",
                (user.id, three.id, DAY),
            )


async def test_missing_pictures_give_back_their_share_of_the_jobs_units(db):
    user = await db.users.get_or_create("discord", "7")

    async def done(count, cost, missing):
        job = (
            await db.jobs.accept(
                user_id=user.id,
                platform="discord",
                reply_to={},
                request={"prompt": "x", "count": count},
                kind="txt2img",
                day=DAY,
                daily_limit=None,
                max_pending=100,
                cost=cost,
            )
        ).job
        await db.jobs.mark_running(job.id)
        assert await db.jobs.mark_done(job.id, seed=1, image_paths=[], plan={}, timings={}, missing=missing)
        return [delta for _, delta, _ in await ledger_rows(db, job.id)]

    assert await done(count=4, cost=36, missing=1) == [36, -9]  # a quarter of the units
    assert await done(count=3, cost=8, missing=2) == [8, -5]  # 16/3 rounded down: the drawn one pays 3
    assert await done(count=2, cost=9, missing=2) == [9, -9]  # nothing came back: all of it
    assert await db.quota.used(user.id, DAY) == 27 + 3


# -- refunds add up, to the charge and no further ----------------------------------------------


async def batch_job(db, user_id, count, cost):
    acceptance = await db.jobs.accept(
        user_id=user_id,
        platform="discord",
        reply_to={},
        request={"prompt": "x", "count": count},
        kind="txt2img",
        day=DAY,
        daily_limit=None,
        max_pending=100,
        cost=cost,
    )
    return acceptance.job


async def test_a_partial_refund_then_the_rest_gives_back_exactly_the_charge(db):
    user = await db.users.get_or_create("discord", "ada")
    job = await batch_job(db, user.id, count=3, cost=8)
    await db.jobs.mark_running(job.id)
    assert await db.jobs.mark_done(job.id, seed=1, image_paths=["a.png", "b.png"], plan={}, timings={}, missing=1)
    assert await db.quota.used(user.id, DAY) == 6  # 8/3 rounded down came back
    assert await db.quota.refund(job.id, "picture file missing")  # the rest fail later: the rest comes back
    assert not await db.quota.refund(job.id, "and again")  # nothing is left
    assert await ledger_rows(db, job.id) == [
        (DAY, 8, "reserve"),
        (DAY, -2, "pictures missing from the result"),
        (DAY, -6, "picture file missing"),
    ]
    assert await db.quota.used(user.id, DAY) == 0


async def test_partial_refunds_stop_at_the_charge(db):
    user = await db.users.get_or_create("discord", "ada")
    job = await batch_job(db, user.id, count=2, cost=5)
    given = []
    for _ in range(4):  # a picture's share is 2: 2, 2, then the 1 left, then nothing
        async with db.write() as tx:
            given.append(await refund_in(tx, job.id, "one picture", pictures=1))
    assert given == [True, True, True, False]
    assert [delta for _, delta, _ in await ledger_rows(db, job.id)] == [5, -2, -2, -1]


async def test_concurrent_refunds_never_exceed_the_charge(db, tmp_path):
    user = await db.users.get_or_create("discord", "ada")
    job = await batch_job(db, user.id, count=4, cost=10)
    other = await Database.open(tmp_path / "easel.db")  # a second writer connection on the same file
    try:

        async def partial(database):
            async with database.write() as tx:
                return await refund_in(tx, job.id, "one picture", pictures=1)

        calls = [partial(d) for d in (db, other) * 5] + [d.quota.refund(job.id, "all") for d in (db, other) * 5]
        await asyncio.gather(*calls)
    finally:
        await other.close()
    refunds = [delta for _, delta, _ in await ledger_rows(db, job.id)][1:]
    assert all(delta < 0 for delta in refunds) and sum(refunds) == -10
    assert await db.quota.used(user.id, DAY) == 0


async def test_the_schema_refuses_refunds_beyond_the_charge_whatever_the_code_does(db):
    user = await db.users.get_or_create("discord", "ada")
    job = await batch_job(db, user.id, count=1, cost=4)
    insert = "INSERT INTO quota_ledger (user_id, job_id, day, delta, reason) VALUES (?, ?, ?, ?, 'raw')"
    async with db.write() as tx:
        await tx.execute(insert, (user.id, job.id, DAY, -3))
    with pytest.raises(sqlite3.IntegrityError, match="exceeds what the job was charged"):
        async with db.write() as tx:
            await tx.execute(insert, (user.id, job.id, DAY, -2))
    async with db.write() as tx:
        await tx.execute(insert, (user.id, job.id, DAY, -1))
    assert await db.quota.used(user.id, DAY) == 0


async def test_a_job_refunded_in_part_before_the_upgrade_gets_the_rest_after_it(tmp_path):
    path = tmp_path / "easel.db"
    async with aiosqlite.connect(path, isolation_level=None) as conn:
        assert await apply_migrations(conn, MIGRATIONS[:4]) == [1, 2, 3, 4]
        await conn.executescript(
            "INSERT INTO users (id, platform, platform_id) VALUES (1, 'discord', 'ada');"
            "INSERT INTO jobs (id, user_id, platform, request, kind)"
            " VALUES (1, 1, 'discord', '{\"prompt\": \"x\", \"count\": 3}', 'txt2img');"
            f"INSERT INTO quota_ledger (user_id, job_id, day, delta, reason) VALUES (1, 1, '{DAY}', 3, 'reserve');"
            f"INSERT INTO quota_ledger (user_id, job_id, day, delta, reason) VALUES (1, 1, '{DAY}', -1, 'missing');"
        )
    db = await Database.open(path)
    try:
        assert await db.quota.refund(1, "system failure")
        assert [delta for _, delta, _ in await ledger_rows(db, 1)] == [3, -1, -2]
        assert not await db.quota.refund(1, "again")
    finally:
        await db.close()


@given(
    charged=st.integers(1, 1000),
    count=st.integers(1, 16),
    requests=st.lists(st.one_of(st.none(), st.integers(-2, 20)), max_size=10),
)
def test_refund_amounts_are_never_negative_and_add_up_to_at_most_the_charge(charged, count, requests):
    refunded = 0
    for pictures in requests:
        amount = refund_amount(charged, refunded, count, pictures)
        assert 0 <= amount <= charged - refunded
        if pictures is None:
            assert amount == charged - refunded  # a full refund gives back all that is left
        refunded += amount
    assert refunded <= charged
