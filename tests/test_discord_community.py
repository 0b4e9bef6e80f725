"""Community features end to end on Discord: the real discord.py against the fake Discord, the real
app with the tiny model.  Moderation, spoilers and NSFW channels, batches with per-picture buttons,
style presets and the cooldown."""

from __future__ import annotations

import io
import re

from PIL import Image

from bot.language.buttons import Action, button_id
from bot.language.messages import t
from tests.fakes.discord_server import FakeDiscord, StoredMessage
from tests.support import discord_harness as harness
from tests.support.discord_harness import (
    ADMIN_ID,
    CHANNEL_ID,
    GUILD_ID,
    USER_ID,
    answer,
    command,
    delivered,
    draw,
    job_count,
)

fake = harness.fake  # fixtures
start_bot = harness.start_bot

NSFW_CHANNEL_ID = CHANNEL_ID + 10
MANAGER_ID = USER_ID + 100
SEND_MESSAGES, MANAGE_GUILD = 1 << 11, 1 << 5


def message_of(fake: FakeDiscord, job_id: int, channel_id: int = CHANNEL_ID) -> StoredMessage:
    [message] = [
        m for m in fake.messages_in(channel_id) if button_id(Action.REROLL, job_id) in m.custom_ids and not m.deleted
    ]
    return message


async def test_blocked_prompts_are_refused_privately_without_the_word_and_admins_edit_the_list(start_bot, fake):
    bot = await start_bot(EASEL_BLOCKED_WORDS="grimdark", EASEL_STRIKE_LIMIT="10")

    zero_width = await answer(fake, await draw(fake, prompt="a grim\u200bdark castle"))
    full_width = await answer(fake, await draw(fake, prompt="a castle", negative="ｇｒｉｍｄａｒｋ"))
    assert zero_width == full_width == t("blocked_prompt", "en")
    assert await job_count(bot.app) == 0
    assert all(m.is_ephemeral for m in fake.messages_in(CHANNEL_ID))

    fake.set_member_permissions(USER_ID, SEND_MESSAGES)
    refused = await answer(fake, await command(fake, "block", user_id=USER_ID, action="add", term="kraken"))
    assert refused == t("not_admin", "en")
    # A member who may manage the server keeps its lists, without being a bot admin.
    fake.set_member_permissions(MANAGER_ID, SEND_MESSAGES | MANAGE_GUILD)
    managed = await answer(fake, await command(fake, "sensitive", user_id=MANAGER_ID, action="add", term="gore"))
    assert managed == t("wordlist_added", "en", list=t("list.sensitive", "en"), term="gore")
    added = await answer(fake, await command(fake, "block", user_id=ADMIN_ID, action="add", term="Kraken"))
    assert added == t("wordlist_added", "en", list=t("list.blocked", "en"), term="Kraken")
    assert await answer(fake, await draw(fake, prompt="a ｋｒａｋｅｎ at sea")) == t("blocked_prompt", "en")
    listing = await answer(fake, await command(fake, "block", user_id=ADMIN_ID, action="list"))
    assert "Kraken" in listing and "1 more everywhere" in listing
    removed = await answer(fake, await command(fake, "block", user_id=ADMIN_ID, action="remove", term="Kraken"))
    assert removed == t("wordlist_removed", "en", list="blocked words", term="Kraken")
    queued = await answer(fake, await draw(fake, prompt="a kraken at sea"))
    assert queued.startswith(("Queued as #1", "Got it! #1"))
    audit = [(e.action, e.target) for e in await bot.app.db.audit.recent()]
    scope = f"discord:guild:{GUILD_ID}"
    assert audit == [("blocked_remove", scope), ("blocked_add", scope), ("sensitive_add", scope)]


async def test_sensitive_pictures_are_spoilers_and_only_drawn_in_nsfw_channels(start_bot, fake):
    bot = await start_bot(EASEL_SENSITIVE_WORDS="swimsuit", EASEL_NSFW_CHANNELS_ONLY="true")
    fake.set_channel_nsfw(NSFW_CHANNEL_ID)

    refused = await answer(fake, await draw(fake, prompt="a cat in a swimsuit"))
    assert refused == t("sensitive_nsfw_only", "en") and await job_count(bot.app) == 0

    await fake.send_slash_command(
        "draw",
        {"prompt": "a cat in a swimsuit", "steps": 1},
        user_id=USER_ID,
        guild_id=GUILD_ID,
        channel_id=NSFW_CHANNEL_ID,
    )
    job = await delivered(bot.app, 1)
    assert job.sensitive
    picture = message_of(fake, job.id, NSFW_CHANNEL_ID)
    [attachment] = picture.attachments
    assert attachment.filename.startswith("SPOILER_easel-1")
    [embed] = picture.embeds
    assert "image" not in embed and t("spoiler_note", "en") in embed["description"]


