"""Pictures in and pictures grown, end to end on Discord (the real discord.py adapter and app, the
tiny model, the fake Discord): /draw's image option with --strength, an image in a message that
mentions the bot, bad files refused before or after the download with nothing stored, and Zoom out
under a picture drawn from an upload."""

from __future__ import annotations

from PIL import Image

from bot.language.buttons import Action, button_id
from bot.language.messages import t
from storage.jobs import JobStatus
from tests.fakes.discord_server import FakeDiscord, UserFile
from tests.support import discord_harness as harness
from tests.support.discord_harness import (
    CHANNEL_ID,
    GUILD_ID,
    USER_ID,
    answer,
    child,
    delivered,
    draw,
    image_size,
    job_count,
    picture_of,
)
from tests.support.pictures import bomb, encoded

fake = harness.fake  # fixtures
start_bot = harness.start_bot


def photo_of(size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, (40, 90, 160))
    image.paste((230, 200, 60), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image


def uploads_in(app) -> list:
    return sorted((app.service.images.root / "uploads").rglob("*.png"))


async def test_draw_with_an_image_and_strength_then_zoom_out(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    await draw(fake, prompt="a watercolor harbour", image=encoded(photo_of((300, 200))), strength=0.5)
    job = await delivered(bot.app, 1)
    assert job.status is JobStatus.DONE and job.kind == "variation" and job.parent_id is None
    assert job.request["strength"] == 0.5 and (job.request["width"], job.request["height"]) == (320, 208)
    [stored] = uploads_in(bot.app)
    assert bot.app.service.images.resolve(job.request["source_image"]) == stored and len(fake.downloads) == 1
    picture = picture_of(fake, job.id)
    assert button_id(Action.ZOOM_OUT_1_5, job.id) in picture.custom_ids

    await fake.press_button(button_id(Action.ZOOM_OUT_1_5, job.id), picture.id, user_id=USER_ID)
    zoomed = await child(bot.app, job.id)
    assert zoomed.kind == "outpaint" and zoomed.status is JobStatus.DONE
    assert image_size(picture_of(fake, zoomed.id)) == (480, 304)  # 1.5x of 320x208, in multiples of 16


async def test_each_bad_attachment_gets_its_message_and_leaves_nothing(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot()
    cases = [
        ("error.upload_too_big", UserFile(b"x" * 100, "big.png", reported_size=11 * 1024 * 1024)),
        ("error.upload_too_many_pixels", UserFile(bomb(), "bomb.png")),
        ("error.upload_not_image", UserFile(b"GIF89a but not really", "fake.gif")),
        ("error.upload_not_image", UserFile(encoded(photo_of((64, 64)), "JPEG")[:300], "cut.jpg")),
    ]
    for key, file in cases:
        said = await answer(fake, await draw(fake, image=file))
        assert said.startswith(t(key, "en").split("{")[0][:30]), (key, said)
    assert len(fake.downloads) == 3  # every file but the one reported too big
    assert await job_count(bot.app) == 0 and uploads_in(bot.app) == []


async def test_a_message_mentioning_the_bot_with_an_image_draws_from_it(start_bot, fake: FakeDiscord) -> None:
    bot = await start_bot(EASEL_DISCORD_MESSAGE_CONTENT="true")
    await fake.send_message(
        CHANNEL_ID, USER_ID, "a knight --steps 1", guild_id=GUILD_ID, mentions_bot=True,
        files=[UserFile(encoded(photo_of((200, 300))), "cat.png")],
    )  # fmt: skip
    job = await delivered(bot.app, 1)
    assert job.kind == "variation" and (job.request["width"], job.request["height"]) == (208, 320)
    assert job.request["prompt"] == "a knight" and len(uploads_in(bot.app)) == 1
