"""Outpainting with the tiny real model: Zoom out and Pan keep the picture, share the weights, stop
on cancel; the canvas geometry is pure."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from engine.errors import Cancelled, InvalidRequest
from engine.outpaint import Grow, layout, overlap
from engine.planner import Placement
from engine.request import TINY, Z_IMAGE_TURBO, DrawRequest, Kind
from tests.support.pipeline import transformer_fault

CENTRE_MAD_BOUND = 2.0  # mean absolute difference, 0-255 scale, of the picture's middle after outpaint


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def inner(image: Image.Image, region: tuple[int, int, int, int]) -> Image.Image:
    """The part of the region the seam band leaves untouched."""
    x, y, w, h = region
    band = overlap(region)
    return image.crop((x + band, y + band, x + w - band, y + h - band))


def test_layout_zoom_and_pan_on_the_official_sizes():
    assert layout(1024, 1024, Grow.ZOOM_2, Z_IMAGE_TURBO) == (1536, 1536, (384, 384, 768, 768))
    assert layout(1024, 1024, Grow.ZOOM_1_5, Z_IMAGE_TURBO) == (1536, 1536, (256, 256, 1024, 1024))
    assert layout(1024, 1024, Grow.RIGHT, Z_IMAGE_TURBO) == (1536, 1024, (0, 0, 1024, 1024))
    assert layout(1024, 1024, Grow.LEFT, Z_IMAGE_TURBO) == (1536, 1024, (512, 0, 1024, 1024))
    assert layout(1024, 1024, Grow.UP, Z_IMAGE_TURBO) == (1024, 1536, (0, 512, 1024, 1024))
    assert layout(1024, 1024, Grow.DOWN, Z_IMAGE_TURBO) == (1024, 1536, (0, 0, 1024, 1024))
    assert layout(1344, 576, Grow.RIGHT, Z_IMAGE_TURBO) == (2016, 576, (0, 0, 1344, 576))
    # A wide picture zoomed out is scaled down into the profile's bounds, the picture with it.
    width, height, (x, y, w, h) = layout(1344, 576, Grow.ZOOM_2, Z_IMAGE_TURBO)
    assert width <= Z_IMAGE_TURBO.max_side and width * height <= Z_IMAGE_TURBO.max_pixels
    assert (width, height) == (2048, 864) and (w, h) == (1024, 432) and (x, y) == (512, 216)


def test_region_survives_json_and_bad_regions_are_refused(engine, tmp_path):
    request = DrawRequest(
        "x", kind=Kind.OUTPAINT, source_image="a.png", width=512, height=512, region=(128, 128, 256, 256)
    )
    assert DrawRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request
    for region in (None, (400, 400, 256, 256), (0, 0, 512, 512), (-1, 0, 64, 64)):
        with pytest.raises(InvalidRequest) as info:
            engine.generate(
                DrawRequest("x", kind=Kind.OUTPAINT, source_image="a.png", width=512, height=512, region=region)
            )
        assert info.value.key == "error.region_invalid"


@pytest.fixture(scope="module")
def source(engine, tmp_path_factory):
    path = tmp_path_factory.mktemp("outpaint") / "source.png"
    engine.generate(DrawRequest("a lighthouse", seed=5)).image.save(path)
    return path


def test_zoom_out_2x_keeps_the_picture_in_the_middle(engine, source):
    width, height, region = layout(256, 256, Grow.ZOOM_2, TINY)
    result = engine.generate(
        DrawRequest("a lighthouse", kind=Kind.OUTPAINT, source_image=str(source), width=width, height=height,
                    region=region, seed=5)
    )  # fmt: skip
    assert result.image.size == (512, 512) and result.request.strength == TINY.outpaint_strength
    original = Image.open(source).resize(region[2:], Image.Resampling.LANCZOS)
    kept = np.abs(pixels(inner(result.image, region)) - pixels(inner(original, (0, 0, *region[2:])))).mean()
    assert kept < CENTRE_MAD_BOUND
    # The new border is drawn, not the blurred stretch the canvas started with.
    border = pixels(result.image.crop((0, 0, 512, 64)))
    assert border.std() > 1.0


def test_outpaint_shares_the_weights_and_allocates_no_parameters(engine):
    def storage(pipe) -> set[int]:
        return {p.data_ptr() for part in (pipe.transformer, pipe.text_encoder, pipe.vae) for p in part.parameters()}

    inpaint = engine._pipe_for(Kind.OUTPAINT)
    assert type(inpaint).__name__ == "ZImageInpaintPipeline"
    assert inpaint.transformer is engine.pipeline.transformer and inpaint.vae is engine.pipeline.vae
    assert storage(inpaint) == storage(engine.pipeline)


def test_outpaint_is_cancellable(engine, source):
    width, height, region = layout(256, 256, Grow.RIGHT, TINY)
    steps = []
    with pytest.raises(Cancelled):
        engine.generate(
            DrawRequest("a lighthouse", kind=Kind.OUTPAINT, source_image=str(source), width=width, height=height,
                        region=region, seed=5),
            on_step=lambda i, n: steps.append(i),
            should_stop=lambda: len(steps) >= 2,
        )  # fmt: skip
    assert steps == [1, 2]


def test_out_of_memory_and_non_finite_output_are_handled_as_for_any_job(engine, source):
    width, height, region = layout(256, 256, Grow.UP, TINY)
    request = DrawRequest(
        "a lighthouse", kind=Kind.OUTPAINT, source_image=str(source), width=width, height=height, region=region, seed=5
    )
    original = inner(Image.open(source).resize(region[2:], Image.Resampling.LANCZOS), (0, 0, *region[2:]))
    with transformer_fault(engine, at_call=2, fault="oom") as calls:
        fell_back = engine.generate(request)
    with transformer_fault(engine, at_call=2, fault="nan") as nan_calls:
        retried = engine.generate(request)
    assert calls["fired"] == nan_calls["fired"] == 1
    assert fell_back.plan.placement is Placement.CPU_LOW_MEMORY and fell_back.image.size == (256, 384)
    assert retried.retries and np.isfinite(pixels(retried.image)).all()
    for result in (fell_back, retried):
        assert np.abs(pixels(inner(result.image, region)) - pixels(original)).mean() < CENTRE_MAD_BOUND