async def test_a_batch_of_four_arrives_in_one_message_with_working_per_picture_buttons(start_bot, fake):
    bot = await start_bot(EASEL_DAILY_QUOTA="10", EASEL_DISCORD_MESSAGE_CONTENT="true")
    app = bot.app

    await draw(fake, prompt="a lighthouse", count=4, seed=50, steps=1)
    job = await delivered(app, 1)
    picture = message_of(fake, job.id)
    assert [a.filename for a in picture.attachments] == [f"easel-1-{i}.png" for i in range(1, 5)]
    assert [a.data for a in picture.attachments] == [
        app.service.images.resolve(path).read_bytes() for path in job.image_paths
    ]
    expected = [button_id(Action.UPSCALE, 1, i) for i in range(4)] + [
        button_id(Action.VARY_STRONG, 1, i) for i in range(4)
    ]
    expected += [button_id(action, 1) for action in (Action.REROLL, Action.PARAMS, Action.DELETE)]
    assert picture.custom_ids == expected
    labels = [c["label"] for row in picture.components for c in row["components"]]
    assert labels[:8] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"]
    user = await app.db.users.find("discord", str(USER_ID))
    assert await app.db.quota.used(user.id, app.service.today()) == 4

    await fake.press_button(button_id(Action.UPSCALE, 1, 1), picture.id, user_id=USER_ID)
    upscale = await delivered(app, 2)
    assert upscale.parent_id == 1 and upscale.seed == 51 and upscale.kind == "upscale"
    assert upscale.request["source_image"] == str(app.service.images.resolve(job.image_paths[1]))
    [big] = message_of(fake, 2).attachments
    with Image.open(io.BytesIO(big.data)) as image:
        assert image.size == (512, 512)
    await fake.press_button(button_id(Action.VARY_STRONG, 1, 3), picture.id, user_id=USER_ID)
    variation = await delivered(app, 3)
    assert variation.request["source_image"] == str(app.service.images.resolve(job.image_paths[3]))
    assert await app.db.quota.used(user.id, app.service.today()) == 6

    # A reply to the gallery names its picture with "#k"; without it, the first.
    await fake.send_message(
        CHANNEL_ID, USER_ID, "#3 at night", guild_id=GUILD_ID, reference_message_id=picture.id, mentions_bot=True
    )
    third = await delivered(app, 4)
    assert third.request["source_image"] == str(app.service.images.resolve(job.image_paths[2]))
    assert third.request["prompt"] == "at night" and third.parent_id == 1
    await fake.send_message(
        CHANNEL_ID, USER_ID, "#9 lives", guild_id=GUILD_ID, reference_message_id=picture.id, mentions_bot=True
    )
    first = await delivered(app, 5)  # no ninth picture: words like any other
    assert first.request["source_image"] == str(app.service.images.resolve(job.image_paths[0]))
    assert first.request["prompt"] == "#9 lives"

    press = await fake.press_button(button_id(Action.DELETE, 1), picture.id, user_id=USER_ID)
    assert await answer(fake, press) == t("deleted", "en")
    assert fake.message(picture.id).deleted


async def test_a_style_option_changes_the_prompt_the_engine_receives(start_bot, fake):
    bot = await start_bot()
    await draw(fake, prompt="a crane over a lake", style="watercolor", steps=1)
    job = await delivered(bot.app, 1)
    template = bot.app.service.styles.get("watercolor").prompt
    assert job.request["prompt"] == template.replace("{prompt}", "a crane over a lake")
    with Image.open(bot.app.service.images.resolve(job.image_paths[0])) as image:
        assert image.text["parameters"].startswith("watercolor painting of a crane over a lake")
    styles = await answer(fake, await command(fake, "styles"))
    assert styles.startswith(t("styles_header", "en")) and "cinematic" in styles


async def test_cooldown_refuses_a_fast_second_request_with_the_wait(start_bot, fake):
    bot = await start_bot(EASEL_COOLDOWN_S="120")
    first = await answer(fake, await draw(fake, prompt="a fox", steps=1))
    second = await answer(fake, await draw(fake, prompt="an owl", steps=1))
    assert first.startswith(("Queued as #1", "Got it! #1"))
    assert re.fullmatch(r"Please wait (1m5[0-9]|2m00)s before your next drawing\.", second)
    assert await job_count(bot.app) == 1


async def test_a_batch_shares_one_messages_upload_budget(start_bot, fake, monkeypatch):
    from bot.adapters.discord import adapter as discord_adapter

    budget = 200_000
    monkeypatch.setattr(discord_adapter, "MESSAGE_UPLOAD_BUDGET", budget)
    bot = await start_bot()
    await draw(fake, prompt="a busy market street, tiny details everywhere", count=4, steps=1, limit=100_000)
    job = await delivered(bot.app, 1)
    originals = [bot.app.service.images.resolve(path).stat().st_size for path in job.image_paths]
    assert sum(originals) > budget  # the test means something only if the PNGs did not fit together
    attachments = message_of(fake, job.id).attachments
    assert len(attachments) == 4 and all(len(a.data) <= budget // 4 for a in attachments)
    assert t("oversize_note", "en") in message_of(fake, job.id).embeds[0]["description"]
