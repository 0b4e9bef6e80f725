"""The schema as an ordered list of forward-only SQL scripts, and the code that applies them at open.

Version N is `MIGRATIONS[N - 1]`.  Never edit a script that has shipped: append a new one.
Timestamps are UTC ISO-8601 strings written by SQLite itself (`NOW_SQL`), so every row agrees on
one clock and one format.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import aiosqlite

NOW_SQL = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

_V1_CORE = f"""
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    platform       TEXT    NOT NULL,
    platform_id    TEXT    NOT NULL,
    name           TEXT,
    role           TEXT    NOT NULL DEFAULT 'member',
    banned         INTEGER NOT NULL DEFAULT 0 CHECK (banned IN (0, 1)),
    language       TEXT,
    settings       TEXT    NOT NULL DEFAULT '{{}}',
    quota_override INTEGER,
    created_at     TEXT    NOT NULL DEFAULT ({NOW_SQL}),
    UNIQUE (platform, platform_id)
);

-- AUTOINCREMENT so a public job id is never reused, even after the newest job is purged.
CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    platform        TEXT    NOT NULL,
    reply_to        TEXT    NOT NULL DEFAULT '{{}}',
    request         TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    parent_id       INTEGER REFERENCES jobs (id),
    status          TEXT    NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    error_key       TEXT,
    error_params    TEXT,
    seed            INTEGER,
    image_paths     TEXT    NOT NULL DEFAULT '[]',
    plan            TEXT,
    timings         TEXT,
    created_at      TEXT    NOT NULL DEFAULT ({NOW_SQL}),
    started_at      TEXT,
    finished_at     TEXT,
    delivered_at    TEXT,
    idempotency_key TEXT UNIQUE,
    attempts        INTEGER NOT NULL DEFAULT 0,
    deleted         INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1))
);

CREATE TABLE messages (
    platform   TEXT    NOT NULL,
    chat_id    TEXT    NOT NULL,
    message_id TEXT    NOT NULL,
    job_id     INTEGER NOT NULL REFERENCES jobs (id),
    PRIMARY KEY (platform, chat_id, message_id)
) WITHOUT ROWID;

CREATE TABLE quota_ledger (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    job_id     INTEGER REFERENCES jobs (id),
    day        TEXT    NOT NULL,
    delta      INTEGER NOT NULL,
    reason     TEXT    NOT NULL,
    created_at TEXT    NOT NULL DEFAULT ({NOW_SQL})
);

-- One reserve and at most one refund per job, whatever the code above does.
CREATE UNIQUE INDEX quota_ledger_once_per_job ON quota_ledger (job_id, delta) WHERE job_id IS NOT NULL;
"""

_V2_AUDIT_AND_INDEXES = f"""
CREATE TABLE audit (
    id            INTEGER PRIMARY KEY,
    actor_user_id INTEGER REFERENCES users (id),
    action        TEXT NOT NULL,
    target        TEXT NOT NULL,
    details       TEXT NOT NULL DEFAULT '{{}}',
    created_at    TEXT NOT NULL DEFAULT ({NOW_SQL})
);

CREATE INDEX jobs_by_user_status ON jobs (user_id, status);
CREATE INDEX jobs_by_status ON jobs (status);
CREATE INDEX jobs_by_parent ON jobs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX quota_ledger_by_user_day ON quota_ledger (user_id, day);
"""

_V3_COMMUNITY = (
    """
-- A batch job reserves its picture count in one ledger row (+n) and refunds it in one (-n):
-- (job_id, delta) alone no longer keeps a job to one reservation and one refund.
CREATE UNIQUE INDEX quota_ledger_one_reserve ON quota_ledger (job_id) WHERE job_id IS NOT NULL AND delta > 0;
CREATE UNIQUE INDEX quota_ledger_one_refund ON quota_ledger (job_id) WHERE job_id IS NOT NULL AND delta < 0;

ALTER TABLE jobs ADD COLUMN sensitive INTEGER NOT NULL DEFAULT 0 CHECK (sensitive IN (0, 1));

-- Which picture of a batch a posted message shows (0 for a single picture or the buttons).
ALTER TABLE messages ADD COLUMN picture INTEGER NOT NULL DEFAULT 0;

-- Blocked and sensitive words an admin added for one chat or server ("scope").
CREATE TABLE moderation_terms (
    id         INTEGER PRIMARY KEY,
    scope      TEXT    NOT NULL,
    list       TEXT    NOT NULL CHECK (list IN ('blocked', 'sensitive')),
    term       TEXT    NOT NULL,
    added_by   INTEGER REFERENCES users (id),
    created_at TEXT    NOT NULL DEFAULT ("""
    + NOW_SQL
    + """),
    UNIQUE (scope, list, term)
);

