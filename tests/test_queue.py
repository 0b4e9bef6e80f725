import asyncio
import random

import pytest

from bot.queue import FairQueue


def drain(queue: FairQueue) -> list[tuple[int, str]]:
    dispatched = []
    while (item := queue.pop_nowait()) is not None:
        dispatched.append(item)
    return dispatched


def test_round_robin_between_three_users():
    queue = FairQueue()
    for job_id, user in [(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "c")]:
        queue.push(job_id, user)

    assert [job_id for job_id, _ in drain(queue)] == [1, 4, 6, 2, 5, 3]


@pytest.mark.parametrize("dispatched_before_newcomer", [0, 1, 7])
def test_newcomer_behind_a_twenty_job_user_waits_at_most_one_job(dispatched_before_newcomer):
    queue = FairQueue()
    for job_id in range(20):
        queue.push(job_id, "heavy")
    for _ in range(dispatched_before_newcomer):
        queue.pop_nowait()
    queue.push(100, "newcomer")

    order = [job_id for job_id, _ in drain(queue)]
    assert order.index(100) <= 1


def test_user_whose_fifo_empties_rejoins_at_the_back():
    queue = FairQueue()
    queue.push(1, "a")
    queue.push(2, "b")
    queue.push(3, "b")
    assert queue.pop_nowait() == (1, "a")  # "a" leaves the rotation
    queue.push(4, "c")
    queue.push(5, "a")

    assert queue.snapshot() == [(2, "b"), (4, "c"), (5, "a"), (3, "b")]


def test_remove_queued_job():
    queue = FairQueue()
    for job_id, user in [(1, "a"), (2, "a"), (3, "b"), (4, "c")]:
        queue.push(job_id, user)

    assert queue.remove(2) is True
    assert 2 not in queue
    assert queue.remove(2) is False
    assert queue.jobs_of("a") == [1]
    assert queue.positions() == {1: 0, 3: 1, 4: 2}


def test_removing_a_users_last_job_takes_them_out_of_the_rotation():
    queue = FairQueue()
    queue.push(1, "a")
    queue.push(2, "b")
    queue.remove(1)
    queue.push(3, "a")

    assert queue.snapshot() == [(2, "b"), (3, "a")]


def test_remove_of_dispatched_or_unknown_job_is_false():
    queue = FairQueue()
    queue.push(1, "a")
    queue.pop_nowait()

    assert queue.remove(1) is False
    assert queue.remove(99) is False
    assert queue.position(1) is None


def test_pushing_a_queued_job_again_is_refused():
    queue = FairQueue()
    queue.push(1, "a")

    with pytest.raises(ValueError, match="already queued"):
        queue.push(1, "b")
    assert queue.snapshot() == [(1, "a")]


def test_pushing_the_snapshot_into_a_fresh_queue_reproduces_it():
    rng = random.Random(7)
    queue = FairQueue()
    for job_id in range(60):
        queue.push(job_id, f"user{rng.randrange(6)}")
        if rng.random() < 0.3:
            queue.pop_nowait()

    restarted = FairQueue()
    for job_id, user in queue.snapshot():
        restarted.push(job_id, user)

    assert drain(restarted) == drain(queue)


@pytest.mark.parametrize("seed", range(5))
def test_position_matches_snapshot_and_dispatch_in_random_scenarios(seed):
    rng = random.Random(seed)
    queue = FairQueue()
    users = [f"telegram:{n}" for n in range(8)]
    next_job = 0
    for _ in range(300):
        roll = rng.random()
        if roll < 0.55:
            queue.push(next_job, rng.choice(users))
            next_job += 1
        elif roll < 0.8:
            expected_next = queue.snapshot()[0] if queue else None
            assert queue.pop_nowait() == expected_next
        elif queue:
            victim = rng.choice(queue.snapshot())[0]
            assert queue.remove(victim) is True

        snapshot = queue.snapshot()
        assert len(queue) == len(snapshot)
        assert queue.positions() == {job_id: index for index, (job_id, _) in enumerate(snapshot)}
        for index, (job_id, user) in enumerate(snapshot):
            assert job_id in queue
            assert queue.position(job_id) == index
            assert job_id in queue.jobs_of(user)

    assert drain(queue) == snapshot


async def test_get_returns_at_once_when_a_job_is_queued():
    queue = FairQueue()
    queue.push(1, "a")

    assert await asyncio.wait_for(queue.get(), timeout=1) == (1, "a")


async def test_get_waits_then_wakes_on_push():
    queue = FairQueue()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not waiter.done()

    queue.push(1, "a")

    assert await asyncio.wait_for(waiter, timeout=1) == (1, "a")
    assert len(queue) == 0


async def test_cancelled_get_leaves_the_queue_intact():
    queue = FairQueue()
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)

    # The push wakes the waiter, but it is cancelled before it runs: the job must stay queued.
    queue.push(1, "a")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert queue.snapshot() == [(1, "a")]
    assert await asyncio.wait_for(queue.get(), timeout=1) == (1, "a")


async def test_each_of_several_waiters_gets_a_different_job():
    queue = FairQueue()
    waiters = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)

    for job_id, user in [(1, "a"), (2, "b"), (3, "a")]:
        queue.push(job_id, user)

    results = await asyncio.wait_for(asyncio.gather(*waiters), timeout=1)
    assert sorted(results) == [(1, "a"), (2, "b"), (3, "a")]
    assert len(queue) == 0
