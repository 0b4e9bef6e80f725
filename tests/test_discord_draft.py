"""`--chaos` and `--draft` as Discord /draw options, and Enhance pressed on Discord: the real app behind
the real discord.py client and the fake Discord (tests/fakes/discord_server.py)."""

from __future__ import annotations

from bot.language.buttons import Action, button_id
from engine.request import TINY
from tests.fakes.discord_server import FakeDiscord
from tests.support import discord_harness as harness
from tests.support.discord_harness import USER_ID, child, drawn, image_size, picture_of

fake = harness.fake  # fixtures
start_bot = harness.start_bot


async def test_a_draft_with_chaos_from_slash_options_is_enhanced_by_its_button(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    draft, picture = await drawn(fake, bot, prompt="a harbour at dawn", seed=5, chaos=60, draft=True)
    assert draft.request["draft"] and draft.request["chaos"] == 60
    assert image_size(picture) == (128, 128)
    assert picture.custom_ids[0] == button_id(Action.ENHANCE, draft.id)

    await fake.press_button(button_id(Action.ENHANCE, draft.id), picture.id, user_id=USER_ID)
    enhanced = await child(bot.app, draft.id, 1)
    assert enhanced.kind == "variation" and enhanced.seed == 5
    assert enhanced.request["chaos"] == 60 and not enhanced.request["draft"]
    assert enhanced.request["strength"] == TINY.enhance_strength
    full = picture_of(fake, enhanced.id)
    assert image_size(full) == (256, 256) and button_id(Action.ENHANCE, enhanced.id) not in full.custom_ids


async def test_chaos_and_draft_are_synced_options_with_their_range(start_bot, fake: FakeDiscord) -> None:
    await start_bot(DISCORD_GUILD_IDS="111")
    draw_command = next(c for c in fake.commands[111] if c["name"] == "draw")
    options = {o["name"]: o for o in draw_command["options"]}
    assert (options["chaos"]["min_value"], options["chaos"]["max_value"]) == (0, 100)
    assert options["draft"]["type"] == 5 and not options["draft"]["required"]  # a boolean
