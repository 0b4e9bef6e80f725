"""`--draft` and Enhance: a quick half-size sketch for a quarter of the work units, then the chosen
picture redrawn at full size from it (image to image, its own seed), with the tiny real model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from bot.core.cost import job_cost, request_cost
from bot.core.variations import enhance_request
from bot.language.buttons import Action, button_id
from bot.language.commands import parse_draw_args
from bot.language.messages import t
from engine.engine import Engine
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest, draft_size, seed_for, validate
from engine.tiny import build_pipeline
from tests.support.service import alice, bob, settled, shown_on, started


def test_a_draft_is_half_the_side_in_fewer_steps():
    request = validate(parse_draw_args("a fox --draft", TINY), TINY)
    assert (request.width, request.height, request.steps, request.draft) == (128, 128, TINY.draft_steps, True)
    assert TINY.draft_steps < TINY.default_steps
    wide = parse_draw_args("a fox --ar 3:2 --draft --steps 4", Z_IMAGE_TURBO)
    assert (wide.width, wide.height, wide.steps) == (624, 416, 4)  # 1248x832 -> the 512 class
    assert draft_size(1024, 1024, Z_IMAGE_TURBO) == (512, 512)
    assert draft_size(1344, 576, Z_IMAGE_TURBO) == (672, 288)
    assert not parse_draw_args("a fox", TINY).draft


def test_a_draft_costs_a_quarter_of_its_full_size_picture():
    full = validate(parse_draw_args("a fox --n 4", Z_IMAGE_TURBO), Z_IMAGE_TURBO)
    draft = validate(parse_draw_args("a fox --n 4 --draft", Z_IMAGE_TURBO), Z_IMAGE_TURBO)
    assert request_cost(full) == 4 and request_cost(draft) == 1
    assert request_cost(draft.to_dict()) == 1  # a stored draft (recovery, remote workers) alike
    assert job_cost(512, 512, 6, 1.0, count=1, draft=True) == 1  # never free
    assert job_cost(512, 512, 6, 1.0, count=1) == 1 and job_cost(512, 512, 6, 1.0, count=8, draft=True) == 2


async def test_enhance_on_picture_three_of_a_draft_batch_redraws_it_at_full_size(make_app):
    app, adapter = await started(make_app)
    drafts = await app.service.handle_text(alice(), "/draw a lighthouse on a cliff --draft --n 4 --seed 7", {})
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    batch = adapter.delivered[0]
    ids = [[button for button, _ in row] for row in batch.buttons]
    assert ids[0] == [button_id(Action.ENHANCE, drafts.job_id, i) for i in range(4)]
    assert [label for _, label in batch.buttons[0]] == [t("button.enhance_n", "en", n=n) for n in range(1, 5)]
    await settled(app, drafts.job_id)
    owner = await app.service.user_for(alice())
    assert await app.db.quota.used(owner.id, app.service.today()) == 1  # four drafts: one unit
    with Image.open(batch.image_paths[0]) as first:
        assert first.size == (128, 128) and "Draft: on" in first.text["parameters"]

    pressed = await app.service.press(
        alice(), button_id(Action.ENHANCE, drafts.job_id, 2), {}, message_id=shown_on(drafts.job_id)
    )
    await adapter.wait_until(lambda: len(adapter.delivered) == 2)
    enhanced = await settled(app, pressed.job_id)
    request = DrawRequest.from_dict(enhanced.request)
    assert enhanced.parent_id == drafts.job_id and enhanced.kind == "variation"
    assert (request.width, request.height, request.steps, request.draft) == (256, 256, TINY.default_steps, False)
    assert request.strength == TINY.enhance_strength and enhanced.seed == seed_for(7, 2)
    result = adapter.delivered[1]
    assert not any(b == button_id(Action.ENHANCE, enhanced.id) for row in result.buttons for b, _ in row)

    assert Path(request.source_image).resolve() == Path(batch.image_paths[2]).resolve()  # drawn from draft 3
    with Image.open(result.image_paths[0]) as picture:
        assert picture.size == (256, 256)


@pytest.fixture(scope="module")
def calibrated():
    """The tiny pipeline with its VAE's scaling factor set the way the real model's is: so that
    latents have unit spread (random weights give ~0.12 at 0.3611, and the source of an img2img would
    drown in its noise).  Its random VAE does not round-trip pictures (decode(encode(x)) is as far
    from x as from any other picture), so resemblance is measured on latents."""
    engine = Engine(build_pipeline(), "tiny", TINY, "cpu")
    pipe = engine.pipeline
    pictures = engine.generate(DrawRequest("calibrate", seed=1, count=4, width=128, height=128, steps=4)).images
    with torch.no_grad():
        latents = pipe.vae.encode(torch.cat([pipe.image_processor.preprocess(p) for p in pictures])).latent_dist.mode()
    pipe.vae.register_to_config(scaling_factor=1.0 / float((latents - pipe.vae.config.shift_factor).std()))
    return engine


def encoded(engine, path, size) -> torch.Tensor:
    pipe = engine.pipeline
    with Image.open(path) as image:
        pixels = pipe.image_processor.preprocess(image.convert("RGB").resize(size, Image.Resampling.LANCZOS))
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mode()
    return (latents - pipe.vae.config.shift_factor) * pipe.vae.config.scaling_factor


def test_an_enhanced_draft_is_nearer_its_own_draft_than_another(calibrated, tmp_path, monkeypatch):
    drafts = calibrated.generate(parse_draw_args("a lighthouse on a cliff --draft --n 4 --seed 7", TINY))
    paths = []
    for index, image in enumerate(drafts.images):
        paths.append(tmp_path / f"draft{index}.png")
        image.save(paths[-1])
    base = validate(parse_draw_args("a lighthouse on a cliff --draft --n 4 --seed 7", TINY), TINY)
    parent = SimpleNamespace(seed=7)
    request = enhance_request(base, parent, 2, str(paths[2]), TINY)
    denoised = {}
    original = calibrated._denoise

    def keep(*args, **kwargs):
        denoised["latents"] = original(*args, **kwargs)
        return denoised["latents"]

    monkeypatch.setattr(calibrated, "_denoise", keep)
    calibrated.generate(request)
    distance = [float((denoised["latents"] - encoded(calibrated, path, (256, 256))).abs().mean()) for path in paths]
    assert distance[2] == min(distance) and distance[2] < 0.97 * distance[0]


async def test_a_reply_saying_enhance_is_the_button_typed(make_app):
    app, adapter = await started(make_app)
    drafts = await app.service.handle_text(alice(), "/draw a harbour --draft --n 2 --seed 3", {})
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    replied = await app.service.vary_from_picture(alice(), "#2 enhance", "1", shown_on(drafts.job_id), {}, None)
    zh = await app.service.vary_from_picture(bob(), "增强", "1", shown_on(drafts.job_id), {}, None)
    await adapter.wait_until(lambda: len(adapter.delivered) == 3)
    second = await app.db.jobs.get(replied.job_id)
    first = await app.db.jobs.get(zh.job_id)
    assert second.seed == seed_for(3, 1) and first.seed == 3  # "#2" picks picture 2; a bare reply, picture 1
    for job in (first, second):
        request = DrawRequest.from_dict(job.request)
        assert job.kind == "variation" and (request.width, request.height) == (256, 256)
        assert request.prompt == "a harbour"  # "enhance" is not taken for new words


async def test_enhance_is_only_for_drafts(make_app):
    app, adapter = await started(make_app)
    full = await app.service.handle_text(alice(), "/draw a harbour --seed 3", {})
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    assert not any("enhance" in b for row in adapter.delivered[0].buttons for b, _ in row)
    forged = await app.service.press(
        alice(), button_id(Action.ENHANCE, full.job_id), {}, message_id=shown_on(full.job_id)
    )
    assert forged.text == t("stale_button", "en") and forged.job_id is None
    # Typed under a full-size picture, "enhance" is just words: a variation that says so.
    varied = await app.service.vary_from_picture(alice(), "enhance", "1", shown_on(full.job_id), {}, None)
    assert DrawRequest.from_dict((await app.db.jobs.get(varied.job_id)).request).prompt == "enhance"


async def test_a_draft_rerolled_stays_a_draft_of_the_same_size(make_app):
    app, adapter = await started(make_app)
    drafts = await app.service.handle_text(alice(), "/draw a harbour --draft --seed 3", {})
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    again = await app.service.press(
        alice(), button_id(Action.REROLL, drafts.job_id), {}, message_id=shown_on(drafts.job_id)
    )
    request = DrawRequest.from_dict((await app.db.jobs.get(again.job_id)).request)
    assert request.draft and (request.width, request.height, request.steps) == (128, 128, TINY.draft_steps)
    owner = await app.service.user_for(alice())
    assert await app.db.quota.used(owner.id, app.service.today()) == 2  # a lone draft still costs one unit
    upscaled = await app.service.press(
        alice(), button_id(Action.UPSCALE, drafts.job_id), {}, message_id=shown_on(drafts.job_id)
    )
    request = DrawRequest.from_dict((await app.db.jobs.get(upscaled.job_id)).request)
    assert not request.draft and (request.width, request.height) == (256, 256)  # full size, full price
