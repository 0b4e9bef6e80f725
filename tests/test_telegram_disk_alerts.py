"""The disk guard tells the admins once per episode, end to end on Telegram: the disk goes low -> each
admin gets one private message in their language; more refusals say nothing new; space returns -> one
"drawing resumed" message."""

from __future__ import annotations

import asyncio

from bot.language.messages import t
from tests.support import telegram_harness as harness
from tests.support.telegram_harness import ADMIN, ALICE, say, until

tg = harness.tg  # fixtures
easel = harness.easel


def set_free(app, gb: float) -> None:
    app.service.disk._measure = lambda path: gb  # what statvfs would say (as tests/test_disk_guard.py)
    app.service.disk.forget()


def to_admin(tg) -> list[str]:
    return [c.params["text"] for c in tg.calls_of("sendMessage") if c.ok and c.params["chat_id"] == ADMIN]


async def test_admins_are_told_once_when_the_disk_goes_low_and_once_when_it_comes_back(easel, tg):
    app, _ = await easel.start(EASEL_MIN_FREE_GB="5")
    await app.db.users.get_or_create("telegram", str(ADMIN), "Admin", "zh")  # the admin reads Chinese

    assert (await say(tg, ALICE, ALICE, "/draw a fox --size 64x64 --steps 1")).ok
    assert to_admin(tg) == []  # plenty of room: nothing to say

    set_free(app, 1.5)
    refused = await say(tg, ALICE, ALICE, "/draw a cat --size 64x64 --steps 1")
    assert refused.params["text"] == t("disk_full", "en")
    low = t("admin_disk_low", "zh", free="1.5", guard="5")
    await until(lambda: _async(to_admin(tg) == [low]))
    assert "easel prune" in low

    set_free(app, 1.2)
    again = await say(tg, ALICE, ALICE, "/draw a dog --size 64x64 --steps 1")
    assert again.params["text"] == t("disk_full", "en")
    await asyncio.sleep(0.3)
    assert to_admin(tg) == [low]  # the same episode: not again

    set_free(app, 50)
    resumed = await say(tg, ALICE, ALICE, "/draw an owl --size 64x64 --steps 1")
    assert resumed.params["text"] != t("disk_full", "en")
    back = t("admin_disk_back", "zh", free="50.0", guard="5")
    await until(lambda: _async(to_admin(tg) == [low, back]))
    await asyncio.sleep(0.3)
    assert to_admin(tg) == [low, back]


async def test_an_admin_who_cannot_be_reached_never_stops_the_refusal(easel, tg, caplog):
    app, _ = await easel.start(EASEL_MIN_FREE_GB="5", EASEL_ADMINS=f"telegram:{ADMIN},telegram:not-a-number")
    set_free(app, 1.0)
    refused = await say(tg, ALICE, ALICE, "/draw a cat --size 64x64 --steps 1")
    assert refused.params["text"] == t("disk_full", "en")
    await until(lambda: _async(len(to_admin(tg)) == 1))  # the reachable admin still hears it
    await until(lambda: _async(any("not-a-number" in r.getMessage() for r in caplog.records)))


async def _async(value: bool) -> bool:
    return value
