"""Scale-out over a real redis-server, with the worker loop running in this process on the shared
tiny engine: the hand-out, progress, cancel, image-to-image transport, Redis being away, and the
atomic scripts that make an outcome count once.  (tests/test_scale_workers.py runs real
`easel worker` processes.)"""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from bot.language.buttons import Action, button_id
from bot.language.messages import t
from engine.request import DrawRequest, seed_for
from storage.jobs import JobStatus
from tests.support.scale import RedisServer, ScaleApps, WorkerLoops, eventually, job_hash
from tests.support.service import alice, bob, settled, shown_on


@pytest.fixture
async def make_scale_app(make_settings):
    """`await make_scale_app(redis_url, **overrides) -> (app, adapter)`, started; stopped at teardown."""
    apps = ScaleApps(make_settings)
    yield apps.make
    await apps.close()


@pytest.fixture
async def run_worker(make_settings, engine):
    """`run_worker(redis_url, slow_on=None, **overrides)`: the `easel worker` loop as a task in this
    process on the shared tiny engine (tests/support/scale.py `WorkerLoops`)."""
    loops = WorkerLoops(make_settings)

    def start(redis_url: str, slow_on: str | None = None, **overrides):
        return loops.start(redis_url, engine, f"inproc-{len(loops.running)}", slow_on, **overrides)

    yield start
    await loops.close()


async def test_a_job_runs_on_a_worker_with_the_bots_seed_and_image_to_image_works(
    redis_server, make_scale_app, run_worker
):
    import json

    run_worker(redis_server.url)
    app, adapter = await make_scale_app(redis_server.url)
    await eventually(lambda: app.service.live_workers() == 1, what="the worker's announcement")
    assert app.worker.redis_ok
    first = await app.service.handle_text(alice(), "/draw a red fox --steps 8", {"chat_id": "1"})
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    job = await settled(app, first.job_id)
    stored = job_hash(redis_server, first.job_id)
    # The bot chose the seed before handing the job out, and that is the seed the picture has.
    assert json.loads(stored["request"])["seed"] == job.seed and job.request["seed"] == -1
    assert stored["state"] == b"done" and stored["worker"] == b"inproc-0" and stored["attempts"] == b"1"
    assert job.timings["total"] > 0 and job.plan["placement"] == "cpu"
    # Image-to-image: the source picture travels through Redis (workers cannot read the bot's disk).
    vary = await app.service.press(
        alice(), button_id(Action.VARY_STRONG, first.job_id), {}, message_id=shown_on(first.job_id)
    )
    await adapter.wait_until(lambda: len(adapter.delivered) == 2)
    delivered = adapter.delivered[1]
    assert delivered.job.id == vary.job_id and delivered.image_paths[0].exists()
    assert b"source" not in server_fields(redis_server, vary.job_id)  # freed once drawn
    assert (await settled(app, vary.job_id)).status is JobStatus.DONE
    # Outpainting too: the source travels the same way, the region in the request.
    pan = await app.service.press(
        alice(), button_id(Action.PAN_RIGHT, first.job_id), {}, message_id=shown_on(first.job_id)
    )
    await adapter.wait_until(lambda: len(adapter.delivered) == 3)
    assert json.loads(job_hash(redis_server, pan.job_id)["request"])["region"] == [0, 0, 256, 256]
    panned = await settled(app, pan.job_id)
    assert panned.status is JobStatus.DONE and panned.kind == "outpaint"
    with Image.open(app.service.images.resolve(panned.image_paths[0])) as image:
        assert image.size == (384, 256)


async def test_a_batch_travels_through_redis_and_each_picture_keeps_its_seed(redis_server, make_scale_app, run_worker):
    from PIL import Image

    run_worker(redis_server.url)
    app, adapter = await make_scale_app(redis_server.url)
    await eventually(lambda: app.service.live_workers() == 1, what="the worker's announcement")
    reply = await app.service.handle_text(alice(), "/draw a red fox --n 3 --steps 1", {"chat_id": "1"})
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    job = await settled(app, reply.job_id)
    assert len(job.image_paths) == 3 and len(adapter.delivered[0].image_paths) == 3
    for index, path in enumerate(job.image_paths):
        with Image.open(app.service.images.resolve(path)) as image:
            assert f"Seed: {seed_for(job.seed, index)}" in image.text["parameters"]
    pictures = {app.service.images.resolve(path).read_bytes() for path in job.image_paths}
    assert len(pictures) == 3  # three different pictures, not one sent three times


