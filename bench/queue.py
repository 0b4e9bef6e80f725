"""FairQueue under a crowd: 1,000 users each submit 10 jobs at once, in random user order.

Prints the cost of dispatch and of position look-ups, and how long each user's first job waits
compared with a plain FIFO; then the same crowd with mixed job costs (work units, bot/core/cost.py):
the same timings, and how evenly GPU time is shared while everyone still has work queued.
Run: `python bench/queue.py` (a few seconds).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections import deque
from pathlib import Path

# Run as a script, this folder comes first on sys.path, and this file would then shadow the stdlib
# `queue` (concurrent.futures imports it on first use); put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bot.core.queue import FairQueue  # noqa: E402

USERS = 1_000
JOBS_PER_USER = 10
POSITION_SAMPLES = 2_000
SEED = 1


def submissions(rng: random.Random) -> list[tuple[int, str]]:
    """Each user, in random order, submits a burst of jobs; job ids grow with submission time."""
    users = [f"telegram:{n}" for n in range(USERS)]
    rng.shuffle(users)
    return [(i * JOBS_PER_USER + j, user) for i, user in enumerate(users) for j in range(JOBS_PER_USER)]


def first_job_waits(order: list[tuple[int, str]], arrival_rank: dict[str, int]) -> tuple[int, int]:
    """Worst (jobs dispatched before a user's first job) and worst of that minus the user's arrival rank."""
    seen: set[str] = set()
    worst = worst_excess = 0
    for index, (_, user) in enumerate(order):
        if user not in seen:
            seen.add(user)
            worst = max(worst, index)
            worst_excess = max(worst_excess, index - arrival_rank[user])
    return worst, worst_excess


def mixed_costs(jobs: list[tuple[int, str]], rng: random.Random) -> dict[int, int]:
    """Each user sticks to one kind of job: most default pictures (1 unit), some batches and big ones."""
    kinds = [1] * 6 + [2, 4, 9, 16]
    per_user = {user: rng.choice(kinds) for _, user in jobs}
    return {job_id: per_user[user] for job_id, user in jobs}


def main() -> None:
    rng = random.Random(SEED)
    jobs = submissions(rng)
    arrival_rank: dict[str, int] = {}
    for _, user in jobs:
        arrival_rank.setdefault(user, len(arrival_rank))

    rows = run(jobs, {job_id: 1 for job_id, _ in jobs}, arrival_rank, rng, "1 unit each")
    rows += run(jobs, mixed_costs(jobs, rng), arrival_rank, rng, "mixed costs")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


def run(
    jobs: list[tuple[int, str]], costs: dict[int, int], arrival_rank: dict[str, int], rng: random.Random, name: str
) -> list[tuple[str, str]]:
    queue = FairQueue()
    start = time.perf_counter()
    for job_id, user in jobs:
        queue.push(job_id, user, cost=costs[job_id])
    push_s = time.perf_counter() - start

    start = time.perf_counter()
    all_positions = queue.positions()
    positions_s = time.perf_counter() - start
    assert len(all_positions) == len(jobs)

    position_costs = []
    for job_id, _ in rng.sample(jobs, POSITION_SAMPLES):
        start = time.perf_counter()
        position = queue.position(job_id)
        position_costs.append(time.perf_counter() - start)
        assert position == all_positions[job_id]

    order = []
    start = time.perf_counter()
    while (item := queue.pop_nowait()) is not None:
        order.append(item)
    dispatch_s = time.perf_counter() - start

    fifo = deque(jobs)
    fifo_order = [fifo.popleft() for _ in range(len(fifo))]

    rr_worst, rr_excess = first_job_waits(order, arrival_rank)
    fifo_worst, fifo_excess = first_job_waits(fifo_order, arrival_rank)
    gap, largest = unit_share(order, costs)

    rows = [
        (f"-- {name}", f"{sum(costs.values()):,} units"),
        ("jobs", f"{len(jobs):,}"),
        ("users", f"{USERS:,}"),
        ("push, total", f"{push_s * 1e3:.2f} ms"),
        ("dispatch, total", f"{dispatch_s * 1e3:.2f} ms"),
        ("dispatch, per job", f"{dispatch_s / len(jobs) * 1e6:.2f} µs"),
        ("positions(), full queue", f"{positions_s * 1e3:.2f} ms"),
        (f"position() p50 ({POSITION_SAMPLES} samples)", f"{statistics.median(position_costs) * 1e6:.1f} µs"),
        ("position() max", f"{max(position_costs) * 1e6:.1f} µs"),
        ("worst first-job wait, round-robin", f"{rr_worst:,} jobs (minus arrival rank: {rr_excess:,})"),
        ("worst first-job wait, plain FIFO", f"{fifo_worst:,} jobs (minus arrival rank: {fifo_excess:,})"),
        ("round-robin/FIFO worst first-job wait", f"{rr_worst / fifo_worst:.3f}"),
        ("worst unit gap between backlogged users", f"{gap:,} (largest job: {largest:,} units)"),
    ]
    return rows


def unit_share(order: list[tuple[int, str]], costs: dict[int, int], every: int = 100) -> tuple[int, int]:
    """The worst gap, in units dispatched so far, between two users who both still have work queued
    (checked every `every` dispatches), and the largest job cost: deficit round-robin keeps the gap
    within about one job's cost, whatever each user's job size."""
    remaining: dict[str, int] = {}
    for _, user in order:
        remaining[user] = remaining.get(user, 0) + 1
    spent = dict.fromkeys(remaining, 0)
    worst = 0
    for index, (job_id, user) in enumerate(order):
        spent[user] += costs[job_id]
        remaining[user] -= 1
        if index % every == 0:
            backlogged = [spent[u] for u, left in remaining.items() if left]
            if len(backlogged) > 1:
                worst = max(worst, max(backlogged) - min(backlogged))
    return worst, max(costs.values())


if __name__ == "__main__":
    main()
