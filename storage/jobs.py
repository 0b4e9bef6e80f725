"""Jobs: accepted atomically with their quota, moved through their states, found again later.

A job's life: queued -> running -> done | failed, or cancelled from queued/running.  Every state
change is a conditional UPDATE (`WHERE status = ...`) and returns whether it happened, so a late
worker result can never overwrite a cancellation and two deliveries can never both win.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from storage.migrations import NOW_SQL
from storage.quota import refund_in, reserve_in, used_in

if TYPE_CHECKING:
    from storage.store import Store, Tx


class JobStatus(StrEnum):
    """A job's state, here and in Redis when it is handed to `easel worker`s (bot/scale/protocol.py)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    QUOTA = "quota"
    PENDING = "pending"


@dataclass(frozen=True)
class Job:
    id: int
    user_id: int
    platform: str
    reply_to: dict[str, Any]
    request: dict[str, Any]
    kind: str
    parent_id: int | None
    status: JobStatus
    error_key: str | None
    error_params: dict[str, Any]
    seed: int | None
    image_paths: list[str]
    plan: dict[str, Any] | None
    timings: dict[str, Any] | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    delivered_at: str | None
    idempotency_key: str | None
    attempts: int
    deleted: bool
    sensitive: bool = False
    delivery_failures: int = 0  # failed delivery sweeps so far
    delivery_error: str | None = None  # why delivery was given up (permanent refusal, too many failures)
    expired_at: str | None = None  # when retention (EASEL_KEEP_DAYS) removed its pictures from disk

    @property
    def expired(self) -> bool:
        """Its pictures were removed by retention; the row, its seed and its words stay."""
        return self.expired_at is not None

    @property
    def count(self) -> int:
        """Pictures this job paints (a batch of `--n`).  What it costs from the quota is in work units
        (bot/core/cost.py), reserved in the ledger when it was accepted."""
        return int(self.request.get("count") or 1)


@dataclass(frozen=True)
class Acceptance:
    """What `accept` decided.  `used` is today's usage after the decision; `pending` is the user's
    queued and running jobs before it (oldest first), so a refusal can show what is in the way."""

    outcome: Outcome
    job: Job | None
    used: int
    pending: list[Job]


