"""LoRA under scale-out, over a real redis-server with `easel worker` loops in this process on tiny
engines of their own: workers announce their LoRA files (name and sha256), a LoRA job goes only to a
worker holding the bot's very file, a job no live worker can draw is refused at once and costs
nothing, and one whose workers all left after it was accepted is failed and refunded."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from bot.language.messages import t
from bot.scale.protocol import JOBS, serves, stream_for
from engine.metadata import read_parameters
from engine.request import DrawRequest
from storage.jobs import JobStatus
from tests.support.loras import write_lora
from tests.support.scale import ScaleApps, WorkerLoops, eventually, job_hash, scale_settings
from tests.support.service import alice, bob, carol, settled


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_model_dir):
    """The bot's LoRA folder: `ink` and `neon-glow`."""
    from engine.engine import Engine

    transformer = Engine.load(tiny_model_dir, device="cpu").pipeline.transformer
    folder = tmp_path_factory.mktemp("bot-loras")
    write_lora(folder / "ink.safetensors", transformer, seed=1)
    write_lora(folder / "neon-glow.safetensors", transformer, seed=2)
    return folder


def engine_with(tiny_model_dir: str, folder) -> object:
    from engine.engine import Engine

    engine = Engine.load(tiny_model_dir, device="cpu")
    engine.install_loras(str(folder), max_mb=5)
    return engine


@pytest.fixture(scope="module")
def inked_engine(tiny_model_dir, lora_dir):
    """A worker's engine with a copy of the bot's folder: the same files, byte for byte."""
    return engine_with(tiny_model_dir, lora_dir)


@pytest.fixture(scope="module")
def impostor_engine(tiny_model_dir, tmp_path_factory):
    """A worker's engine with an `ink` of its own: same name, other weights."""
    folder = tmp_path_factory.mktemp("other-loras")
    engine = engine_with(tiny_model_dir, folder)
    write_lora(folder / "ink.safetensors", engine.pipeline.transformer, seed=7)
    engine.install_loras(str(folder), max_mb=5)
    return engine


@pytest.fixture
async def make_scale_app(make_settings, lora_dir):
    apps = ScaleApps(make_settings)

    async def make(redis_url: str, **overrides):
        return await apps.make(redis_url, EASEL_LORA_DIR=str(lora_dir), EASEL_DAILY_QUOTA=20, **overrides)

    yield make
    await apps.close()


@pytest.fixture
async def run_worker(make_settings):
    """`run_worker(redis_url, engine, name, slow_on=None)`: an `easel worker` loop on `engine`."""
    loops = WorkerLoops(make_settings)
    yield loops.start
    await loops.close()


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_set_of_files_has_one_stream_and_a_worker_serves_it_only_with_every_file():
    ink, neon = ("ink", "a" * 64), ("neon", "b" * 64)
    assert stream_for(()) == JOBS
    assert stream_for((ink, neon)) == stream_for((neon, ink)) != stream_for((ink,))
    assert stream_for((("ink", "c" * 64),)) != stream_for((ink,))  # another file under the same name
    assert serves({"ink": "a" * 64, "neon": "b" * 64}, (ink, neon))
    assert not serves({"ink": "a" * 64}, (ink, neon)) and not serves({"ink": "c" * 64}, (ink,))
    assert serves({"ink": "c" * 64}, (("ink", ""),))  # the bot has no file to compare with: any will do


async def test_workers_announce_their_files_and_a_lora_job_goes_only_to_one_with_the_bots_file(
    redis_server, make_scale_app, run_worker, engine, inked_engine, impostor_engine, lora_dir
):
    run_worker(redis_server.url, engine, "plain")
    run_worker(redis_server.url, impostor_engine, "impostor")
    run_worker(redis_server.url, inked_engine, "inked")
    app, adapter = await make_scale_app(redis_server.url)
    await eventually(lambda: app.service.live_workers() == 3, what="three announcements")
    announced = {worker.id: worker.loras for worker in app.worker.workers()}
    bots = {"ink": sha256(lora_dir / "ink.safetensors"), "neon-glow": sha256(lora_dir / "neon-glow.safetensors")}
    assert announced["inked"] == bots and announced["plain"] == {}
    assert announced["impostor"].keys() == {"ink"} and announced["impostor"]["ink"] != bots["ink"]

    lora_jobs, plain_jobs = [], []
    for who in (alice, bob, carol):  # free workers that lack the file stand by while `inked` draws them all
        lora_jobs.append((await app.service.handle_text(who(), f"/draw {who().name} --lora ink --steps 2", {})).job_id)
        plain_jobs.append((await app.service.handle_text(who(), f"/draw plain {who().name} --steps 2", {})).job_id)
    assert all(lora_jobs + plain_jobs)
    await adapter.wait_until(lambda: len(adapter.delivered) == 6, timeout=60)

    assert adapter.failures == []
    assert {job_hash(redis_server, job_id)["worker"] for job_id in lora_jobs} == {b"inked"}
    for job_id in lora_jobs:
        job = await settled(app, job_id)
        assert job.status is JobStatus.DONE and int(job_hash(redis_server, job_id)["attempts"]) == 1
        assert "<lora:ink:1>" in read_parameters(app.service.images.resolve(job.image_paths[0]))
    assert {(await settled(app, job_id)).status for job_id in plain_jobs} == {JobStatus.DONE}


