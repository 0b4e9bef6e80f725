"""LoRA end to end on Discord: the real discord.py adapter against the fake Discord, the real app with
the tiny model and tiny random LoRAs in EASEL_LORA_DIR: /draw's `lora` option, its autocomplete, /loras."""

from __future__ import annotations

import time

import pytest

from bot.language.buttons import Action, button_id
from bot.language.messages import t
from engine.metadata import read_parameters
from tests.fakes.discord_server import FakeDiscord
from tests.support import discord_harness as harness
from tests.support.discord_harness import ADMIN_ID, CHANNEL_ID, GUILD_ID, USER_ID, ZH_ID, answer, command, drawn
from tests.support.loras import installed_loras

fake = harness.fake  # fixtures
start_bot = harness.start_bot


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_model_dir):
    return installed_loras(tmp_path_factory.mktemp("loras"), tiny_model_dir, {"pink-noise": None})


@pytest.fixture(scope="module")
def engine(tiny_model_dir, lora_dir):
    """This module's app draws with an engine of its own, its LoRAs installed (the shared one has none)."""
    from engine.engine import Engine

    engine = Engine.load(tiny_model_dir, device="cpu")
    engine.install_loras(str(lora_dir), max_mb=5)
    return engine


async def complete(fake: FakeDiscord, typed: str, **options: object) -> list[dict]:
    return await fake.send_autocomplete(
        "draw",
        {"prompt": "a fox", **options, "lora": typed},
        "lora",
        user_id=USER_ID,
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
    )


async def test_draw_with_the_lora_option_delivers_and_params_name_it(start_bot, fake: FakeDiscord, lora_dir) -> None:
    bot = await start_bot(EASEL_LORA_DIR=str(lora_dir))
    job, picture = await drawn(fake, bot, prompt="a red fox", lora="ink:0.8", seed=5)
    assert [tuple(pair) for pair in job.request["loras"]] == [("ink", 0.8)]
    assert "<lora:ink:0.8>" in read_parameters(bot.app.settings.images_dir / job.image_paths[0]).splitlines()[0]
    press = await fake.press_button(button_id(Action.PARAMS, job.id), picture.id, user_id=USER_ID)
    assert t("params_loras", "en", loras="<lora:ink:0.8>") in await answer(fake, press)

    job, _ = await drawn(fake, bot, prompt="a boat", lora="neon-glow")  # no weight: the LoRA's default
    assert [tuple(pair) for pair in job.request["loras"]] == [("neon-glow", 1.0)]


async def test_the_lora_option_autocompletes_the_installed_names(start_bot, fake: FakeDiscord, lora_dir) -> None:
    await start_bot(EASEL_LORA_DIR=str(lora_dir))
    [draw] = [c for c in fake.commands[GUILD_ID if GUILD_ID in fake.commands else None] if c["name"] == "draw"]
    [option] = [o for o in draw["options"] if o["name"] == "lora"]
    assert option["autocomplete"] and option["description_localizations"]["zh-CN"] == t("slash.draw.lora", "zh")

    started = time.monotonic()
    assert [c["value"] for c in await complete(fake, "")] == ["ink", "neon-glow", "pink-noise"]
    assert time.monotonic() - started < 3
    assert [c["value"] for c in await complete(fake, "in")] == ["ink", "pink-noise"]  # prefix matches first
    assert [c["value"] for c in await complete(fake, "NEON:0.5")] == ["neon-glow:0.5"]
    assert await complete(fake, "nothing-like-it") == []
    assert "broken" not in {c["value"] for c in await complete(fake, "")}


async def test_autocomplete_answers_empty_rather_than_failing(start_bot, fake: FakeDiscord, lora_dir, caplog) -> None:
    bot = await start_bot(EASEL_LORA_DIR=str(lora_dir))
    bot.app.service.loras = object()  # whatever goes wrong in there, Discord gets an answer
    assert await complete(fake, "in") == []
    assert "LoRA autocomplete failed" in caplog.text


async def test_loras_lists_the_installed_ones(start_bot, fake: FakeDiscord, lora_dir) -> None:
    await start_bot(EASEL_LORA_DIR=str(lora_dir))
    listing = await answer(fake, await command(fake, "loras"))
    assert listing.splitlines()[0] == t("loras_header", "en")
    assert t("loras_line", "en", name="ink", description="bold ink lines", triggers="inked", weight="0.7") in listing
    assert "neon-glow" in listing and "broken" not in listing
    chinese = await answer(fake, await command(fake, "loras", user_id=ZH_ID, locale="zh-CN"))
    assert chinese.splitlines()[0] == t("loras_header", "zh")


async def test_lora_reload_is_an_admin_slash_command(start_bot, fake: FakeDiscord, lora_dir) -> None:
    await start_bot(EASEL_LORA_DIR=str(lora_dir))
    [lora] = [c for c in fake.commands[GUILD_ID if GUILD_ID in fake.commands else None] if c["name"] == "lora"]
    assert lora["description_localizations"]["zh-CN"] == t("slash.lora", "zh")
    assert await answer(fake, await command(fake, "lora", action="reload")) == t("not_admin", "en")
    reloaded = await answer(fake, await command(fake, "lora", user_id=ADMIN_ID, action="reload"))
    assert reloaded.splitlines()[0] == t("lora_reloaded", "en", count=3, names="ink, neon-glow, pink-noise")
    assert "broken.safetensors · not a readable safetensors file" in reloaded
