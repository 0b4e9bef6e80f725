"""The job service with the tiny real model: quota, limits, fairness, cancel, bans, lineage,
failures and delivery, through the same entry points adapters use."""

from __future__ import annotations

import asyncio

import torch

from bot.core.service import Caller
from bot.language.buttons import SINGLE_PICTURE, Action, button_id
from bot.language.messages import t
from storage.jobs import JobStatus
from tests.support.service import RecordingAdapter, alice, bob, settled, shown_on, started


async def test_draw_is_stored_before_queued_and_delivered_once(make_app):
    app, adapter = await started(make_app)
    reply = await app.service.handle_text(alice(), "/draw a red fox --ar 3:2 --seed 42", {"chat_id": "1"})
    assert reply.job_id is not None and "#" in reply.text
    stored = await app.db.jobs.get(reply.job_id)
    assert stored is not None and stored.request["width"] == 320
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    delivery = adapter.delivered[0]
    job = await settled(app, reply.job_id)
    assert job.status is JobStatus.DONE and job.seed == 42
    assert delivery.image_paths[0].exists()
    assert [button_id for button_id, _ in [button for row in delivery.buttons for button in row]] == [
        f"easel:{action.value}:{job.id}" for action in SINGLE_PICTURE
    ]
    assert [len(row) for row in delivery.buttons] == [3, 3, 2, 4]
    assert [label for _, label in [button for row in delivery.buttons for button in row]][0] == t("button.reroll", "en")
    assert "42" in delivery.caption and "320x208" in delivery.caption
    from PIL import Image

    with Image.open(delivery.image_paths[0]) as image:
        assert image.size == (320, 208)
        assert "Seed: 42" in image.text["parameters"]


async def test_quota_race_accepts_exactly_the_remaining_quota(make_app):
    app = await make_app(EASEL_DAILY_QUOTA=5, EASEL_MAX_PENDING=1000)
    replies = await asyncio.gather(
        *(app.service.handle_text(alice(), f"/draw fox {i}", {"chat_id": "1"}) for i in range(100))
    )
    accepted = [r for r in replies if r.job_id is not None]
    refused = [r for r in replies if r.job_id is None]
    assert len(accepted) == 5
    assert all("5" in r.text for r in refused)
    user = await app.db.users.find("telegram", "100")
    assert await app.db.quota.used(user.id, app.service.today()) == 5


async def test_max_pending_refusal_lists_the_queue(make_app):
    app = await make_app(EASEL_MAX_PENDING=2)  # service not started: jobs stay queued
    first = await app.service.handle_text(alice(), "/draw one", {})
    second = await app.service.handle_text(alice(), "/draw two", {})
    third = await app.service.handle_text(alice(), "/draw three", {})
    assert third.job_id is None and third.alert
    assert f"#{first.job_id}" in third.text and f"#{second.job_id}" in third.text


async def test_newcomer_waits_at_most_one_job_behind_a_heavy_user(make_app):
    app = await make_app(EASEL_MAX_PENDING=20)
    adapter = RecordingAdapter(service=app.service)
    app.service.register(adapter)
    heavy = [await app.service.handle_text(alice(), f"/draw heavy {i} --steps 2", {}) for i in range(6)]
    newcomer = await app.service.handle_text(bob(), "/draw newcomer --steps 2", {})
    await app.service.start()
    await adapter.wait_until(lambda: len(adapter.delivered) == 7)
    order = [d.job.id for d in adapter.delivered]
    assert order.index(newcomer.job_id) <= 1
    assert [j for j in order if j != newcomer.job_id] == [r.job_id for r in heavy]


async def test_cancel_queued_refunds_and_running_stops(make_app):
    app = await make_app(EASEL_DAILY_QUOTA=10)
    adapter = RecordingAdapter(service=app.service)
    app.service.register(adapter)
    queued = await app.service.handle_text(alice(), "/draw to cancel", {})
    cancelled = await app.service.handle_text(alice(), f"/cancel {queued.job_id}", {})
    assert str(queued.job_id) in cancelled.text
    assert (await app.db.jobs.get(queued.job_id)).status is JobStatus.CANCELLED
    user = await app.db.users.find("telegram", "100")
    assert await app.db.quota.used(user.id, app.service.today()) == 0

    slow = await app.service.handle_text(alice(), "/draw a slow one --size 512x512 --steps 16", {})
    steps_seen = []
    original = app.service.dispatcher._on_step
    app.service.dispatcher._on_step = lambda job, step, total: (steps_seen.append(step), original(job, step, total))
    await app.service.start()
    while not steps_seen:
        await asyncio.sleep(0.01)
    await app.service.handle_text(alice(), "/cancel", {})
    for _ in range(500):
        if (await app.db.jobs.get(slow.job_id)).status is JobStatus.CANCELLED:
            break
        await asyncio.sleep(0.02)
    assert (await app.db.jobs.get(slow.job_id)).status is JobStatus.CANCELLED
    assert max(steps_seen) < 16 and adapter.delivered == []


