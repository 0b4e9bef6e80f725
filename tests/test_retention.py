"""Retention (EASEL_KEEP_DAYS, `easel prune`): old pictures leave the disk, their jobs stay and say
"picture expired", buttons that need the picture say so, Reroll still works; pruning by hand reports
what it frees, a dry run frees nothing.  A user's uploaded picture leaves the disk with the last job
drawn from it (rerolls share it), swept or deleted; `easel prune --orphans` removes picture files no
job names, older than an hour."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import time

from PIL import Image

from bot.cli.main import main as easel
from bot.contract import Upload
from bot.language.buttons import Action, button_id
from bot.language.messages import t
from storage.db import Database
from storage.images import ImageStore
from storage.jobs import JobStatus
from storage.retention import cutoff, sweep
from storage.uploads import store_upload
from tests.support.service import alice, settled, shown_on, started

LONG_AGO = "2025-01-01T00:00:00.000Z"


def backdate(database_path, job_id: int, when: str = LONG_AGO) -> None:
    with sqlite3.connect(database_path) as conn:
        conn.execute("UPDATE jobs SET created_at = ?, finished_at = ? WHERE id = ?", (when, when, job_id))


async def drawn(app, prompt: str) -> int:
    reply = await app.service.handle_text(alice(), f"/draw {prompt} --size 64x64 --steps 1", {"chat_id": "1"})
    await settled(app, reply.job_id)
    return reply.job_id


async def test_old_pictures_leave_the_disk_and_their_jobs_say_expired(make_app):
    app, _ = await started(make_app, EASEL_KEEP_DAYS="30")
    old, new = await drawn(app, "an old fox"), await drawn(app, "a new fox")
    backdate(app.settings.database_path, old)
    old_file = app.service.images.resolve((await app.db.jobs.get(old)).image_paths[0])
    new_file = app.service.images.resolve((await app.db.jobs.get(new)).image_paths[0])
    size = old_file.stat().st_size

    report = await app.service.retention.sweep_once()

    assert (report.jobs, report.files, report.freed_bytes) == (1, 1, size)
    assert not old_file.exists() and new_file.exists()
    job = await app.db.jobs.get(old)
    assert job.expired and job.status is JobStatus.DONE and job.seed is not None  # the row stays
    assert not (await app.db.jobs.get(new)).expired
    assert app.service.metrics.value("easel_pictures_expired_total") == 1
    assert app.service.metrics.value("easel_expired_bytes_total") == size
    history = await app.service.handle_text(alice(), "/history", {"chat_id": "1"})
    assert t("status.expired", "en") in history.text and history.text.count(t("status.expired", "en")) == 1
    show = await app.service.handle_text(alice(), f"/show {old}", {"chat_id": "1"})
    assert t("status.expired", "en") in show.text
    assert (await app.service.retention.sweep_once()).jobs == 0  # nothing left to do


async def test_buttons_on_an_expired_picture_say_so_and_reroll_still_draws(make_app):
    app, adapter = await started(make_app, EASEL_KEEP_DAYS="30")
    old = await drawn(app, "an old fox")
    backdate(app.settings.database_path, old)
    await app.service.retention.sweep_once()

    for action in (Action.VARY_SUBTLE, Action.UPSCALE):
        reply = await app.service.press(alice(), button_id(action, old), {"chat_id": "1"}, message_id=shown_on(old))
        assert reply.alert and reply.text == t("picture_expired", "en", job_id=old)
    params = await app.service.press(alice(), button_id(Action.PARAMS, old), {"chat_id": "1"}, message_id=shown_on(old))
    assert "an old fox" in params.text
    reroll = await app.service.press(alice(), button_id(Action.REROLL, old), {"chat_id": "1"}, message_id=shown_on(old))
    assert reroll.job_id is not None
    job = await settled(app, reroll.job_id)
    assert job.status is JobStatus.DONE and job.parent_id == old and not job.expired
    reply = await app.service.vary_from_picture(alice(), "now at night", "1", shown_on(old), {"chat_id": "1"}, None)
    assert reply.text == t("picture_expired", "en", job_id=old)
    assert len(adapter.delivered) == 2  # the first picture and the reroll; nothing drawn from a missing source


async def test_no_keep_days_means_no_sweep(make_app):
    app, _ = await started(make_app)
    assert app.service.retention is None and "retention" not in app.service.background.loops


async def test_the_sweep_works_in_paced_batches_and_a_dry_run_removes_nothing(tmp_path):
    db = await Database.open(tmp_path / "easel.db")
    images = ImageStore(tmp_path / "images")
    try:
        ids = await fill(db, images, 7)
        before = cutoff(30)
        dry = await sweep(db.jobs, images, before, dry_run=True, batch=3, pause_s=0)
        assert (dry.jobs, dry.files) == (7, 7) and dry.freed_bytes > 0
        assert all(images.resolve(p).exists() for p in await paths(db, ids))
        done = await sweep(db.jobs, images, before, batch=3, pause_s=0)
        assert (done.jobs, done.files, done.freed_bytes) == (7, 7, dry.freed_bytes)
        assert not any(images.resolve(p).exists() for p in await paths(db, ids))
        assert all([(await db.jobs.get(job_id)).expired for job_id in ids])
    finally:
        await db.close()


def test_easel_prune_reports_what_it_freed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no .env from the checkout

    async def setup():
        db = await Database.open(tmp_path / "easel.db")
        await fill(db, ImageStore(tmp_path / "images"), 3)
        await db.audit.record(None, "ban", "user:1")
        await db.close()

    asyncio.run(setup())
    assert easel(["prune", "--older-than", "30d", "--audit-older-than", "0d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 3 files of 3 jobs" in out and "would delete 1 rows" in out
    assert len(list((tmp_path / "images").rglob("*.png"))) == 3
    assert easel(["prune", "--older-than", "30d"]) == 0
    assert "removed 3 files of 3 jobs" in capsys.readouterr().out
    assert list((tmp_path / "images").rglob("*.png")) == []
    assert easel(["prune", "--older-than", "soon"]) == 2
    assert "30d" in capsys.readouterr().err


async def fill(db: Database, images: ImageStore, count: int) -> list[int]:
    """`count` done and delivered jobs with one real picture each, finished long ago."""
    user = await db.users.get_or_create("telegram", "1", "alice")
    ids = []
    for n in range(count):
        accepted = await db.jobs.accept(
            user_id=user.id, platform="telegram", reply_to={}, request={"prompt": f"fox {n}"}, kind="draw",
            day="2025-01-01", daily_limit=None, max_pending=100,
        )  # fmt: skip
        job_id = accepted.job.id
        await db.jobs.mark_running(job_id)
        path = images.relative(images.save(job_id, Image.new("RGB", (32, 32), (n, 0, 0)), f"fox {n}"))
        await db.jobs.mark_done(job_id, seed=n, image_paths=[path], plan={}, timings={"total": 1.0})
        await db.jobs.mark_delivered(job_id)
        ids.append(job_id)
    marks = ", ".join("?" * len(ids))
    async with db.write() as tx:
        await tx.execute(f"UPDATE jobs SET finished_at = ? WHERE id IN ({marks})", (LONG_AGO, *ids))
    return ids


async def paths(db: Database, ids: list[int]) -> list[str]:
    return [path for job_id in ids for path in (await db.jobs.get(job_id)).image_paths]


# -- uploads and orphans ------------------------------------------------------------------------

SET_SOURCE = "UPDATE jobs SET request = json_set(request, '$.source_image', ?) WHERE id = ?"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload_job_and_reroll(app) -> tuple[int, int, str]:
    """A job drawn from an uploaded picture and its reroll: (job, reroll, the stored upload's path)."""
    data = png()

    async def fetch() -> bytes:
        return data

    reply = await app.service.draw_from_upload(
        alice(), "/draw a harbour --steps 1", Upload(len(data), fetch), {"chat_id": "1"}, None
    )
    job = await settled(app, reply.job_id)
    source = job.request["source_image"]
    reroll = await app.service.press(
        alice(), button_id(Action.REROLL, job.id), {"chat_id": "1"}, message_id=shown_on(job.id)
    )
    child = await settled(app, reroll.job_id)
    assert child.request["source_image"] == source  # a reroll shares the upload's file
    assert not os.path.isabs(source)  # kept relative to the images root, like the pictures
    return job.id, child.id, str(app.service.images.resolve(source))


async def test_the_sweep_removes_an_upload_with_the_last_job_drawn_from_it(make_app):
    app, _ = await started(make_app, EASEL_KEEP_DAYS="30")
    job, reroll, source = await upload_job_and_reroll(app)
    backdate(app.settings.database_path, job)
    first = await app.service.retention.sweep_once()
    assert (first.jobs, first.uploads) == (1, 0) and os.path.exists(source)  # the reroll still needs it
    size = os.path.getsize(source)
    backdate(app.settings.database_path, reroll)
    second = await app.service.retention.sweep_once()
    assert (second.jobs, second.uploads) == (1, 1) and not os.path.exists(source)
    assert second.freed_bytes > size and second.files == 2  # the reroll's picture and the upload
    # An expired picture drawn from an upload cannot be rerolled: its source is gone.
    press = await app.service.press(alice(), button_id(Action.REROLL, job), {"chat_id": "1"}, message_id=shown_on(job))
    assert press.alert and press.text == t("picture_expired", "en", job_id=job)


async def test_deleting_removes_the_upload_unless_a_reroll_still_needs_it(make_app):
    app, _ = await started(make_app)
    job, reroll, source = await upload_job_and_reroll(app)
    for deleted, left in ((job, True), (reroll, False)):
        reply = await app.service.press(
            alice(), button_id(Action.DELETE, deleted), {"chat_id": "1"}, message_id=shown_on(deleted)
        )
        assert reply.text == t("deleted", "en")
        assert os.path.exists(source) is left


def test_easel_prune_older_than_removes_uploads_no_job_needs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    images = ImageStore(tmp_path / "images")

    async def setup() -> tuple[str, str]:
        db = await Database.open(tmp_path / "easel.db")
        from_upload, variation, parent, _plain = await fill(db, images, 4)
        upload = str(store_upload(images.root, Image.new("RGB", (32, 32))))
        picture = str(images.resolve((await db.jobs.get(parent)).image_paths[0]))
        async with db.write() as tx:  # old: a job from an upload, a variation of a new picture, a plain one
            await tx.execute(SET_SOURCE, (upload, from_upload))
            await tx.execute(SET_SOURCE, (picture, variation))
            await tx.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (cutoff(0), parent))
        await db.close()
        return upload, picture

    upload, picture = asyncio.run(setup())
    assert easel(["prune", "--older-than", "30d", "--dry-run"]) == 0
    assert "would remove 4 files of 3 jobs older than 30d (1 uploaded pictures" in capsys.readouterr().out
    assert os.path.exists(upload)
    assert easel(["prune", "--older-than", "30d"]) == 0
    assert "removed 4 files of 3 jobs older than 30d (1 uploaded pictures" in capsys.readouterr().out
    assert not os.path.exists(upload) and os.path.exists(picture)  # a job's own picture is not an upload


