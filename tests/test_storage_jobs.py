"""Jobs: atomic acceptance, guarded state changes, recovery queries, lineage and messages."""

import asyncio
import sqlite3

import pytest

from storage import Database, JobStatus, Outcome

DAY = "2025-01-02"


@pytest.fixture
async def db(tmp_path):
    database = await Database.open(tmp_path / "easel.db")
    yield database
    await database.close()


@pytest.fixture
async def user(db):
    return await db.users.get_or_create("telegram", "1", name="Ada")


async def accept(db, user, *, daily_limit=None, max_pending=100, **overrides):
    fields = dict(
        user_id=user.id,
        platform="telegram",
        reply_to={"chat_id": 10, "message_id": 20},
        request={"prompt": "a fox", "width": 1024, "height": 1024, "steps": 8},
        kind="txt2img",
        day=DAY,
        daily_limit=daily_limit,
        max_pending=max_pending,
    )
    fields.update(overrides)
    return await db.jobs.accept(**fields)


async def complete(db, job_id, *, seconds=1.0):
    """queued -> running -> done, as the worker would."""
    assert await db.jobs.mark_running(job_id)
    assert await db.jobs.mark_done(job_id, seed=1, image_paths=[], plan={}, timings={"total": seconds})


# -- accept ------------------------------------------------------------------------------------


async def test_accepted_job_is_persisted_queued_with_a_reservation(db, user):
    result = await accept(db, user, daily_limit=5)
    assert result.outcome == Outcome.ACCEPTED == "accepted"
    assert (result.used, result.pending) == (1, [])
    job = result.job
    assert job == await db.jobs.get(job.id)
    assert job.status is JobStatus.QUEUED
    assert job.request == {"prompt": "a fox", "width": 1024, "height": 1024, "steps": 8}
    assert job.reply_to == {"chat_id": 10, "message_id": 20}
    assert (job.image_paths, job.attempts, job.deleted, job.started_at) == ([], 0, False, None)
    assert await db.quota.used(user.id, DAY) == 1


async def test_duplicate_idempotency_key_returns_the_existing_job_and_reserves_nothing(db, user):
    first = await accept(db, user, idempotency_key="telegram:10:20")
    second = await accept(db, user, idempotency_key="telegram:10:20", request={"prompt": "other"})
    assert second.outcome == Outcome.DUPLICATE
    assert second.job == first.job
    assert second.used == 1
    assert await db.quota.used(user.id, DAY) == 1
    assert (await db.jobs.counts_by_status())["queued"] == 1


async def test_quota_refuses_once_the_day_is_used_up(db, user):
    for _ in range(2):
        assert (await accept(db, user, daily_limit=2)).outcome == Outcome.ACCEPTED
    refused = await accept(db, user, daily_limit=2)
    assert (refused.outcome, refused.job, refused.used) == (Outcome.QUOTA, None, 2)
    assert (await accept(db, user, daily_limit=2, day="2025-01-03")).outcome == Outcome.ACCEPTED


async def test_unlimited_users_are_still_counted(db, user):
    for _ in range(3):
        await accept(db, user, daily_limit=None)
    assert await db.quota.used(user.id, DAY) == 3


async def test_pending_limit_counts_queued_and_running(db, user):
    first = await accept(db, user, max_pending=2)
    await db.jobs.mark_running(first.job.id)
    second = await accept(db, user, max_pending=2)
    refused = await accept(db, user, max_pending=2)
    assert refused.outcome == Outcome.PENDING
    assert [job.id for job in refused.pending] == [first.job.id, second.job.id]
    assert await db.quota.used(user.id, DAY) == 2  # a refusal costs nothing
    assert await db.jobs.mark_done(first.job.id, seed=1, image_paths=[], plan={}, timings={})
    assert (await accept(db, user, max_pending=2)).outcome == Outcome.ACCEPTED


