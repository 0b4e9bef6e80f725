"""Pictures people bring, through the service: nothing is downloaded or decoded for a job that would be
refused anyway, decodes are bounded, the stored upload is named relative to the images root (a
restore elsewhere keeps it), and a `--draft` keeps the picture's shape."""

from __future__ import annotations

import asyncio
import io
import shutil
import threading
import time

from PIL import Image

import bot.core.uploads as uploads_module
from bot.contract import Upload
from bot.core.uploads import Uploads, nearest_size, picture_request
from bot.language.commands import Draw, parse_draw_args
from bot.language.messages import t
from engine.request import TINY, Z_IMAGE_TURBO, draft_size
from storage.images import ImageStore
from storage.retention import remove_orphans
from storage.uploads import read_picture
from tests.support.service import alice, settled, started


def png(size: tuple[int, int] = (96, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (40, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


class Counted:
    """An upload that counts how often it was fetched."""

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data if data is not None else png()
        self.fetched = 0

    async def fetch(self) -> bytes:
        self.fetched += 1
        return self.data

    def upload(self) -> Upload:
        return Upload(len(self.data), self.fetch)


async def bring(app, text: str, counted: Counted, key: str | None = None):
    return await app.service.draw_from_upload(alice(), text, counted.upload(), {"chat_id": "1"}, key)


def uploads_in(app) -> list:
    return sorted((app.service.images.root / "uploads").rglob("*.png"))


async def test_nothing_is_downloaded_for_a_job_over_quota_at_max_pending_or_in_cooldown(make_app):
    # Not started: accepted jobs stay queued, so the second one meets the pending limit.
    app = await make_app(EASEL_MAX_PENDING=1)
    first = Counted()
    assert (await bring(app, "/draw a harbour --steps 1", first)).job_id is not None and first.fetched == 1
    second = Counted()
    reply = await bring(app, "/draw a harbour --steps 1", second)
    assert reply.alert and reply.text.startswith(t("pending_limit", "en").split("{")[0]) and second.fetched == 0

    quota = await make_app(EASEL_DAILY_QUOTA=1, EASEL_DATA_DIR=str(app.settings.data_dir) + "-quota")
    assert (await bring(quota, "/draw a harbour --steps 1", Counted())).job_id is not None  # the day's one unit
    over = Counted()
    reply = await bring(quota, "/draw a harbour --steps 1", over)
    assert reply.alert and reply.text.startswith(t("quota_exceeded", "en").split("{")[0]) and over.fetched == 0

    paced = await make_app(EASEL_COOLDOWN_S=600, EASEL_DATA_DIR=str(app.settings.data_dir) + "-paced")
    assert (await bring(paced, "/draw a harbour --steps 1", Counted())).job_id is not None
    waiting = Counted()
    reply = await bring(paced, "/draw a harbour --steps 1", waiting)
    assert reply.alert and reply.text.startswith(t("cooldown", "en").split("{")[0]) and waiting.fetched == 0
    assert len(uploads_in(paced)) == 1  # the accepted one only


async def test_at_most_two_pictures_are_decoded_at_once(tmp_path, monkeypatch):
    running = peak = 0
    lock = threading.Lock()

    def slow_read(data: bytes):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1
        return read_picture(data)

    monkeypatch.setattr(uploads_module, "read_picture", slow_read)

    class Limits:
        max_upload_mb = 10.0

    uploads = Uploads(Limits(), TINY, ImageStore(tmp_path))
    draw = Draw(parse_draw_args("a harbour", TINY))
    taken = await asyncio.gather(*(uploads.take(draw, Counted().upload()) for _ in range(6)))
    assert len(taken) == 6 and peak == 2


async def test_an_upload_is_named_relative_to_the_images_root_and_survives_a_restore_elsewhere(make_app, tmp_path):
    app, _ = await started(make_app)
    reply = await bring(app, "/draw a harbour --steps 1", Counted())
    job = await settled(app, reply.job_id)
    source = job.request["source_image"]
    assert source.startswith("uploads/") and app.service.images.resolve(source) == uploads_in(app)[0]
    # The images folder restored under another data dir: the upload is still the job's, not an orphan.
    moved = ImageStore(tmp_path / "restored")
    shutil.copytree(app.service.images.root, moved.root, dirs_exist_ok=True)
    report = await remove_orphans(app.db.jobs, moved, older_than_s=-60)
    assert report.files == 0 and (moved.root / source).exists()


def test_a_draft_from_an_upload_keeps_the_pictures_shape():
    for profile in (TINY, Z_IMAGE_TURBO):
        draft = parse_draw_args("a harbour --draft", profile)
        request = picture_request(draft, (300, 200), "uploads/x.png", profile)
        expected = draft_size(*nearest_size(300, 200, profile), profile)
        assert (request.width, request.height) == expected and expected[0] > expected[1]  # 3:2, not square
        assert request.draft and request.steps == profile.draft_steps
        # A size the user asked for is kept, draft or not.
        wide = parse_draw_args("a harbour --ar 16:9 --draft", profile)
        asked = picture_request(wide, (200, 300), "uploads/x.png", profile)
        assert (asked.width, asked.height) == (wide.width, wide.height)


async def test_a_re_sent_update_gets_its_job_back_without_a_second_download(make_app):
    app = await make_app()
    first, again = Counted(), Counted()
    reply = await bring(app, "/draw a harbour --steps 1", first, key="telegram:update:7")
    repeat = await bring(app, "/draw a harbour --steps 1", again, key="telegram:update:7")
    assert repeat.job_id == reply.job_id and (first.fetched, again.fetched) == (1, 0)
    assert len(uploads_in(app)) == 1
