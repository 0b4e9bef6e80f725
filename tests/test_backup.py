"""`easel backup` while jobs are being written, then `easel restore` into a fresh data dir: the copy
passes integrity_check and holds every job and quota row of one consistent moment; restore refuses
to run over a database a bot has open."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3

import pytest
from PIL import Image

from bot.cli import maintenance
from bot.cli.main import main as easel
from bot.runtime.settings import Settings
from storage.db import Database, DatabaseInUse, exclusive_use
from storage.images import ImageStore

TABLES = ("users", "jobs", "quota_ledger", "job_counts")


def settings_for(data_dir) -> Settings:
    return Settings(_env_file=None, EASEL_DATA_DIR=str(data_dir))


def rows(path, table: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return [tuple(row) for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1")]


async def write_jobs(db: Database, images: ImageStore, stop: asyncio.Event) -> int:
    """Accept and finish jobs (a quota row each, a picture each) until told to stop."""
    written = 0
    while not stop.is_set():
        user = await db.users.get_or_create("telegram", str(written % 7), f"user {written % 7}")
        accepted = await db.jobs.accept(
            user_id=user.id, platform="telegram", reply_to={}, request={"prompt": f"fox {written}"}, kind="draw",
            day="2026-01-01", daily_limit=None, max_pending=10**6,
        )  # fmt: skip
        job_id = accepted.job.id
        await db.jobs.mark_running(job_id)
        path = images.relative(images.save(job_id, Image.new("RGB", (8, 8)), "fox"))
        await db.jobs.mark_done(job_id, seed=written, image_paths=[path], plan={}, timings={"total": 1.0})
        written += 1
    return written


async def test_backup_while_writing_then_restore_into_a_fresh_data_dir(tmp_path):
    live, fresh, dest = tmp_path / "live", tmp_path / "fresh", tmp_path / "backup"
    db = await Database.open(settings_for(live).database_path)
    images = ImageStore(settings_for(live).images_dir)
    stop = asyncio.Event()
    writer = asyncio.create_task(write_jobs(db, images, stop))
    while (await db.jobs.counts_by_status())["done"] < 20:
        await asyncio.sleep(0.01)
    report = await asyncio.to_thread(maintenance.backup, settings_for(live), dest, "copy")
    during = (await db.jobs.counts_by_status())["done"]
    await asyncio.sleep(0.1)
    stop.set()
    written = await writer
    await db.close()
    assert "integrity ok" in report

    assert "database:" in maintenance.restore(settings_for(fresh), dest)
    restored = settings_for(fresh).database_path
    with sqlite3.connect(restored) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    jobs = rows(restored, "jobs")
    assert 20 <= len(jobs) <= during < written  # a moment while the writer was still going
    source = {table: rows(settings_for(live).database_path, table) for table in TABLES}
    ids = {job[0] for job in jobs}
    later = {job[0]: job for job in source["jobs"]}
    for job in jobs:  # every job row as it was at that moment: finished ones exactly as they are now
        assert job == later[job[0]] if job[7] == "done" else job[:7] == later[job[0]][:7]
    assert [job[7] for job in jobs].count("done") >= 20
    ledger = rows(restored, "quota_ledger")
    assert ledger == [row for row in source["quota_ledger"] if row[2] in ids]  # and its quota row
    assert len(ledger) == len(jobs)  # one consistent moment: no job without its charge, no charge without its job
    counts = dict(rows(restored, "job_counts"))
    assert sum(counts.values()) == len(jobs) and counts["done"] == [job[7] for job in jobs].count("done")
    for job in await reopened_jobs(restored):
        assert (settings_for(fresh).images_dir / job).exists()  # the pictures came along


async def reopened_jobs(path) -> list[str]:
    db = await Database.open(path)  # the restored file opens as a database (schema current)
    try:
        return [p for row in await db.fetch_all("SELECT image_paths FROM jobs") for p in json.loads(row[0])]
    finally:
        await db.close()


async def test_restore_refuses_a_database_in_use_and_keeps_the_one_it_replaces(tmp_path):
    first, dest = settings_for(tmp_path / "first"), tmp_path / "backup"
    db = await Database.open(first.database_path)
    await db.users.get_or_create("telegram", "1", "alice")
    maintenance.backup(first, dest, None)
    with pytest.raises(maintenance.MaintenanceError, match="stop the bot first"):
        maintenance.restore(first, dest)
    await db.users.get_or_create("telegram", "2", "bob")
    await db.close()

    maintenance.restore(first, dest)
    assert [row[2] for row in rows(first.database_path, "users")] == ["1"]  # the backup's moment
    [aside] = list(first.data_dir.glob("easel.db.before-restore-*"))
    assert [row[2] for row in rows(aside, "users")] == ["1", "2"]  # the replaced one, kept aside
    with exclusive_use(first.database_path), pytest.raises(DatabaseInUse):
        await Database.open(first.database_path)  # and a bot does not open one being restored


def test_the_cli_backs_up_refuses_to_overwrite_and_checks_what_it_restores(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    asyncio.run(_one_user(settings_for(tmp_path / "data")))
    assert easel(["backup", str(tmp_path / "b")]) == 0
    assert easel(["backup", str(tmp_path / "b")]) == 2
    assert "exists already" in capsys.readouterr().err
    broken = tmp_path / "broken.db"
    shutil.copyfile(tmp_path / "b" / "easel.db", broken)
    size = broken.stat().st_size
    with open(broken, "r+b") as file:
        file.seek(4096)
        file.write(b"\xff" * (size - 4096))  # every page but the first is garbage
    assert easel(["restore", str(broken)]) == 2
    assert "integrity_check" in capsys.readouterr().err
    assert rows(tmp_path / "data" / "easel.db", "users")  # the database in place was not touched


def test_restore_replaces_a_corrupt_live_database_and_keeps_it_aside_as_it_was(tmp_path):
    """Restoring is what a corrupt database needs: the old one is moved aside as it is, with its -wal."""
    live, dest = settings_for(tmp_path / "live"), tmp_path / "backup"
    asyncio.run(_one_user(live))
    maintenance.backup(live, dest, None)
    garbage = b"\xff" * 8192
    live.database_path.write_bytes(live.database_path.read_bytes()[:4096] + garbage)  # every page but the first
    wal = live.database_path.with_name("easel.db-wal")
    wal.write_bytes(b"an old write-ahead log")

    maintenance.restore(live, dest)

    assert rows(live.database_path, "users")  # the backup, in place
    assert not wal.exists()  # the old log would corrupt the restored file
    [aside] = list(live.data_dir.glob("easel.db.before-restore-*[0-9]"))
    assert aside.read_bytes().endswith(garbage)  # kept byte for byte, not checked
    assert aside.with_name(aside.name + "-wal").read_bytes() == b"an old write-ahead log"


async def _one_user(settings: Settings) -> None:
    db = await Database.open(settings.database_path)
    await db.users.get_or_create("telegram", "1", "alice")
    await db.close()


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd program")
async def test_pictures_as_a_tar_zst_come_back_where_the_database_expects_them(tmp_path):
    live, fresh, dest = settings_for(tmp_path / "live"), settings_for(tmp_path / "fresh"), tmp_path / "backup"
    db = await Database.open(live.database_path)
    images = ImageStore(live.images_dir)
    for n in range(3):
        user = await db.users.get_or_create("telegram", str(n), "someone")
        accepted = await db.jobs.accept(
            user_id=user.id, platform="telegram", reply_to={}, request={"prompt": "fox"}, kind="draw",
            day="2026-01-01", daily_limit=None, max_pending=9,
        )  # fmt: skip
        await db.jobs.mark_running(accepted.job.id)
        path = images.relative(images.save(accepted.job.id, Image.new("RGB", (8, 8), (n, n, n)), "fox"))
        await db.jobs.mark_done(accepted.job.id, seed=n, image_paths=[path], plan={}, timings={})
    await db.close()

    assert "images.tar.zst" in maintenance.backup(live, dest, "tar.zst")
    assert not (dest / "images").exists()
    assert "unpacked" in maintenance.restore(fresh, dest)
    expected = await reopened_jobs(fresh.database_path)
    assert len(expected) == 3
    for path in expected:
        assert (fresh.images_dir / path).read_bytes() == (live.images_dir / path).read_bytes()