async def test_someone_else_cannot_cancel_but_an_admin_can(make_app):
    app = await make_app(EASEL_ADMINS="telegram:999")
    job = await app.service.handle_text(alice(), "/draw mine", {})
    refused = await app.service.handle_text(bob(), f"/cancel {job.job_id}", {})
    assert refused.alert and (await app.db.jobs.get(job.job_id)).status is JobStatus.QUEUED
    admin = Caller("telegram", "999", language="en")
    await app.service.handle_text(admin, f"/cancel {job.job_id}", {})
    assert (await app.db.jobs.get(job.job_id)).status is JobStatus.CANCELLED


async def test_ban_is_admin_only_audited_and_polite(make_app):
    app = await make_app(EASEL_ADMINS="telegram:999")
    admin = Caller("telegram", "999", language="en")
    not_admin = await app.service.handle_text(bob(), "/ban telegram:100 spam", {})
    assert not_admin.alert and (await app.db.audit.recent()) == []
    done = await app.service.handle_text(admin, "/ban telegram:100 spam", {})
    assert "telegram:100" in done.text
    refused = await app.service.handle_text(alice(), "/draw a fox", {})
    assert refused.job_id is None and refused.alert
    entry = (await app.db.audit.recent())[0]
    assert entry.action == "ban" and entry.target == "telegram:100" and entry.details == {"reason": "spam"}
    await app.service.handle_text(admin, "/unban 100", {})
    assert (await app.service.handle_text(alice(), "/draw a fox", {})).job_id is not None


async def test_allowed_chats(make_app):
    app = await make_app(EASEL_ALLOWED_CHATS="telegram:-100")
    outside = await app.service.handle_text(alice(), "/draw a fox", {})
    assert outside.job_id is None and outside.alert
    inside = await app.service.handle_text(Caller("telegram", "100", chat_id="-100"), "/draw a fox", {})
    assert inside.job_id is not None


async def test_buttons_record_lineage_and_show_tells_the_story(make_app):
    app, adapter = await started(make_app)
    first = await app.service.handle_text(alice(), "/draw a lighthouse --seed 5", {})
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    reroll = await app.service.press(
        alice(), button_id(Action.REROLL, first.job_id), {}, message_id=shown_on(first.job_id)
    )
    vary = await app.service.press(
        alice(), button_id(Action.VARY_STRONG, first.job_id), {}, message_id=shown_on(first.job_id)
    )
    upscale = await app.service.press(
        alice(), button_id(Action.UPSCALE, first.job_id), {}, message_id=shown_on(first.job_id)
    )
    await adapter.wait_until(lambda: len(adapter.delivered) == 4)
    by_id = {d.job.id: d for d in adapter.delivered}
    assert (await app.db.jobs.get(reroll.job_id)).parent_id == first.job_id
    assert (await app.db.jobs.get(vary.job_id)).kind == "variation"
    from PIL import Image

    with Image.open(by_id[upscale.job_id].image_paths[0]) as image:
        assert image.size == (512, 512)
    story = await app.service.handle_text(alice(), f"/show {vary.job_id}", {})
    assert f"#{first.job_id}" in story.text and f"#{vary.job_id}" in story.text
    params = await app.service.press(
        alice(), button_id(Action.PARAMS, first.job_id), {}, message_id=shown_on(first.job_id)
    )
    assert "a lighthouse" in params.text and "5" in params.text


