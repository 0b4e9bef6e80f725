"""The Discord adapter end to end: the real app (SQLite, GPU thread, tiny Z-Image model) behind the
real discord.py client, talking to the in-repo fake Discord (tests/fakes/discord_server.py)."""

from __future__ import annotations

import asyncio
import time

import pytest
from PIL import Image

from bot.adapters.discord import adapter as adapter_module
from bot.adapters.discord.fitting import fit_to_limit
from bot.language.buttons import SINGLE_PICTURE, Action, button_id
from bot.language.messages import t
from engine.errors import BadOutput
from tests.fakes.discord_server import EPHEMERAL, MESSAGE_CONTENT_INTENT, FakeDiscord
from tests.support import discord_harness as harness
from tests.support.discord_harness import (
    ADMIN_ID,
    CHANNEL_ID,
    GUILD_ID,
    OTHER_ID,
    USER_ID,
    ZH_ID,
    answer,
    bot_reply,
    callback_of,
    child,
    command,
    delivered,
    draw,
    drawn,
    hold_gpu,
    image_size,
    job_count,
    picture_of,
    until,
)

fake = harness.fake  # fixtures
start_bot = harness.start_bot


# -- tests ----------------------------------------------------------------------------------------


async def test_commands_sync_to_each_configured_guild_with_bounds_from_the_profile(
    start_bot, fake: FakeDiscord
) -> None:
    bot = await start_bot(DISCORD_GUILD_IDS="111,222")

    names = ["draw", "styles", "loras", "cancel", "history", "show", "quota", "settings", "help"]
    names += ["ban", "unban", "setquota", "setrole", "queue", "stats", "lora", "block", "sensitive"]
    assert fake.synced_command_names(111) == fake.synced_command_names(222) == names
    assert None not in fake.commands  # nothing global when guilds are configured
    profile = bot.app.service.profile
    options = {o["name"]: o for o in fake.commands[111][0]["options"]}
    assert [c["value"] for c in options["aspect_ratio"]["choices"]] == list(profile.aspect_ratios)
    assert (options["steps"]["min_value"], options["steps"]["max_value"]) == (profile.min_steps, profile.max_steps)
    assert (options["cfg"]["min_value"], options["cfg"]["max_value"]) == (profile.min_cfg, profile.max_cfg)
    assert options["prompt"]["required"] and not options["seed"]["required"]
    assert (options["count"]["min_value"], options["count"]["max_value"]) == (1, profile.max_count)
    styles = [style.name for style in bot.app.service.styles.all()]
    assert [c["value"] for c in options["style"]["choices"]] == styles and "anime" in styles


async def test_command_descriptions_are_synced_in_chinese_too(start_bot, fake: FakeDiscord) -> None:
    await start_bot()
    commands = {c["name"]: c for c in fake.commands[None]}
    draw_command = commands["draw"]
    assert draw_command["description"] == t("slash.draw", "en")
    assert draw_command["description_localizations"]["zh-CN"] == t("slash.draw", "zh")
    prompt = next(o for o in draw_command["options"] if o["name"] == "prompt")
    assert prompt["description_localizations"]["zh-CN"] == t("slash.draw.prompt", "zh")
    # Every description the bot syncs has a catalogue entry, so none stays English for Chinese users.
    for command in commands.values():  # noqa: F402  (only this test; it never calls command())
        for described in (command, *command.get("options", [])):
            assert "zh-CN" in described.get("description_localizations", {}), described["description"]


async def test_commands_sync_globally_without_guild_ids(start_bot, fake: FakeDiscord) -> None:
    await start_bot()
    assert list(fake.commands) == [None] and "draw" in fake.synced_command_names(None)


