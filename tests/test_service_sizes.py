"""Sizes a button press asks for: "Upscale" doubles every official size exactly, and Vary (button
or a reply) of an upscaled picture is scaled back into what a new picture may be, instead of
"too big".  The tiny model's profile keeps the same rules with sides a quarter as long."""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from bot.core.variations import upscaled_size
from bot.language.buttons import Action, button_id
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest, Kind, fit_size, validate
from storage.jobs import JobStatus
from tests.support.service import alice, settled, shown_on, started


async def press(app, action: Action, job_id: int):
    reply = await app.service.press(alice(), button_id(action, job_id), {"chat_id": "1"}, message_id=shown_on(job_id))
    assert reply.job_id is not None, reply.text
    return reply.job_id


async def test_upscale_is_2x_and_vary_of_the_upscaled_picture_works(make_app):
    app, adapter = await started(make_app)
    first = await app.service.handle_text(alice(), "/draw a harbour --ar 3:2 --steps 1 --seed 3", {"chat_id": "1"})
    parent = await settled(app, first.job_id)
    with Image.open(app.service.images.resolve(parent.image_paths[0])) as image:
        assert image.size == (320, 208)

    # 1. Upscale: exactly twice each side, past max_side/max_pixels of a new picture (640 > 512)
    upscaled = await settled(app, await press(app, Action.UPSCALE, parent.id))
    assert upscaled.status is JobStatus.DONE and upscaled.kind == "upscale"
    with Image.open(app.service.images.resolve(upscaled.image_paths[0])) as image:
        assert image.size == (640, 416)

    # 2. Vary (both buttons) of the upscaled picture: scaled into a new picture's bounds, same shape
    for action in (Action.VARY_SUBTLE, Action.VARY_STRONG):
        varied = await settled(app, await press(app, action, upscaled.id))
        assert varied.status is JobStatus.DONE, varied.error_key
        assert (varied.request["width"], varied.request["height"]) == (512, 320)
        with Image.open(app.service.images.resolve(varied.image_paths[0])) as image:
            assert image.size == (512, 320)

    # 3. A reply with new words to the upscaled picture: a variation too, of the same fitted size
    reply = await app.service.vary_from_picture(
        alice(), "the harbour at night --steps 1", "1", shown_on(upscaled.id), {"chat_id": "1"}, None
    )
    assert reply is not None and reply.job_id is not None, reply and reply.text
    child = await settled(app, reply.job_id)
    assert child.status is JobStatus.DONE and child.kind == "variation" and child.parent_id == upscaled.id
    assert (child.request["width"], child.request["height"]) == (512, 320)
    assert not adapter.failures


@pytest.mark.parametrize("profile", [Z_IMAGE_TURBO, TINY], ids=lambda p: p.name)
def test_every_official_size_upscales_exactly_2x_and_validates(profile):
    for ratio, (width, height) in profile.aspect_ratios.items():
        up = upscaled_size(width, height, profile)
        assert up == (2 * width, 2 * height), ratio
        request = DrawRequest("x", width=up[0], height=up[1], kind=Kind.UPSCALE, source_image="s.png")
        validate(request, profile)  # raises if the engine would refuse it
        varied = fit_size(*up, profile)
        validate(replace(request, kind=Kind.VARIATION, width=varied[0], height=varied[1]), profile)


def test_a_source_too_big_to_double_is_upscaled_as_far_as_allowed():
    width, height = upscaled_size(1536, 1536, Z_IMAGE_TURBO)
    assert (width, height) == (2048, 2048)  # 1.33x: the pixel budget, shown in the caption's size
    validate(DrawRequest("x", width=width, height=height, kind=Kind.UPSCALE, source_image="s.png"), Z_IMAGE_TURBO)
    assert upscaled_size(2048, 2048, Z_IMAGE_TURBO) == (2048, 2048)


@pytest.mark.parametrize(
    ("size", "fitted"), [((2048, 2048), (1536, 1536)), ((2496, 1664), (1872, 1248)), ((1024, 768), (1024, 768))]
)
def test_fit_size_keeps_the_shape_and_never_grows(size, fitted):
    assert fit_size(*size, Z_IMAGE_TURBO) == fitted
