import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.queue import FairQueue


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


def test_cancelling_a_big_job_does_not_let_its_saved_up_deficit_burst_ahead():
    queue = FairQueue()
    queue.push(1, "big", cost=10)
    for job_id in range(2, 7):
        queue.push(job_id, "big", cost=1)
    for job_id in range(100, 110):
        queue.push(job_id, "small", cost=1)
    for _ in range(6):  # "small" dispatches while "big" saves up for its 10-unit job
        assert queue.pop_nowait()[1] == "small"

    assert queue.remove(1) is True
    order = [user for _, user in drain(queue)]
    # Round-robin again: the credit earned for the cancelled job is not spent on the others.
    assert order[:8] == ["big", "small"] * 4 or order[:8] == ["small", "big"] * 4


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


def test_pushing_the_snapshot_into_a_fresh_queue_reproduces_it_when_every_job_costs_one_unit():
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
            queue.push(next_job, rng.choice(users), cost=rng.choice([1, 1, 1, 2, 4, 9, 16]))
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


def test_one_big_job_waits_its_turn_like_as_many_small_ones():
    queue = FairQueue()
    queue.push(1, "big", cost=36)
    for job_id in range(100, 136):
        queue.push(job_id, "small", cost=1)

    order = [job_id for job_id, _ in drain(queue)]
    # "big" earns one unit per round, so its job leaves after "small" has had about as much GPU time.
    assert order.index(1) == 35
    assert order[:35] == list(range(100, 135))


def test_a_big_job_does_not_hold_up_a_newcomer_with_a_small_one():
    queue = FairQueue()
    queue.push(1, "big", cost=16)
    queue.push(2, "big", cost=16)
    queue.push(3, "newcomer", cost=1)

    assert queue.snapshot() == [(3, "newcomer"), (1, "big"), (2, "big")]
    assert queue.position(3) == 0 and queue.position(1) == 1
    assert drain(queue) == [(3, "newcomer"), (1, "big"), (2, "big")]


def test_users_share_units_not_turns():
    queue = FairQueue()
    job_id = 0
    for _ in range(40):
        queue.push(job_id := job_id + 1, "heavy", cost=4)
        queue.push(job_id := job_id + 1, "light", cost=1)
    costs = {}
    spent = {"heavy": 0, "light": 0}
    for user in ("heavy", "light"):
        for queued in queue.jobs_of(user):
            costs[queued] = queue.cost_of(queued)

    for queued, user in drain(queue)[:40]:
        spent[user] += costs[queued]

    # While both have work queued, each gets about half of the units dispatched.
    assert abs(spent["heavy"] - spent["light"]) <= 4


def test_a_cost_below_one_unit_is_refused():
    queue = FairQueue()
    with pytest.raises(ValueError, match="at least one unit"):
        queue.push(1, "a", cost=0)
    assert len(queue) == 0


def test_recovery_in_submission_order_dispatches_every_job_once():
    rng = random.Random(3)
    queue = FairQueue()
    jobs = [(job_id, f"user{rng.randrange(4)}", rng.choice([1, 1, 2, 9, 16])) for job_id in range(40)]
    for job_id, user, cost in jobs:
        queue.push(job_id, user, cost=cost)
    for _ in range(7):
        queue.pop_nowait()

    restarted = FairQueue()
    for job_id, user, cost in jobs:
        if job_id in queue:
            restarted.push(job_id, user, cost=cost)

    assert sorted(drain(restarted)) == sorted(drain(queue))


_operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 5), st.sampled_from([1, 1, 1, 2, 3, 8, 16, 36])),
        st.tuples(st.just("pop")),
        st.tuples(st.just("remove"), st.integers(0, 200)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(_operations)
def test_positions_and_snapshot_agree_with_the_actual_dispatch_order(operations):
    queue = FairQueue()
    next_job = 0
    for operation in operations:
        if operation[0] == "push":
            queue.push(next_job, f"user{operation[1]}", cost=operation[2])
            next_job += 1
        elif operation[0] == "pop":
            expected_next = queue.snapshot()[0] if queue else None
            assert queue.pop_nowait() == expected_next
        elif queue:
            victim = queue.snapshot()[operation[1] % len(queue)][0]
            assert queue.remove(victim) is True
        assert queue.positions() == {job_id: index for index, (job_id, _) in enumerate(queue.snapshot())}

    snapshot = queue.snapshot()
    positions = queue.positions()
    assert positions == {job_id: index for index, (job_id, _) in enumerate(snapshot)}
    assert all(queue.position(job_id) == index for job_id, index in positions.items())
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
