"""Pictures in and pictures grown, end to end on Telegram (the real PTB adapter and app, the tiny
model, the fake Bot API): Zoom out and Pan under a picture; a photo or image file with /draw words,
or /draw in reply to one; every bad file refused with its message and nothing stored."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bot.language.buttons import Action, button_id
from bot.language.messages import t
from storage.jobs import JobStatus
from tests.support import telegram_harness as harness
from tests.support.pictures import bomb, encoded
from tests.support.telegram_harness import ALICE, BOB, GROUP, answer_after, jobs_of, picture, press, say, settled

tg = harness.tg  # fixtures
easel = harness.easel

# Mean absolute difference (0-255) between the original and the kept part of a grown picture, both
# downscaled to 64 pixels a side.  Inside the seam band (1/32 of a side) the pixels are the
# original's; across it they fade into the drawn ones, which a random-weight model makes far from
# anything (measured on the tiny model: centre 0.0, whole region 3.5-4.0, drawn parts 38-44).
CENTRE_MAD_BOUND = 1.0
REGION_MAD_BOUND = 8.0
DRAWN_MAD_FLOOR = 20.0
MARGIN = 16  # pixels left out around the centre of a 256x256 original (twice the seam band)


def mad(a: Image.Image, b: Image.Image, side: int = 64) -> float:
    small = [
        np.asarray(img.convert("RGB").resize((side, side), Image.Resampling.BOX), dtype=np.float32) for img in (a, b)
    ]
    return float(np.abs(small[0] - small[1]).mean())


async def test_zoom_out_2x_and_pan_right_keep_the_picture(easel, tg):
    app, _ = await easel.start(EASEL_MAX_PENDING=10)
    await say(tg, ALICE, ALICE, "/draw a lighthouse on a cliff --seed 3 --steps 2")
    shown = (await picture(tg, ALICE)).result["message_id"]
    [parent] = await jobs_of(app, ALICE)
    parent = await settled(app, parent.id)
    original = Image.open(app.service.images.resolve(parent.image_paths[0]))
    assert original.size == (256, 256)  # the tiny model's 1024x1024 (a quarter a side)

    grown = {}
    for action in (Action.ZOOM_OUT_2, Action.PAN_RIGHT):
        mark = len(tg.calls)
        answer = await press(tg, ALICE, ALICE, shown, button_id(action, parent.id))
        assert answer.ok
        sent = await picture(tg, ALICE, mark)
        child = max(await app.db.jobs.children(parent.id), key=lambda job: job.id)
        child = await settled(app, child.id)
        assert child.status is JobStatus.DONE and child.kind == "outpaint" and child.parent_id == parent.id
        grown[action] = Image.open(io.BytesIO(tg.message(ALICE, sent.result["message_id"]).photo))

    centre = original.crop((MARGIN, MARGIN, 256 - MARGIN, 256 - MARGIN))
    zoomed = grown[Action.ZOOM_OUT_2]
    assert zoomed.size == (512, 512)
    assert mad(zoomed.crop((128 + MARGIN, 128 + MARGIN, 384 - MARGIN, 384 - MARGIN)), centre) < CENTRE_MAD_BOUND
    assert mad(zoomed.crop((128, 128, 384, 384)), original) < REGION_MAD_BOUND
    # The new border is the model's: far from the original stretched over the whole canvas.
    assert mad(zoomed, original) > DRAWN_MAD_FLOOR

    panned = grown[Action.PAN_RIGHT]
    assert panned.size == (384, 256)
    assert mad(panned.crop((MARGIN, MARGIN, 256 - MARGIN, 256 - MARGIN)), centre) < CENTRE_MAD_BOUND
    assert mad(panned.crop((0, 0, 256, 256)), original) < REGION_MAD_BOUND
    assert mad(panned.crop((128, 0, 384, 256)), original) > DRAWN_MAD_FLOOR


# -- pictures in -------------------------------------------------------------------------------------


def photo_of(size: tuple[int, int]) -> Image.Image:
    image = Image.new("RGB", size, (40, 90, 160))
    image.paste((230, 200, 60), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    return image


def uploads_in(app) -> list:
    return sorted((app.service.images.root / "uploads").rglob("*.png"))


async def test_a_photo_with_draw_words_is_drawn_from_and_show_names_it(easel, tg):
    app, _ = await easel.start()
    mark = len(tg.calls)
    tg.send_user_picture(
        ALICE, ALICE, encoded(photo_of((300, 200))), "/draw a watercolor harbour --strength 0.5 --steps 2"
    )
    queued = await answer_after(tg, ALICE, mark)
    [job] = await jobs_of(app, ALICE)
    assert f"#{job.id}" in queued.params["text"]
    await picture(tg, ALICE, mark)
    job = await settled(app, job.id)
    assert job.status is JobStatus.DONE and job.kind == "variation" and job.parent_id is None
    assert job.request["strength"] == 0.5 and (job.request["width"], job.request["height"]) == (320, 208)  # 3:2
    [stored] = uploads_in(app)
    assert app.service.images.resolve(job.request["source_image"]) == stored and len(tg.downloads) == 1
    show = await say(tg, ALICE, ALICE, f"/show #{job.id}")
    assert t("kind.upload", "en") in show.params["text"]
    # Its buttons work as on any picture: Pan right grows it.
    shown = tg.chat_messages(ALICE)[-2]  # the picture, then the /show answer
    await press(tg, ALICE, ALICE, shown.message_id, button_id(Action.PAN_RIGHT, job.id))
    [child] = await app.db.jobs.children(job.id)
    assert (await settled(app, child.id)).status is JobStatus.DONE


async def test_draw_in_reply_to_a_photo_in_a_group_and_a_plain_caption_only_in_private(easel, tg):
    app, _ = await easel.start()
    photo_id = tg.send_user_picture(GROUP, BOB, encoded(photo_of((200, 300))), "look at my cat", chat_type="supergroup")
    mark = len(tg.calls)
    tg.send_user_message(GROUP, ALICE, "/draw the same cat as a knight --steps 1", chat_type="supergroup",
                         reply_to_message_id=photo_id)  # fmt: skip
    await picture(tg, GROUP, mark)
    [job] = await jobs_of(app, ALICE)
    job = await settled(app, job.id)
    assert job.kind == "variation" and (job.request["width"], job.request["height"]) == (208, 320)  # 2:3
    assert job.request["strength"] == app.service.profile.upload_strength
    assert await jobs_of(app, BOB) == [] and len(uploads_in(app)) == 1

    # In a private chat any caption is the words to draw.
    mark = len(tg.calls)
    tg.send_user_picture(BOB, BOB, encoded(photo_of((64, 64))), "my cat as a statue --steps 1")
    await picture(tg, BOB, mark)
    [own] = await jobs_of(app, BOB)
    assert own.kind == "variation" and own.request["prompt"] == "my cat as a statue"


async def test_each_bad_file_gets_its_message_and_leaves_nothing(easel, tg):
    app, _ = await easel.start()
    frames = [Image.new("RGB", (64, 64), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    cases = [
        ("error.upload_too_big", b"x" * 1000, {"reported_size": 11 * 1024 * 1024}),
        ("error.upload_too_many_pixels", bomb(30000, 30000), {}),
        ("error.upload_not_image", b"MZ\x90\x00 not a picture", {}),
        ("error.upload_not_image", encoded(photo_of((64, 64)), "JPEG")[:300], {}),
    ]
    for key, data, extra in cases:
        mark = len(tg.calls)
        tg.send_user_picture(ALICE, ALICE, data, "/draw anything --steps 1", as_document=True, **extra)
        answer = await answer_after(tg, ALICE, mark)
        assert answer.params["text"].startswith(t(key, "en").split("{")[0][:30]), (key, answer.params["text"])
    assert tg.downloads == ["documents/file_2.bin", "documents/file_3.bin", "documents/file_4.bin"]  # not the big one
    assert await jobs_of(app, ALICE) == [] and uploads_in(app) == []

    # An animated GIF is drawn from its first frame, and the answer says so.
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    mark = len(tg.calls)
    tg.send_user_picture(ALICE, ALICE, gif, "/draw a red square --steps 1", as_document=True, mime_type="image/gif")
    queued = await answer_after(tg, ALICE, mark)
    assert t("upload_first_frame", "en") in queued.params["text"]
    [job] = await jobs_of(app, ALICE)
    assert (await settled(app, job.id)).status is JobStatus.DONE
    with Image.open(uploads_in(app)[0]) as stored:
        assert stored.mode == "RGB" and stored.getpixel((5, 5)) == (255, 0, 0)


async def test_a_file_of_no_reported_size_is_sized_by_get_file_before_it_is_downloaded(easel, tg):
    # A document may come without file_size: getFile's is asked for, and without one nothing is read
    # (a local Bot API server would hand over a file of any size straight into memory).
    app, _ = await easel.start()
    big, small = 11 * 1024 * 1024, encoded(photo_of((64, 64)))
    cases = [
        ("error.upload_too_big", {"file_size": big}),
        ("error.upload_failed", {"file_size": None}),
    ]
    for key, extra in cases:
        mark = len(tg.calls)
        tg.send_user_picture(ALICE, ALICE, small, "/draw anything --steps 1", as_document=True, unsized=True, **extra)
        answer = await answer_after(tg, ALICE, mark)
        assert answer.params["text"].startswith(t(key, "en").split("{")[0][:30]), (key, answer.params["text"])
    assert tg.downloads == [] and await jobs_of(app, ALICE) == [] and uploads_in(app) == []
    # Sized by getFile and small enough: drawn from.
    mark = len(tg.calls)
    tg.send_user_picture(ALICE, ALICE, small, "/draw a cat --steps 1", as_document=True, unsized=True)
    await picture(tg, ALICE, mark)
    assert len(tg.downloads) == 1 and len(uploads_in(app)) == 1