async def test_delete_is_for_the_owner_or_an_admin(make_app):
    app, adapter = await started(make_app)
    job = await app.service.handle_text(alice(), "/draw private", {})
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    path = adapter.delivered[0].image_paths[0]
    refused = await app.service.press(bob(), button_id(Action.DELETE, job.job_id), {}, message_id=shown_on(job.job_id))
    assert refused.alert and not refused.delete_message and path.exists()
    deleted = await app.service.press(
        alice(), button_id(Action.DELETE, job.job_id), {}, message_id=shown_on(job.job_id)
    )
    assert deleted.delete_message and not path.exists()
    stale = await app.service.press(alice(), button_id(Action.REROLL, job.job_id), {}, message_id=shown_on(job.job_id))
    assert stale.job_id is None and stale.alert


async def test_forged_button_data_gets_an_alert(make_app):
    app, _ = await started(make_app)
    for data in ("easel:reroll:999999", "easel:explode:1", "nonsense", "easel:reroll:1;DROP", ""):
        reply = await app.service.press(alice(), data, {}, message_id="m1")
        assert reply.alert and reply.job_id is None


async def test_a_forged_press_from_a_stranger_creates_no_user_row(make_app):
    app, adapter = await started(make_app)
    job = await app.service.handle_text(alice(), "/draw a quiet harbour --steps 1", {"chat_id": "1"})
    await settled(app, job.job_id)
    users = await app.db.users.count()
    stranger = Caller("telegram", "777", name="mallory", language="zh-CN", chat_id="1", public=True)

    forged = ("nonsense", "", button_id(Action.PARAMS, job.job_id), button_id(Action.REROLL, 999999))
    for data, message_id in [(data, "m-elsewhere") for data in forged] + [(forged[3], shown_on(job.job_id))]:
        reply = await app.service.press(stranger, data, {}, message_id=message_id)
        assert (reply.text, reply.alert, reply.job_id) == (t("stale_button", "zh"), True, None), data
    assert await app.db.users.find("telegram", "777") is None and await app.db.users.count() == users


async def test_oom_everywhere_reaches_the_user_and_refunds(make_app, engine):
    app, adapter = await started(make_app, EASEL_DAILY_QUOTA=3)

    def always_oom(module, args):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    handle = engine.pipeline.transformer.register_forward_pre_hook(always_oom)
    try:
        reply = await app.service.handle_text(alice(), "/draw too much", {})
        await adapter.wait_until(lambda: adapter.failures)
    finally:
        handle.remove()
    job_id, text = adapter.failures[0]
    assert job_id == reply.job_id and "memory" in text.lower()
    job = await settled(app, job_id)
    assert job.status is JobStatus.FAILED and job.error_key == "error.oom"
    user = await app.db.users.find("telegram", "100")
    assert await app.db.quota.used(user.id, app.service.today()) == 0


async def test_delivery_is_retried_until_the_platform_takes_it(make_app, monkeypatch):
    import bot.core.delivery as delivery_module

    monkeypatch.setattr(delivery_module, "DELIVERY_RETRIES", 3)
    app, adapter = await started(make_app)
    adapter.fail_deliveries = 1
    reply = await app.service.handle_text(alice(), "/draw flaky network", {})
    await adapter.wait_until(lambda: adapter.delivered, timeout=30)
    assert [d.job.id for d in adapter.delivered] == [reply.job_id]
    assert (await settled(app, reply.job_id)).delivered_at


async def test_restart_requeues_running_and_delivers_done_but_undelivered(make_app, make_settings):
    first = await make_app()
    queued = await first.service.handle_text(alice(), "/draw left queued", {})
    running = await first.service.handle_text(alice(), "/draw left running", {})
    await first.db.jobs.mark_running(running.job_id)
    await first.stop()

    second, adapter = await started(make_app)
    await adapter.wait_until(lambda: len(adapter.delivered) == 2)
    assert sorted(d.job.id for d in adapter.delivered) == sorted([queued.job_id, running.job_id])
    await second.service.redeliver_pending()
    await asyncio.sleep(0.2)
    assert len(adapter.delivered) == 2


async def test_settings_language_and_quota_text(make_app):
    app = await make_app(EASEL_DAILY_QUOTA=4)
    saved = await app.service.handle_text(alice(), "/settings lang zh", {})
    assert saved.language == "zh"
    quota = await app.service.handle_text(alice(), "/quota", {})
    assert quota.language == "zh" and "4" in quota.text
    unknown = await app.service.handle_text(alice(), "/settings colour blue", {})
    assert unknown.alert


