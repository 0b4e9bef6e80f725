"""The disk guard (EASEL_MIN_FREE_GB) and a disk that fills up mid-job: new jobs are refused while the
disk is low (admins see it in /stats and the metrics), accepted ones still run, drawing resumes by
itself, and a picture that cannot be saved (ENOSPC injected) fails cleanly, refunded, nothing left
half-written."""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3

from bot.language.messages import t
from storage.disk import DiskGuard
from storage.jobs import JobStatus
from tests.support.service import RecordingAdapter, alice, bob, settled, started

ADMIN = "telegram:100"  # alice


def set_free(app, gb: float) -> None:
    app.service.disk._measure = lambda path: gb  # what statvfs would say
    app.service.disk.forget()


async def used(app) -> int:
    user = await app.db.users.find("telegram", "100")
    return await app.db.quota.used(user.id, app.service.today())


async def test_a_low_disk_refuses_new_jobs_keeps_accepted_ones_and_resumes_by_itself(make_app, caplog):
    app = await make_app(EASEL_MIN_FREE_GB="5", EASEL_ADMINS=ADMIN)  # not started: the job stays queued
    accepted = await app.service.handle_text(alice(), "/draw before the disk filled --size 64x64 --steps 1", {})
    set_free(app, 1.5)
    with caplog.at_level(logging.ERROR, logger="storage.disk"):
        refused = await app.service.handle_text(alice(), "/draw a fox --size 64x64 --steps 1", {})
        again = await app.service.handle_text(alice(), "/draw a cat --size 64x64 --steps 1", {})
    member = await app.service.handle_text(bob(), "/draw a cat --size 64x64 --steps 1", {})
    assert refused.job_id is None and refused.alert  # alice, an admin, hears what to do about it
    assert refused.text == again.text == t("stats_disk_low", "en", free="1.5", guard="5")
    assert member.job_id is None and member.text == t("disk_full", "zh")  # bob, a member: try later
    assert len([r for r in caplog.records if "disk low" in r.message]) == 1  # told once, not per refusal
    assert await used(app) == 1  # only the accepted job is charged
    assert app.service.metrics.value("easel_disk_low") == 1
    assert app.service.metrics.value("easel_disk_free_gb") == 1.5
    assert app.service.metrics.value("easel_refusals_total", reason="disk") == 3
    stats = await app.service.handle_text(alice(), "/stats", {})
    assert t("stats_disk_low", "en", free="1.5", guard="5") in stats.text

    adapter = RecordingAdapter(service=app.service)
    app.service.register(adapter)
    await app.service.start()
    job = await settled(app, accepted.job_id)
    assert job.status is JobStatus.DONE  # accepted before the disk filled: drawn all the same

    set_free(app, 50)
    resumed = await app.service.handle_text(alice(), "/draw a fox --size 64x64 --steps 1", {})
    assert resumed.job_id is not None
    assert app.service.metrics.value("easel_disk_low") == 0
    stats = await app.service.handle_text(alice(), "/stats", {})
    assert t("stats_disk", "en", free="50.0", guard="5") in stats.text


async def test_a_picture_that_cannot_be_saved_fails_cleanly_and_is_refunded(make_app):
    app, adapter = await started(make_app)
    saves = []

    def full_disk(job_id, image, parameters):
        if saves:  # the second picture of the batch finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        saves.append(real_save(job_id, image, parameters))
        return saves[-1]

    real_save = app.service.images.save
    app.service.images.save = full_disk
    reply = await app.service.handle_text(alice(), "/draw a fox --size 64x64 --steps 1 --n 2", {"chat_id": "1"})
    job = await settled(app, reply.job_id)

    assert job.status is JobStatus.FAILED and job.error_key == "error.disk_full" and job.image_paths == []
    assert await used(app) == 0  # refunded in full
    assert not saves[0].exists()  # the half of the batch that was written is not left to fill the disk
    assert list(app.service.images.root.rglob("*.png")) == []
    assert adapter.failures and t("error.disk_full", "en") in adapter.failures[-1][1]
    assert sqlite3.connect(app.settings.database_path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


async def test_a_full_database_leaves_no_picture_and_no_half_written_row(make_app):
    app, adapter = await started(make_app)
    real_mark_done = app.db.jobs.mark_done

    async def database_full(job_id, **fields):
        async with app.db.write() as tx:  # a write that gets half way, then SQLite finds the disk full
            await tx.execute("UPDATE jobs SET seed = 7 WHERE id = ?", (job_id,))
            raise sqlite3.OperationalError("database or disk is full")
        return await real_mark_done(job_id, **fields)

    app.db.jobs.mark_done = database_full
    reply = await app.service.handle_text(alice(), "/draw a fox --size 64x64 --steps 1", {"chat_id": "1"})
    job = await settled(app, reply.job_id)

    assert job.status is JobStatus.FAILED and job.error_key == "error.disk_full"
    assert job.seed is None  # the failed transaction left nothing behind
    assert await used(app) == 0
    assert list(app.service.images.root.rglob("*.png")) == []


async def test_a_cancel_while_recording_done_never_removes_the_pictures_of_a_done_row(make_app):
    """A cancel (a stop) that lands while aiosqlite commits `done`: the row may be done already, so its
    pictures stay on disk for the redelivery."""
    app, _ = await started(make_app)
    real_mark_done = app.db.jobs.mark_done
    cancelled = asyncio.Event()

    async def committed_then_cancelled(job_id, **fields):
        await real_mark_done(job_id, **fields)
        cancelled.set()
        raise asyncio.CancelledError  # as a cancel arriving just after the commit

    app.db.jobs.mark_done = committed_then_cancelled
    reply = await app.service.handle_text(alice(), "/draw a fox --size 64x64 --steps 1", {"chat_id": "1"})
    await asyncio.wait_for(cancelled.wait(), 30)
    await asyncio.sleep(0.2)  # what the dispatcher does with the cancel
    job = await app.db.jobs.get(reply.job_id)
    assert job.status is JobStatus.DONE and job.image_paths
    assert all(app.service.images.resolve(path).exists() for path in job.image_paths)


def test_the_guard_reads_the_disk_at_most_every_few_seconds_and_zero_turns_it_off(tmp_path):
    now = [0.0]
    readings = []

    def measure(path):
        readings.append(path)
        return 1.0

    guard = DiskGuard(tmp_path / "not yet made", 2.0, measure, clock=lambda: now[0])
    assert guard.low() and guard.low() and len(readings) == 1
    now[0] = 10.0
    assert guard.low() and len(readings) == 2
    assert not DiskGuard(tmp_path, 0, measure).low()
    assert DiskGuard(tmp_path / "a" / "b", 1.0).free_gb() > 0  # the real statvfs of the nearest parent


def test_doctor_names_a_disk_under_the_guard(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import json

    from bot.cli.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EASEL_MODEL", tiny_model_dir)
    monkeypatch.setenv("EASEL_MIN_FREE_GB", "1000000")  # a million GB: no disk here has that free
    assert main(["doctor", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert any(p.startswith("disk low: ") and "EASEL_MIN_FREE_GB=1e+06" in p for p in problems), problems
    monkeypatch.setenv("EASEL_MIN_FREE_GB", "0")
    main(["doctor", "--json"])
    assert not any("disk low" in p for p in json.loads(capsys.readouterr().out)["problems"])
