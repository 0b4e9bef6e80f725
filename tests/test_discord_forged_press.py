"""Forged and unknown interactions through the real discord.py against the fake Discord: a custom id
is written by the client, so a press naming another channel's job must reveal nothing, create nothing
and delete nothing; an id or a command this bot does not know gets a short private answer within
Discord's 3 seconds instead of "This interaction failed"."""

from __future__ import annotations

from bot.language.buttons import Action, button_id
from bot.language.messages import t
from tests.fakes.discord_server import EPHEMERAL, FakeDiscord
from tests.support.discord_harness import (
    GUILD_ID,
    OTHER_ID,
    USER_ID,
    answer,
    callback_of,
    drawn,
    fake,  # noqa: F401  (fixture)
    job_count,
    start_bot,  # noqa: F401  (fixture)
)

OTHER_CHANNEL = 1_300_000_000_000_000_077
PROMPT = "my very private red fox"


def buttons(*custom_ids: str) -> list[dict]:
    row = [{"type": 2, "custom_id": custom_id, "label": "x", "style": 2} for custom_id in custom_ids]
    return [{"type": 1, "components": row}]


async def test_a_press_naming_another_channels_job_reveals_nothing_creates_nothing_deletes_nothing(
    start_bot,  # noqa: F811
    fake: FakeDiscord,  # noqa: F811
) -> None:
    bot = await start_bot()
    victim, picture = await drawn(fake, bot, prompt=PROMPT)
    jobs_before = await job_count(bot.app)
    actions = (Action.PARAMS, Action.UPSCALE, Action.VARY_SUBTLE, Action.REROLL, Action.DELETE)
    # A bot message in another channel whose buttons name her job (a copy, an old version's post).
    elsewhere = fake.add_message(
        OTHER_CHANNEL, guild_id=GUILD_ID, components=buttons(*(button_id(a, victim.id) for a in actions))
    )
    for action in actions:
        press = await fake.press_button(button_id(action, victim.id), elsewhere.id, user_id=OTHER_ID)
        text = await answer(fake, press)
        assert text == t("stale_button", "en") and PROMPT not in text, action
    # An id the pressed message does not carry at all (the client wrote it): answered, privately.
    mine = fake.add_message(OTHER_CHANNEL, guild_id=GUILD_ID, components=buttons("easel:reroll:999"))
    press = await fake.press_button(button_id(Action.PARAMS, victim.id), mine.id, user_id=OTHER_ID)
    callback = await fake.wait_for(callback_of(press), timeout=3)
    assert callback.json["data"]["content"] == t("stale_button", "en")
    assert callback.json["data"]["flags"] & EPHEMERAL
    # Even the owner's own id pressed from that other message: the buttons live on the picture.
    press = await fake.press_button(button_id(Action.DELETE, victim.id), elsewhere.id, user_id=USER_ID)
    assert await answer(fake, press) == t("stale_button", "en")

    assert await job_count(bot.app) == jobs_before
    assert not fake.message(picture.id).deleted and not fake.message(elsewhere.id).deleted
    assert not (await bot.app.db.jobs.get(victim.id)).deleted
    assert bot.app.service.images.resolve(victim.image_paths[0]).exists()
    # Where it was shown, the same button works.
    press = await fake.press_button(button_id(Action.PARAMS, victim.id), picture.id, user_id=USER_ID)
    assert PROMPT in await answer(fake, press)


async def test_an_unknown_custom_id_or_command_is_answered_privately_not_left_to_fail(
    start_bot,  # noqa: F811
    fake: FakeDiscord,  # noqa: F811
) -> None:
    bot = await start_bot()
    old = fake.add_message(
        OTHER_CHANNEL, guild_id=GUILD_ID, components=buttons("v1:again:12", "something-else", "easel:")
    )

    for custom_id in ("v1:again:12", "something-else", "easel:"):
        press = await fake.press_button(custom_id, old.id, user_id=USER_ID, locale="zh-CN")
        callback = await fake.wait_for(callback_of(press), timeout=3)
        assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL
        assert callback.json["data"]["content"] == t("stale_button", "zh")

    unknown = await fake.send_slash_command(
        "imagine", {"prompt": "a fox"}, user_id=USER_ID, guild_id=GUILD_ID, channel_id=OTHER_CHANNEL
    )
    callback = await fake.wait_for(callback_of(unknown), timeout=3)
    assert callback.json["type"] == 4 and callback.json["data"]["flags"] & EPHEMERAL
    assert callback.json["data"]["content"] == t("unknown_slash_command", "en")
    assert await job_count(bot.app) == 0
    assert await bot.app.db.users.count() == 0  # nobody was made a user by clicking a dead button
