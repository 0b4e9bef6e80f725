"""FairQueue under a crowd: 1,000 users each submit 10 jobs at once, in random user order.

Prints the cost of dispatch and of position look-ups, and how long each user's first job waits
compared with a plain FIFO. Run: `python bench/queue.py` (a few seconds).
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

from bot.queue import FairQueue  # noqa: E402

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


def main() -> None:
    rng = random.Random(SEED)
    jobs = submissions(rng)
    arrival_rank: dict[str, int] = {}
    for _, user in jobs:
        arrival_rank.setdefault(user, len(arrival_rank))

    queue = FairQueue()
    start = time.perf_counter()
    for job_id, user in jobs:
        queue.push(job_id, user)
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

    rows = [
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
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    print(f"round-robin/FIFO worst first-job wait: {rr_worst / fifo_worst:.3f}")


if __name__ == "__main__":
    main()
