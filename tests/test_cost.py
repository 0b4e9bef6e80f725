"""Work units (bot/core/cost.py): the formula, and everything that counts in it with the tiny real model:
quota, the per-job cap, /quota, /show, /stats, metrics, and remote workers' timeouts.

The tiny model's unit is its default picture, 256x256 at 8 steps (a quarter of the real 1024x1024
side), so its sizes cost what the real model's do: `--size 512x512` is 4 units a picture."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from bot.core.cost import STANDARD, Unit, job_cost, largest_count, largest_size, request_cost
from bot.core.service import Caller
from bot.language.messages import t
from bot.scale.config import MAX_JOB_TIMEOUT_S, ScaleSettings
from bot.scale.protocol import Handout
from bot.scale.remote import RemoteWorker, _Progress
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest, validate
from tests.support.service import alice, settled, started

ADMIN = Caller("telegram", "900", name="root", language="en", chat_id="1")
_keys = itertools.count()


async def draw(app, caller: Caller, text: str):
    return await app.service.handle_text(caller, text, {"chat_id": "1"}, idempotency_key=f"k{next(_keys)}")


async def used(app, platform_id: str = "100") -> int:
    user = await app.db.users.find("telegram", platform_id)
    return await app.db.quota.used(user.id, app.service.today())


# -- the formula ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "steps", "cfg", "count", "units"),
    [
        (1024, 1024, 8, 1.0, 1, 1),  # the unit itself
        (1536, 1536, 16, 2.5, 4, 36),  # the example: 4 x 2.25 MP x 2 x 2
        (1024, 1024, 8, 1.5, 1, 2),  # guidance doubles
        (1024, 1024, 9, 1.0, 1, 2),  # rounded up
        (512, 512, 8, 1.0, 4, 4),  # at least one unit per picture
        (1248, 832, 8, 1.0, 3, 3),  # 0.99 MP each: 2.97 -> 3
        (2048, 2048, 16, 1.0, 1, 8),
    ],
)
def test_job_cost(width, height, steps, cfg, count, units):
    assert job_cost(width, height, steps, cfg, count) == units


def test_request_cost_reads_a_request_or_a_stored_dict_alike():
    request = validate(DrawRequest("fox", width=1536, height=1536, steps=16, cfg=2.5, count=4), Z_IMAGE_TURBO)
    assert request_cost(request) == request_cost(request.to_dict()) == 36
    assert Unit.of(Z_IMAGE_TURBO) == STANDARD
    assert (
        request_cost(
            validate(DrawRequest("fox", width=512, height=512, steps=16, cfg=2.5, count=4), TINY), Unit.of(TINY)
        )
        == 64
    )


def test_a_job_cannot_cost_nothing():
    with pytest.raises(ValueError, match="positive"):
        job_cost(1024, 1024, 8, 1.0, 0)


def test_what_fits_under_a_cap():
    assert largest_count(1536, 1536, 16, 2.5, 16) == 1  # 9 units a picture
    assert largest_count(1536, 1536, 16, 2.5, 8) == 0
    assert largest_size(1536, 1024, 16, 2.5, 1, 8) == (1536, 1024)  # it fits already: never bigger
    assert largest_size(1536, 1024, 16, 2.5, 2, 8) == (1248, 832)  # 2 x 0.99 MP x 4: 7.9 -> 8 units
    assert job_cost(1264, 832, 16, 2.5, 2) == 9  # the next size up would not fit
    assert largest_size(1024, 1024, 8, 1.0, 4, 3) is None  # four pictures cost at least four units


# -- quota, in units -------------------------------------------------------------------------------


async def test_quota_show_and_metrics_count_units(make_app):
    app, _ = await started(make_app, EASEL_DAILY_QUOTA="50", EASEL_ADMINS="telegram:900")

    reply = await draw(app, alice(), "/draw a lighthouse --steps 9")  # 256x256, 9/8 steps: rounded up to 2
    job = await settled(app, reply.job_id, timeout=60)

    assert await used(app) == 2
    quota = await draw(app, alice(), "/quota")
    assert "2 of 50 work units used, 48 left" in quota.text
    show = await draw(app, alice(), f"/show #{job.id}")
    assert "· 2 units" in show.text
    metrics = app.service.metrics
    assert metrics.value("easel_work_units_total", stage="accepted") == 2
    assert metrics.value("easel_work_units_total", stage="done") == 2
    stats = await draw(app, ADMIN, "/stats")
    assert t("stats_units", "en", spent=2, waiting=0) in stats.text


async def test_a_job_bigger_than_the_cap_is_refused_with_what_would_fit(make_app):
    app = await make_app(EASEL_MAX_JOB_COST="8", EASEL_MAX_PENDING="10")

    batch = await draw(app, alice(), "/draw fox --n 4 --size 512x512")  # 4 x 4 units
    assert batch.job_id is None and batch.alert
    assert batch.text == t("job_too_big", "en", cost=16, limit=8, hint=t("fits_count", "en", count=2))

    one = await draw(app, alice(), "/draw fox --size 512x512 --steps 16 --cfg 2")  # 4 x 2 x 2 units
    hint = t("fits_size", "en", count=1, width=352, height=352)  # 352² x 16 steps x 2 = 7.6 -> 8 units
    assert one.text == t("job_too_big", "en", cost=16, limit=8, hint=hint)
    assert await app.db.jobs.counts_by_status() == {s: 0 for s in ("queued", "running", "done", "failed", "cancelled")}

    fits = await draw(app, alice(), "/draw fox --n 2 --size 512x512")
    assert fits.job_id is not None
    assert await used(app) == 8
    assert app.service.metrics.value("easel_refusals_total", reason="too_big") == 2


async def test_no_cap_when_the_max_job_cost_is_zero(make_app):
    app = await make_app(EASEL_MAX_JOB_COST="0", EASEL_DAILY_QUOTA="0")

    reply = await draw(app, alice(), "/draw fox --n 4 --size 512x512 --steps 16 --cfg 2")

    assert reply.job_id is not None
    assert await used(app) == 64
    assert app.service.scheduler.queue.cost_of(reply.job_id) == 64


async def test_not_enough_quota_says_units_and_what_fits(make_app):
    app = await make_app(EASEL_DAILY_QUOTA="10", EASEL_MAX_PENDING="10")
    await draw(app, alice(), "/draw fox --size 512x512")  # 4 units, 6 left

    refused = await draw(app, alice(), "/draw fox --n 2 --size 512x512 --steps 16")  # 16 units

    hint = t("fits_size", "en", count=2, width=304, height=304)  # 2 x 304² x 16 steps: 5.6 -> 6 units
    assert refused.text == t("quota_not_enough", "en", cost=16, left=6, hint=hint)
    assert await used(app) == 4


async def test_quota_race_gives_exactly_the_units_left(make_app):
    app = await make_app(EASEL_DAILY_QUOTA="9", EASEL_MAX_PENDING="1000")  # not started: jobs stay queued
    first = await draw(app, alice(), "/draw warm up --steps 16 --cfg 2")  # 4 units: 5 left
    assert first.job_id is not None

    # 100 asks at once, alternating one and two units.
    asks = [f"/draw fox {i}" + (" --steps 16" if i % 2 else "") for i in range(100)]
    replies = await asyncio.gather(*(draw(app, alice(), text) for text in asks))

    accepted = [reply.job_id for reply in replies if reply.job_id is not None]
    jobs = [await app.db.jobs.get(job_id) for job_id in accepted]
    assert sum(app.service.scheduler.cost_of(DrawRequest.from_dict(job.request)) for job in jobs) == 5
    assert await used(app) == 9
    assert all("work units" in reply.text for reply in replies if reply.job_id is None)
    assert len(app.service.scheduler.queue) == len(accepted) + 1


async def test_recovered_jobs_are_queued_with_their_cost(make_app):
    app = await make_app(EASEL_DAILY_QUOTA="0", EASEL_MAX_PENDING="10")
    big = await draw(app, alice(), "/draw big --size 512x512 --steps 16")  # 8 units
    small = await draw(app, Caller("telegram", "200", name="bob", chat_id="1"), "/draw small")
    await app.stop()

    restarted = await make_app(EASEL_DAILY_QUOTA="0", EASEL_MAX_PENDING="10")
    await restarted.service.worker.acquire_slot()  # the one GPU slot is busy: both stay queued
    await restarted.service.start()

    assert restarted.service.scheduler.queue.cost_of(big.job_id) == 8
    assert restarted.service.scheduler.queue.cost_of(small.job_id) == 1
    assert restarted.service.scheduler.queue.snapshot()[0][0] == small.job_id  # the big one waits its turn


# -- remote workers: timeouts scale with the job ---------------------------------------------------


def test_remote_timeout_is_the_base_per_unit_and_bounded():
    config = ScaleSettings(_env_file=None, EASEL_JOB_TIMEOUT_S=900)
    assert config.job_timeout_for(1) == config.job_timeout_for(0) == 900
    assert config.job_timeout_for(9) == 8100
    assert config.job_timeout_for(1000) == MAX_JOB_TIMEOUT_S
    long_base = ScaleSettings(_env_file=None, EASEL_JOB_TIMEOUT_S=2 * MAX_JOB_TIMEOUT_S)
    assert long_base.job_timeout_for(4) == 2 * MAX_JOB_TIMEOUT_S


class _Beats:
    """Stands in for the Redis broker while a worker watches one job: records each heartbeat."""

    def __init__(self) -> None:
        self.beats: list[tuple[float, bool]] = []

    async def progress(self, *_):
        pass

    async def heartbeat(self, handout, worker_id, beat):
        self.beats.append((time.monotonic(), beat))
        return 0


@pytest.mark.parametrize(
    ("size", "steps", "cfg", "count", "keeps_beating"), [(1024, 8, 1.0, 1, False), (1536, 16, 2.5, 4, True)]
)
async def test_a_worker_keeps_a_big_slow_job_alive_past_one_units_timeout(size, steps, cfg, count, keeps_beating):
    config = ScaleSettings(
        _env_file=None,
        EASEL_REDIS_URL="redis://127.0.0.1:9/0",
        EASEL_HEARTBEAT_S=0.05,
        EASEL_CLAIM_IDLE_S=1,
        EASEL_JOB_TIMEOUT_S=0.2,
    )
    worker = RemoteWorker(config, engine_factory=lambda: None)
    worker.broker = broker = _Beats()
    request = validate(DrawRequest("fox", width=size, height=size, steps=steps, cfg=cfg, count=count), Z_IMAGE_TURBO)
    timeout = worker.timeout_for(request)
    assert timeout == pytest.approx(0.2 * request_cost(request))

    begun = time.monotonic()
    watcher = asyncio.create_task(worker._watch(Handout("1-0", 1), threading.Event(), _Progress(), timeout))
    await asyncio.sleep(1.0)
    watcher.cancel()

    late_beats = [beat for at, beat in broker.beats if at - begun > 0.6]
    assert late_beats, "the watcher kept calling in"
    assert any(late_beats) is keeps_beating