def server_fields(server: RedisServer, job_id: int) -> set[bytes]:
    return set(server.client().hkeys(f"easel:job:{job_id}"))


async def test_progress_comes_back_and_cancel_reaches_the_worker_within_a_step(
    redis_server, make_scale_app, run_worker
):
    run_worker(redis_server.url, slow_on="slowpoke")
    app, adapter = await make_scale_app(redis_server.url)
    steps: list[int] = []
    original = app.service.dispatcher._on_step
    app.service.dispatcher._on_step = lambda job, step, total: (steps.append(step), original(job, step, total))
    reply = await app.service.handle_text(alice(), "/draw slowpoke --steps 16", {})
    await eventually(lambda: steps, what="the first progress step")
    await app.service.handle_text(alice(), f"/cancel {reply.job_id}", {})

    async def cancelled():
        return (await app.db.jobs.get(reply.job_id)).status is JobStatus.CANCELLED

    await eventually(cancelled, what="the cancel")
    assert max(steps) < 16 and adapter.delivered == []
    # Progress came back through Redis all the way to the chat.
    progress = {t("running", "en", job_id=reply.job_id, step=step, steps=16) for step in range(1, 17)}
    assert any(text in progress for _, text in adapter.statuses)
    assert job_hash(redis_server, reply.job_id)["state"] == b"cancelled"


async def test_without_redis_jobs_wait_in_the_bot_and_go_out_in_fair_order(tmp_path, make_scale_app, run_worker):
    server = RedisServer(tmp_path)  # not started yet: the bot comes up while Redis is away
    app, adapter = await make_scale_app(server.url, EASEL_MAX_PENDING=5)
    order: list[int] = []
    original = app.worker.run
    app.worker.run = lambda job_id, request, on_step=None: (order.append(job_id), original(job_id, request, on_step))[1]
    heavy = [await app.service.handle_text(alice(), f"/draw heavy {i} --size 64x64 --steps 2", {}) for i in range(3)]
    light = await app.service.handle_text(bob(), "/draw light --size 64x64 --steps 2", {})
    assert all(reply.job_id for reply in [*heavy, light])  # accepted although Redis is down
    await asyncio.sleep(0.6)
    assert not app.worker.redis_ok and app.service.live_workers() == 0 and order == []

    server.start()
    try:
        run_worker(server.url)
        await adapter.wait_until(lambda: len(adapter.delivered) == 4, timeout=30)
    finally:
        server.kill()
    assert order == [heavy[0].job_id, light.job_id, heavy[1].job_id, heavy[2].job_id]
    assert sorted(d.job.id for d in adapter.delivered) == sorted(order)