async def test_draw_defers_first_then_delivers_the_picture_with_its_buttons(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    deferred_before_db: list[bool] = []
    user_for = bot.app.service.user_for

    async def spy(caller):
        deferred_before_db.append(any(r.path.endswith("/callback") for r in fake.requests))
        return await user_for(caller)

    bot.app.service.user_for = spy
    sent = time.monotonic()
    interaction = await draw(fake, prompt="a lighthouse at dusk", aspect_ratio="3:2", seed=7, locale="en-US")

    callback = await fake.wait_for(callback_of(interaction), timeout=3)
    assert callback.at - sent < 3 and callback.json["type"] == 5 and callback.json["data"]["flags"] & EPHEMERAL
    queued = await answer(fake, interaction)
    assert queued == t("queued_next", "en", job_id=1) or queued.startswith("Queued as #1:")
    job = await delivered(bot.app, 1)
    assert deferred_before_db and all(deferred_before_db)

    assert (job.request["width"], job.request["height"], job.seed, job.request["steps"]) == (320, 208, 7, 2)
    assert job.reply_to["status_message_id"] == "@original" and job.reply_to["user_id"] == str(USER_ID)
    picture = picture_of(fake, job.id)
    assert not picture.is_ephemeral and picture.content == f"<@{USER_ID}>"
    assert image_size(picture) == (320, 208) and picture.attachments[0].content_type == "image/png"
    assert picture.custom_ids == [button_id(action, job.id) for action in SINGLE_PICTURE]
    [embed] = picture.embeds
    assert "a lighthouse at dusk" in embed["description"] and "seed 7" in embed["description"]
    assert embed["image"]["url"] == f"attachment://{picture.attachments[0].filename}"
    assert (await bot.app.db.jobs.find_by_message("discord", str(CHANNEL_ID), str(picture.id))).id == job.id
    # The private status message is gone once the picture is out: the channel holds just the picture.
    assert fake.messages_in(CHANNEL_ID) == [picture]


async def test_every_button_under_a_picture(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    app = bot.app
    parent, picture = await drawn(fake, bot)

    await fake.press_button(button_id(Action.REROLL, parent.id), picture.id, user_id=USER_ID)
    reroll = await child(app, parent.id, 1)
    assert (reroll.kind, reroll.request["prompt"]) == ("txt2img", parent.request["prompt"])

    await fake.press_button(button_id(Action.VARY_SUBTLE, parent.id), picture.id, user_id=USER_ID)
    subtle = await child(app, parent.id, 2)
    await fake.press_button(button_id(Action.VARY_STRONG, parent.id), picture.id, user_id=USER_ID)
    strong = await child(app, parent.id, 3)
    profile = app.service.profile
    assert [(j.kind, j.request["strength"]) for j in (subtle, strong)] == [
        ("variation", profile.subtle_strength),
        ("variation", profile.strong_strength),
    ]
    for job in (reroll, subtle, strong):
        assert [j.id for j in await app.db.jobs.lineage(job.id)] == [parent.id, job.id]
        assert image_size(picture_of(fake, job.id)) == (256, 256)

    await fake.press_button(button_id(Action.UPSCALE, parent.id), picture.id, user_id=USER_ID)
    upscale = await child(app, parent.id, 4)
    assert upscale.kind == "upscale" and image_size(picture_of(fake, upscale.id)) == (512, 512)

    press = await fake.press_button(button_id(Action.PARAMS, parent.id), picture.id, user_id=USER_ID)
    text = await answer(fake, press)
    assert f"Seed: {parent.seed}" in text and parent.request["prompt"] in text
    assert len(await app.db.jobs.children(parent.id)) == 4  # params makes no job

    press = await fake.press_button(button_id(Action.DELETE, parent.id), picture.id, user_id=USER_ID)
    assert await answer(fake, press) == t("deleted", "en")
    assert fake.message(picture.id).deleted and (await app.db.jobs.get(parent.id)).deleted
    private = [m for m in fake.messages_in(CHANNEL_ID) if m.is_ephemeral]
    assert {m.content for m in private} >= {text, t("deleted", "en")}


async def test_delete_pressed_by_someone_else_is_refused_privately(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    job, picture = await drawn(fake, bot)

    press = await fake.press_button(button_id(Action.DELETE, job.id), picture.id, user_id=OTHER_ID)

    assert await answer(fake, press) == t("delete_not_yours", "en")
    callback = await fake.wait_for(callback_of(press))
    assert callback.json["type"] == 5 and callback.json["data"]["flags"] & EPHEMERAL
    assert not fake.message(picture.id).deleted and not (await bot.app.db.jobs.get(job.id)).deleted


async def test_delete_without_permission_to_remove_the_post_says_so(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    job, picture = await drawn(fake, bot)
    fake.fail_next("DELETE", rf"/channels/{CHANNEL_ID}/messages/{picture.id}", status=403, code=50013)

    press = await fake.press_button(button_id(Action.DELETE, job.id), picture.id, user_id=USER_ID)

    assert await answer(fake, press) == t("delete_message_failed", "en")
    assert (await bot.app.db.jobs.get(job.id)).deleted and not fake.message(picture.id).deleted


async def test_a_button_on_an_old_message_works_after_a_restart(start_bot, fake: FakeDiscord) -> None:
    first = await start_bot()
    parent, picture = await drawn(fake, first)
    await first.stop()  # one app generates at a time: the engine is shared

    second = await start_bot()
    await fake.press_button(button_id(Action.VARY_SUBTLE, parent.id), picture.id, user_id=USER_ID)

    job = await child(second.app, parent.id)
    source = str(second.app.service.images.resolve(parent.image_paths[0]))
    assert (job.kind, job.request["source_image"]) == ("variation", source)
    assert image_size(picture_of(fake, job.id)) == (256, 256)
    assert fake.identify_count == 2


async def test_a_job_accepted_before_a_restart_is_delivered_after_it(start_bot, fake: FakeDiscord) -> None:
    first = await start_bot()
    gate = hold_gpu(first)
    interaction = await draw(fake)
    await answer(fake, interaction)
    await first.adapter.close()
    await first.app.service.stop(grace_s=0)  # the job never got the GPU
    gate.set()
    await first.stop()

    second = await start_bot()
    job = await delivered(second.app, 1)

    picture = picture_of(fake, job.id)
    follow_up = await fake.wait_for(("POST", f"/webhooks/{fake.application_id}/{interaction['token']}"))
    assert follow_up.files and picture.webhook_id == fake.application_id  # the stored token still worked
    assert picture.content == f"<@{USER_ID}>" and image_size(picture) == (256, 256)


async def test_a_failed_job_is_told_to_its_owner(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()

    async def broken(job_id, request, on_step=None):
        raise BadOutput()

    bot.app.worker.run = broken
    interaction = await draw(fake)
    job = await delivered(bot.app, 1)

    assert job.status.value == "failed"
    post = await fake.wait_for(("POST", f"/webhooks/{fake.application_id}/{interaction['token']}"))
    assert post.json["content"] == f"<@{USER_ID}> {t('error.bad_output', 'en')}"
    [message] = fake.messages_in(CHANNEL_ID)  # the private status message is gone
    assert not message.is_ephemeral and message.content == post.json["content"]


async def test_a_delivery_discord_refuses_is_raised_and_retried(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    fake.fail_next("POST", r"^/webhooks/", 403, code=50001)

    await draw(fake)
    job = await delivered(bot.app, 1)

    attempts = [r.status for r in fake.requests if r.method == "POST" and r.path.startswith("/webhooks/")]
    assert attempts == [403, 200]
    assert len(picture_of(fake, job.id).attachments) == 1


@pytest.mark.parametrize("how", ["discord_says_50027", "older_than_14_minutes"])
async def test_after_the_token_expires_the_picture_goes_to_the_channel_with_a_mention(
    start_bot, fake: FakeDiscord, how: str
) -> None:
    bot = await start_bot()
    gate = hold_gpu(bot)
    interaction = await draw(fake)
    await answer(fake, interaction)
    if how == "discord_says_50027":
        fake.expire_token(interaction["token"])
    else:
        bot.adapter.clock = lambda: time.time() + 15 * 60
    since = len(fake.requests)
    gate.set()

    job = await delivered(bot.app, 1)
    post = await fake.wait_for(("POST", f"/channels/{CHANNEL_ID}/messages"), since=since)
    assert post.json["content"] == t("token_expired_mention", "en", mention=f"<@{USER_ID}>")
    assert post.json["allowed_mentions"]["parse"] == ["users"]  # the owner is pinged, nobody else
    picture = picture_of(fake, job.id)
    assert picture.webhook_id is None and image_size(picture) == (256, 256)
    assert len(picture.custom_ids) == len(SINGLE_PICTURE)
    assert (await bot.app.db.jobs.find_by_message("discord", str(CHANNEL_ID), str(picture.id))).id == job.id
    webhook_calls = [r for r in fake.requests[since:] if r.path.startswith("/webhooks/")]
    if how == "discord_says_50027":
        assert [(r.method, r.status) for r in webhook_calls if r.method == "POST"] == [("POST", 401)]
    else:
        assert webhook_calls == []  # the bot knew the token was dead and did not try it


async def test_a_channel_the_bot_may_not_post_in_ends_the_retries(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    gate = hold_gpu(bot)
    interaction = await draw(fake)
    await answer(fake, interaction)
    bot.adapter.clock = lambda: time.time() + 15 * 60  # token dead: only the channel is left
    fake.fail_next("POST", rf"/channels/{CHANNEL_ID}/messages", status=403, code=50013, count=10)
    gate.set()

    job = await delivered(bot.app, 1)  # given up on, not retried for ever
    await asyncio.sleep(0.3)
    posts = [r for r in fake.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"]
    # The picture, refused; then one try at saying so (refused too: the bot may not post here at all).
    assert [r.status for r in posts] == [403, 403] and job.status.value == "done"
    assert posts[0].files and posts[1].json["content"].endswith(t("error.undeliverable", "en", job_id=job.id))
    assert bot.app.service.metrics.value("easel_platform_errors_total", platform="discord") == 1


async def test_a_picture_over_the_upload_limit_is_reencoded_with_a_note(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    limit = 20_000
    await draw(fake, prompt="a busy market street, tiny details everywhere", limit=limit)
    job = await delivered(bot.app, 1)

    original = bot.app.service.images.resolve(job.image_paths[0])
    assert original.stat().st_size > limit  # the test means something only if the PNG did not fit
    picture = picture_of(fake, job.id)
    [attachment] = picture.attachments
    assert len(attachment.data) <= limit and attachment.content_type in ("image/webp", "image/jpeg")
    width, height = image_size(picture)
    assert width / height == pytest.approx(1.0, abs=0.02)
    assert t("oversize_note", "en") in picture.embeds[0]["description"]


def test_a_picture_that_fits_goes_out_untouched(tmp_path) -> None:
    path = tmp_path / "small.png"
    Image.new("RGB", (64, 48), "teal").save(path)
    upload = fit_to_limit(path, 10 * 1024 * 1024)
    assert (upload.data, upload.extension, upload.reencoded) == (path.read_bytes(), "png", False)


@pytest.mark.parametrize(
    ("prompt", "key", "params"),
    [
        ("x" * 20_000, "error.prompt_too_long", {"length": 20_000, "limit": 1000}),
        ("a fox --cfg nan", "error.not_number", {"flag": "--cfg", "value": "nan", "example": "/draw a fox"}),
    ],
)
async def test_hostile_input_gets_one_clear_message_and_no_job(
    start_bot, fake: FakeDiscord, prompt: str, key: str, params: dict
) -> None:
    bot = await start_bot()
    interaction = await command(fake, "draw", prompt=prompt)

    assert await answer(fake, interaction) == t(key, "en", **params)
    await asyncio.sleep(0.2)
    assert await job_count(bot.app) == 0
    [reply] = fake.messages_in(CHANNEL_ID)
    assert reply.is_ephemeral and reply.content == t(key, "en", **params)
    assert not [r for r in fake.requests if r.method == "POST" and r.path.startswith(("/webhooks/", "/channels/"))]


async def test_other_commands_go_through_the_service_and_admin_commands_are_gated(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()

    assert await answer(fake, await command(fake, "stats", user_id=USER_ID)) == t("not_admin", "en")
    stats = await answer(fake, await command(fake, "stats", user_id=ADMIN_ID))
    assert stats.startswith("Jobs: 0 queued")
    help_text = await answer(fake, await command(fake, "help", user_id=ADMIN_ID))
    assert help_text == t("help", "en") + "\n\n" + t("help_admin", "en")
    quota = await answer(fake, await command(fake, "quota", user_id=ZH_ID, locale="zh-CN"))
    assert quota.startswith("今天")  # a new user's language comes from the interaction's locale

    ban = await answer(fake, await command(fake, "ban", user_id=ADMIN_ID, user=f"<@{OTHER_ID}>", reason="spam"))
    assert ban == t("admin_done", "en", action="ban", target=f"discord:{OTHER_ID}")
    refused = await answer(fake, await draw(fake, user_id=OTHER_ID))
    assert refused == t("banned", "en")
    assert await job_count(bot.app) == 0
    assert all(m.is_ephemeral for m in fake.messages_in(CHANNEL_ID))


async def test_an_unexpected_service_error_is_logged_and_answered(start_bot, fake: FakeDiscord, caplog) -> None:
    bot = await start_bot()

    async def crash(*args, **kwargs):
        raise RuntimeError("bug in the service")

    bot.app.service.handle_text = crash
    interaction = await command(fake, "quota")

    assert await answer(fake, interaction) == t("error.unexpected", "en")
    assert any("the service failed" in r.message and r.exc_info for r in caplog.records)


async def test_status_edits_keep_the_newest_text_and_stop_when_the_token_is_old(
    start_bot, fake: FakeDiscord, monkeypatch
) -> None:
    bot = await start_bot()
    gate = hold_gpu(bot)
    interaction = await draw(fake)
    await answer(fake, interaction)

    async def attached():
        job = await bot.app.db.jobs.get(1)
        return job if job.reply_to.get("status_message_id") == "@original" else None

    job = await until(attached)
    edits = f"/{interaction['token']}/messages/@original"
    since = len(fake.requests)

    await asyncio.gather(*(bot.adapter.show_status(job, text) for text in ("step 1", "step 2", "step 3")))
    shown = [r.json["content"] for r in fake.requests[since:] if r.method == "PATCH" and r.path.endswith(edits)]
    assert shown == ["step 1", "step 3"]

    monkeypatch.setattr(adapter_module, "STATUS_EDIT_TIMEOUT_S", 0.3)
    fake.fail_next("PATCH", "@original", 429, retry_after=1.0)
    started = time.monotonic()
    await bot.adapter.show_status(job, "rate limited")
    assert time.monotonic() - started < 0.8  # skipped, not waited out

    bot.adapter.clock = lambda: time.time() + 15 * 60
    since = len(fake.requests)
    await bot.adapter.show_status(job, "too late")
    assert not [r for r in fake.requests[since:] if r.path.endswith(edits)]
    gate.set()
    await delivered(bot.app, 1)


async def test_a_reply_to_a_picture_that_mentions_the_bot_draws_a_variation(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot(EASEL_DISCORD_MESSAGE_CONTENT="true")
    [identify] = [op for op in fake.gateway_received if op["op"] == 2]
    assert identify["d"]["intents"] & MESSAGE_CONTENT_INTENT
    parent, picture = await drawn(fake, bot)

    await fake.dispatch("MESSAGE_CREATE", bot_reply(fake, picture, "now in red"))
    await asyncio.sleep(0.3)
    assert await job_count(bot.app) == 1  # other bots are ignored

    words = "the same fox in blue"
    ask = await fake.send_message(
        CHANNEL_ID,
        USER_ID,
        words + " --steps 2",  # flags work here too
        guild_id=GUILD_ID,
        reference_message_id=picture.id,
        mentions_bot=True,
    )

    job = await delivered(bot.app, parent.id + 1)
    source = str(bot.app.service.images.resolve(parent.image_paths[0]))
    assert (job.kind, job.request["source_image"]) == ("variation", source)
    assert (job.request["prompt"], job.request["steps"], job.parent_id) == (words, 2, parent.id)
    variation = picture_of(fake, job.id)
    assert variation.reference_message_id == ask.id and variation.content == f"<@{USER_ID}>"
    assert image_size(variation) == image_size(picture)
    # Without an interaction the "queued" answer is a reply; it was only a status message and is gone now.
    [status, sent] = [r for r in fake.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"]
    assert status.json["message_reference"]["message_id"] == ask.id and not status.files and sent.files
    queued = status.json["content"]
    assert queued == t("queued_next", "en", job_id=job.id) or queued.startswith(f"Queued as #{job.id}:")
    assert [m for m in fake.messages_in(CHANNEL_ID) if m.content == queued] == []


async def test_without_message_content_replies_to_pictures_are_ignored(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    [identify] = [op for op in fake.gateway_received if op["op"] == 2]
    assert not identify["d"]["intents"] & MESSAGE_CONTENT_INTENT
    parent, picture = await drawn(fake, bot)

    await fake.send_message(
        CHANNEL_ID, USER_ID, "in blue", guild_id=GUILD_ID, reference_message_id=picture.id, mentions_bot=True
    )
    await asyncio.sleep(0.3)
    assert await job_count(bot.app) == 1
    assert not [r for r in fake.requests if r.method == "POST" and r.path == f"/channels/{CHANNEL_ID}/messages"]