async def test_a_lora_no_live_worker_holds_is_refused_at_once_and_costs_nothing(
    redis_server, make_scale_app, run_worker, impostor_engine
):
    run_worker(redis_server.url, impostor_engine, "impostor")
    app, adapter = await make_scale_app(redis_server.url)
    await eventually(lambda: app.service.live_workers() == 1, what="the worker's announcement")

    other_file = await app.service.handle_text(alice(), "/draw a fox --lora ink", {})
    assert other_file.job_id is None and other_file.text == t("lora_not_on_workers", "en", names="ink")
    nowhere = await app.service.handle_text(bob(), "/draw a fox --lora ink --lora neon-glow:0.5", {})
    assert nowhere.job_id is None and nowhere.text == t("lora_not_on_workers", "zh", names="ink, neon-glow")
    for user_id in ("100", "200"):
        user = await app.db.users.find("telegram", user_id)
        assert await app.db.quota.used(user.id, app.service.today()) == 0
        assert await app.db.jobs.pending_for_user(user.id) == []
    plain = await app.service.handle_text(alice(), "/draw a fox --steps 2", {})  # the worker still draws
    await adapter.wait_until(lambda: adapter.delivered)
    assert adapter.delivered[0].job.id == plain.job_id and adapter.failures == []


async def test_a_lora_job_whose_workers_all_left_is_failed_and_refunded(
    redis_server, make_scale_app, run_worker, engine, inked_engine
):
    inked = run_worker(redis_server.url, inked_engine, "inked", slow_on="slowpoke")
    app, adapter = await make_scale_app(redis_server.url)
    await eventually(lambda: app.service.live_workers() == 1, what="the worker's announcement")
    first = await app.service.handle_text(alice(), "/draw slowpoke --lora ink --steps 8", {})
    await eventually(lambda: job_hash(redis_server, first.job_id).get("state") == b"running", what="first running")
    run_worker(redis_server.url, engine, "plain")
    await eventually(lambda: app.service.live_workers() == 2, what="a second worker")
    second = await app.service.handle_text(carol(), "/draw a boat --lora ink --steps 2", {})
    assert second.job_id is not None  # accepted: `inked` is live, only busy
    await eventually(lambda: job_hash(redis_server, second.job_id).get("state") == b"queued", what="handed out")
    inked.stop()  # it finishes the first job and leaves; the free worker lacks the file

    await adapter.wait_until(lambda: adapter.failures and adapter.delivered, timeout=30)
    assert adapter.delivered[0].job.id == first.job_id
    assert adapter.failures == [(second.job_id, t("error.lora_not_on_workers", "en", names="ink"))]
    job = await settled(app, second.job_id)
    assert job.status is JobStatus.FAILED and job.error_key == "error.lora_not_on_workers"
    user = await app.db.users.find("telegram", "300")
    assert await app.db.quota.used(user.id, app.service.today()) == 0  # refunded
    assert job_hash(redis_server, second.job_id).get("worker") is None  # no worker ever took it


async def test_a_job_adopted_after_a_restart_stays_on_its_stream_and_its_set_is_written_again(
    redis_server, make_settings
):
    """A bot restarted after the admin replaced `ink`: the job it adopts was handed out on the old
    file's stream, where the worker with that file holds it, so it stays there (recorded in its
    hash); and the set record workers find streams by is written again if it was lost."""
    from bot.scale.pool import WorkerPool
    from bot.scale.protocol import LORA_SETS, Broker, connect

    old = (("ink", "a" * 64),)
    stream = stream_for(old)
    broker = Broker(connect(redis_server.url))
    pool = WorkerPool(scale_settings(make_settings, redis_server.url))
    try:
        await broker.register_needs(stream, old)
        request = DrawRequest("a fox", loras=(("ink", 1.0),))
        assert await broker.submit(7, "print", request, b"", 60, stream=stream) == "new"
        assert await broker.stream_of(7) == stream
        route = await pool._route(7, (("ink", "b" * 64),))  # the bot's file is another one now
        assert (route.stream, route.needs) == (stream, old)
        fresh = await pool._route(8, (("ink", "b" * 64),))  # a new job goes where the new file is
        assert fresh.stream == stream_for((("ink", "b" * 64),)) != stream

        following = asyncio.create_task(pool.run(9, request))  # no live worker: it waits in Redis
        await eventually(lambda: redis_server.client().hget("easel:job:9", "stream"), what="job 9 handed out")
        waiting_on = redis_server.client().hget("easel:job:9", "stream").decode()
        redis_server.client().delete(LORA_SETS)  # lost (an admin, an eviction)
        await eventually(lambda: redis_server.client().hexists(LORA_SETS, waiting_on), what="the set written again")
        following.cancel()
    finally:
        await broker.redis.aclose()
        await pool.close()
