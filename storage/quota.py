"""The daily quota as a ledger: +n when a job of n pictures is accepted, -n when it is refunded.

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
    if amount < 1:
        raise ValueError(f"a job reserves at least one picture, not {amount}")
    await tx.execute(
        "INSERT INTO quota_ledger (user_id, job_id, day, delta, reason) VALUES (?, ?, ?, ?, ?)",
        (user_id, job_id, day, amount, RESERVE_REASON),
    )


async def refund_in(tx: Tx, job_id: int, reason: str, pictures: int | None = None) -> bool:
    """Give back the job's reservation (all of it, or `pictures` of it) inside an open transaction;
    True only the first time: a job is refunded at most once."""
    refunded = await tx.execute(
        "INSERT INTO quota_ledger (user_id, job_id, day, delta, reason)"
        " SELECT user_id, job_id, day, -MIN(delta, COALESCE(?, delta)), ? FROM quota_ledger"
        " WHERE job_id = ? AND delta > 0"
        " AND NOT EXISTS (SELECT 1 FROM quota_ledger WHERE job_id = ? AND delta < 0)",
        (pictures, reason, job_id, job_id),
    )
    return refunded == 1


class Quota:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def used(self, user_id: int, day: str) -> int:
        """Net pictures charged to the user on `day` ('YYYY-MM-DD')."""
        row = await self._db.fetch_one(_USED_SQL, (user_id, day))
        return int(row[0])

    async def refund(self, job_id: int, reason: str) -> bool:
        """Give back the job's reservation, on the day it was charged; True only the first time."""
        async with self._db.write() as tx:
            return await refund_in(tx, job_id, reason)