async def test_a_hundred_concurrent_accepts_respect_the_quota_exactly(db, user):
    results = await asyncio.gather(*(accept(db, user, daily_limit=5, max_pending=1000) for _ in range(100)))
    outcomes = [result.outcome for result in results]
    assert outcomes.count(Outcome.ACCEPTED) == 5
    assert outcomes.count(Outcome.QUOTA) == 95
    assert await db.quota.used(user.id, DAY) == 5
    assert len(await db.jobs.pending_for_user(user.id)) == 5


async def test_hostile_strings_are_stored_verbatim(db, user):
    prompt = "'); DROP TABLE jobs; -- \" \\ %s ? :name 狐狸 \x00"
    reply_to = {"chat_id": "1; DELETE FROM users", "token": "' OR '1'='1"}
    result = await accept(db, user, request={"prompt": prompt}, reply_to=reply_to, kind="txt2img'--")
    job = await db.jobs.get(result.job.id)
    assert job.request == {"prompt": prompt}
    assert job.reply_to == reply_to
    assert job.kind == "txt2img'--"
    assert await db.users.count() == 1
    assert (await db.jobs.counts_by_status())["queued"] == 1


# -- state changes -----------------------------------------------------------------------------


async def test_lifecycle_done(db, user):
    job_id = (await accept(db, user)).job.id
    assert await db.jobs.mark_running(job_id)
    assert not await db.jobs.mark_running(job_id)  # only from queued
    assert await db.jobs.mark_done(
        job_id, seed=42, image_paths=["2025/01/02/job-1-ab.png"], plan={"tiles": 1}, timings={"total": 2.5}
    )
    job = await db.jobs.get(job_id)
    assert (job.status, job.seed, job.image_paths, job.plan, job.timings, job.attempts) == (
        JobStatus.DONE,
        42,
        ["2025/01/02/job-1-ab.png"],
        {"tiles": 1},
        {"total": 2.5},
        1,
    )
    assert job.started_at and job.finished_at


async def test_failure_keeps_the_error_key_and_params(db, user):
    job_id = (await accept(db, user)).job.id
    assert await db.jobs.mark_failed(job_id, "error.oom", {"needed_gb": 9.5})
    job = await db.jobs.get(job_id)
    assert (job.status, job.error_key, job.error_params) == (JobStatus.FAILED, "error.oom", {"needed_gb": 9.5})


async def test_cancel_only_from_queued_or_running_and_a_late_result_cannot_overwrite_it(db, user):
    job_id = (await accept(db, user)).job.id
    await db.jobs.mark_running(job_id)
    assert await db.jobs.mark_cancelled(job_id)
    assert not await db.jobs.mark_cancelled(job_id)
    assert not await db.jobs.mark_done(job_id, seed=1, image_paths=[], plan={}, timings={})
    assert not await db.jobs.mark_failed(job_id, "error.x", {})
    assert (await db.jobs.get(job_id)).status is JobStatus.CANCELLED


async def test_requeue_puts_a_running_job_back_and_counts_the_next_attempt(db, user):
    job_id = (await accept(db, user)).job.id
    assert not await db.jobs.requeue(job_id)  # not running
    await db.jobs.mark_running(job_id)
    assert await db.jobs.requeue(job_id)
    assert await db.jobs.mark_running(job_id)
    assert (await db.jobs.get(job_id)).attempts == 2


async def test_mark_delivered_wins_exactly_once_under_concurrency(db, user):
    job_id = (await accept(db, user)).job.id
    await complete(db, job_id)
    wins = await asyncio.gather(*(db.jobs.mark_delivered(job_id) for _ in range(25)))
    assert wins.count(True) == 1
    assert (await db.jobs.get(job_id)).delivered_at is not None


async def test_update_reply_to_and_mark_deleted(db, user):
    job_id = (await accept(db, user)).job.id
    await db.jobs.update_reply_to(job_id, {"chat_id": 10, "status_message_id": 99})
    assert (await db.jobs.get(job_id)).reply_to == {"chat_id": 10, "status_message_id": 99}
    assert await db.jobs.mark_deleted(job_id)
    assert not await db.jobs.mark_deleted(job_id)
    assert (await db.jobs.get(job_id)).deleted