def job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        user_id=row["user_id"],
        platform=row["platform"],
        reply_to=json.loads(row["reply_to"]),
        request=json.loads(row["request"]),
        kind=row["kind"],
        parent_id=row["parent_id"],
        status=JobStatus(row["status"]),
        error_key=row["error_key"],
        error_params=_loads(row["error_params"]) or {},
        seed=row["seed"],
        image_paths=json.loads(row["image_paths"]),
        plan=_loads(row["plan"]),
        timings=_loads(row["timings"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        delivered_at=row["delivered_at"],
        idempotency_key=row["idempotency_key"],
        attempts=row["attempts"],
        deleted=bool(row["deleted"]),
        sensitive=bool(row["sensitive"]),
        delivery_failures=row["delivery_failures"],
        delivery_error=row["delivery_error"],
        expired_at=row["expired_at"],
    )


@dataclass(frozen=True)
class Expirable:
    """A done job whose pictures retention may remove (or an ended one whose uploaded source it may)."""

    id: int
    finished_at: str
    image_paths: list[str]
    source_image: str | None = None  # the picture it was drawn from (a user's upload, a parent's picture)


# A done job retention must not touch yet (a condition on the outer `jobs` row): its answer is still to
# be (re)delivered, unless delivery was given up, or a queued or running job is drawn from one of its
# pictures.  A source is kept absolute (images.resolve) and a picture path relative to the images
# folder, so a source names a picture when it ends in "/" + its path.
_STILL_NEEDED_NOT = (
    "(delivered_at IS NOT NULL OR delivery_error IS NOT NULL)"
    " AND NOT EXISTS (SELECT 1 FROM json_each(jobs.image_paths) AS picture,"
    "  jobs AS waiting INDEXED BY jobs_unfinished WHERE waiting.status IN ('queued', 'running')"
    "  AND (json_extract(waiting.request, '$.source_image') = picture.value"
    "   OR substr(json_extract(waiting.request, '$.source_image'), -length(picture.value) - 1) = '/' || picture.value))"
)

_PENDING_SQL = "SELECT * FROM jobs WHERE user_id = ? AND status IN ('queued', 'running') ORDER BY id"


class Jobs:
    def __init__(self, db: Store) -> None:
        self._db = db

    # -- accepting -------------------------------------------------------------------------------

    async def accept(
        self,
        *,
        user_id: int,
        platform: str,
        reply_to: dict[str, Any],
        request: dict[str, Any],
        kind: str,
        day: str,
        daily_limit: int | None,
        max_pending: int,
        parent_id: int | None = None,
        idempotency_key: str | None = None,
        cost: int = 1,
        sensitive: bool = False,
    ) -> Acceptance:
        """Check and persist a new job in one transaction: duplicate, then pending, then quota.

        `cost` is what the job takes from the day's quota, in work units: all of it fits or the
        job is refused.  `daily_limit=None` means unlimited; the ledger row is written anyway so
        usage stays visible.
        """
        async with self._db.write() as tx:
            used = await used_in(tx, user_id, day)
            pending = [job_from_row(row) for row in await tx.fetch_all(_PENDING_SQL, (user_id,))]
            if idempotency_key is not None:
                existing = await tx.fetch_one("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
                if existing is not None:
                    return Acceptance(Outcome.DUPLICATE, job_from_row(existing), used, pending)
            if len(pending) >= max_pending:
                return Acceptance(Outcome.PENDING, None, used, pending)
            if daily_limit is not None and used + cost > daily_limit:
                return Acceptance(Outcome.QUOTA, None, used, pending)
            job_id = await tx.insert(
                "INSERT INTO jobs (user_id, platform, reply_to, request, kind, parent_id, idempotency_key, sensitive)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    platform,
                    json.dumps(reply_to),
                    json.dumps(request),
                    kind,
                    parent_id,
                    idempotency_key,
                    int(sensitive),
                ),
            )
            await reserve_in(tx, user_id, job_id, day, cost)
            job = await _get_in(tx, job_id)
        return Acceptance(Outcome.ACCEPTED, job, used + cost, pending)

    async def find_by_key(self, idempotency_key: str) -> Job | None:
        """The job an update or interaction already made, if any."""
        row = await self._db.fetch_one("SELECT * FROM jobs WHERE idempotency_key = ?", (idempotency_key,))
        return job_from_row(row) if row else None

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, job_id: int) -> Job | None:
        row = await self._db.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return job_from_row(row) if row else None

    async def list_for_user(self, user_id: int, page: int, page_size: int = 5) -> tuple[list[Job], int]:
        """One page (0-based) of the user's history, newest first, and how many jobs there are in all.
        Deleted jobs are left out."""
        page = max(page, 0)
        rows = await self._db.fetch_all(
            "SELECT * FROM jobs WHERE user_id = ? AND deleted = 0 ORDER BY id DESC LIMIT ? OFFSET ?",
            (user_id, page_size, page * page_size),
        )
        total = await self._db.fetch_one("SELECT COUNT(*) FROM jobs WHERE user_id = ? AND deleted = 0", (user_id,))
        return [job_from_row(row) for row in rows], int(total[0])

    async def pending_for_user(self, user_id: int) -> list[Job]:
        """Queued and running jobs, oldest first."""
        return await self._select(_PENDING_SQL, (user_id,))

    async def unfinished(self) -> list[Job]:
        """Every queued or running job in the order it was accepted: what a restart must pick up."""
        # INDEXED BY here and below: without ANALYZE statistics (a bot never runs it) SQLite prefers
        # jobs_by_status and reads every done job of the year (bench/history_scale.py).
        return await self._select(
            "SELECT * FROM jobs INDEXED BY jobs_unfinished WHERE status IN ('queued', 'running') ORDER BY id"
        )

    async def undelivered(self) -> list[Job]:
        """Finished jobs whose answer never reached the user and is still worth sending, oldest first
        (given-up deliveries, see `give_up_delivery`, are left out)."""
        return await self._select(
            "SELECT * FROM jobs INDEXED BY jobs_undelivered WHERE status IN ('done', 'failed')"
            " AND delivered_at IS NULL AND delivery_error IS NULL AND deleted = 0 ORDER BY id"
        )

    async def dead_deliveries(self, limit: int = 20) -> tuple[list[Job], int]:
        """Finished jobs whose delivery was given up (newest first, at most `limit`), and how many
        there are in all: what admins see in /queue and /stats."""
        where = "WHERE delivery_error IS NOT NULL AND delivered_at IS NULL AND deleted = 0"
        rows = await self._select(f"SELECT * FROM jobs {where} ORDER BY id DESC LIMIT ?", (limit,))
        total = await self._db.fetch_one(f"SELECT COUNT(*) FROM jobs {where}")
        return rows, int(total[0])

    async def lineage(self, job_id: int) -> list[Job]:
        """The chain of ancestors from the root down to (and including) this job."""
        return await self._select(
            # Each step looks the parent up by primary key.  Written as a join, SQLite 3.40 builds a
            # Bloom filter over the whole jobs table for every /show (13 ms at 50,000 jobs, bench/history_scale.py).
            "WITH RECURSIVE chain (id, depth) AS ("
            "  SELECT id, 0 FROM jobs WHERE id = ?"
            "  UNION ALL"
            "  SELECT (SELECT parent_id FROM jobs WHERE jobs.id = chain.id), chain.depth + 1 FROM chain"
            "  WHERE (SELECT parent_id FROM jobs WHERE jobs.id = chain.id) IS NOT NULL"
            ")"
            " SELECT jobs.* FROM chain CROSS JOIN jobs ON jobs.id = chain.id ORDER BY chain.depth DESC",
            (job_id,),
        )

    async def children(self, job_id: int) -> list[Job]:
        return await self._select("SELECT * FROM jobs WHERE parent_id = ? ORDER BY id", (job_id,))

    async def find_by_message(self, platform: str, chat_id: str, message_id: str) -> Job | None:
        """The job a posted message belongs to (see `record_message`)."""
        found = await self.find_picture(platform, chat_id, message_id)
        return found[0] if found else None

    async def find_picture(self, platform: str, chat_id: str, message_id: str) -> tuple[Job, int] | None:
        """The job a posted message belongs to and which of its pictures it shows (0 for the first)."""
        row = await self._db.fetch_one(
            "SELECT jobs.*, messages.picture AS picture FROM messages JOIN jobs ON jobs.id = messages.job_id"
            " WHERE messages.platform = ? AND messages.chat_id = ? AND messages.message_id = ?",
            (platform, str(chat_id), str(message_id)),
        )
        return (job_from_row(row), int(row["picture"])) if row else None

    async def counts_by_status(self) -> dict[str, int]:
        """Jobs per status, every status present (0 when none)."""
        counts = {status.value: 0 for status in JobStatus}
        # job_counts is kept by triggers (schema v6): five rows, however many jobs there are.
        for row in await self._db.fetch_all("SELECT status, n FROM job_counts"):
            counts[row[0]] = int(row[1])
        return counts

    async def recent_durations(self, limit: int = 50) -> list[tuple[int, int, int, float]]:
        """(width, height, steps, unguided seconds per picture) of the latest `limit` done jobs, oldest
        first, so an ETA estimator fed in order ends on the newest.  A guided picture (cfg > 1) ran the
        model twice per step, so its time is halved (as bot/core/cost.py's guidance_factor counts it)."""
        rows = await self._db.fetch_all(
            "SELECT * FROM ("
            "  SELECT id, json_extract(request, '$.width') AS width, json_extract(request, '$.height') AS height,"
            "   json_extract(request, '$.steps') AS steps,"
            "   json_extract(timings, '$.total') / COALESCE(json_extract(request, '$.count'), 1)"
            "    / (CASE WHEN COALESCE(json_extract(request, '$.cfg'), 1) > 1 THEN 2 ELSE 1 END) AS seconds"
            "  FROM jobs WHERE status = 'done'"
            "   AND width IS NOT NULL AND height IS NOT NULL AND steps IS NOT NULL AND seconds IS NOT NULL"
            "  ORDER BY id DESC LIMIT ?"
            ") ORDER BY id",
            (limit,),
        )
        return [(int(r["width"]), int(r["height"]), int(r["steps"]), float(r["seconds"])) for r in rows]

    async def expirable(self, before: str, limit: int, after: tuple[str, int] = ("", 0)) -> list[Expirable]:
        """Done jobs finished before `before` (UTC ISO) whose pictures are still kept, oldest first,
        at most `limit`, starting past `after` (finished_at, id): what a retention sweep removes next.
        Left out: a job whose answer is still to be (re)delivered (unless delivery was given up) and
        one whose picture a queued or running job is drawn from (Upscale, Vary, Zoom, Enhance)."""
        rows = await self._db.fetch_all(
            "SELECT id, finished_at, image_paths, json_extract(request, '$.source_image') AS source"
            " FROM jobs INDEXED BY jobs_pictures_kept WHERE status = 'done' AND expired_at IS NULL"
            f" AND deleted = 0 AND finished_at < ? AND (finished_at, id) > (?, ?) AND {_STILL_NEEDED_NOT}"
            " ORDER BY finished_at, id LIMIT ?",
            (before, after[0], after[1], limit),
        )
        return [
            Expirable(int(row["id"]), row["finished_at"], json.loads(row["image_paths"]), row["source"]) for row in rows
        ]

    async def ended_with_source(self, before: str, limit: int, after: tuple[str, int] = ("", 0)) -> list[Expirable]:
        """Failed and cancelled jobs drawn from a picture, finished before `before`, oldest first, at most
        `limit`, past `after` (finished_at, id): whose uploaded source a retention sweep may release.
        They have no pictures of their own and are never marked expired, so each sweep reads them again."""
        rows = await self._db.fetch_all(
            "SELECT id, finished_at, json_extract(request, '$.source_image') AS source FROM jobs"
            " WHERE status IN ('failed', 'cancelled') AND finished_at < ? AND (finished_at, id) > (?, ?)"
            " AND source IS NOT NULL ORDER BY finished_at, id LIMIT ?",
            (before, after[0], after[1], limit),
        )
        return [Expirable(int(row["id"]), row["finished_at"], [], row["source"]) for row in rows]

    async def sources_in_use(self, sources: list[str], before: str | None = None) -> set[str]:
        """Which of these source pictures a job still needs: one queued, running or done, neither
        deleted nor expired (with `before`, a done job the sweep running now expires counts as
        expired: finished before it, delivered or given up, no picture of it still needed).  Rerolls
        of an upload share its file."""
        if not sources:
            return set()
        marks = ", ".join("?" * len(sources))
        swept = f" AND NOT (status = 'done' AND finished_at < ? AND {_STILL_NEEDED_NOT})" if before is not None else ""
        rows = await self._db.fetch_all(
            "SELECT DISTINCT json_extract(request, '$.source_image') AS source FROM jobs"
            f" WHERE source IN ({marks}) AND deleted = 0 AND expired_at IS NULL"
            f" AND status IN ('queued', 'running', 'done'){swept}",
            (*sources, *([before] if before is not None else [])),
        )
        return {row["source"] for row in rows}

    async def referenced_paths(self) -> list[str]:
        """Every picture path any job row names (its pictures and its source), whatever its state:
        a file under the images folder that is none of these belongs to no job."""
        rows = await self._db.fetch_all(
            "SELECT image_paths, json_extract(request, '$.source_image') AS source FROM jobs"
        )
        paths = [path for row in rows for path in json.loads(row["image_paths"])]
        return paths + [row["source"] for row in rows if row["source"]]

    async def mark_expired(self, job_ids: list[int]) -> int:
        """Record that these jobs' pictures are gone from disk; how many changed."""
        if not job_ids:
            return 0
        marks = ", ".join("?" * len(job_ids))
        async with self._db.write() as tx:
            return await tx.execute(
                f"UPDATE jobs SET expired_at = {NOW_SQL} WHERE expired_at IS NULL AND id IN ({marks})", job_ids
            )

    # -- state changes ---------------------------------------------------------------------------

    async def mark_running(self, job_id: int) -> bool:
        """queued -> running; counts the attempt.  False if the job was not queued (e.g. cancelled)."""
        return await self._change(
            f"UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = {NOW_SQL}"
            " WHERE id = ? AND status = 'queued'",
            (job_id,),
        )

    async def requeue(self, job_id: int) -> bool:
        """running -> queued, for a job interrupted by a restart or a lost worker."""
        return await self._change("UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'running'", (job_id,))

    async def mark_done(
        self,
        job_id: int,
        *,
        seed: int,
        image_paths: list[str],
        plan: dict[str, Any],
        timings: dict[str, Any],
        missing: int = 0,
    ) -> bool:
        """running -> done.  False if the job is no longer running (cancelled meanwhile).  `missing`
        pictures of a batch that did not come back are refunded (their share of the job's units) in
        the same transaction."""
        refund = (job_id, "pictures missing from the result", missing) if missing > 0 else None
        return await self._change(
            "UPDATE jobs SET status = 'done', seed = ?, image_paths = ?, plan = ?, timings = ?,"
            f" finished_at = {NOW_SQL} WHERE id = ? AND status = 'running'",
            (seed, json.dumps(image_paths), json.dumps(plan), json.dumps(timings), job_id),
            refund=refund,
        )

    async def mark_failed(
        self, job_id: int, error_key: str, error_params: dict[str, Any], refund: str | None = None
    ) -> bool:
        """queued/running -> failed, with the message-catalogue key and its parameters; with `refund`
        (a reason), the quota comes back in the same transaction, so a crash cannot split the two."""
        return await self._change(
            f"UPDATE jobs SET status = 'failed', error_key = ?, error_params = ?, finished_at = {NOW_SQL}"
            " WHERE id = ? AND status IN ('queued', 'running')",
            (error_key, json.dumps(error_params), job_id),
            refund=(job_id, refund) if refund else None,
        )

    async def mark_cancelled(self, job_id: int, refund: str | None = None) -> bool:
        """queued/running -> cancelled; True if this call changed it.  `refund` as for mark_failed."""
        return await self._change(
            f"UPDATE jobs SET status = 'cancelled', finished_at = {NOW_SQL}"
            " WHERE id = ? AND status IN ('queued', 'running')",
            (job_id,),
            refund=(job_id, refund) if refund else None,
        )

    async def mark_delivered(self, job_id: int) -> bool:
        """True for exactly one caller: the one that may send the answer."""
        return await self._change(
            f"UPDATE jobs SET delivered_at = {NOW_SQL} WHERE id = ? AND delivered_at IS NULL", (job_id,)
        )

    async def record_delivery_failure(self, job_id: int) -> int:
        """Count one more failed delivery round (kept across restarts); the count so far, or 0 when
        the job is delivered or given up already."""
        async with self._db.write() as tx:
            changed = await tx.execute(
                "UPDATE jobs SET delivery_failures = delivery_failures + 1"
                " WHERE id = ? AND delivered_at IS NULL AND delivery_error IS NULL",
                (job_id,),
            )
            if changed != 1:
                return 0
            row = await tx.fetch_one("SELECT delivery_failures FROM jobs WHERE id = ?", (job_id,))
        return int(row[0])

    async def give_up_delivery(self, job_id: int, reason: str) -> bool:
        """Stop sending this job's answer for good (the platform refuses it, or it failed too often):
        `undelivered` leaves it out from now on.  True for the one caller that gave up."""
        return await self._change(
            "UPDATE jobs SET delivery_error = ? WHERE id = ? AND delivered_at IS NULL AND delivery_error IS NULL",
            (reason, job_id),
        )

    async def update_reply_to(self, job_id: int, reply_to: dict[str, Any]) -> bool:
        return await self._change("UPDATE jobs SET reply_to = ? WHERE id = ?", (json.dumps(reply_to), job_id))

    async def mark_deleted(self, job_id: int) -> bool:
        """Hide the job from history and delivery; the row stays for lineage and the ledger."""
        return await self._change("UPDATE jobs SET deleted = 1 WHERE id = ? AND deleted = 0", (job_id,))

    async def record_message(
        self, job_id: int, platform: str, chat_id: str, message_id: str, picture: int = 0, whole_batch: bool = False
    ) -> None:
        """Remember that a posted message shows this job (and which picture of a batch, or with
        `whole_batch` the buttons of all of them), so replies and buttons on it find the job."""
        async with self._db.write() as tx:
            await tx.execute(
                "INSERT INTO messages (platform, chat_id, message_id, job_id, picture, whole_batch)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, chat_id, message_id)"
                " DO UPDATE SET job_id = excluded.job_id, picture = excluded.picture,"
                " whole_batch = excluded.whole_batch",
                (platform, str(chat_id), str(message_id), job_id, int(picture), int(whole_batch)),
            )

    async def shows(self, platform: str, chat_id: str, message_id: str, job_id: int, picture: int) -> bool:
        """Whether that message was posted for this job and carries this picture's buttons: the
        only place a press naming them may come from."""
        row = await self._db.fetch_one(
            "SELECT 1 FROM messages WHERE platform = ? AND chat_id = ? AND message_id = ? AND job_id = ?"
            " AND (picture = ? OR whole_batch = 1)",
            (platform, str(chat_id), str(message_id), job_id, int(picture)),
        )
        return row is not None

    async def messages_of(self, job_id: int, platform: str) -> list[tuple[str, str]]:
        """(chat id, message id) of every message recorded for this job on a platform."""
        rows = await self._db.fetch_all(
            "SELECT chat_id, message_id FROM messages WHERE job_id = ? AND platform = ? ORDER BY chat_id, message_id",
            (job_id, platform),
        )
        return [(row["chat_id"], row["message_id"]) for row in rows]

    # -- helpers ---------------------------------------------------------------------------------

    async def _select(self, sql: str, params: tuple[Any, ...] = ()) -> list[Job]:
        return [job_from_row(row) for row in await self._db.fetch_all(sql, params)]

    async def _change(
        self, sql: str, params: tuple[Any, ...], refund: tuple[int, str] | tuple[int, str, int] | None = None
    ) -> bool:
        async with self._db.write() as tx:
            changed = await tx.execute(sql, params) == 1
            if changed and refund is not None:
                await refund_in(tx, *refund)
        return changed


async def _get_in(tx: Tx, job_id: int) -> Job:
    row = await tx.fetch_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
    return job_from_row(row)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