-- One row each time a prompt trips a block list; `at` is the service clock (epoch seconds).
-- A re-sent update (same idempotency key) is not a second strike.
CREATE TABLE strikes (
    id              INTEGER PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    scope           TEXT    NOT NULL,
    at              REAL    NOT NULL,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX strikes_by_user_scope_time ON strikes (user_id, scope, at);
CREATE INDEX strikes_by_time ON strikes (at);
"""
)

_V4_HARDENING = """
-- A message whose buttons act on every picture of a batch (Discord's gallery, Telegram's buttons
-- message), as opposed to one picture's own message: a press is honoured only where it was shown.
ALTER TABLE messages ADD COLUMN whole_batch INTEGER NOT NULL DEFAULT 0 CHECK (whole_batch IN (0, 1));
-- Before this column a batch's shared message was recorded as picture 0 like the batch's first
-- picture; treating those as whole-batch only lets the same job's buttons act in the same chat.
UPDATE messages SET whole_batch = 1 WHERE picture = 0 AND job_id IN
    (SELECT id FROM jobs WHERE COALESCE(json_extract(request, '$.count'), 1) > 1);

-- Delivery that keeps failing is counted, and ends: `delivery_error` says why it was given up
-- (a permanent platform refusal, or too many failed sweeps); such a job is never swept again.
ALTER TABLE jobs ADD COLUMN delivery_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN delivery_error TEXT;
"""

_V5_REFUNDS_ADD_UP = """
-- Refunds on a job add up (some pictures of a batch fail now, the rest later), so the indexes that
-- kept a job to one refund row go; what stays, whatever the code does, is that a job's refunds
-- never give back more than it was charged (and a job charged nothing gets nothing back).
DROP INDEX quota_ledger_once_per_job;
DROP INDEX quota_ledger_one_refund;
CREATE INDEX quota_ledger_by_job ON quota_ledger (job_id) WHERE job_id IS NOT NULL;
CREATE TRIGGER quota_ledger_refunds_within_charge BEFORE INSERT ON quota_ledger
WHEN NEW.job_id IS NOT NULL AND NEW.delta < 0
    AND NEW.delta + (SELECT COALESCE(SUM(delta), 0) FROM quota_ledger WHERE job_id = NEW.job_id) < 0
BEGIN
    SELECT RAISE(ABORT, 'refund exceeds what the job was charged');
END;
"""

_V6_LONG_LIFE = """
-- Retention (EASEL_KEEP_DAYS): the job row stays, its pictures go; `expired_at` says when.
ALTER TABLE jobs ADD COLUMN expired_at TEXT;

-- What a year of jobs needs (bench/history_scale.py): /history pages by user newest first, the
-- start-up scans over the few rows still unfinished or undelivered, the retention sweep by age,
-- and the day's units for /stats without reading every ledger row.
CREATE INDEX jobs_by_user_history ON jobs (user_id, deleted, id);
CREATE INDEX jobs_unfinished ON jobs (id) WHERE status IN ('queued', 'running');
-- The messages a job was posted as (the delete button removes them all): one row per picture sent.
CREATE INDEX messages_by_job ON messages (job_id, platform);
CREATE INDEX jobs_undelivered ON jobs (id)
    WHERE delivered_at IS NULL AND delivery_error IS NULL AND deleted = 0;
CREATE INDEX jobs_given_up ON jobs (id)
    WHERE delivery_error IS NOT NULL AND delivered_at IS NULL AND deleted = 0;
CREATE INDEX jobs_pictures_kept ON jobs (finished_at)
    WHERE status = 'done' AND expired_at IS NULL AND deleted = 0;
CREATE INDEX quota_ledger_by_day ON quota_ledger (day, delta);

-- Jobs per status, kept by triggers, so /stats never counts the jobs table.
CREATE TABLE job_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
INSERT INTO job_counts (status, n)
    SELECT value, (SELECT COUNT(*) FROM jobs WHERE jobs.status = value)
    FROM json_each('["queued", "running", "done", "failed", "cancelled"]');
CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER job_counts_update AFTER UPDATE OF status ON jobs WHEN OLD.status != NEW.status BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE job_counts SET n = n + 1 WHERE status = NEW.status;
END;
CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1 WHERE status = OLD.status;
END;
"""

MIGRATIONS: tuple[str, ...] = (
    _V1_CORE,
    _V2_AUDIT_AND_INDEXES,
    _V3_COMMUNITY,
    _V4_HARDENING,
    _V5_REFUNDS_ADD_UP,
    _V6_LONG_LIFE,
)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer easel; opening it would risk corrupting it."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(f"database schema is version {found}, this easel knows up to {known}: upgrade easel")
        self.found = found
        self.known = known


async def current_version(conn: aiosqlite.Connection) -> int:
    """The highest applied version, 0 for an empty database."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY,"
        f" applied_at TEXT NOT NULL DEFAULT ({NOW_SQL}))"
    )
    rows = await conn.execute_fetchall("SELECT COALESCE(MAX(version), 0) FROM schema_version")
    return int(next(iter(rows))[0])


async def apply_migrations(conn: aiosqlite.Connection, scripts: Sequence[str] = MIGRATIONS) -> list[int]:
    """Apply every script newer than the database, each in its own transaction; return the versions applied.

    `conn` must be in autocommit mode (`isolation_level=None`).
    """
    found = await current_version(conn)
    if found > len(scripts):
        raise SchemaTooNew(found, len(scripts))
    applied = []
    for version in range(found + 1, len(scripts) + 1):
        await _apply_one(conn, version, scripts[version - 1])
        applied.append(version)
    return applied


async def _apply_one(conn: aiosqlite.Connection, version: int, script: str) -> None:
    # executescript() commits any open transaction before it starts, so the BEGIN and the version
    # stamp live inside the script; `version` is an int we computed, never outside input.
    try:
        await conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nINSERT INTO schema_version (version) VALUES ({int(version)});\nCOMMIT;"
        )
    except sqlite3.Error:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise
