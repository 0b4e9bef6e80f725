"""Delivery never loops (bot/core/delivery.py): permanent refusals end at once, transient failures back off
and end as dead deliveries admins can see, and a picture that was drawn is never refunded for not
arriving.  End to end through the real python-telegram-bot and discord.py against the fake servers,
with the sweep made short so a test can wait past several of them."""

from __future__ import annotations

import asyncio
import time

import pytest

import bot.core.delivery as delivery_module
from bot.core.service import Caller
from bot.language.messages import t
from storage.jobs import Job
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram
from tests.support import discord_harness, telegram_harness
from tests.support.discord_harness import ADMIN_ID, CHANNEL_ID, USER_ID, answer, command, draw, hold_gpu
from tests.support.service import RecordingAdapter, alice
from tests.support.telegram_harness import ADMIN, ALICE, GROUP, SLOW, jobs_of, quota_used, said, say, settled

tg = telegram_harness.tg  # fixtures
easel = telegram_harness.easel
fake = discord_harness.fake
start_bot = discord_harness.start_bot

SHORT = {"EASEL_DELIVERY_RETRY_S": "0.05", "EASEL_DELIVERY_SWEEP_S": "0.1"}
PAST_SWEEPS = 0.8  # seconds: several sweeps at EASEL_DELIVERY_SWEEP_S=0.1


async def given_up(app, job_id: int, timeout: float = SLOW) -> Job:
    """The job once its delivery was given up (refused, or dead after too many rounds)."""
    deadline = time.monotonic() + timeout
    while (job := await app.db.jobs.get(job_id)).delivery_error is None:
        assert job.delivered_at is None, f"job {job_id} was delivered after all"
        assert time.monotonic() < deadline, f"job {job_id} was never given up"
        await asyncio.sleep(0.02)
    return job


async def only_job(app, user: int) -> Job:
    await telegram_harness.until(lambda: jobs_of(app, user))
    [job] = await jobs_of(app, user)
    return job


def uploads(tg: FakeTelegram, mark: int) -> list[tuple[str, bool]]:
    return [(c.method, c.ok) for c in tg.calls[mark:] if c.method in ("sendPhoto", "sendDocument", "sendMediaGroup")]


