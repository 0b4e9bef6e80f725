"""`BoundedMap`, and the per-user and per-chat state that uses it staying bounded on the real path."""

from __future__ import annotations

import pytest

from bot.core.service import Caller
from bot.runtime.bounded import BoundedMap
from tests.support.service import RecordingAdapter, settled


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_least_recently_written_go_first():
    seen = BoundedMap(3)
    for key in "abcd":
        seen[key] = key.upper()
    assert list(seen) == ["b", "c", "d"] and "a" not in seen
    seen["b"] = "again"  # written again: now the newest
    seen["e"] = "E"
    assert list(seen) == ["d", "b", "e"] and seen["b"] == "again" and len(seen) == 3


def test_entries_expire_ttl_after_they_were_written():
    clock = Clock()
    seen = BoundedMap(10, ttl_s=5, clock=clock)
    seen["old"] = 1
    clock.now += 3
    seen["new"] = 2
    clock.now += 2.5
    assert "old" not in seen and seen.get("old") is None and seen["new"] == 2
    assert dict(seen) == {"new": 2}
    clock.now += 3
    assert len(seen) == 0 and seen.pop("new", None) is None
    with pytest.raises(ValueError):
        BoundedMap(0)


async def test_ten_thousand_callers_leave_bounded_state_behind(make_app, monkeypatch):
    """Cooldowns are kept for at most COOLDOWNS_KEPT users, chats' word lists for SCOPED_LISTS_CACHED
    chats, and nothing per job once the jobs are done."""
    import bot.community.moderation

    monkeypatch.setattr(bot.community.moderation, "COOLDOWNS_KEPT", 4)
    monkeypatch.setattr(bot.community.moderation, "SCOPED_LISTS_CACHED", 3)
    app = await make_app(EASEL_COOLDOWN_S="600")
    adapter = RecordingAdapter(service=app.service)
    app.service.register(adapter)
    await app.service.start()
    jobs = []
    for user in range(10):
        caller = Caller("telegram", str(500 + user), chat_id=str(-500 - user), public=True)
        reply = await app.service.handle_text(caller, f"/draw a kite {user} --steps 1 --size 64x64", {})
        assert reply.job_id is not None, reply.text
        jobs.append(reply.job_id)
    for job_id in jobs:
        await settled(app, job_id, timeout=60)
    moderator = app.service.moderator
    assert len(moderator._last_drawing) == 4 and len(moderator._scoped) <= 3
    # The newest users are still held back; the evicted oldest are not remembered at all.
    assert moderator.cooldown_left(app_user := (await app.service.user_for(caller)).id) > 0, app_user
    service = app.service
    owners = {
        "_costs": service.scheduler,
        "_running": service.scheduler,
        "_enqueued_at": service.scheduler,
        "_last_progress": service.dispatcher,
        "_dispatched": service.dispatcher,
        "_last_position": service.notices,
    }
    for name, owner in owners.items():
        assert not getattr(owner, name), name
    assert not service.dispatcher._cancel_requested and not app.worker._stop_flags


async def test_a_cancel_that_lands_before_the_job_runs_leaves_no_stop_flag(make_app, monkeypatch):
    import asyncio

    from storage.jobs import JobStatus

    app = await make_app(EASEL_COOLDOWN_S="0")
    app.service.register(RecordingAdapter(service=app.service))
    entered, gate = asyncio.Event(), asyncio.Event()
    real = app.db.jobs.mark_running

    async def held(job_id):  # the job has left the queue; the GPU thread has not started it
        entered.set()
        await gate.wait()
        return await real(job_id)

    monkeypatch.setattr(app.db.jobs, "mark_running", held)
    await app.service.start()
    caller = Caller("telegram", "500", chat_id="500")
    reply = await app.service.handle_text(caller, "/draw a kite --steps 1 --size 64x64", {})
    await asyncio.wait_for(entered.wait(), 10)
    await app.service.handle_text(caller, f"/cancel {reply.job_id}", {})
    gate.set()
    for _ in range(500):
        settled = (await app.db.jobs.get(reply.job_id)).status is JobStatus.CANCELLED
        if settled and not app.service.dispatcher._dispatched:
            break
        await asyncio.sleep(0.02)
    assert (await app.db.jobs.get(reply.job_id)).status is JobStatus.CANCELLED
    assert not app.worker._stop_flags
    # A cancel for a job this worker never runs leaves nothing behind either.
    app.worker.cancel(987654)
    assert not app.worker._stop_flags


def test_cooldowns_are_forgotten_once_they_are_over():
    from bot.community.moderation import Moderator
    from bot.runtime.settings import Settings

    clock = Clock()
    moderator = Moderator(Settings(_env_file=None, EASEL_COOLDOWN_S="30"), store=None, clock=clock)
    for user in range(100):
        moderator.start_cooldown(user)
    assert moderator.cooldown_left(7) == 30
    clock.now += 31
    assert moderator.cooldown_left(7) == 0 and len(moderator._last_drawing) == 0
