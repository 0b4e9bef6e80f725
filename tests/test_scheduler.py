"""The scheduler alone: no database, no worker, no chat; a fake clock."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.cost import Unit
from bot.core.scheduler import Scheduler
from bot.language.messages import t
from bot.language.text import duration
from engine.request import Z_IMAGE_TURBO, DrawRequest, validate
from storage.jobs import Job, JobStatus

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def job(job_id: int, user: int, **request) -> Job:
    """A queued job as storage would hand it over, built here without one."""
    stored = validate(DrawRequest("a fox", **request), Z_IMAGE_TURBO).to_dict()
    return Job(
        id=job_id,
        user_id=user,
        platform="telegram",
        reply_to={},
        request=stored,
        kind="txt2img",
        parent_id=None,
        status=JobStatus.QUEUED,
        error_key=None,
        error_params={},
        seed=None,
        image_paths=[],
        plan=None,
        timings=None,
        created_at="2025-01-02T03:04:05",
        started_at=None,
        finished_at=None,
        delivered_at=None,
        idempotency_key=None,
        attempts=0,
        deleted=False,
    )


def scheduler_with(workers: list[int] | None = None, clock: Clock | None = None) -> Scheduler:
    workers = workers if workers is not None else [1]
    return Scheduler(Unit.of(Z_IMAGE_TURBO), live_workers=lambda: workers[0], clock=clock or Clock())


def test_the_scheduler_imports_no_storage():
    code = (
        "import sys, bot.core.scheduler\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('storage', 'aiosqlite', 'sqlite3')]\n"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


async def test_jobs_leave_in_fair_order_and_each_is_charged_its_cost():
    scheduler = scheduler_with()
    scheduler.enqueue(job(1, user=1, steps=16))  # 2 units
    scheduler.enqueue(job(2, user=1))
    scheduler.enqueue(job(3, user=2))
    assert [scheduler.queue.cost_of(job_id) for job_id in (1, 2, 3)] == [2, 1, 1]
    assert scheduler.waiting_units() == 4
    assert [job_id for job_id, _ in scheduler.queue.snapshot()] == [3, 1, 2]  # the big one waits a round
    assert [await scheduler.next_job() for _ in range(3)] == [3, 1, 2]
    assert scheduler.waiting_units() == 0


def test_estimates_count_pictures_and_guidance():
    scheduler = scheduler_with()
    one = scheduler.eta.estimate(1024, 1024, 8)
    scheduler.enqueue(job(1, user=1, count=2, cfg=2.0))
    estimate, enqueued = scheduler.taken(1)
    assert estimate == pytest.approx(4 * one) and enqueued == 100.0
    scheduler.learn([(1024, 1024, 8, 3.0)])
    assert scheduler.eta.estimate(1024, 1024, 8) == pytest.approx(3.0)


async def test_etas_count_the_running_job_and_share_the_work_ahead_between_workers():
    clock, workers = Clock(), [1]
    scheduler = scheduler_with(workers, clock)
    one = scheduler.eta.estimate(1024, 1024, 8)
    jobs = [job(i, user=i) for i in (1, 2, 3)]
    for each in jobs:
        scheduler.enqueue(each)
    assert scheduler.eta_seconds(3) == pytest.approx(3 * one)

    assert await scheduler.next_job() == 1
    estimate, enqueued = scheduler.taken(1)
    clock.now += 2
    assert scheduler.started(1, estimate, enqueued) == pytest.approx(2.0)  # seconds it waited
    assert scheduler.is_running(1) and scheduler.running_jobs() == [1]
    clock.now += 1
    assert scheduler.eta_seconds(3) == pytest.approx((one - 1) + one + one)
    workers[0] = 2  # the work ahead is shared; the job's own run is not
    assert scheduler.eta_seconds(3) == pytest.approx(((one - 1) + one) / 2 + one)
    eta = duration(scheduler.eta_seconds(3))
    assert scheduler.queued_text(jobs[2], "en") == t("queued", "en", job_id=3, position=2, eta=eta)

    scheduler.ended(1)
    assert not scheduler.is_running(1) and scheduler.running_jobs() == []
    assert scheduler.eta_seconds(1) == 0.0 and scheduler.queued_text(jobs[0], "en") == t("queued_next", "en", job_id=1)


def test_a_removed_job_leaves_nothing_behind():
    scheduler = scheduler_with()
    scheduler.enqueue(job(1, user=1))
    scheduler.enqueue(job(2, user=1))
    assert scheduler.remove(2) and not scheduler.remove(2)
    assert 2 not in scheduler.queue and scheduler.taken(2) == (0.0, None)
    assert scheduler.queue.position(1) == 0