async def test_hostile_prompts_are_stored_verbatim_or_refused_clearly(make_app):
    app = await make_app()
    sql = "'); DROP TABLE jobs; --"
    stored = await app.service.handle_text(alice(), f"/draw {sql}", {})
    assert (await app.db.jobs.get(stored.job_id)).request["prompt"] == sql
    huge = await app.service.handle_text(alice(), "/draw " + "x" * 20_000, {})
    assert huge.job_id is None and "1000" in huge.text and len(huge.text) < 500
    nan = await app.service.handle_text(alice(), "/draw fox --cfg nan", {})
    assert nan.job_id is None and "/draw" in nan.text


async def test_metrics_count_what_happened(make_app, engine):
    app, adapter = await started(make_app)
    first = await app.service.handle_text(alice(), "/draw counted --steps 2", {})
    await adapter.wait_until(lambda: adapter.delivered)
    queued = await app.service.handle_text(bob(), "/draw cancelled later --steps 2", {})
    await app.service.handle_text(bob(), f"/cancel {queued.job_id}", {})
    await settled(app, first.job_id)
    metrics = app.service.metrics
    assert metrics.value("easel_jobs_accepted_total") == 2
    assert metrics.value("easel_jobs_total", status="done") == 1
    assert metrics.value("easel_job_run_seconds_count", size="256px") == 1
    assert metrics.value("easel_job_wait_seconds_count") == 1
    assert metrics.value("easel_live_workers") == 1
    assert metrics.value("easel_queue_depth") == 0
    assert metrics.value("easel_workers_by_recipe", recipe="none") == 1  # the model's own weights, on the CPU
    assert metrics.value("easel_jobs_by_recipe_total", recipe="none") == 1
    # The same words again (a reroll would be the same): no text encoder run, counted as a cache hit.
    again = await app.service.handle_text(alice(), "/draw counted --steps 2", {})
    await settled(app, again.job_id)
    assert metrics.value("easel_prompt_cache_total", result="miss") == 1
    assert metrics.value("easel_prompt_cache_total", result="hit") == 1
    assert metrics.value("easel_learned_starts_total") == 0  # a CPU learns nothing
    from prometheus_client import generate_latest

    assert b"easel_job_run_seconds_bucket" in generate_latest(metrics.registry)


async def test_stats_shows_health_numbers_to_admins(make_app, engine):
    app, adapter = await started(make_app, EASEL_ADMINS="telegram:999")
    admin = Caller("telegram", "999", language="en")

    def oom_once(module, args, calls=[]):  # noqa: B006 - the list counts calls across the hook's life
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    handle = engine.pipeline.transformer.register_forward_pre_hook(oom_once)
    try:
        reply = await app.service.handle_text(alice(), "/draw survives --steps 2", {})
        await adapter.wait_until(lambda: adapter.delivered)
    finally:
        handle.remove()
    await settled(app, reply.job_id)
    stats = await app.service.handle_text(admin, "/stats", {})
    assert "1 done" in stats.text and "1 out-of-memory fallbacks" in stats.text
    assert t("stats_learned", "en", learned=0, cached=0, encoded=1) in stats.text


async def test_a_resent_request_is_one_job_and_says_so(make_app):
    app, adapter = await started(make_app, EASEL_DAILY_QUOTA=5)
    first = await app.service.handle_text(alice(), "/draw once", {}, idempotency_key="telegram:1:77")
    again = await app.service.handle_text(alice(), "/draw once", {}, idempotency_key="telegram:1:77")
    assert again.job_id == first.job_id
    await adapter.wait_until(lambda: adapter.delivered)
    await settled(app, first.job_id)
    late = await app.service.handle_text(alice(), "/draw once", {}, idempotency_key="telegram:1:77")
    assert late.job_id == first.job_id and f"#{first.job_id}" in late.text and "done" in late.text
    user = await app.db.users.find("telegram", "100")
    assert await app.db.quota.used(user.id, app.service.today()) == 1
    assert len(adapter.delivered) == 1


async def test_unknown_commands_in_groups_are_left_to_other_bots(make_app):
    app = await make_app()
    assert await app.service.handle_text(alice(), "/weather Paris", {}, shared_chat=True) is None
    addressed = await app.service.handle_text(
        alice(), "/weather@easelbot Paris", {}, bot_username="easelbot", shared_chat=True
    )
    assert addressed is not None and addressed.alert
    private = await app.service.handle_text(alice(), "/weather Paris", {})
    assert private is not None and "/weather" in private.text
