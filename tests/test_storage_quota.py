"""The quota ledger: usage is the sum of its rows, and a job is refunded at most once."""

import asyncio

import pytest

from storage import Database

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
    with pytest.raises(Exception, match="UNIQUE"):  # the indexes allow one refund per job, whatever the code does
        async with db.write() as tx:
            await tx.execute(
                "INSERT INTO quota_ledger (user_id, job_id, day, delta, reason) VALUES (?, ?, ?, -1, 'x')",
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
        assert not await db.quota.refund(job.id, "and again")  # still refunded at most once
        return [delta for _, delta, _ in await ledger_rows(db, job.id)]

    assert await done(count=4, cost=36, missing=1) == [36, -9]  # a quarter of the units
    assert await done(count=3, cost=8, missing=2) == [8, -5]  # 16/3 rounded down: the drawn one pays 3
    assert await done(count=2, cost=9, missing=2) == [9, -9]  # nothing came back: all of it
    assert await db.quota.used(user.id, DAY) == 27 + 3
