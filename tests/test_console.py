"""The local console against the real service: lines in, pictures' paths out; and no job queued that
this machine can never draw."""

from __future__ import annotations

import io

from bot.adapters.console import ConsoleAdapter
from bot.language.messages import t
from bot.runtime.app import build_app


async def run_console(app, lines: str) -> str:
    out = io.StringIO()
    console = ConsoleAdapter(app.service, stdin=io.StringIO(lines), stdout=out)
    app.service.register(console)
    await app.service.start()
    await console.run()
    return out.getvalue()


async def test_a_draw_prints_where_the_picture_is(make_app):
    app = await make_app()
    text = await run_console(app, "/draw a small fox --steps 1 --size 128x128\n")
    path = next(line.split("-> ", 1)[1] for line in text.splitlines() if "-> " in line)
    assert path.endswith(".png") and (await app.db.jobs.get(1)).delivered_at


async def test_the_full_model_without_a_gpu_is_refused_up_front_not_queued(make_settings):
    # The real model id on the CPU: the engine would refuse to load it, so no job may wait for it.
    app = await build_app(make_settings(EASEL_MODEL="Tongyi-MAI/Z-Image-Turbo", EASEL_DEVICE="cpu"))
    try:
        text = await run_console(app, "/draw a fox\n")
        assert t("console_no_gpu_hint", "en") in text
        assert t("error.needs_gpu", "en") in text
        assert sum((await app.db.jobs.counts_by_status()).values()) == 0
    finally:
        await app.stop()
