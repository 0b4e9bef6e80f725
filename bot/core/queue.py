"""The fair scheduler: one FIFO per user, deficit round-robin by cost between users.

Users share GPU time, not turns.  Every job carries its cost in work units (bot/core/cost.py).  Dispatch
goes in rounds: each visit to the user at the front of the rotation adds one unit (the quantum) to
their deficit; they give up their oldest jobs while the oldest costs no more than the deficit,
paying for each, then move to the back.  So a 36-unit job waits about as long as 36 one-unit jobs
would, and with every job at one unit this is plain round-robin.  A user whose FIFO empties leaves
the rotation, loses what deficit they had left, and on their next push joins at the back; a user
whose next job is cancelled loses the deficit saved up for it.

Because the order is a pure function of the rotation, the deficits and the FIFOs, a job's position
is computed arithmetically (see `position`) instead of by simulating the queue: with a deficit d
before its next visit, a user's job whose FIFO prefix (costs up to and including it) sums to S
leaves on visit max(1, S - d), and visit v of every user happens in round v, in rotation order.

Restart: deficits live only here, so pushing `snapshot()` (or the jobs in submission order) into a
fresh queue gives a fair order that can differ from the one before the restart.  With every job
at one unit, pushing `snapshot()` reproduces the order exactly.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate

QUANTUM = 1  # units a user's deficit grows by per visit


@dataclass
class _Lane:
    """One user's FIFO of (job id, cost) and what they may still spend."""

    jobs: deque[tuple[int, int]] = field(default_factory=deque)
    deficit: int = 0
    visiting: bool = False  # only the front user: this visit's quantum is already in `deficit`
    total: int = 0  # sum of the costs in `jobs`
    _prefixes: list[int] | None = None

    def budget(self, visits: int) -> int:
        """Units this user may have spent in all after `visits` more visits (the current one counts)."""
        return self.deficit + (visits - 1 if self.visiting else visits) * QUANTUM

    def visit_of(self, prefix: int) -> int:
        """The visit (1 = the next one) on which a job whose FIFO prefix costs `prefix` leaves."""
        base = self.budget(0)
        return max(1, -(-(prefix - base) // QUANTUM))

    def leaving_by(self, visits: int) -> int:
        """How many of this user's jobs leave within `visits` visits."""
        if visits <= 0:
            return 0
        budget = self.budget(visits)
        if budget >= self.total:
            return len(self.jobs)
        return bisect_right(self.prefixes(), budget)

    def prefixes(self) -> list[int]:
        """Running sums of the FIFO's costs, cached until the FIFO changes other than by a push."""
        if self._prefixes is None:
            self._prefixes = list(accumulate(cost for _, cost in self.jobs))
        return self._prefixes

    def append(self, job_id: int, cost: int) -> None:
        self.jobs.append((job_id, cost))
        self.total += cost
        if self._prefixes is not None:
            self._prefixes.append(self.total)

    def popleft(self) -> tuple[int, int]:
        job_id, cost = self.jobs.popleft()
        self.total -= cost
        self._prefixes = None
        return job_id, cost

    def drop(self, job_id: int) -> None:
        for index, (queued, cost) in enumerate(self.jobs):
            if queued == job_id:
                del self.jobs[index]
                self.total -= cost
                self._prefixes = None
                return


class FairQueue:
    """Per-user FIFOs served by deficit round-robin. Not thread-safe: use it from the event loop thread only."""

    def __init__(self) -> None:
        # OrderedDict, not dict: popping the front of a plain dict degrades as deleted slots pile up.
        self._rotation: OrderedDict[str, _Lane] = OrderedDict()
        self._owner: dict[int, str] = {}
        self._not_empty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._owner)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._owner

    def push(self, job_id: int, user: str, cost: int = 1) -> None:
        """Queue `job_id` (costing `cost` work units) behind the user's other jobs; a user not in the
        rotation joins at the back."""
        if job_id in self._owner:
            raise ValueError(f"job {job_id} is already queued")
        if not isinstance(cost, int) or cost < 1:
            raise ValueError(f"a job costs at least one unit (got {cost!r})")
        self._owner[job_id] = user
        lane = self._rotation.get(user)
        if lane is None:
            self._rotation[user] = lane = _Lane()
        lane.append(job_id, cost)
        self._not_empty.set()

    def pop_nowait(self) -> tuple[int, str] | None:
        """Take the next job as `(job_id, user)`, or None when the queue is empty."""
        if not self._rotation:
            return None
        # Users who cannot afford their oldest job yet take their quantum and go to the back; once a
        # whole round passes like that, the idle rounds after it are skipped at once.
        passed = 0
        while True:
            if passed == len(self._rotation):
                self._skip_idle_rounds()
                passed = 0
            user, lane = next(iter(self._rotation.items()))
            if not lane.visiting:
                lane.deficit += QUANTUM
                lane.visiting = True
            job_id, cost = lane.jobs[0]
            if cost <= lane.deficit:
                break
            lane.visiting = False
            self._rotation.move_to_end(user)
            passed += 1
        lane.popleft()
        lane.deficit -= cost
        del self._owner[job_id]
        if not lane.jobs:
            del self._rotation[user]
        elif lane.jobs[0][1] > lane.deficit:  # visit over: to the back
            lane.visiting = False
            self._rotation.move_to_end(user)
        return job_id, user

    async def get(self) -> tuple[int, str]:
        """Wait for and take the next job.

        Cancel-safe: the job is taken synchronously after the wait, so a cancelled waiter takes nothing.
        """
        while True:
            item = self.pop_nowait()
            if item is not None:
                return item
            self._not_empty.clear()
            await self._not_empty.wait()

    def remove(self, job_id: int) -> bool:
        """Drop a queued job (a cancel). Returns False if it is not queued, e.g. already dispatched."""
        user = self._owner.pop(job_id, None)
        if user is None:
            return False
        lane = self._rotation[user]
        was_next = lane.jobs[0][0] == job_id
        lane.drop(job_id)
        if not lane.jobs:
            del self._rotation[user]  # and with the lane goes its deficit, as when a FIFO empties
        elif was_next:
            # The deficit was earned waiting for this job: spent on the next ones it would let the
            # user burst ahead of everyone.  Only the quantum of a visit under way is kept.
            lane.deficit = min(lane.deficit, QUANTUM if lane.visiting else 0)
        return True

    def position(self, job_id: int) -> int | None:
        """How many jobs will be dispatched before this one (0 = next), or None if it is not queued.

        The job leaves on its user's visit V (see the module docstring).  Before it go its user's
        earlier jobs, every job of a user ahead in the rotation that leaves within V visits, and every
        job of a user behind that leaves within V - 1 (a binary search in their running costs).
        Costs O(this user's jobs + users x log(jobs per user)).
        """
        owner = self._owner.get(job_id)
        if owner is None:
            return None
        lane = self._rotation[owner]
        prefix = ahead = 0
        for queued, cost in lane.jobs:
            prefix += cost
            if queued == job_id:
                break
            ahead += 1
        visits = lane.visit_of(prefix)  # users ahead of the owner get their visit-V turn first
        for user, other in self._rotation.items():
            if user == owner:
                visits -= 1
                if visits == 0:
                    break
                continue
            # other.leaving_by(visits), inlined: this loop is the whole cost of a position.
            budget = other.deficit + (visits - other.visiting) * QUANTUM
            if budget >= other.total:
                ahead += len(other.jobs)
            else:
                ahead += bisect_right(other._prefixes or other.prefixes(), budget)
        return ahead

    def positions(self) -> dict[int, int]:
        """Every queued job's position, in one O(n log n) pass (for pushing position updates to users)."""
        return {job_id: index for index, (job_id, _) in enumerate(self._dispatch_order())}

    def jobs_of(self, user: str) -> list[int]:
        """The user's queued jobs, oldest first."""
        lane = self._rotation.get(user)
        return [job_id for job_id, _ in lane.jobs] if lane else []

    def cost_of(self, job_id: int) -> int | None:
        """The cost a queued job was pushed with, or None if it is not queued."""
        owner = self._owner.get(job_id)
        if owner is None:
            return None
        return next(cost for queued, cost in self._rotation[owner].jobs if queued == job_id)

    def snapshot(self) -> list[tuple[int, str]]:
        """All queued jobs as `(job_id, user)` in the order they will be dispatched."""
        return list(self._dispatch_order())

    def _dispatch_order(self) -> Iterator[tuple[int, str]]:
        # Sort by (visit, place in the rotation, place in the user's FIFO): that is the round order.
        keyed = []
        for place, (user, lane) in enumerate(self._rotation.items()):
            prefix = 0
            for index, (job_id, cost) in enumerate(lane.jobs):
                prefix += cost
                keyed.append((lane.visit_of(prefix), place, index, job_id, user))
        keyed.sort()
        for *_, job_id, user in keyed:
            yield job_id, user

    def _skip_idle_rounds(self) -> None:
        """Grant every user the quanta of the coming rounds in which nobody could dispatch, at once,
        so a queue of big jobs costs O(users) per pop rather than O(users x cost)."""
        idle = min(lane.visit_of(lane.jobs[0][1]) for lane in self._rotation.values()) - 1
        if idle > 0:
            for lane in self._rotation.values():
                lane.deficit += idle * QUANTUM
