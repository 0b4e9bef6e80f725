"""Pictures people bring, read safely: every bad file is refused with its message, every odd one is
made plain RGB with no metadata left."""

from __future__ import annotations

import struct

import pytest
from PIL import Image

from storage.uploads import BadUpload, read_picture, store_upload
from tests.support.pictures import bomb, encoded


def gradient(size=(64, 32), mode="RGB") -> Image.Image:
    image = Image.new("RGB", size)
    image.putdata([(x * 4 % 256, y * 8 % 256, 128) for y in range(size[1]) for x in range(size[0])])
    return image.convert(mode)


def noise(side: int = 64) -> Image.Image:
    return Image.frombytes("RGB", (side, side), bytes((i * 7919) % 251 for i in range(side * side * 3)))


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def test_a_header_claiming_30000x30000_is_refused_before_decoding():
    data = bomb()
    assert len(data) < 100
    with pytest.raises(BadUpload) as info:
        read_picture(data)
    assert info.value.key == "error.upload_too_many_pixels" and info.value.params == {"limit": 40}
    # Under Pillow's own bomb limit but over ours: refused by ours, still before decoding.
    with pytest.raises(BadUpload) as info:
        read_picture(bomb(8000, 8000))
    assert info.value.key == "error.upload_too_many_pixels"


@pytest.mark.parametrize(
    "data",
    [b"", b"not a picture at all", b"%PDF-1.7\n", half(encoded(noise(), "PNG")), half(encoded(noise(), "JPEG"))],
    ids=["empty", "text", "pdf", "truncated-png", "truncated-jpeg"],
)
def test_what_is_not_a_whole_picture_is_refused(data):
    with pytest.raises(BadUpload) as info:
        read_picture(data)
    assert info.value.key == "error.upload_not_image"


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_an_animation_gives_its_first_frame_and_says_so(fmt):
    frames = [Image.new("RGB", (32, 32), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    picture = read_picture(data)
    assert picture.animated and picture.image.mode == "RGB"
    red, green, blue = picture.image.getpixel((16, 16))
    assert red > 200 and blue < 50
    assert not read_picture(encoded(frames[0], fmt)).animated


def test_cmyk_palette_grey_and_alpha_become_rgb():
    cmyk = read_picture(encoded(gradient(mode="CMYK"), "JPEG")).image
    palette = read_picture(encoded(gradient(mode="P"), "PNG")).image
    grey = read_picture(encoded(gradient(mode="L"), "PNG")).image
    clear = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    clear.paste((0, 0, 255, 255), (0, 0, 8, 16))
    alpha = read_picture(encoded(clear, "PNG")).image
    assert {image.mode for image in (cmyk, palette, grey, alpha)} == {"RGB"}
    assert alpha.getpixel((2, 2)) == (0, 0, 255) and alpha.getpixel((12, 2)) == (255, 255, 255)  # over white
    transparent_palette = Image.new("P", (8, 8), 0)
    transparent_palette.putpalette([0, 255, 0] * 256)
    assert read_picture(encoded(transparent_palette, "PNG", transparency=0)).image.getpixel((1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied_and_no_metadata_is_stored(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010E] = "secret description"
    data = encoded(gradient((64, 32)), "JPEG", exif=exif.tobytes(), quality=95)
    picture = read_picture(data)
    assert picture.image.size == (32, 64)
    path = store_upload(tmp_path, picture.image)
    assert path.is_relative_to(tmp_path / "uploads") and path.suffix == ".png"
    raw = path.read_bytes()
    assert b"secret" not in raw and b"eXIf" not in raw and b"tEXt" not in raw
    with Image.open(path) as stored:
        assert stored.size == (32, 64) and not stored.getexif() and not stored.info.get("exif")
    assert not list((tmp_path / "uploads").rglob(".partial-*"))


@pytest.mark.parametrize("fmt", ["TIFF", "BMP", "ICO", "PPM"])
def test_only_png_jpeg_webp_and_gif_are_opened(fmt):
    # TIFF walks its IFDs, EPS would start Ghostscript: a stranger's file reaches four decoders only.
    with pytest.raises(BadUpload) as info:
        read_picture(encoded(gradient((32, 32)), fmt))
    assert info.value.key == "error.upload_not_image"


class Unconvertible:
    mode, size = "LAB", (32, 32)

    def convert(self, mode):
        raise ValueError(f"conversion from LAB to {mode} not supported")


@pytest.mark.parametrize(
    "odd",
    [
        lambda image: Image.new("La", image.size),  # Pillow cannot convert it: ValueError
        lambda image: Unconvertible(),  # LAB, HSV on Pillows that cannot make RGB of them
        lambda image: (_ for _ in ()).throw(struct.error("bad EXIF")),  # a broken EXIF block
    ],
    ids=["La", "lab", "bad-exif"],
)
def test_a_picture_that_cannot_be_made_rgb_is_refused_as_not_an_image(monkeypatch, odd):
    monkeypatch.setattr("storage.uploads.ImageOps.exif_transpose", odd)
    with pytest.raises(BadUpload) as info:
        read_picture(encoded(gradient((32, 32)), "PNG"))
    assert info.value.key == "error.upload_not_image"
