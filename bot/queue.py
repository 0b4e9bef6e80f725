"""The fair scheduler: one FIFO per user, round-robin between users.

Dispatch goes in rounds: the user at the front of the rotation gives up their oldest job and moves
to the back; a user whose FIFO empties leaves the rotation and, on their next push, joins at the
back. So a user with twenty queued jobs delays a newcomer by at most one job.

Because the order is a pure function of the rotation and the FIFOs, a job's position is computed
arithmetically (see `position`) instead of by simulating the queue.

Restart: pushing `snapshot()` into a fresh queue reproduces it exactly (round 0 lists every user
once, in rotation order). Pushing in submission order instead gives a fair order too, but the
rotation starts afresh, so it can differ from the order before the restart.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Iterator


class FairQueue:
    """Per-user FIFOs served round-robin. Not thread-safe: use it from the event loop thread only."""

    def __init__(self) -> None:
        # OrderedDict, not dict: popping the front of a plain dict degrades as deleted slots pile up.
        self._rotation: OrderedDict[str, deque[int]] = OrderedDict()
        self._owner: dict[int, str] = {}
        self._not_empty = asyncio.Event()

    def __len__(self) -> int:
        return len(self._owner)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._owner

    def push(self, job_id: int, user: str) -> None:
        """Queue `job_id` behind the user's other jobs; a user not in the rotation joins at the back."""
        if job_id in self._owner:
            raise ValueError(f"job {job_id} is already queued")
        self._owner[job_id] = user
        fifo = self._rotation.get(user)
        if fifo is None:
            self._rotation[user] = fifo = deque()
        fifo.append(job_id)
        self._not_empty.set()

    def pop_nowait(self) -> tuple[int, str] | None:
        """Take the next job as `(job_id, user)`, or None when the queue is empty."""
        if not self._rotation:
            return None
        user, fifo = next(iter(self._rotation.items()))
        job_id = fifo.popleft()
        del self._owner[job_id]
        if fifo:
            self._rotation.move_to_end(user)
        else:
            del self._rotation[user]
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
        fifo = self._rotation[user]
        fifo.remove(job_id)
        if not fifo:
            del self._rotation[user]
        return True

    def position(self, job_id: int) -> int | None:
        """How many jobs will be dispatched before this one (0 = next), or None if it is not queued.

        A job at index k of its user's FIFO leaves in round k. Before it go k jobs of its own user,
        min(len, k + 1) jobs of every user ahead in the rotation and min(len, k) of every user behind.
        Costs O(users + this user's jobs).
        """
        owner = self._owner.get(job_id)
        if owner is None:
            return None
        k = self._rotation[owner].index(job_id)
        ahead = 0
        cap = k + 1  # users ahead of the owner still get their round-k turn first
        for user, fifo in self._rotation.items():
            if user == owner:
                ahead += k
                cap = k
                continue
            length = len(fifo)
            ahead += length if length < cap else cap
        return ahead

    def positions(self) -> dict[int, int]:
        """Every queued job's position, in one O(n) pass (for pushing position updates to users)."""
        return {job_id: index for index, (job_id, _) in enumerate(self._dispatch_order())}

    def jobs_of(self, user: str) -> list[int]:
        """The user's queued jobs, oldest first."""
        return list(self._rotation.get(user, ()))

    def snapshot(self) -> list[tuple[int, str]]:
        """All queued jobs as `(job_id, user)` in the order they will be dispatched."""
        return list(self._dispatch_order())

    def _dispatch_order(self) -> Iterator[tuple[int, str]]:
        # Round by round; users drop out as their FIFO runs dry, so the walk is O(n + users).
        active = [(user, list(fifo)) for user, fifo in self._rotation.items()]
        round_index = 0
        while active:
            for user, jobs in active:
                yield jobs[round_index], user
            round_index += 1
            active = [(user, jobs) for user, jobs in active if len(jobs) > round_index]
