"""One process serving Telegram and Discord at once: one queue, one database, one quota per person
per platform, and fairness across platforms."""

from __future__ import annotations

import asyncio

from bot.adapters.discord import DiscordAdapter
from bot.adapters.telegram import TelegramAdapter
from tests.fakes.discord_server import FakeDiscord
from tests.fakes.telegram_server import FakeTelegram

TOKEN = "123:ABC"
GUILD_ID = 1_300_000_000_000_000_001
CHANNEL_ID = 1_300_000_000_000_000_002
SHARED_ID = 4242  # the same number on both platforms: still two different people


async def delivered_count(app) -> list[int]:
    rows = await app.db.fetch_all("SELECT id FROM jobs WHERE delivered_at IS NOT NULL ORDER BY delivered_at, id")
    return [row["id"] for row in rows]


async def test_one_process_one_queue_fair_across_platforms(make_app):
    async with FakeTelegram(TOKEN) as tg, FakeDiscord() as dc:
        with dc.patch_discord():
            app = await make_app(
                TELEGRAM_TOKEN=TOKEN,
                TELEGRAM_API_URL=tg.base_url,
                DISCORD_TOKEN="x",
                EASEL_DAILY_QUOTA=2,
                EASEL_MAX_PENDING=10,
            )
            telegram = TelegramAdapter(app.service, app.settings, rate_limiter=False, edit_interval=0, poll_timeout=1)
            discord = DiscordAdapter(app.service, app.settings)
            for adapter in (telegram, discord):
                app.service.register(adapter)
            tasks = [asyncio.create_task(telegram.run()), asyncio.create_task(discord.run())]
            try:
                await asyncio.wait_for(telegram.ready.wait(), 10)
                await asyncio.wait_for(dc.ready.wait(), 10)

                # Jobs queue before the dispatcher starts, so the order is decided by fairness alone.
                for i in range(2):
                    tg.send_user_message(SHARED_ID, SHARED_ID, f"/draw telegram picture {i} --steps 2")
                await tg.wait_for("sendMessage", lambda c: c.ok and "#2" in c.params.get("text", ""))
                over_quota = tg.send_user_message(SHARED_ID, SHARED_ID, "/draw one too many --steps 2")
                await tg.wait_for(
                    "sendMessage",
                    lambda c: c.ok and "2" in c.params.get("text", "") and "#" not in c.params.get("text", ""),
                )
                await dc.send_slash_command(
                    "draw",
                    {"prompt": "discord picture", "steps": 2},
                    user_id=SHARED_ID,
                    guild_id=GUILD_ID,
                    channel_id=CHANNEL_ID,
                )

                async def three_jobs():
                    return len(await app.db.fetch_all("SELECT id FROM jobs")) == 3

                for _ in range(500):
                    if await three_jobs():
                        break
                    await asyncio.sleep(0.02)
                jobs = await app.db.fetch_all("SELECT id, platform FROM jobs ORDER BY id")
                assert [row["platform"] for row in jobs] == ["telegram", "telegram", "discord"]
                assert over_quota  # the third Telegram draw was refused by the quota, not queued

                await app.service.start()
                for _ in range(1500):
                    if len(await delivered_count(app)) == 3:
                        break
                    await asyncio.sleep(0.02)
                order = await delivered_count(app)
                discord_job = jobs[2]["id"]
                assert sorted(order) == [row["id"] for row in jobs]
                assert order.index(discord_job) <= 1  # behind at most one Telegram job

                users = await app.db.fetch_all("SELECT platform, platform_id FROM users ORDER BY platform")
                assert [(u["platform"], u["platform_id"]) for u in users] == [
                    ("discord", str(SHARED_ID)),
                    ("telegram", str(SHARED_ID)),
                ]
                photos = [c for c in tg.calls_of("sendPhoto") if c.ok]
                assert len(photos) == 2
                assert any(m.attachments for m in dc.messages_in(CHANNEL_ID))
            finally:
                await telegram.close()
                await discord.close()
                await asyncio.gather(*tasks, return_exceptions=True)
