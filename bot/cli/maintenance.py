"""`easel prune | backup | restore`: keeping a long-running bot's data in shape, by hand.

- prune: the retention sweep (storage/retention.py) for pictures older than `--older-than` (and the
  uploads no remaining job needs), old audit rows with `--audit-older-than`, picture files no job
  names with `--orphans` (older than an hour); `--dry-run` only counts.  Safe while the bot runs.
- backup: a consistent copy of the database through SQLite's online backup API (the bot keeps
  running and writing), checked with `integrity_check`; `--with-images` copies the pictures too.
- restore: puts a backup in place, refusing while a bot has the database open.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bot.runtime.settings import Settings
from storage.db import Database, DatabaseInUse, exclusive_use
from storage.images import ImageStore
from storage.retention import ORPHAN_AGE_S, cutoff, prune_audit, remove_orphans, sweep

_UNITS = {"h": 1 / 24, "d": 1.0, "w": 7.0}
DB_NAME = "easel.db"
TARBALL = "images.tar.zst"


class MaintenanceError(RuntimeError):
    """What a maintenance command refuses to do, said for the operator."""


def days_of(text: str) -> float:
    """'30d', '12h', '2w' or a bare number of days."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hdw]?)\s*", text.lower())
    if match is None:
        raise MaintenanceError(f"cannot read {text!r} as an age: write it like 30d, 12h or 2w")
    return float(match[1]) * _UNITS[match[2] or "d"]


# -- prune ----------------------------------------------------------------------------------------


async def prune(
    settings: Settings, older_than: str | None, audit_older_than: str | None, dry_run: bool, orphans: bool = False
) -> str:
    """Run the sweep (and the audit prune, the orphan sweep) now; a report of what went, or would go."""
    if older_than is None and audit_older_than is None and not orphans:
        raise MaintenanceError("say what to prune: --older-than 30d, --audit-older-than 180d and/or --orphans")
    db = await Database.open(settings.database_path)
    images = ImageStore(settings.images_dir)
    verb = "would remove" if dry_run else "removed"
    lines = []
    try:
        if older_than is not None:
            report = await sweep(db.jobs, images, cutoff(days_of(older_than)), dry_run=dry_run)
            lines.append(
                f"pictures: {verb} {report.files} files of {report.jobs} jobs older than {older_than}"
                f" ({report.uploads} uploaded pictures no job needs any more), {report.freed_mb:.1f} MB"
            )
        if audit_older_than is not None:
            before = cutoff(days_of(audit_older_than))
            if dry_run:
                row = await db.fetch_one("SELECT COUNT(*) FROM audit WHERE created_at < ?", (before,))
                lines.append(f"audit: would delete {row[0]} rows older than {audit_older_than}")
            else:
                lines.append(f"audit: deleted {await prune_audit(db, before)} rows older than {audit_older_than}")
        if orphans:
            report = await remove_orphans(db.jobs, images, dry_run=dry_run)
            lines.append(
                f"orphans: {verb} {report.files} picture files that no job names (older than"
                f" {ORPHAN_AGE_S / 3600:g} h), {report.freed_mb:.1f} MB"
            )
    finally:
        await db.close()
    return "\n".join(lines)


# -- backup ---------------------------------------------------------------------------------------


def backup(settings: Settings, dest: Path, with_images: str | None) -> str:
    """Copy the live database into `dest` (a folder), and the pictures when asked ('copy' or 'tar.zst')."""
    source = settings.database_path
    if not source.exists():
        raise MaintenanceError(f"no database at {source}: nothing to back up")
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / DB_NAME
    if target.exists():
        raise MaintenanceError(f"{target} exists already: back up into a new folder")
    copy_database(source, target)
    lines = [f"database: {source} -> {target} ({target.stat().st_size / 1e6:.1f} MB, integrity ok)"]
    if with_images == "copy":
        files = _copy_tree(settings.images_dir, dest / "images")
        lines.append(f"images: {files} files copied to {dest / 'images'}")
    elif with_images == "tar.zst":
        _tar(settings.images_dir, dest / TARBALL)
        lines.append(f"images: {dest / TARBALL} ({(dest / TARBALL).stat().st_size / 1e6:.1f} MB)")
    return "\n".join(lines)


def copy_database(source: Path, target: Path) -> None:
    """SQLite's online backup: one consistent snapshot however the bot writes meanwhile (in WAL mode
    a reader never blocks the writer), then checked."""
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(partial)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        _check_integrity(dst, partial)
    finally:
        dst.close()
        src.close()
    partial.replace(target)


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
    except sqlite3.DatabaseError as error:  # not even readable as a database
        result = str(error)
    if result != "ok":
        raise MaintenanceError(f"{path} fails integrity_check: {result}")


def _copy_tree(source: Path, target: Path) -> int:
    copied = 0
    for path in sorted(source.rglob("*.png")) if source.exists() else []:
        if path.name.startswith(".partial-"):
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
        copied += 1
    return copied


def _tar(source: Path, target: Path) -> None:
    if shutil.which("zstd") is None:
        raise MaintenanceError("tar.zst needs the `zstd` program; install it or use --with-images copy")
    source.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "--zstd", "-cf", str(target), "--exclude", ".partial-*", "-C", str(source), "."], check=True)


# -- restore --------------------------------------------------------------------------------------


def restore(settings: Settings, src: Path) -> str:
    """Put the backup in `src` (a folder from `easel backup`, or a database file) in place."""
    source = src / DB_NAME if src.is_dir() else src
    if not source.exists():
        raise MaintenanceError(f"no backup database at {source}")
    check = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        _check_integrity(check, source)
    finally:
        check.close()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    target = settings.database_path
    try:
        with exclusive_use(target):  # no bot may have it open while it is replaced
            _replace_database(source, target)
    except DatabaseInUse as error:
        raise MaintenanceError(f"{error}: stop the bot first") from None
    lines = [f"database: {source} -> {target}"]
    lines += _restore_images(src, settings.images_dir) if src.is_dir() else []
    return "\n".join(lines)


def _replace_database(source: Path, target: Path) -> None:
    if target.exists():
        # The database being replaced is kept, never simply overwritten: copied as it is with its -wal
        # and -shm (no integrity check, no SQLite: restoring is what a corrupt database needs).
        aside = target.with_name(f"{target.name}.before-restore-{datetime.now(UTC):%Y%m%d-%H%M%S}")
        for suffix in ("", "-wal", "-shm"):
            if target.with_name(target.name + suffix).exists():
                shutil.copy2(target.with_name(target.name + suffix), aside.with_name(aside.name + suffix))
    incoming = target.with_name(target.name + ".restoring")
    shutil.copyfile(source, incoming)
    for suffix in ("-wal", "-shm"):  # they belong to the old file; left behind they would corrupt the new
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    incoming.replace(target)


def _restore_images(src: Path, images_dir: Path) -> list[str]:
    if (src / "images").is_dir():
        return [f"images: {_copy_tree(src / 'images', images_dir)} files copied to {images_dir}"]
    if (src / TARBALL).exists():
        images_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "--zstd", "-xf", str(src / TARBALL), "-C", str(images_dir)], check=True)
        return [f"images: {src / TARBALL} unpacked into {images_dir}"]
    return ["images: none in the backup (the database's pictures are expected in place)"]


def run_prune(settings: Settings, args) -> str:
    return asyncio.run(prune(settings, args.older_than, args.audit_older_than, args.dry_run, args.orphans))