async def test_outcomes_are_decided_once_and_stale_jobs_are_not_adopted(redis_server):
    from bot.scale.protocol import Broker, connect, fingerprint
    from storage.jobs import JobStatus

    broker = Broker(connect(redis_server.url))
    try:
        await broker.ensure_group()
        fox = DrawRequest("a fox", width=64, height=64, steps=2, seed=7)
        assert await broker.submit(1, fingerprint(1, fox), fox, b"", 60) == "new"
        assert await broker.submit(1, fingerprint(1, fox), fox, b"", 60) == "queued"  # adopted, not re-sent
        first = await broker.read_new("w1", 100)
        assert first.job_id == 1 and await broker.read_new("w1", 100) is None
        verdict, payload, _ = await broker.begin(first, "w1")
        assert verdict == "run" and b'"seed": 7' in payload
        assert await broker.finish(first, JobStatus.DONE, {"n": 1}, [b"png"], 60) is True
        assert await broker.finish(first, JobStatus.FAILED, {"n": 2}, [], 60) is False  # a late duplicate
        fields = await broker.outcome(1)
        assert fields[b"state"] == b"done" and fields[b"image:0"] == b"png" and fields[b"meta"] == b'{"n": 1}'
        assert await broker.redis.xlen("easel:jobs") == 0  # acknowledged and deleted
        # A Redis that outlived a wiped bot database: job 1 is now another request, handed out anew.
        cat = DrawRequest("a cat", width=64, height=64, steps=2, seed=7)
        assert await broker.submit(1, fingerprint(1, cat), cat, b"", 60) == "new"
        check = await broker.check(1)
        assert check.state is JobStatus.QUEUED and check.entry_alive
        # Cancelled before any worker began it: the entry is gone and a worker that read it skips it.
        stale = await broker.read_new("w2", 100)
        assert await broker.cancel(1) == 2
        assert (await broker.begin(stale, "w2"))[0] == "cancelled"
    finally:
        await broker.redis.aclose()


def test_safe_url_hides_any_password():
    from bot.runtime.logs import safe_url

    assert safe_url("redis://:ab/cd+ef=@redis:6379/0") == "redis://***@redis:6379/0"  # base64 holds '/'
    assert safe_url("redis://:p@ss@host/0") == "redis://***@host/0"
    assert safe_url("rediss://user:pw@h:1/2") == "rediss://***@h:1/2"
    assert safe_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


async def test_a_garbled_worker_announcement_is_ignored_not_fatal(redis_server):
    from bot.scale.protocol import Broker, WorkerInfo, connect

    broker = Broker(connect(redis_server.url))
    try:
        await broker.redis.set("easel:worker:old", '{"id": "old", "device": "cpu"}')
        await broker.redis.set("easel:worker:junk", "not json")
        good = WorkerInfo(id="w1", host="h", device="cpu", slots=1, model="tiny")
        await broker.announce(good, 10)
        assert [w.id for w in await broker.workers()] == ["w1"]
    finally:
        await broker.redis.aclose()


async def test_a_stale_job_behind_many_busy_ones_is_still_claimed(redis_server):
    from bot.scale.protocol import GROUP, JOBS, Broker, connect

    broker = Broker(connect(redis_server.url))
    try:
        await broker.ensure_group()
        for job in range(1, 16):
            await broker.redis.xadd(JOBS, {"job": str(job)})
        for _ in range(15):
            assert await broker.read_new("busy", 100) is not None
        await asyncio.sleep(0.2)
        entries = [e for e, _ in await broker.redis.xrange(JOBS)]
        await broker.redis.xclaim(JOBS, GROUP, "busy", 0, entries[:12], justid=True)  # 12 fresh heartbeats
        handout = await broker.claim_stale("rescuer", min_idle_ms=100)
        assert handout is not None and handout.job_id in (13, 14, 15)
    finally:
        await broker.redis.aclose()


async def test_forgetting_a_consumer_never_drops_an_entry_it_holds(redis_server):
    from bot.scale.protocol import GROUP, JOBS, Broker, connect

    broker = Broker(connect(redis_server.url))
    try:
        await broker.ensure_group()
        await broker.redis.xadd(JOBS, {"job": "1"})
        await broker.read_new("gone", 100)  # a restarted worker reusing the old name just read it
        await broker.forget_consumers(live=set(), min_idle_ms=0)
        names = [c["name"] for c in await broker.redis.xinfo_consumers(JOBS, GROUP)]
        assert b"gone" in names or "gone" in names  # still there: it holds a pending entry
        assert (await broker.redis.xpending(JOBS, GROUP))["pending"] == 1
        await broker.redis.xack(JOBS, GROUP, *[e for e, _ in await broker.redis.xrange(JOBS)])
        await broker.forget_consumers(live=set(), min_idle_ms=0)
        assert await broker.redis.xinfo_consumers(JOBS, GROUP) == []
    finally:
        await broker.redis.aclose()