# -- Telegram: permanent ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refusals", "expected"),
    [
        pytest.param(
            {
                "sendPhoto": "Bad Request: not enough rights to send photos to the chat",
                "sendDocument": "Bad Request: not enough rights to send documents to the chat",
            },
            [("sendPhoto", False), ("sendDocument", False)],  # one fallback, then no more
            id="no-rights-for-photos-or-documents",
        ),
        pytest.param(
            {"sendPhoto": "Bad Request: TOPIC_CLOSED"},
            [("sendPhoto", False)],  # the chat is closed to the bot: a document would not go either
            id="topic-closed",
        ),
        pytest.param(
            {"sendPhoto": "Bad Request: chat not found"},
            [("sendPhoto", False)],
            id="chat-not-found",
        ),
    ],
)
async def test_a_telegram_chat_that_refuses_the_picture_is_told_and_never_uploaded_to_again(
    easel, tg: FakeTelegram, refusals: dict[str, str], expected: list[tuple[str, bool]]
):
    app, _ = await easel.start(**SHORT)
    for method, description in refusals.items():
        tg.fail_next(method, status=400, description=description, count=50)

    mark = said(tg, ALICE, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    job = await only_job(app, ALICE)
    charged = await quota_used(app, ALICE)
    told = t("error.undeliverable", "en", job_id=job.id)
    await tg.wait_for("editMessageText", lambda c: c.index >= mark and c.params["text"] == told, timeout=SLOW)
    job = await given_up(app, job.id)
    await asyncio.sleep(PAST_SWEEPS)

    assert uploads(tg, mark) == expected  # not retried, not by the sweeps either
    assert job.delivery_error.startswith("refused: ") and job.delivery_failures == 0
    assert await quota_used(app, ALICE) == charged > 0  # drawn: not refunded
    assert [j.id for j in await jobs_of(app, ALICE)] == [job.id]  # and still in /history
    assert "#" in told and "/history" in told and "/show" in told  # the message says so


async def test_a_blocked_telegram_bot_tells_nobody_and_uploads_once(easel, tg: FakeTelegram):
    app, _ = await easel.start(**SHORT)
    tg.fail_next("sendPhoto", status=403, description="Forbidden: bot was blocked by the user", count=50)
    tg.fail_next("editMessageText", status=403, description="Forbidden: bot was blocked by the user", count=50)
    tg.fail_next("sendMessage", status=403, description="Forbidden: bot was blocked by the user", count=50)

    mark = said(tg, ALICE, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    job = await given_up(app, (await only_job(app, ALICE)).id)
    await asyncio.sleep(PAST_SWEEPS)
    assert uploads(tg, mark) == [("sendPhoto", False)]
    assert "blocked" in job.delivery_error


async def test_a_reply_target_that_is_gone_sends_the_picture_without_the_reply(easel, tg: FakeTelegram):
    app, _ = await easel.start(**SHORT)
    tg.fail_next("sendPhoto", status=400, description="Bad Request: message to be replied not found")

    mark = said(tg, ALICE, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    job = await settled(app, (await only_job(app, ALICE)).id)
    first, second = [c for c in tg.calls[mark:] if c.method == "sendPhoto"]
    assert not first.ok and first.params.get("reply_parameters")
    assert second.ok and not second.params.get("reply_parameters")  # once more, without the reply
    assert job.delivered_at and job.delivery_error is None
    assert uploads(tg, mark) == [("sendPhoto", False), ("sendPhoto", True)]  # no document fallback spent on it


MIGRATED = -1009876543210  # the supergroup a basic group became


async def test_a_picture_for_a_group_that_became_a_supergroup_goes_to_the_supergroup(easel, tg: FakeTelegram):
    app, _ = await easel.start(**SHORT)
    upgraded = "Bad Request: group chat was upgraded to a supergroup chat"
    tg.fail_next("sendPhoto", status=400, description=upgraded, migrate_to_chat_id=MIGRATED)

    mark = said(tg, GROUP, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    job = await settled(app, (await only_job(app, ALICE)).id)
    first, second = [c for c in tg.calls[mark:] if c.method == "sendPhoto"]
    assert (first.params["chat_id"], first.ok) == (GROUP, False)
    assert (second.params["chat_id"], second.ok) == (MIGRATED, True)  # this picture, in the supergroup
    assert not second.params.get("reply_parameters")  # what it answered stayed in the old group
    assert job.delivered_at and job.delivery_error is None and job.delivery_failures == 0
    assert job.reply_to["chat_id"] == MIGRATED  # and anything more for this job goes there too
    assert [m.photo is not None for m in tg.chat_messages(MIGRATED)] == [True]


async def test_a_group_that_moves_twice_at_once_is_given_up(easel, tg: FakeTelegram):
    app, _ = await easel.start(**SHORT)
    upgraded = "Bad Request: group chat was upgraded to a supergroup chat"
    tg.fail_next("sendPhoto", status=400, description=upgraded, migrate_to_chat_id=MIGRATED, count=50)

    mark = said(tg, GROUP, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    job = await given_up(app, (await only_job(app, ALICE)).id)
    await asyncio.sleep(PAST_SWEEPS)
    assert uploads(tg, mark) == [("sendPhoto", False)] * 2  # the group, the supergroup, then no more
    assert str(MIGRATED) in job.delivery_error and job.delivery_failures == 0


# -- Telegram: transient ----------------------------------------------------------------------------


async def test_telegram_5xx_backs_off_and_ends_as_a_dead_delivery_admins_see(easel, tg: FakeTelegram, monkeypatch):
    monkeypatch.setattr(delivery_module, "DELIVERY_RETRIES", 3)
    app, _ = await easel.start(EASEL_MAX_DELIVERY_SWEEPS="2", **SHORT)
    tg.fail_next("sendPhoto", status=500, description="Internal Server Error: injected", count=100)

    mark = said(tg, ALICE, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    job = await only_job(app, ALICE)
    charged = await quota_used(app, ALICE)
    job = await given_up(app, job.id)
    await asyncio.sleep(PAST_SWEEPS)

    attempts = [c for c in tg.calls[mark:] if c.method == "sendPhoto"]
    assert len(attempts) == 2 * 3 and not any(c.ok for c in attempts)  # 2 rounds of 3, then never again
    assert uploads(tg, mark) == [("sendPhoto", False)] * 6  # a 5xx is no reason to try a document
    gaps = [later.timestamp - earlier.timestamp for earlier, later in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # backing off within a round: 0.05 s, then 0.1 s
    assert job.delivery_failures == 2 and job.delivery_error.startswith("failed 2 delivery rounds")
    assert await quota_used(app, ALICE) == charged > 0
    assert app.service.metrics.value("easel_dead_deliveries_total") == 1

    stats = (await say(tg, ADMIN, ADMIN, "/stats")).params["text"]
    assert t("stats_dead_deliveries", "en", count=1) in stats
    queue = (await say(tg, ADMIN, ADMIN, "/queue")).params["text"]
    assert t("queue_dead_header", "en", count=1) in queue and f"#{job.id} · " in queue and "telegram" in queue


async def test_telegram_5xx_that_passes_is_delivered_once_in_a_later_round(easel, tg: FakeTelegram, monkeypatch):
    monkeypatch.setattr(delivery_module, "DELIVERY_RETRIES", 2)
    app, _ = await easel.start(**SHORT)
    tg.fail_next("sendPhoto", status=502, description="Bad Gateway", count=3)  # round 1 (2 tries) and one more

    mark = said(tg, ALICE, ALICE, "/draw a calm sea --size 64x64 --steps 1")
    job = await settled(app, (await only_job(app, ALICE)).id)
    await asyncio.sleep(PAST_SWEEPS)
    assert uploads(tg, mark) == [("sendPhoto", False)] * 3 + [("sendPhoto", True)]
    assert job.delivered_at and job.delivery_error is None and job.delivery_failures == 1
    assert [m.photo is not None for m in tg.chat_messages(ALICE)] == [True]  # exactly one picture


# -- Discord ----------------------------------------------------------------------------------------


async def discord_job(app) -> Job:
    owner = await app.db.users.find("discord", str(USER_ID))
    [job] = (await app.db.jobs.list_for_user(owner.id, 0))[0]
    return job


def channel_posts(fake: FakeDiscord, since: int = 0):
    return [r for r in fake.requests[since:] if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"]


@pytest.mark.parametrize(
    ("status", "code"),
    [(403, 50013), (403, 50001), (404, 10003), (400, 50035), (400, 40005), (413, 40005)],
    ids=["missing-permissions", "missing-access", "unknown-channel", "invalid-form-body", "too-large", "413"],
)
async def test_a_discord_channel_that_refuses_is_given_up_not_swept(start_bot, fake: FakeDiscord, status, code):
    bot = await start_bot(**SHORT)
    gate = hold_gpu(bot)
    interaction = await draw(fake)
    await answer(fake, interaction)
    job = await discord_job(bot.app)
    used = await bot.app.db.quota.used(job.user_id, bot.app.service.today())
    bot.adapter.clock = lambda: time.time() + 15 * 60  # the token is dead: only the channel is left
    fake.fail_next("POST", rf"/channels/{CHANNEL_ID}/messages", status=status, code=code, count=50)
    gate.set()

    job = await given_up(bot.app, job.id)
    await asyncio.sleep(PAST_SWEEPS)
    posts = channel_posts(fake)
    assert [r.status for r in posts] == [status, status]  # the picture once, then one try at saying so
    assert posts[0].files and not posts[1].files
    assert str(code) in job.delivery_error and job.delivery_failures == 0
    assert await bot.app.db.quota.used(job.user_id, bot.app.service.today()) == used > 0


@pytest.mark.parametrize(("status", "code"), [(400, 50035), (400, 40005)], ids=["invalid-form-body", "too-large"])
async def test_a_discord_follow_up_refused_for_what_it_is_is_given_up_not_retried(
    start_bot, fake: FakeDiscord, status, code
):
    bot = await start_bot(**SHORT)
    gate = hold_gpu(bot)
    interaction = await draw(fake)
    await answer(fake, interaction)
    job = await discord_job(bot.app)
    fake.fail_next("POST", r"^/webhooks/", status=status, code=code, count=50)  # the token is alive
    gate.set()

    job = await given_up(bot.app, job.id)
    await asyncio.sleep(PAST_SWEEPS)
    posts = [r for r in fake.requests if r.method == "POST" and r.path.startswith(("/webhooks/", "/channels/"))]
    assert [r.status for r in posts] == [status, status]  # the picture once, then one try at saying so
    assert posts[0].files and not posts[1].files
    assert str(code) in job.delivery_error and job.delivery_failures == 0


async def test_discord_5xx_backs_off_and_ends_as_a_dead_delivery_admins_see(start_bot, fake: FakeDiscord, monkeypatch):
    monkeypatch.setattr(delivery_module, "DELIVERY_RETRIES", 2)
    bot = await start_bot(EASEL_MAX_DELIVERY_SWEEPS="3", **SHORT)
    gate = hold_gpu(bot)
    interaction = await draw(fake)
    await answer(fake, interaction)
    job = await discord_job(bot.app)
    bot.adapter.clock = lambda: time.time() + 15 * 60
    # 503: discord.py does not retry it by itself, so every attempt is one request.
    fake.fail_next("POST", rf"/channels/{CHANNEL_ID}/messages", status=503, count=100)
    gate.set()

    job = await given_up(bot.app, job.id)
    await asyncio.sleep(PAST_SWEEPS)
    assert [r.status for r in channel_posts(fake)] == [503] * (3 * 2)  # 3 rounds of 2, then never again
    assert job.delivery_failures == 3 and "DiscordServerError" in job.delivery_error

    stats = await answer(fake, await command(fake, "stats", user_id=ADMIN_ID))
    assert t("stats_dead_deliveries", "en", count=1) in stats
    queue = await answer(fake, await command(fake, "queue", user_id=ADMIN_ID))
    assert t("queue_dead_header", "en", count=1) in queue and f"#{job.id} · " in queue


# -- the count survives a restart ------------------------------------------------------------------


async def test_failed_rounds_are_counted_across_a_restart(make_app, monkeypatch):
    """A restart gives every undelivered job a round at once, but does not reset what it has used."""
    monkeypatch.setattr(delivery_module, "DELIVERY_RETRIES", 1)
    first = await make_app(**SHORT)
    failing = RecordingAdapter()
    failing.fail_deliveries = 1000
    first.service.register(failing)
    reply = await first.service.handle_text(alice(), "/draw a flaky network --steps 1", {"chat_id": "1"})
    await first.service.start()

    async def two_rounds_failed() -> bool:
        return (await first.db.jobs.get(reply.job_id)).delivery_failures >= 2

    await telegram_harness.until(two_rounds_failed)
    await first.stop()

    second = await make_app(**SHORT, EASEL_MAX_DELIVERY_SWEEPS="1")  # lower the limit: reached already
    counted = (await second.db.jobs.get(reply.job_id)).delivery_failures
    assert counted >= 2
    still_failing = RecordingAdapter()
    still_failing.fail_deliveries = 1000
    second.service.register(still_failing)
    await second.service.start()
    job = await given_up(second, reply.job_id)
    await asyncio.sleep(PAST_SWEEPS)
    assert job.delivery_failures == counted + 1 and job.delivery_error.startswith(f"failed {counted + 1} delivery")
    assert still_failing.fail_deliveries == 1000 - 1  # one round of one attempt, then nothing


# -- no adapter for the platform: counted like any transient failure --------------------------------


async def test_a_job_whose_adapter_never_starts_ends_as_a_dead_delivery(make_app, monkeypatch):
    """No adapter (not started, or no longer configured) must not be "settled": the rounds are
    counted, so the sweep stops trying instead of spawning deliveries forever."""
    monkeypatch.setattr(delivery_module, "DELIVERY_RETRIES", 1)
    app = await make_app(EASEL_MAX_DELIVERY_SWEEPS="2", **SHORT)
    await app.service.start()  # no adapter registered, ever
    reply = await app.service.handle_text(alice(), "/draw an empty stage --steps 1", {"chat_id": "1"})

    job = await given_up(app, reply.job_id, timeout=15)
    await asyncio.sleep(PAST_SWEEPS)
    assert (await app.db.jobs.get(job.id)).delivery_failures == job.delivery_failures == 2
    assert job.delivery_error.startswith("failed 2 delivery rounds") and "no telegram adapter" in job.delivery_error
    assert job.id not in app.service.deliverer._sweep_after and job.id not in app.service.deliverer._delivering


# -- the sweep's memory of gaps stays bounded and ends with each delivery ---------------------------


async def waiting_jobs(app, count: int) -> list[int]:
    """`count` finished jobs by different users, each with at least one failed round behind it."""
    jobs = []
    for user in range(count):
        caller = Caller("telegram", str(700 + user), chat_id=str(-700 - user), public=True)
        reply = await app.service.handle_text(caller, f"/draw a kite {user} --steps 1 --size 64x64", {})
        assert reply.job_id is not None, reply.text
        jobs.append(reply.job_id)

    async def all_failed_once() -> bool:
        return all([(await app.db.jobs.get(job_id)).delivery_failures >= 1 for job_id in jobs])

    await telegram_harness.until(all_failed_once)
    return jobs


async def test_sweep_gaps_stay_bounded_and_are_gone_once_the_deliveries_end(make_app, monkeypatch):
    monkeypatch.setattr(delivery_module, "DELIVERY_RETRIES", 1)
    monkeypatch.setattr(delivery_module, "SWEEP_GAPS_KEPT", 3)
    app = await make_app(EASEL_MAX_DELIVERY_SWEEPS="1000", **SHORT)
    adapter = RecordingAdapter()
    adapter.fail_deliveries = 10**6
    app.service.register(adapter)
    await app.service.start()
    jobs = await waiting_jobs(app, 6)
    assert 0 < len(app.service.deliverer._sweep_after) <= 3  # six jobs between rounds, three gaps remembered

    adapter.fail_deliveries = 0
    for job_id in jobs:
        await settled(app, job_id)
    assert len(app.service.deliverer._sweep_after) == 0
    assert app.service.deliverer._sweep_after.ttl_s == delivery_module.MAX_SWEEP_GAP_S  # and none outlives its gap


async def test_a_job_deleted_between_rounds_leaves_no_sweep_gap_behind(make_app, monkeypatch):
    monkeypatch.setattr(delivery_module, "DELIVERY_RETRIES", 1)
    app = await make_app(EASEL_MAX_DELIVERY_SWEEPS="1000", EASEL_DELIVERY_RETRY_S="0.05", EASEL_DELIVERY_SWEEP_S="60")
    adapter = RecordingAdapter()
    adapter.fail_deliveries = 10**6
    app.service.register(adapter)
    await app.service.start()
    [job_id] = await waiting_jobs(app, 1)

    async def between_rounds() -> bool:
        return job_id in app.service.deliverer._sweep_after

    await telegram_harness.until(between_rounds)

    assert await app.db.jobs.mark_deleted(job_id)
    await app.service.deliverer.deliver(job_id)  # what a sweep (or a late round) does with it
    assert job_id not in app.service.deliverer._sweep_after and job_id not in app.service.deliverer._delivering


# -- a picture file that is gone: ours to refund ---------------------------------------------------


async def test_a_picture_file_gone_from_disk_is_given_up_refunded_and_told(make_app):
    app = await make_app(**SHORT)
    await app.service.start()  # no adapter yet: the finished job waits undelivered
    reply = await app.service.handle_text(alice(), "/draw a vanishing fox --steps 1", {"chat_id": "1"})

    async def done() -> bool:
        return (await app.db.jobs.get(reply.job_id)).status.value == "done"

    await telegram_harness.until(done)
    job = await app.db.jobs.get(reply.job_id)
    owner = job.user_id
    assert await app.db.quota.used(owner, app.service.today()) > 0
    for path in job.image_paths:
        app.service.images.resolve(path).unlink()
    adapter = RecordingAdapter()
    app.service.register(adapter)
    await app.service.redeliver_pending()

    job = await given_up(app, reply.job_id)
    await asyncio.sleep(PAST_SWEEPS)
    assert job.delivery_error.startswith("picture file missing") and adapter.delivered == []
    assert adapter.failures == [(job.id, t("error.picture_missing", "en", job_id=job.id))]  # told once
    assert await app.db.quota.used(owner, app.service.today()) == 0  # our loss: refunded


# -- storage -----------------------------------------------------------------------------------------


async def test_storage_counts_rounds_gives_up_once_and_leaves_given_up_jobs_unswept(tmp_path):
    from storage import Database

    db = await Database.open(tmp_path / "easel.db")
    try:
        user = await db.users.get_or_create("telegram", "1", name="Ada")
        ids = []
        for _ in range(3):
            accepted = await db.jobs.accept(
                user_id=user.id,
                platform="telegram",
                reply_to={"chat_id": 10},
                request={"prompt": "a fox", "width": 64, "height": 64, "steps": 1},
                kind="txt2img",
                day="2025-01-02",
                daily_limit=None,
                max_pending=10,
            )
            assert await db.jobs.mark_running(accepted.job.id)
            assert await db.jobs.mark_done(accepted.job.id, seed=1, image_paths=[], plan={}, timings={"total": 1})
            ids.append(accepted.job.id)
        sent, refused, failing = ids

        assert [await db.jobs.record_delivery_failure(failing) for _ in range(3)] == [1, 2, 3]
        assert await db.jobs.mark_delivered(sent)
        assert await db.jobs.record_delivery_failure(sent) == 0  # delivered: nothing to count
        assert await db.jobs.give_up_delivery(refused, "refused: no rights")
        assert not await db.jobs.give_up_delivery(refused, "again")  # the first reason stays
        assert await db.jobs.record_delivery_failure(refused) == 0
        assert not await db.jobs.give_up_delivery(sent, "too late")  # a delivered job is not given up

        assert [job.id for job in await db.jobs.undelivered()] == [failing]
        dead, total = await db.jobs.dead_deliveries()
        assert total == 1 and [(job.id, job.delivery_error) for job in dead] == [(refused, "refused: no rights")]
        assert await db.jobs.give_up_delivery(failing, "failed 3 delivery rounds")
        assert await db.jobs.undelivered() == []
        dead, total = await db.jobs.dead_deliveries(limit=1)
        assert total == 2 and [job.id for job in dead] == [failing]  # newest first
        assert (await db.jobs.get(failing)).delivery_failures == 3
    finally:
        await db.close()
