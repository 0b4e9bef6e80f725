"""The disk guard's word to the admins on Discord: a direct message, once per episode."""

from __future__ import annotations

import asyncio

from bot.language.messages import t
from tests.support import discord_harness as harness
from tests.support.discord_harness import ADMIN_ID, draw, until

fake = harness.fake  # fixtures
start_bot = harness.start_bot


def set_free(app, gb: float) -> None:
    app.service.disk._measure = lambda path: gb  # what statvfs would say (as tests/test_disk_guard.py)
    app.service.disk.forget()


async def test_the_admin_gets_one_direct_message_per_episode(fake, start_bot):
    bot = await start_bot(EASEL_MIN_FREE_GB="5")
    dm = ADMIN_ID + 1  # the fake's DM channel with a user

    def told() -> list[str]:
        return [m.content for m in fake.messages_in(dm)]

    set_free(bot.app, 1.5)
    await draw(fake, prompt="a cat")
    await draw(fake, prompt="a dog")
    low = t("admin_disk_low", "en", free="1.5", guard="5")

    async def low_told():
        return told() == [low]

    await until(low_told)
    set_free(bot.app, 50)
    await draw(fake, prompt="an owl")
    back = t("admin_disk_back", "en", free="50.0", guard="5")

    async def back_told():
        return told() == [low, back]

    await until(back_told)
    await asyncio.sleep(0.3)
    assert told() == [low, back]
