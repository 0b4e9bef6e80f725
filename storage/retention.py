"""Retention: remove the pictures of old jobs from disk, keep the rows (EASEL_KEEP_DAYS, `easel prune`).

A sweep works in small batches: read a batch of expirable jobs, delete their files in a thread
(never on the event loop), then mark the batch expired in one transaction, and pause before the
next, so a year of backlog never holds the writer or the disk for long.  Files go first and the
mark second: a crash between the two leaves rows that the next sweep picks up again (their files
are gone already, which costs nothing), never files that no row points to.

A user's uploaded picture (storage/uploads.py) is the source of its job and of that job's rerolls,
which share the file: it goes with the last of them that is swept or deleted (`sources_in_use`), and
with a failed or cancelled job finished before the cutoff once no job needs it.  A done job still
to be delivered, or whose picture a queued or running job is drawn from, is not swept yet.
`remove_orphans` (`easel prune --orphans`) removes picture files that no job row names at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from storage.uploads import stored_upload

if TYPE_CHECKING:
    from storage.images import ImageStore
    from storage.jobs import Expirable, Jobs
    from storage.store import Store

BATCH = 200
PAUSE_S = 0.05
ORPHAN_AGE_S = 3600.0  # younger files may belong to a job being saved right now


@dataclass
class SweepReport:
    jobs: int = 0  # jobs whose pictures were removed (or would be, in a dry run)
    files: int = 0  # picture files removed (uploads included)
    freed_bytes: int = 0
    uploads: int = 0  # of the files, uploaded source pictures no job needs any more

    @property
    def freed_mb(self) -> float:
        return self.freed_bytes / 1e6


def cutoff(days: float, now: datetime | None = None) -> str:
    """The UTC ISO time `days` ago, in the format the schema writes (`NOW_SQL`)."""
    moment = (now or datetime.now(UTC)) - timedelta(days=days)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def sweep(
    jobs: Jobs,
    images: ImageStore,
    before: str,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    pause_s: float = PAUSE_S,
) -> SweepReport:
    """Remove the pictures of every done job finished before `before`; what it freed."""
    report = SweepReport()
    after = ("", 0)  # a dry run marks nothing, so it steps past what it has counted
    seen: set[str] = set()  # uploads already decided on (rerolls share one)
    while found := await jobs.expirable(before, batch, after):
        uploads = await _unneeded_uploads(jobs, images, found, before, seen)
        if dry_run:
            report.files += sum(len(job.image_paths) for job in found)
            report.freed_bytes += await asyncio.to_thread(_sizes, images, found)
            kept = await asyncio.to_thread(_each_size, images, uploads)
            report.files += sum(size > 0 for size in kept)
            report.uploads += sum(size > 0 for size in kept)
            report.freed_bytes += sum(kept)
            after = (found[-1].finished_at, found[-1].id)
        else:
            files, freed = await asyncio.to_thread(_remove, images, found)
            upload_files, upload_freed = await asyncio.to_thread(_remove_paths, images, uploads)
            report.files += files + upload_files
            report.uploads += upload_files
            report.freed_bytes += freed + upload_freed
            await jobs.mark_expired([job.id for job in found])
        report.jobs += len(found)
        await asyncio.sleep(pause_s)
    await _release_ended_uploads(jobs, images, before, report, seen, dry_run, batch, pause_s)
    return report


async def _release_ended_uploads(
    jobs: Jobs,
    images: ImageStore,
    before: str,
    report: SweepReport,
    seen: set[str],
    dry_run: bool,
    batch: int,
    pause_s: float,
) -> None:
    """The uploads of failed and cancelled jobs finished before `before`, once no job needs them:
    such a job has no pictures to expire, so without this its upload would stay for ever."""
    after = ("", 0)  # these rows are never marked: step past each batch
    while found := await jobs.ended_with_source(before, batch, after):
        uploads = await _unneeded_uploads(jobs, images, found, before, seen)
        if dry_run:
            sizes = await asyncio.to_thread(_each_size, images, uploads)
            files, freed = sum(size > 0 for size in sizes), sum(sizes)
        else:
            files, freed = await asyncio.to_thread(_remove_paths, images, uploads)
        report.files += files
        report.uploads += files
        report.freed_bytes += freed
        after = (found[-1].finished_at, found[-1].id)
        await asyncio.sleep(pause_s)


async def _unneeded_uploads(
    jobs: Jobs, images: ImageStore, found: list[Expirable], before: str, seen: set[str]
) -> list[str]:
    """The uploads these jobs were drawn from that no job outside this sweep still needs."""
    sources = {job.source_image for job in found if job.source_image and job.source_image not in seen}
    sources = sorted(source for source in sources if stored_upload(images.root, source) is not None)
    seen.update(sources)
    in_use = await jobs.sources_in_use(sources, before)
    return [source for source in sources if source not in in_use]


async def release_upload(jobs: Jobs, images: ImageStore, source: str | None) -> int:
    """After a job is deleted: remove the upload it was drawn from unless another job (a reroll of
    it) still needs it; the bytes freed."""
    if source is None or stored_upload(images.root, source) is None or await jobs.sources_in_use([source]):
        return 0
    return await asyncio.to_thread(_safe, images.remove, source)


def _remove(images: ImageStore, found: list[Expirable]) -> tuple[int, int]:
    return _remove_paths(images, [path for job in found for path in job.image_paths])


def _remove_paths(images: ImageStore, paths: list[str]) -> tuple[int, int]:
    files = freed = 0
    for path in paths:
        size = _safe(images.remove, path)
        files += size > 0
        freed += size
    return files, freed


def _each_size(images: ImageStore, paths: list[str]) -> list[int]:
    return [_safe(lambda path: images.resolve(path).stat().st_size, p) for p in paths]


def _sizes(images: ImageStore, found: list[Expirable]) -> int:
    return sum(_safe(lambda path: images.resolve(path).stat().st_size, p) for job in found for p in job.image_paths)


def _safe(measure, path: str) -> int:
    try:
        return measure(path)
    except (OSError, ValueError):  # gone already, or a path outside the store: nothing to free
        return 0


async def remove_orphans(
    jobs: Jobs, images: ImageStore, *, dry_run: bool = False, older_than_s: float = ORPHAN_AGE_S
) -> SweepReport:
    """Remove the picture files under the images folder that no job row names (a crash between
    saving and recording, a refused upload's leftover, an interrupted write), if older than
    `older_than_s`: a picture being saved right now, whose row is not written yet, is younger."""
    referenced = await jobs.referenced_paths()
    return await asyncio.to_thread(_orphans, images, referenced, time.time() - older_than_s, dry_run)


def _orphans(images: ImageStore, referenced: list[str], before_ts: float, dry_run: bool) -> SweepReport:
    known = set()
    for path in referenced:
        with contextlib.suppress(ValueError):  # a path outside the store (an old row) names nothing here
            known.add(images.resolve(path))
    report = SweepReport()
    for found in sorted(images.root.rglob("*.png")) if images.root.exists() else []:
        try:
            path = images.resolve(found)
            if path in known or path.stat().st_mtime >= before_ts:
                continue
            size = path.stat().st_size if dry_run else images.remove(path)
        except (OSError, ValueError):  # gone meanwhile, or a link out of the store
            continue
        report.files += 1
        report.freed_bytes += size
    return report


async def prune_audit(db: Store, before: str) -> int:
    """Delete audit rows older than `before`; how many went.  The quota ledger is never pruned here:
    its rows are the record of what each job was charged and refunded."""
    async with db.write() as tx:
        return await tx.execute("DELETE FROM audit WHERE created_at < ?", (before,))
