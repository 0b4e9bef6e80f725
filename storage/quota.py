"""The daily quota as a ledger, in work units (bot/cost.py: one unit is one 1024x1024 picture at
8 steps without guidance): +n when a job costing n units is accepted, -n when it is refunded.

Usage for a day is the sum of its rows, so every change is explained and nothing is overwritten.
`Jobs.accept` writes the reservation in the same transaction as the job; this module reads and refunds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.db import Database, Tx

RESERVE_REASON = "reserve"

_USED_SQL = "SELECT COALESCE(SUM(delta), 0) FROM quota_ledger WHERE user_id = ? AND day = ?"


async def used_in(tx: Tx, user_id: int, day: str) -> int:
    """Usage read inside an open write transaction, so a check and the insert after it are atomic."""
    row = await tx.fetch_one(_USED_SQL, (user_id, day))
    return int(row[0])


async def reserve_in(tx: Tx, user_id: int, job_id: int, day: str, amount: int = 1) -> None:
    """Charge `amount` work units for the job."""
    if amount < 1:
        raise ValueError(f"a job reserves at least one unit, not {amount}")
    await tx.execute(
        "INSERT INTO quota_ledger (user_id, job_id, day, delta, reason) VALUES (?, ?, ?, ?, ?)",
        (user_id, job_id, day, amount, RESERVE_REASON),
    )


async def refund_in(tx: Tx, job_id: int, reason: str, pictures: int | None = None) -> bool:
    """Give back the job's reservation inside an open transaction: all of it, or the share of it
    that `pictures` of the job's pictures make up, rounded down (so the pictures that were drawn
    keep paying at least what they cost).  True only the first time: a job is refunded at most once."""
    refunded = await tx.execute(
        "INSERT INTO quota_ledger (user_id, job_id, day, delta, reason)"
        " SELECT user_id, job_id, day, -(CASE WHEN ?1 IS NULL THEN delta ELSE delta * MIN(?1, n) / n END), ?2"
        " FROM quota_ledger,"
        "  (SELECT MAX(1, COALESCE(json_extract(request, '$.count'), 1)) AS n FROM jobs WHERE id = ?3)"
        " WHERE job_id = ?3 AND delta > 0"
        " AND NOT EXISTS (SELECT 1 FROM quota_ledger WHERE job_id = ?3 AND delta < 0)",
        (pictures, reason, job_id),
    )
    return refunded == 1


class Quota:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def used(self, user_id: int, day: str) -> int:
        """Net work units charged to the user on `day` ('YYYY-MM-DD')."""
        row = await self._db.fetch_one(_USED_SQL, (user_id, day))
        return int(row[0])

    async def refund(self, job_id: int, reason: str) -> bool:
        """Give back the job's reservation, on the day it was charged; True only the first time."""
        async with self._db.write() as tx:
            return await refund_in(tx, job_id, reason)

    async def spent(self, day: str) -> int:
        """Net work units charged to everyone on `day` ('YYYY-MM-DD'), for /stats."""
        row = await self._db.fetch_one("SELECT COALESCE(SUM(delta), 0) FROM quota_ledger WHERE day = ?", (day,))
        return int(row[0])
