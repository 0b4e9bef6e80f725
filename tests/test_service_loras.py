"""LoRA administration through the service with the tiny real model: `/lora reload` (admins) says what
is installed and what was skipped and why, and a file that passes the folder's checks but fails to
load fails its job with a clear message and a refund, and is not offered again until it changes."""

from __future__ import annotations

import pytest

from bot.contract import Caller
from bot.language.messages import t
from storage.jobs import JobStatus
from tests.support.loras import write_lora, write_misshapen_lora
from tests.support.service import RecordingAdapter, alice, bob, settled

ADMIN = Caller("telegram", "999", name="root", language="en", chat_id="1")


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_model_dir):
    from engine.engine import Engine

    transformer = Engine.load(tiny_model_dir, device="cpu").pipeline.transformer
    folder = tmp_path_factory.mktemp("loras")
    write_lora(folder / "ink.safetensors", transformer, seed=1)
    write_misshapen_lora(folder / "warped.safetensors", transformer)
    (folder / "notes.safetensors").write_bytes(b"not a LoRA")
    return folder


@pytest.fixture(scope="module")
def engine(tiny_model_dir, lora_dir):
    """This module's app draws with an engine of its own, its LoRAs installed (the shared one has none)."""
    from engine.engine import Engine

    engine = Engine.load(tiny_model_dir, device="cpu")
    engine.install_loras(str(lora_dir), max_mb=5)
    return engine


async def started(make_app, lora_dir):
    app = await make_app(EASEL_LORA_DIR=str(lora_dir), EASEL_ADMINS="telegram:999", EASEL_DAILY_QUOTA=20)
    adapter = RecordingAdapter(service=app.service)
    app.service.register(adapter)
    await app.service.start()
    return app, adapter


async def test_lora_reload_is_for_admins_and_says_what_was_skipped_and_why(make_app, lora_dir):
    app, _ = await started(make_app, lora_dir)
    refused = await app.service.handle_text(alice(), "/lora reload", {})
    assert refused.alert and refused.text == t("not_admin", "en")
    usage = await app.service.handle_text(ADMIN, "/lora", {})
    assert usage.alert and "/lora reload" in usage.text

    (lora_dir / "late.safetensors").write_bytes((lora_dir / "ink.safetensors").read_bytes())
    try:
        answer = (await app.service.handle_text(ADMIN, "/lora reload", {})).text.splitlines()
        assert answer[0] == t("lora_reloaded", "en", count=3, names="ink, late, warped")  # picked up now
        assert answer[1] == t("lora_reloaded_skipped", "en", count=1)
        assert answer[2].startswith("notes.safetensors · not a readable safetensors file")
        assert "late" in app.service.lora_names()
    finally:
        (lora_dir / "late.safetensors").unlink()
    await app.service.handle_text(ADMIN, "/settings lang zh", {})
    chinese = await app.service.handle_text(ADMIN, "/lora reload", {})
    assert chinese.text.splitlines()[0] == t("lora_reloaded", "zh", count=2, names="ink, warped")


async def test_a_file_that_fails_to_load_is_refunded_and_not_offered_until_it_changes(make_app, lora_dir, engine):
    app, adapter = await started(make_app, lora_dir)
    assert "warped" in app.service.lora_names()
    reply = await app.service.handle_text(bob(), "/draw a fox --lora warped --steps 2", {})
    await adapter.wait_until(lambda: adapter.failures)

    assert adapter.failures == [(reply.job_id, t("error.lora_bad", "zh", name="warped"))]
    job = await settled(app, reply.job_id)
    assert job.status is JobStatus.FAILED and job.error_key == "error.lora_bad"
    user = await app.db.users.find("telegram", "200")
    assert await app.db.quota.used(user.id, app.service.today()) == 0  # refunded
    # Not offered any more: not in /loras, not in autocomplete, refused by name at once.
    assert "warped" not in (await app.service.handle_text(alice(), "/loras", {})).text
    assert app.service.lora_names() == ["ink"]
    again = await app.service.handle_text(alice(), "/draw a fox --lora warped", {})
    assert again.job_id is None and again.text == t("error.lora_unknown", "en", name="warped", closest="-")
    reload = (await app.service.handle_text(ADMIN, "/lora reload", {})).text
    assert "warped.safetensors · failed to load" in reload

    write_lora(lora_dir / "warped.safetensors", engine.pipeline.transformer, seed=5)  # the admin replaces it
    assert (
        t("lora_reloaded", "en", count=2, names="ink, warped")
        in (await app.service.handle_text(ADMIN, "/lora reload", {})).text
    )
    fixed = await app.service.handle_text(alice(), "/draw a fox --lora warped --steps 2", {})
    await adapter.wait_until(lambda: adapter.delivered)
    assert adapter.delivered[0].job.id == fixed.job_id and len(adapter.failures) == 1


async def test_a_presets_sensitive_lora_is_refused_outside_nsfw_channels_like_the_users_own(
    make_app, tmp_path, tiny_model_dir
):
    """EASEL_NSFW_CHANNELS_ONLY: a preset that brings a LoRA marked sensitive is refused in an
    ordinary Discord channel (no strike: the words are the admin's), and accepted behind a spoiler
    in an age-restricted one."""
    from engine.engine import Engine
    from storage.jobs import JobStatus

    transformer = Engine.load(tiny_model_dir, device="cpu").pipeline.transformer
    folder = tmp_path / "loras"
    write_lora(folder / "spicy.safetensors", transformer, seed=4)
    (folder / "spicy.toml").write_text("sensitive = true\n")
    (tmp_path / "styles.toml").write_text('[pinup]\nprompt = "{prompt}, pin-up poster"\nloras = ["spicy:0.8"]\n')
    app = await make_app(
        EASEL_LORA_DIR=str(folder), EASEL_STYLES_FILE=str(tmp_path / "styles.toml"), EASEL_NSFW_CHANNELS_ONLY="true"
    )
    await app.service.start()
    sfw = Caller("discord", "5", chat_id="10", guild_id="77", nsfw_channel=False, language="en")
    nsfw = Caller("discord", "5", chat_id="12", guild_id="77", nsfw_channel=True, language="en")

    refused = await app.service.handle_text(sfw, "/draw a sailor --style pinup", {})
    assert refused.job_id is None and refused.text == t("sensitive_nsfw_only", "en")
    assert app.service.metrics.value("easel_refusals_total", reason="sensitive") == 1
    assert await app.db.moderation.strikes_since(0.0) == []
    accepted = await app.service.handle_text(nsfw, "/draw a sailor --style pinup --steps 1", {})
    job = await app.db.jobs.get(accepted.job_id)
    assert job is not None and job.sensitive and job.status in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.DONE,
                                                                JobStatus.FAILED)  # fmt: skip
    await app.service.handle_text(nsfw, f"/cancel {accepted.job_id}", {})
