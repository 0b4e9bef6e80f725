"""The real discord.py Client, CommandTree and persistent Views against tests/fakes/discord_server.py.

These tests pin down both the fake and the discord.py behaviour the adapter relies on: deferral
then follow-up, persistent buttons after a restart, 429 retries, dead tokens, gateway reconnects.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route
from PIL import Image

from tests.fakes.discord_server import FakeDiscord, Recorded

GUILD_ID = 1_200_000_000_000_000_001
CHANNEL_ID = 1_200_000_000_000_000_002
USER_ID = 1_200_000_000_000_000_003
AGAIN_ID = "easel-test:again"
VARY_ID = "easel-test:vary"


def _png_bytes(color: str = "purple") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png_bytes()
PNG_2 = _png_bytes("teal")


class PersistentView(discord.ui.View):
    """Buttons that must keep working after a restart: no timeout, fixed custom_ids."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Again", custom_id=AGAIN_ID)
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        interaction.client.pressed_on.append(interaction.message.id)
        await interaction.response.send_message("again!", ephemeral=True)

    @discord.ui.button(label="Vary", custom_id=VARY_ID)
    async def vary(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()
        await interaction.edit_original_response(content="varied", view=None)


class EaselTestClient(discord.Client):
    def __init__(self) -> None:
        super().__init__(intents=discord.Intents.default(), guild_ready_timeout=0.05)
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(draw)
        self.tree.add_command(inspect)
        self.tree.add_command(gallery)
        self.draw_calls: list[tuple[str, int]] = []
        self.inspected: list[tuple[bytes, int | None, str]] = []
        self.pressed_on: list[int] = []
        self.nsfw_seen: list[bool] = []
        self.galleries: list[discord.WebhookMessage] = []
        self.follow_up_errors: asyncio.Queue[Exception] = asyncio.Queue()
        self.messages_seen: asyncio.Queue[discord.Message] = asyncio.Queue()
        # Tests clear this to hold a command between its deferral and its follow-up.
        self.may_follow_up = asyncio.Event()
        self.may_follow_up.set()

    async def setup_hook(self) -> None:
        self.add_view(PersistentView())

    async def on_message(self, message: discord.Message) -> None:
        await self.messages_seen.put(message)
        if self.user is not None and self.user.mentioned_in(message):
            await message.reply("hello")


@app_commands.command(name="draw", description="Draw a picture")
async def draw(interaction: discord.Interaction, prompt: str, count: app_commands.Range[int, 1, 16] = 1) -> None:
    """Paint a prompt."""
    client: EaselTestClient = interaction.client  # type: ignore[assignment]
    client.draw_calls.append((prompt, count))
    await interaction.response.defer()
    await client.may_follow_up.wait()
    try:
        await interaction.followup.send(file=discord.File(io.BytesIO(PNG), filename="easel.png"), view=PersistentView())
    except discord.HTTPException as error:
        await client.follow_up_errors.put(error)


@app_commands.command(name="inspect", description="Look at an image")
async def inspect(interaction: discord.Interaction, image: discord.Attachment) -> None:
    """Read an uploaded image back from the CDN URL Discord gave us."""
    client: EaselTestClient = interaction.client  # type: ignore[assignment]
    client.inspected.append((await image.read(), image.width, type(interaction.user).__name__))
    await interaction.response.send_message("got it", ephemeral=True)


@app_commands.command(name="gallery", description="Post two pictures")
async def gallery(interaction: discord.Interaction) -> None:
    """Note whether the channel is age-restricted, then follow up with a plain and a spoilered picture."""
    client: EaselTestClient = interaction.client  # type: ignore[assignment]
    client.nsfw_seen.append(interaction.channel.is_nsfw())  # type: ignore[union-attr]
    await interaction.response.defer()
    files = [
        discord.File(io.BytesIO(PNG), filename="easel-1.png"),
        discord.File(io.BytesIO(PNG_2), filename="easel-2.png", spoiler=True, description="a teal square"),
    ]
    client.galleries.append(await interaction.followup.send(files=files, wait=True))


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        with server.patch_discord():
            yield server


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[EaselTestClient]:
    client = EaselTestClient()
    await client.login("fake-bot-token")
    connection = asyncio.create_task(client.connect())
    await asyncio.wait_for(fake.ready.wait(), 5)
    yield client
    await client.close()
    await asyncio.wait_for(connection, 5)


def _is_callback(recorded: Recorded) -> bool:
    return recorded.method == "POST" and recorded.path.endswith("/callback")


async def _run_draw(fake: FakeDiscord, **options: object) -> dict:
    return await fake.send_slash_command(
        "draw", options or {"prompt": "a cat"}, user_id=USER_ID, guild_id=GUILD_ID, channel_id=CHANNEL_ID
    )


def test_discord_internals_canary() -> None:
    """The fake depends on two private class attributes; fail loudly when discord.py moves them."""
    assert discord.version_info[:2] == (2, 7), (
        f"discord.py {discord.__version__}: the fake Discord was checked against 2.7 only; re-read http.py, "
        "gateway.py and webhook/async_.py before bumping"
    )
    assert isinstance(getattr(Route, "BASE", None), str) and Route.BASE.endswith("/api/v10"), (
        "discord.http.Route.BASE moved or changed type; patch_discord() can no longer redirect REST calls"
    )
    assert isinstance(getattr(DiscordWebSocket, "DEFAULT_GATEWAY", None), yarl.URL), (
        "discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY moved or is no longer a yarl.URL; "
        "patch_discord() can no longer redirect the gateway"
    )
    saved = Route.BASE
    Route.BASE = "http://127.0.0.1:1/api/v10"
    try:
        url = Route("GET", "/users/@me").url
    finally:
        Route.BASE = saved
    assert url == "http://127.0.0.1:1/api/v10/users/@me", "Route no longer reads BASE when built; patching is useless"


async def test_rest_answers_use_exact_json_content_type(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session, session.get(fake.api_base + "/users/@me") as response:
        assert response.headers["Content-Type"] == "application/json"
        assert (await response.json())["id"] == str(fake.application_id)


async def test_slash_command_defers_then_follows_up_with_image_and_buttons(
    fake: FakeDiscord, bot: EaselTestClient
) -> None:
    sent_at = time.monotonic()
    interaction = await _run_draw(fake, prompt="a red fox", count=4)

    callback = await fake.wait_for(_is_callback, timeout=3)
    assert callback.at - sent_at < 3
    assert callback.path == f"/interactions/{interaction['id']}/{interaction['token']}/callback"
    assert callback.json["type"] == 5
    assert callback.query.get("with_response") in ("1", "true")
    assert bot.draw_calls == [("a red fox", 4)] and type(bot.draw_calls[0][1]) is int

    follow_up = await fake.wait_for(("POST", f"/webhooks/{fake.application_id}/{interaction['token']}"))
    assert [(f.filename, f.data) for f in follow_up.files] == [("easel.png", PNG)]
    rows = follow_up.json["components"]
    assert len(rows) == 1 and [b["custom_id"] for b in rows[0]["components"]] == [AGAIN_ID, VARY_ID]

    # The first follow-up fills the deferred "thinking..." message instead of adding a second one.
    [message] = fake.messages_in(CHANNEL_ID)
    assert message.custom_ids == [AGAIN_ID, VARY_ID]
    attachment = message.attachments[0]
    assert (attachment.data, attachment.content_type, attachment.width, attachment.height) == (PNG, "image/png", 8, 6)
    assert message.flags == 0


async def test_guild_sync_is_recorded_and_routes_guild_commands(fake: FakeDiscord, bot: EaselTestClient) -> None:
    guild = discord.Object(id=GUILD_ID)
    bot.tree.copy_global_to(guild=guild)

    synced = await bot.tree.sync(guild=guild)

    put = await fake.wait_for(("PUT", f"/applications/{fake.application_id}/guilds/{GUILD_ID}/commands"))
    assert [command["name"] for command in put.json] == ["draw", "inspect", "gallery"]
    assert [command.name for command in synced] == fake.synced_command_names(GUILD_ID) == ["draw", "inspect", "gallery"]
    # Once synced, Discord tags the interaction with the command's guild and the declared option types.
    interaction = await _run_draw(fake, prompt="x", count=2)
    assert interaction["data"]["guild_id"] == str(GUILD_ID)
    assert [o["type"] for o in interaction["data"]["options"]] == [3, 4]
    await fake.wait_for(("POST", "/webhooks/"))
    assert bot.draw_calls == [("x", 2)]


async def test_persistent_view_answers_button_on_message_from_a_previous_run(
    fake: FakeDiscord, bot: EaselTestClient
) -> None:
    row = {"type": 1, "components": [{"type": 2, "style": 2, "label": "Again", "custom_id": AGAIN_ID}]}
    old = fake.add_message(CHANNEL_ID, guild_id=GUILD_ID, content="from before the restart", components=[row])

    await fake.press_button(AGAIN_ID, old.id, user_id=USER_ID)

    callback = await fake.wait_for(_is_callback)
    assert callback.json["type"] == 4
    assert callback.json["data"]["content"] == "again!"
    assert callback.json["data"]["flags"] & discord.MessageFlags.ephemeral.flag
    assert bot.pressed_on == [old.id]
    reply = fake.messages_in(CHANNEL_ID)[-1]
    assert reply.content == "again!" and reply.is_ephemeral


async def test_deferred_update_then_edit_original_changes_the_pressed_message(
    fake: FakeDiscord, bot: EaselTestClient
) -> None:
    await _run_draw(fake)
    await fake.wait_for(("POST", "/webhooks/"))
    [image_message] = fake.messages_in(CHANNEL_ID)

    await fake.press_button(VARY_ID, image_message.id, user_id=USER_ID)

    edit = await fake.wait_for(("PATCH", "/messages/@original"))
    assert edit.status == 200
    assert [r.json["type"] for r in fake.requests if _is_callback(r)] == [5, 6]
    assert (image_message.content, image_message.components) == ("varied", [])


async def test_rate_limited_follow_up_is_retried_and_delivered_once(fake: FakeDiscord, bot: EaselTestClient) -> None:
    fake.fail_next("POST", r"^/webhooks/", 429, retry_after=0.05)

    await _run_draw(fake)

    delivered = await fake.wait_for(lambda r: r.path.startswith("/webhooks/") and r.status == 200)
    attempts = [r.status for r in fake.requests if r.method == "POST" and r.path.startswith("/webhooks/")]
    assert attempts == [429, 200]
    assert delivered.files[0].data == PNG
    assert len(fake.messages_in(CHANNEL_ID)) == 1


async def test_follow_up_with_expired_token_raises_http_exception_50027(
    fake: FakeDiscord, bot: EaselTestClient
) -> None:
    bot.may_follow_up.clear()
    interaction = await _run_draw(fake)
    await fake.wait_for(_is_callback)
    fake.expire_token(interaction["token"])

    bot.may_follow_up.set()
    error = await asyncio.wait_for(bot.follow_up_errors.get(), 5)

    # 401 is neither Forbidden (403) nor NotFound (404): discord.py raises the base class itself.
    assert type(error) is discord.HTTPException
    assert (error.status, error.code) == (401, 50027)


async def test_gateway_close_resumes_and_interactions_still_work(fake: FakeDiscord, bot: EaselTestClient) -> None:
    await fake.close_gateway(4000)
    await asyncio.wait_for(fake.ready.wait(), 10)

    # 4000 is resumable: discord.py RESUMEs on the resume_gateway_url that READY handed out.
    assert (fake.identify_count, fake.resume_count) == (1, 1)
    assert any(op["op"] == 6 and op["path"] == "/resume-gateway" for op in fake.gateway_received)

    await _run_draw(fake, prompt="after reconnect")
    await fake.wait_for(("POST", "/webhooks/"))
    assert bot.draw_calls == [("after reconnect", 1)]


async def test_messages_without_content_intent_are_blank_unless_the_bot_is_mentioned(
    fake: FakeDiscord, bot: EaselTestClient
) -> None:
    await fake.send_message(CHANNEL_ID, USER_ID, "just chatting", guild_id=GUILD_ID)
    plain = await asyncio.wait_for(bot.messages_seen.get(), 5)
    assert plain.content == ""

    mention = await fake.send_message(CHANNEL_ID, USER_ID, "draw me a cat", guild_id=GUILD_ID, mentions_bot=True)
    seen = await asyncio.wait_for(bot.messages_seen.get(), 5)
    assert seen.content.endswith("draw me a cat")

    reply = await fake.wait_for(("POST", f"/channels/{CHANNEL_ID}/messages"))
    assert reply.json["content"] == "hello"
    assert reply.json["message_reference"]["message_id"] == mention.id
    stored = fake.messages_in(CHANNEL_ID)[-1]
    assert (stored.type, stored.reference_message_id) == (19, mention.id)


async def test_dm_command_reads_attachment_option_from_the_fake_cdn(fake: FakeDiscord, bot: EaselTestClient) -> None:
    interaction = await fake.send_slash_command("inspect", {"image": PNG}, user_id=USER_ID, guild_id=None, channel_id=7)

    callback = await fake.wait_for(_is_callback)
    assert "member" not in interaction and interaction["user"]["id"] == str(USER_ID)
    assert callback.json["data"]["content"] == "got it"
    assert bot.inspected == [(PNG, 8, "User")]


async def _run_gallery(fake: FakeDiscord, channel_id: int) -> dict:
    interaction = await fake.send_slash_command("gallery", user_id=USER_ID, guild_id=GUILD_ID, channel_id=channel_id)
    await fake.wait_for(("POST", f"/webhooks/{fake.application_id}/{interaction['token']}"))
    return interaction


async def test_age_restricted_channels_are_nsfw_in_interactions_and_over_rest(
    fake: FakeDiscord, bot: EaselTestClient
) -> None:
    other_channel = CHANNEL_ID + 1
    fake.set_channel_nsfw(CHANNEL_ID, guild_id=GUILD_ID)

    restricted = await _run_gallery(fake, CHANNEL_ID)
    await _run_gallery(fake, other_channel)

    assert restricted["channel"]["nsfw"] is True
    assert bot.nsfw_seen == [True, False]
    assert (await bot.fetch_channel(CHANNEL_ID)).is_nsfw()  # type: ignore[union-attr]
    fake.set_channel_nsfw(CHANNEL_ID, False)
    assert not (await bot.fetch_channel(CHANNEL_ID)).is_nsfw()  # type: ignore[union-attr]


async def test_dm_channels_cannot_be_age_restricted(fake: FakeDiscord, bot: EaselTestClient) -> None:
    await fake.send_slash_command("inspect", {"image": PNG}, user_id=USER_ID, guild_id=None, channel_id=7)

    with pytest.raises(ValueError, match="DM"):
        fake.set_channel_nsfw(7)


async def test_a_follow_up_keeps_several_files_in_order_with_spoilers(fake: FakeDiscord, bot: EaselTestClient) -> None:
    await _run_gallery(fake, CHANNEL_ID)

    follow_up = await fake.wait_for(("POST", "/webhooks/"))
    assert [(f.index, f.filename, f.data) for f in follow_up.files] == [
        (0, "easel-1.png", PNG),
        (1, "SPOILER_easel-2.png", PNG_2),
    ]
    # The deferred "thinking..." message now holds both pictures.
    [message] = fake.messages_in(CHANNEL_ID)
    assert message.filenames == ["easel-1.png", "SPOILER_easel-2.png"]
    assert [(a.data, a.is_spoiler, a.description) for a in message.attachments] == [
        (PNG, False, None),
        (PNG_2, True, "a teal square"),
    ]
    [sent] = bot.galleries
    assert [(a.filename, a.is_spoiler(), a.description) for a in sent.attachments] == [
        ("easel-1.png", False, None),
        ("SPOILER_easel-2.png", True, "a teal square"),
    ]
    assert [a.flags.spoiler for a in sent.attachments] == [False, True]  # IS_SPOILER, as Discord sets it
    assert await sent.attachments[1].read() == PNG_2


async def test_a_channel_message_keeps_several_files_in_order(fake: FakeDiscord, bot: EaselTestClient) -> None:
    channel = bot.get_partial_messageable(CHANNEL_ID, guild_id=GUILD_ID)
    files = [discord.File(io.BytesIO(data), filename=f"{n}.png") for n, data in enumerate([PNG, PNG_2, PNG])]
    files[1].spoiler = True

    sent = await channel.send("three pictures", files=files)

    assert [(a.filename, a.is_spoiler()) for a in sent.attachments] == [
        ("0.png", False),
        ("SPOILER_1.png", True),
        ("2.png", False),
    ]
    [stored] = fake.messages_in(CHANNEL_ID)
    assert stored.filenames == ["0.png", "SPOILER_1.png", "2.png"]
    assert [a.data for a in stored.attachments] == [PNG, PNG_2, PNG]


async def test_more_than_ten_files_are_refused_and_nothing_is_posted(fake: FakeDiscord, bot: EaselTestClient) -> None:
    channel = bot.get_partial_messageable(CHANNEL_ID, guild_id=GUILD_ID)
    files = [discord.File(io.BytesIO(PNG), filename=f"{n}.png") for n in range(11)]

    with pytest.raises(discord.HTTPException) as raised:
        await channel.send(files=files)

    assert (raised.value.status, raised.value.code) == (400, 30015)
    assert fake.messages_in(CHANNEL_ID) == []
