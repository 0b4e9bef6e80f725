"""Images on disk: atomic PNG writes with embedded parameters, and no way out of the root."""

import re
from datetime import UTC, datetime

import pytest
from PIL import Image

from storage import ImageStore


@pytest.fixture
def store(tmp_path):
    return ImageStore(tmp_path / "images")


def picture() -> Image.Image:
    image = Image.new("RGB", (64, 48), (10, 20, 30))
    image.putpixel((5, 5), (250, 0, 0))
    return image


def test_save_writes_a_png_with_parameters_under_a_dated_folder(store):
    parameters = "a fox\nSteps: 8, Seed: 42, Size: 64x48"
    path = store.save(17, picture(), parameters)
    today = datetime.now(UTC).strftime("%Y/%m/%d")
    assert path.parent == store.root / today
    assert re.fullmatch(r"job-17-[0-9a-f]{8}\.png", path.name)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    loaded = store.open(path)
    assert loaded.format == "PNG"
    assert loaded.size == (64, 48)
    assert loaded.getpixel((5, 5)) == (250, 0, 0)
    assert loaded.info["parameters"] == parameters


def test_two_saves_for_one_job_never_collide(store):
    assert store.save(1, picture(), "") != store.save(1, picture(), "")


def test_relative_paths_round_trip(store):
    path = store.save(3, picture(), "p")
    relative = store.relative(path)
    assert not relative.startswith("/")
    assert store.resolve(relative) == path
    assert store.open(relative).info["parameters"] == "p"


def test_delete_reports_whether_a_file_was_removed(store):
    path = store.save(2, picture(), "")
    assert store.delete(path)
    assert not path.exists()
    assert not store.delete(path)


@pytest.mark.parametrize("escape", ["../secret.png", "2025/../../secret.png", "/etc/passwd"])
def test_paths_outside_the_root_are_refused(store, escape):
    with pytest.raises(ValueError):
        store.resolve(escape)
    with pytest.raises(ValueError):
        store.delete(escape)


def test_a_symlink_pointing_outside_is_refused(store, tmp_path):
    outside = tmp_path / "outside.png"
    picture().save(outside)
    store.root.mkdir(parents=True)
    (store.root / "link.png").symlink_to(outside)
    with pytest.raises(ValueError):
        store.open("link.png")
    assert outside.exists()