def test_easel_prune_orphans_removes_old_files_no_job_names(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    images = ImageStore(tmp_path / "images")
    two_hours_ago = time.time() - 7200

    async def setup() -> list[str]:
        db = await Database.open(tmp_path / "easel.db")
        [job] = await fill(db, images, 1)
        named = str(images.resolve((await db.jobs.get(job)).image_paths[0]))
        source = str(store_upload(images.root, Image.new("RGB", (32, 32))))
        async with db.write() as tx:
            await tx.execute(SET_SOURCE, (source, job))
        await db.close()
        return [named, source]

    named = asyncio.run(setup())
    orphans = [
        str(images.save(999, Image.new("RGB", (64, 64), (9, 9, 9)), "lost")),
        str(store_upload(images.root, Image.new("RGB", (64, 64)))),
    ]
    partial = images.root / ".partial-abc.png"  # an interrupted write
    partial.write_bytes(b"half a png")
    orphans.append(str(partial))
    young = str(images.save(998, Image.new("RGB", (64, 64)), "being saved right now"))
    for path in [*named, *orphans]:
        os.utime(path, (two_hours_ago, two_hours_ago))
    freed = sum(os.path.getsize(path) for path in orphans)

    assert easel(["prune", "--orphans", "--dry-run"]) == 0
    assert f"would remove 3 picture files that no job names (older than 1 h), {freed / 1e6:.1f} MB" in (
        capsys.readouterr().out
    )
    assert all(os.path.exists(path) for path in [*named, *orphans, young])
    assert easel(["prune", "--orphans"]) == 0
    assert "removed 3 picture files that no job names" in capsys.readouterr().out
    assert not any(os.path.exists(path) for path in orphans)
    assert all(os.path.exists(path) for path in [*named, young])
    with sqlite3.connect(tmp_path / "easel.db") as conn:  # rows are never touched
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1


# -- what jobs still need -------------------------------------------------------------------------


async def test_a_picture_still_to_be_delivered_or_drawn_from_stays(tmp_path):
    """A done job waiting for its (re)delivery keeps its pictures until it is delivered or given up,
    and a picture a queued or running job is drawn from (Upscale, Vary, Zoom, Enhance) stays until
    that job has ended."""
    db = await Database.open(tmp_path / "easel.db")
    images = ImageStore(tmp_path / "images")
    try:
        waiting, given_up, upscaled, varied, plain = await fill(db, images, 5)
        upscale, vary = await fill(db, images, 2)  # stand-ins for the jobs drawn from those pictures
        async with db.write() as tx:
            await tx.execute("UPDATE jobs SET delivered_at = NULL WHERE id IN (?, ?)", (waiting, given_up))
            await tx.execute("UPDATE jobs SET delivery_error = 'blocked' WHERE id = ?", (given_up,))
            absolute = str(images.resolve((await db.jobs.get(upscaled)).image_paths[0]))  # as a button makes it
            relative = (await db.jobs.get(varied)).image_paths[0]
            for source, job_id, status in ((absolute, upscale, "queued"), (relative, vary, "running")):
                await tx.execute(SET_SOURCE, (source, job_id))
                await tx.execute("UPDATE jobs SET status = ?, finished_at = NULL WHERE id = ?", (status, job_id))
        kept = [waiting, upscaled, varied]

        report = await sweep(db.jobs, images, cutoff(30), batch=2, pause_s=0)
        assert report.jobs == 2  # given up and plain
        for job_id in (waiting, given_up, upscaled, varied, plain):
            job = await db.jobs.get(job_id)
            assert job.expired is (job_id not in kept)
            assert images.resolve(job.image_paths[0]).exists() is (job_id in kept)

        await db.jobs.mark_delivered(waiting)
        await db.jobs.mark_failed(upscale, "error.unexpected", {})
        await db.jobs.mark_cancelled(vary)
        async with db.write() as tx:
            await tx.execute("UPDATE jobs SET finished_at = ? WHERE id IN (?, ?)", (LONG_AGO, upscale, vary))
        assert (await sweep(db.jobs, images, cutoff(30), pause_s=0)).jobs == 3  # nothing needs them now
        assert all([(await db.jobs.get(job_id)).expired for job_id in kept])
    finally:
        await db.close()


async def test_the_sweep_releases_the_upload_of_a_failed_or_cancelled_job(tmp_path):
    """A failed or cancelled job has no pictures to expire: its upload goes once it finished before the
    cutoff and no other job needs the file (here a queued reroll shares one of them)."""
    db = await Database.open(tmp_path / "easel.db")
    images = ImageStore(tmp_path / "images")
    try:
        failed, cancelled, recent, sharing, reroll = await fill(db, images, 5)
        uploads = [store_upload(images.root, Image.new("RGB", (32, 32), (n, 0, 0))) for n in range(4)]
        async with db.write() as tx:
            for job_id, upload in zip((failed, cancelled, recent, sharing), uploads, strict=True):
                await tx.execute(SET_SOURCE, (images.relative(upload), job_id))
            await tx.execute(SET_SOURCE, (images.relative(uploads[3]), reroll))
            await tx.execute("UPDATE jobs SET status = 'failed' WHERE id IN (?, ?)", (failed, sharing))
            await tx.execute("UPDATE jobs SET status = 'cancelled' WHERE id IN (?, ?)", (cancelled, recent))
            await tx.execute("UPDATE jobs SET finished_at = ? WHERE id = ?", (cutoff(0), recent))
            await tx.execute("UPDATE jobs SET status = 'queued', finished_at = NULL WHERE id = ?", (reroll,))
        size = sum(upload.stat().st_size for upload in uploads[:2])

        dry = await sweep(db.jobs, images, cutoff(30), dry_run=True, batch=1, pause_s=0)
        assert (dry.uploads, dry.freed_bytes) == (2, size) and all(upload.exists() for upload in uploads)
        report = await sweep(db.jobs, images, cutoff(30), batch=1, pause_s=0)
        assert (report.jobs, report.files, report.uploads, report.freed_bytes) == (0, 2, 2, size)
        assert [upload.exists() for upload in uploads] == [False, False, True, True]  # too recent, still needed
        assert (await sweep(db.jobs, images, cutoff(30), pause_s=0)).uploads == 0  # counted once
    finally:
        await db.close()


async def test_a_press_on_a_picture_already_removed_says_expired_and_queues_nothing(make_app):
    """Retention removes the files first and marks the job after: a press in between (or after a crash
    between the two) must not queue a job that would fail on its missing source."""
    app, _ = await started(make_app, EASEL_KEEP_DAYS="30")
    job_id = await drawn(app, "a fox being swept")
    app.service.images.resolve((await app.db.jobs.get(job_id)).image_paths[0]).unlink()  # not yet marked expired
    for action in (Action.UPSCALE, Action.VARY_STRONG, Action.ZOOM_OUT_2):
        reply = await app.service.press(
            alice(), button_id(action, job_id), {"chat_id": "1"}, message_id=shown_on(job_id)
        )
        assert reply.alert and reply.text == t("picture_expired", "en", job_id=job_id) and reply.job_id is None
    reroll = await app.service.press(
        alice(), button_id(Action.REROLL, job_id), {"chat_id": "1"}, message_id=shown_on(job_id)
    )
    assert reroll.job_id is not None  # needs no picture