# -- queries -----------------------------------------------------------------------------------


async def test_unfinished_keeps_the_original_order_across_users(db, user):
    other = await db.users.get_or_create("discord", "2")
    ids = [(await accept(db, owner)).job.id for owner in (user, other, user, other)]
    await db.jobs.mark_running(ids[2])
    await complete(db, ids[1])
    await db.jobs.mark_cancelled(ids[3])
    assert [job.id for job in await db.jobs.unfinished()] == [ids[0], ids[2]]


async def test_undelivered_lists_finished_jobs_not_yet_sent(db, user):
    ids = [(await accept(db, user)).job.id for _ in range(4)]
    await complete(db, ids[0])
    await db.jobs.mark_failed(ids[1], "error.nan", {})
    await complete(db, ids[2])
    await db.jobs.mark_delivered(ids[2])
    await complete(db, ids[3])
    await db.jobs.mark_deleted(ids[3])
    assert [job.id for job in await db.jobs.undelivered()] == [ids[0], ids[1]]


async def test_history_pages_newest_first_without_deleted(db, user):
    ids = [(await accept(db, user)).job.id for _ in range(7)]
    await db.jobs.mark_deleted(ids[0])
    first_page, total = await db.jobs.list_for_user(user.id, page=0, page_size=5)
    second_page, _ = await db.jobs.list_for_user(user.id, page=1, page_size=5)
    assert total == 6
    assert [job.id for job in first_page] == ids[:0:-1][:5]
    assert [job.id for job in second_page] == [ids[1]]


async def test_lineage_of_a_three_level_chain_runs_root_first(db, user):
    root = (await accept(db, user)).job
    child = (await accept(db, user, parent_id=root.id, kind="variation")).job
    grandchild = (await accept(db, user, parent_id=child.id, kind="upscale")).job
    sibling = (await accept(db, user, parent_id=root.id, kind="variation")).job
    assert [job.id for job in await db.jobs.lineage(grandchild.id)] == [root.id, child.id, grandchild.id]
    assert [job.id for job in await db.jobs.lineage(root.id)] == [root.id]
    assert [job.id for job in await db.jobs.children(root.id)] == [child.id, sibling.id]
    assert await db.jobs.lineage(9999) == []


async def test_a_parent_must_exist(db, user):
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        await accept(db, user, parent_id=9999)
    assert await db.quota.used(user.id, DAY) == 0


async def test_find_by_message(db, user):
    job_id = (await accept(db, user)).job.id
    await db.jobs.record_message(job_id, "telegram", "-100123", "555")
    await db.jobs.record_message(job_id, "telegram", "-100123", "556")
    assert (await db.jobs.find_by_message("telegram", "-100123", "555")).id == job_id
    assert (await db.jobs.find_by_message("telegram", "-100123", "556")).id == job_id
    assert await db.jobs.find_by_message("discord", "-100123", "555") is None
    assert await db.jobs.find_by_message("telegram", "-100123", "557") is None


async def test_counts_by_status_lists_every_status(db, user):
    ids = [(await accept(db, user)).job.id for _ in range(3)]
    await db.jobs.mark_running(ids[0])
    await db.jobs.mark_cancelled(ids[1])
    assert await db.jobs.counts_by_status() == {"queued": 1, "running": 1, "done": 0, "failed": 0, "cancelled": 1}


async def test_recent_durations_come_from_done_jobs_oldest_first(db, user):
    small = (await accept(db, user, request={"prompt": "a", "width": 512, "height": 768, "steps": 4})).job.id
    big = (await accept(db, user)).job.id
    failed = (await accept(db, user)).job.id
    await complete(db, small)
    await complete(db, big, seconds=6.25)
    await db.jobs.mark_failed(failed, "error.oom", {})
    assert await db.jobs.recent_durations() == [(512, 768, 4, 1.0), (1024, 1024, 8, 6.25)]
    assert await db.jobs.recent_durations(limit=1) == [(1024, 1024, 8, 6.25)]
