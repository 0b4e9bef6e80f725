"""The daily quota as a ledger, in work units (bot/core/cost.py: one unit is one 1024x1024 picture at
8 steps without guidance): +n when a job costing n units is accepted, -k for each refund on it
(some pictures of a batch now, the rest later), the refunds together never more than the n.

Usage for a day is the sum of its rows, so every change is explained and nothing is overwritten.
`Jobs.accept` writes the reservation in the same transaction as the job; this module reads and refunds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from storage.store import Store, Tx

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
    """Give back part of the job's reservation inside an open transaction: all that is left of it,
    or the share of it that `pictures` of the job's pictures make up, rounded down (so the pictures
    that were drawn keep paying at least what they cost).  Refunds on a job add up but never give
    back more than it was charged; True when this one gave back anything."""
    row = await tx.fetch_one(
        "SELECT quota_ledger.user_id, day, delta AS charged,"
        " MAX(1, COALESCE(json_extract(request, '$.count'), 1)) AS count,"
        " (SELECT -COALESCE(SUM(delta), 0) FROM quota_ledger WHERE job_id = ?1 AND delta < 0) AS refunded"
        " FROM quota_ledger JOIN jobs ON jobs.id = quota_ledger.job_id"
        " WHERE job_id = ?1 AND delta > 0",
        (job_id,),
    )
    if row is None:
        return False
    amount = refund_amount(row["charged"], row["refunded"], row["count"], pictures)
    if amount <= 0:
        return False
    await tx.execute(
        "INSERT INTO quota_ledger (user_id, job_id, day, delta, reason) VALUES (?, ?, ?, ?, ?)",
        (row["user_id"], job_id, row["day"], -amount, reason),
    )
    return True


def refund_amount(charged: int, refunded: int, count: int, pictures: int | None = None) -> int:
    """Units to give back now for a job that was `charged` units for `count` pictures and has had
    `refunded` of them back already: `pictures`' share of the charge (all of it for None), capped at
    what is left."""
    share = charged if pictures is None else charged * min(pictures, count) // count
    return max(0, min(share, charged - refunded))


class Quota:
    def __init__(self, db: Store) -> None:
        self._db = db

    async def used(self, user_id: int, day: str) -> int:
        """Net work units charged to the user on `day` ('YYYY-MM-DD')."""
        row = await self._db.fetch_one(_USED_SQL, (user_id, day))
        return int(row[0])

    async def refund(self, job_id: int, reason: str) -> bool:
        """Give back what is left of the job's reservation, on the day it was charged; True when
        anything was left."""
        async with self._db.write() as tx:
            return await refund_in(tx, job_id, reason)

    async def spent(self, day: str) -> int:
        """Net work units charged to everyone on `day` ('YYYY-MM-DD'), for /stats."""
        row = await self._db.fetch_one("SELECT COALESCE(SUM(delta), 0) FROM quota_ledger WHERE day = ?", (day,))
        return int(row[0])
