"""Each scale-out worker picks the weights for its own card (issue 17): it announces its recipe, the
bot's /stats and metrics count the workers by recipe, and every finished job records the recipe of
the worker that drew it.  Real redis-server, `easel worker` loops in this process on tiny engines:
one with the model's own weights, one quantized to int8."""

from __future__ import annotations

import json

import pytest

from bot.language.messages import t
from engine.quantize import WeightsWanted
from storage.jobs import JobStatus
from tests.support.scale import ScaleApps, WorkerLoops, eventually, job_hash
from tests.support.service import Caller, alice, bob, settled


@pytest.fixture(scope="module")
def int8_engine(tiny_model_dir, tmp_path_factory):
    from engine.engine import Engine

    cache = tmp_path_factory.mktemp("quantized")
    return Engine.load(tiny_model_dir, device="cpu", weights=WeightsWanted("int8", None, cache))


async def test_workers_say_which_weights_they_run_and_every_job_records_its_own(
    redis_server, make_settings, engine, int8_engine
):
    apps, loops = ScaleApps(make_settings), WorkerLoops(make_settings)
    loops.start(redis_server.url, engine, "bf16-box")
    loops.start(redis_server.url, int8_engine, "int8-box")
    try:
        app, adapter = await apps.make(redis_server.url, EASEL_ADMINS="telegram:999", EASEL_DAILY_QUOTA=20)
        await eventually(lambda: app.service.live_workers() == 2, what="both announcements")
        assert {w.id: w.recipe for w in app.worker.workers()} == {"bf16-box": "none", "int8-box": "int8"}
        assert app.worker.recipes() == {"none": 1, "int8": 1}
        metrics = app.service.metrics
        assert metrics.value("easel_workers_by_recipe", recipe="int8") == 1
        assert metrics.value("easel_workers_by_recipe", recipe="none") == 1

        jobs = [(await app.service.handle_text(who(), f"/draw a kite {n} --steps 2", {})).job_id
                for n, who in enumerate((alice, bob, alice, bob))]  # fmt: skip
        await adapter.wait_until(lambda: len(adapter.delivered) == 4, timeout=60)
        drawn_by = {}
        for job_id in jobs:
            assert (await settled(app, job_id)).status is JobStatus.DONE
            record = job_hash(redis_server, job_id)
            drawn_by[job_id] = (record["worker"].decode(), json.loads(record["meta"])["plan"]["recipe"])
        assert {(worker, recipe) for worker, recipe in drawn_by.values()} <= {
            ("bf16-box", "none"),
            ("int8-box", "int8"),
        }
        by_recipe = sum(metrics.value("easel_jobs_by_recipe_total", recipe=r) for r in ("none", "int8"))
        assert by_recipe == 4

        stats = await app.service.handle_text(Caller("telegram", "999", language="en"), "/stats", {})
        assert t("stats_recipes", "en", recipes="int8 x1, none x1") in stats.text
    finally:
        await loops.close()
        await apps.close()
