"""Scale-out end to end: a real redis-server, real `easel worker` subprocesses on the tiny model,
and the real bot app.  Fairness across two workers, a worker SIGKILLed mid-job, a job that kills
every worker, a bot restart and a Redis restart with jobs in flight.

The workers start through tests/support/faulty_worker.py: the real worker, its engine wrapped to
die (a real process death, exit status 9) or dawdle on a word in the prompt.

The two workers live for the whole module (loading the model costs seconds); each test starts from
an empty Redis and respawns workers an earlier test killed.  The job-killing tests come last.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli.doctor import report
from bot.core.service import Caller
from bot.language.messages import t
from storage.jobs import JobStatus
from tests.support.scale import RedisServer, ScaleApps, eventually, job_hash
from tests.support.service import alice, bob, carol, settled

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SLOW = "slowpoke"  # prompts with this word take 0.2 s a step on the workers (tests/support/faults.py)
CRASH = "kaboom"  # prompts with this word kill the worker that takes them (exit status 9)


class Workers:
    """`easel worker` subprocesses named w1, w2, ... sharing one Redis."""

    def __init__(self, redis_url: str, model_dir: str, folder: Path) -> None:
        self.redis_url = redis_url
        self.model_dir = model_dir
        self.folder = folder
        self.processes: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EASEL_", "TELEGRAM_", "DISCORD_"))}
        env.update(
            EASEL_REDIS_URL=self.redis_url,
            EASEL_MODEL=self.model_dir,
            EASEL_DEVICE="cpu",
            EASEL_WORKER_ID=name,
            EASEL_HEARTBEAT_S="0.25",
            EASEL_CLAIM_IDLE_S="2",
            EASEL_MAX_DELIVERIES="2",
            EASEL_DATA_DIR=str(self.folder / f"{name}-data"),
            OMP_NUM_THREADS="1",
            HF_HUB_OFFLINE="1",
        )
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        command = [sys.executable, "-m", "tests.support.faulty_worker", "--crash-on", CRASH, "--slow-on", SLOW]
        self.processes[name] = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def ensure(self, *names: str) -> None:
        for name in names:
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                self.spawn(name)

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("scale")
    server = RedisServer(folder).start()
    workers = Workers(server.url, tiny_model_dir, folder)
    workers.ensure("w1", "w2")
    yield server, workers
    workers.close()
    server.kill()


@pytest.fixture
async def make_scale_app(make_settings):
    apps = ScaleApps(make_settings)
    yield apps.make
    await apps.close()


@pytest.fixture
async def two_workers(cluster):
    """An empty Redis with w1 and w2 announced, whatever the previous test did to them."""
    server, workers = cluster
    if server.process.poll() is not None:
        server.start()
    server.client().flushall()
    workers.ensure("w1", "w2")
    await eventually(lambda: live(server) == {"w1", "w2"}, timeout=60, what="two live workers")
    return server, workers


def live(server: RedisServer) -> set[str]:
    return {key.decode().rsplit(":", 1)[-1] for key in server.client().scan_iter(match="easel:worker:*")}


def attempts(server: RedisServer, job_id: int) -> int:
    return int(job_hash(server, job_id)["attempts"])


async def test_two_workers_share_a_burst_in_round_robin_order(two_workers, make_scale_app):
    server, _ = two_workers
    app, adapter = await make_scale_app(server.url, start=False)
    await eventually(lambda: (app.worker._ensure_started(), app.service.live_workers() == 2)[1], what="pool sees both")
    in_flight, peak = [0], [0]
    original = app.worker.run

    async def counting(job_id, request, on_step=None):
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        try:
            return await original(job_id, request, on_step)
        finally:
            in_flight[0] -= 1

    app.worker.run = counting
    jobs = {}
    for who in (alice, bob, carol):  # a burst: each user queues three before anything runs
        jobs[who().user_id] = [
            (await app.service.handle_text(who(), f"/draw {who().name} {i} --steps 4", {})).job_id for i in range(3)
        ]
    expected = [jobs[user][i] for i in range(3) for user in ("100", "200", "300")]
    assert [job_id for job_id, _ in app.service.scheduler.queue.snapshot()] == expected
    await app.service.start()
    await adapter.wait_until(lambda: len(adapter.delivered) == 9, timeout=60)

    handed_out = sorted(expected, key=lambda job_id: _entry_order(job_hash(server, job_id)["entry"]))
    assert handed_out == expected  # the round-robin order is the order jobs reached Redis
    assert peak[0] == 2  # never more jobs in flight than live worker slots
    assert {job_hash(server, job_id)["worker"] for job_id in expected} == {b"w1", b"w2"}
    assert sorted(d.job.id for d in adapter.delivered) == sorted(expected)  # each exactly once
    assert all(attempts(server, job_id) == 1 for job_id in expected)
    stats = await app.service.handle_text(Caller("console", "admin", language="en"), "/stats", {})
    assert "GPU workers: 2\n" in stats.text
    assert t("stats_recipes", "en", recipes="none x2") in stats.text  # the CPU keeps the model's own weights

    doctor = report(app.settings)
    assert "2 live workers: w1 on" in doctor["mode"] and [w["id"] for w in doctor["redis"]["workers"]] == ["w1", "w2"]
    assert "none weights, 0 LoRAs)" in doctor["mode"]


def _entry_order(entry: bytes) -> tuple[int, int]:
    ms, seq = entry.decode().split("-")
    return int(ms), int(seq)


async def crash(app) -> None:
    """What a killed bot process leaves behind: no goodbye to Redis, no cancel; its tasks just end."""
    tasks = [app.service.background.loops["dispatch"], *app.service.background.tasks]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await app.worker.close()
    await app.db.close()


async def test_a_crashed_bot_adopts_jobs_in_flight_and_delivers_what_finished_meanwhile(two_workers, make_scale_app):
    server, _ = two_workers
    first, first_adapter = await make_scale_app(server.url)
    await eventually(lambda: first.service.live_workers() == 2, what="pool sees both")
    ids = [
        (await first.service.handle_text(who(), f"/draw {SLOW} {who().name} {i} --steps 6", {})).job_id
        for who in (alice, bob)
        for i in range(2)
    ]
    running = lambda: [j for j in ids if job_hash(server, j).get("state") == b"running"]  # noqa: E731
    await eventually(lambda: len(running()) == 2, what="two jobs running on the workers")
    in_flight = running()
    await crash(first)
    # While the bot is down, the workers finish what they hold.
    await eventually(lambda: all(job_hash(server, j)["state"] == b"done" for j in in_flight), what="results")

    second, adapter = await make_scale_app(server.url)
    await adapter.wait_until(lambda: len(adapter.delivered) == 4, timeout=60)
    assert first_adapter.delivered == []
    assert sorted(d.job.id for d in adapter.delivered) == sorted(ids)
    assert all(attempts(server, j) == 1 for j in ids)  # adopted, never drawn twice
    for job_id in ids:
        assert (await settled(second, job_id)).status is JobStatus.DONE
    await asyncio.sleep(0.3)
    assert len(adapter.delivered) == 4


async def test_a_bot_stopped_mid_job_delivers_each_job_once_after_restart(two_workers, make_scale_app):
    server, _ = two_workers
    first, first_adapter = await make_scale_app(server.url)
    await eventually(lambda: first.service.live_workers() == 2, what="pool sees both")
    ids = [
        (await first.service.handle_text(who(), f"/draw {SLOW} {who().name} --steps 6", {})).job_id
        for who in (alice, bob)
    ]
    await eventually(lambda: all(job_hash(server, j).get("state") == b"running" for j in ids), what="both running")
    # A graceful stop: what finishes within its grace period goes out now, what it cancels on the
    # way out must be drawn after the restart, not left cancelled.
    await first.stop()

    second, adapter = await make_scale_app(server.url)
    delivered = lambda: [d.job.id for d in first_adapter.delivered + adapter.delivered]  # noqa: E731
    await eventually(lambda: len(delivered()) == 2, timeout=60, what="both deliveries")
    assert sorted(delivered()) == sorted(ids) and adapter.failures == first_adapter.failures == []
    for job_id in ids:
        assert (await settled(second, job_id)).status is JobStatus.DONE
        assert job_hash(server, job_id)["state"] == b"done"
    await asyncio.sleep(0.3)
    assert len(delivered()) == 2


async def test_redis_restart_mid_run_loses_nothing(two_workers, make_scale_app):
    server, _ = two_workers
    app, adapter = await make_scale_app(server.url)
    await eventually(lambda: app.service.live_workers() == 2, what="pool sees both")
    ids = [(await app.service.handle_text(alice(), f"/draw {SLOW} before {i} --steps 6", {})).job_id for i in range(2)]
    ids.append((await app.service.handle_text(bob(), "/draw before quick --steps 4", {})).job_id)
    await eventually(lambda: job_hash(server, ids[0]).get("state") == b"running", what="a job running")
    server.kill()
    await eventually(lambda: not app.worker.redis_ok and app.service.live_workers() == 0, what="the bot noticing")
    during = await app.service.handle_text(carol(), "/draw during the outage --steps 4", {})
    assert during.job_id is not None  # still accepted into the bot's own queue
    ids.append(during.job_id)
    await asyncio.sleep(0.5)
    server.start()  # same port, empty: everything Redis held is gone

    await adapter.wait_until(lambda: len(adapter.delivered) == 4, timeout=60)
    assert app.worker.redis_ok and app.service.live_workers() == 2
    assert sorted(d.job.id for d in adapter.delivered) == sorted(ids)
    for job_id in ids:
        assert (await settled(app, job_id)).status is JobStatus.DONE
    await asyncio.sleep(0.5)
    assert len(adapter.delivered) == 4 and adapter.failures == []


async def test_a_worker_told_to_stop_finishes_its_picture_then_leaves(two_workers, make_scale_app):
    server, workers = two_workers
    app, adapter = await make_scale_app(server.url)
    await eventually(lambda: app.service.live_workers() == 2, what="pool sees both")
    reply = await app.service.handle_text(alice(), f"/draw {SLOW} last one --steps 8", {})
    await eventually(lambda: job_hash(server, reply.job_id).get("state") == b"running", what="the job running")
    holder = job_hash(server, reply.job_id)["worker"].decode()
    workers.processes[holder].send_signal(signal.SIGTERM)  # what `docker stop` sends

    await adapter.wait_until(lambda: adapter.delivered, timeout=30)
    assert workers.processes[holder].wait(10) == 0
    assert holder not in live(server)  # withdrawn at once, not after its announcement expires
    after = job_hash(server, reply.job_id)
    assert after["worker"].decode() == holder and int(after["attempts"]) == 1


async def test_a_worker_killed_mid_job_is_replaced_with_the_same_seed(two_workers, make_scale_app):
    server, workers = two_workers
    app, adapter = await make_scale_app(server.url)
    await eventually(lambda: app.service.live_workers() == 2, what="pool sees both")
    reply = await app.service.handle_text(alice(), f"/draw {SLOW} doomed --steps 8", {})
    await eventually(lambda: job_hash(server, reply.job_id).get("state") == b"running", what="the job running")
    await eventually(lambda: any(job_id == reply.job_id for job_id, _ in adapter.statuses), what="progress")
    before = job_hash(server, reply.job_id)
    victim = before["worker"].decode()
    workers.kill(victim)

    await adapter.wait_until(lambda: adapter.delivered, timeout=30)
    job = await settled(app, reply.job_id)
    after = job_hash(server, reply.job_id)
    survivor = ({"w1", "w2"} - {victim}).pop()
    assert after["worker"].decode() == survivor and int(after["attempts"]) == 2
    assert job.status is JobStatus.DONE and job.seed == json.loads(before["request"])["seed"]
    assert workers.processes[victim].returncode == -signal.SIGKILL
    await asyncio.sleep(0.5)
    assert [d.job.id for d in adapter.delivered] == [reply.job_id] and adapter.failures == []


async def test_a_job_that_kills_every_worker_is_dead_lettered_and_refunded(two_workers, make_scale_app):
    server, workers = two_workers
    app, adapter = await make_scale_app(server.url, EASEL_DAILY_QUOTA=5)
    await eventually(lambda: app.service.live_workers() == 2, what="pool sees both")
    reply = await app.service.handle_text(alice(), f"/draw {CRASH} the poison pill", {})
    await adapter.wait_until(lambda: adapter.failures, timeout=30)

    assert adapter.failures == [(reply.job_id, t("error.worker_lost", "en", job_id=reply.job_id))]
    job = await settled(app, reply.job_id)
    assert job.status is JobStatus.FAILED and job.error_key == "error.worker_lost"
    user = await app.db.users.find("telegram", "100")
    assert await app.db.quota.used(user.id, app.service.today()) == 0  # refunded
    dead = server.client().xrange("easel:dead")
    assert [int(fields[b"job"]) for _, fields in dead] == [reply.job_id]
    assert "2 times" in dead[0][1][b"reason"].decode()
    assert {workers.processes[n].wait(5) for n in ("w1", "w2")} == {9}  # both took it, both died
    await asyncio.sleep(0.5)
    assert len(adapter.failures) == 1 and adapter.delivered == []
