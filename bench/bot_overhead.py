"""The bot's own overhead, end to end through the fake Telegram server: time from a user's /draw
to the photo arriving, minus the engine's time for that job.  Target: < 50 ms median.

    python bench/bot_overhead.py [--jobs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

from bot.adapters.telegram import TelegramAdapter  # noqa: E402
from bot.runtime.app import build_app  # noqa: E402
from bot.runtime.settings import Settings  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.tiny import write_tiny_model  # noqa: E402
from tests.fakes.telegram_server import FakeTelegram  # noqa: E402

TOKEN = "123:ABC"


async def run(jobs: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        model = str(write_tiny_model(Path(directory) / "tiny"))
        engine = Engine.load(model, device="cpu")
        async with FakeTelegram(TOKEN) as tg:
            settings = Settings(
                _env_file=None,
                TELEGRAM_TOKEN=TOKEN,
                TELEGRAM_API_URL=tg.base_url,
                EASEL_MODEL=model,
                EASEL_DATA_DIR=str(Path(directory) / "data"),
                EASEL_DAILY_QUOTA=0,
                EASEL_LOG_LEVEL="WARNING",
            )
            app = await build_app(settings, factory=lambda: engine)
            adapter = TelegramAdapter(app.service, settings, rate_limiter=False, edit_interval=0, poll_timeout=1)
            app.service.register(adapter)
            runner = asyncio.create_task(adapter.run())
            await asyncio.wait_for(adapter.ready.wait(), 10)
            await app.service.start()

            overheads, totals = [], []
            for i in range(jobs + 2):
                photos_before = len(tg.calls_of("sendPhoto"))
                started = time.perf_counter()
                tg.send_user_message(1000 + i, 1000 + i, f"/draw picture {i} --steps 2 --size 128x128 --seed {i}")
                await tg.wait_for("sendPhoto", lambda call, n=photos_before: call.ok and call.index >= 0, timeout=30)
                while len([c for c in tg.calls_of("sendPhoto") if c.ok]) <= photos_before:
                    await asyncio.sleep(0.001)
                elapsed = time.perf_counter() - started
                job = (await app.db.jobs.list_for_user((await app.db.users.find("telegram", str(1000 + i))).id, 0))[0][
                    0
                ]
                engine_seconds = job.timings["total"]
                if i >= 2:  # the first two warm caches and connections
                    totals.append(elapsed)
                    overheads.append(elapsed - engine_seconds)
            await adapter.close()
            await runner
            await app.stop()

    print(f"bot overhead through the fake Telegram server, {jobs} jobs, tiny model 128x128, 2 steps")
    print(f"{'':<26}{'median ms':>10}{'p90 ms':>10}")
    for name, values in (("/draw -> photo", totals), ("minus engine time", overheads)):
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        print(f"{name:<26}{statistics.median(values) * 1000:>10.1f}{p90 * 1000:>10.1f}")
    print(f"bot overhead median: {statistics.median(overheads) * 1000:.1f} ms (target < 50 ms)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    asyncio.run(run(parser.parse_args().jobs))


if __name__ == "__main__":
    main()
