"""LoRA end to end on Telegram: the real python-telegram-bot against the fake Bot API, the real app
with the tiny model and tiny random LoRAs in EASEL_LORA_DIR."""

from __future__ import annotations

import pytest

from bot.language.buttons import Action, button_id
from bot.language.messages import t
from engine.metadata import read_parameters
from tests.support import telegram_harness as harness
from tests.support.loras import installed_loras, write_lora
from tests.support.telegram_harness import ADMIN, ALICE, BOB, jobs_of, picture, press, said, say, settled

tg = harness.tg  # fixtures
easel = harness.easel


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_model_dir):
    return installed_loras(tmp_path_factory.mktemp("loras"), tiny_model_dir, {"racy": "sensitive = true\n"})


@pytest.fixture(scope="module")
def engine(tiny_model_dir, lora_dir):
    """This module's app draws with an engine of its own, its LoRAs installed (the shared one has none)."""
    from engine.engine import Engine

    engine = Engine.load(tiny_model_dir, device="cpu")
    engine.install_loras(str(lora_dir), max_mb=5)
    return engine


async def test_loras_lists_the_installed_ones_and_skips_the_broken_file(easel, tg, lora_dir):
    await easel.start(EASEL_LORA_DIR=str(lora_dir))
    listing = (await say(tg, ALICE, ALICE, "/loras")).params["text"]
    assert listing.splitlines()[0] == t("loras_header", "en")
    assert t("loras_line", "en", name="ink", description="bold ink lines", triggers="inked", weight="0.7") in listing
    assert "neon-glow" in listing and "broken" not in listing
    await say(tg, BOB, BOB, "/settings lang zh")
    chinese = await say(tg, BOB, BOB, "/loras")
    assert chinese.params["text"].splitlines()[0] == t("loras_header", "zh")


async def test_draw_with_a_lora_delivers_and_records_it_and_reroll_keeps_it(easel, tg, lora_dir):
    app, _ = await easel.start(EASEL_LORA_DIR=str(lora_dir))
    mark = said(tg, ALICE, ALICE, "/draw a red fox --lora ink --lora neon-glow:-0.5 --seed 5")
    photo = await picture(tg, ALICE, mark)
    (job,) = await jobs_of(app, ALICE)
    job = await settled(app, job.id)
    assert [tuple(pair) for pair in job.request["loras"]] == [("ink", 0.7), ("neon-glow", -0.5)]
    png = app.settings.images_dir / job.image_paths[0]
    assert "<lora:ink:0.7> <lora:neon-glow:-0.5>" in read_parameters(png).splitlines()[0]
    recorded = t("params_loras", "en", loras="<lora:ink:0.7> <lora:neon-glow:-0.5>")
    assert recorded in (await say(tg, ALICE, ALICE, f"/show #{job.id}")).params["text"]
    params = await press(tg, ALICE, ALICE, photo.result["message_id"], button_id(Action.PARAMS, job.id))
    assert recorded in params.params["text"]

    for action in (Action.REROLL, Action.VARY_SUBTLE, Action.UPSCALE):
        mark = len(tg.calls)
        await press(tg, ALICE, ALICE, photo.result["message_id"], button_id(action, job.id))
        await picture(tg, ALICE, mark)
        child = max(await jobs_of(app, ALICE), key=lambda entry: entry.id)
        assert child.parent_id == job.id and child.request["loras"] == job.request["loras"], action


async def test_an_unknown_or_badly_weighted_lora_gets_a_clear_answer(easel, tg, lora_dir):
    app, _ = await easel.start(EASEL_LORA_DIR=str(lora_dir))
    unknown = await say(tg, ALICE, ALICE, "/draw a fox --lora inc")
    assert unknown.params["text"].startswith(t("error.lora_unknown", "en", name="inc", closest="ink"))
    heavy = await say(tg, ALICE, ALICE, "/draw a fox --lora ink:5")
    assert "/draw a fox --lora ink:2" in heavy.params["text"]
    assert await jobs_of(app, ALICE) == []


async def test_a_lora_name_is_moderated_like_a_word(easel, tg, lora_dir):
    app, _ = await easel.start(EASEL_LORA_DIR=str(lora_dir), EASEL_BLOCKED_WORDS="neon")
    blocked = await say(tg, ALICE, ALICE, "/draw a fox --lora neon-glow")
    assert blocked.params["text"] == t("blocked_prompt", "en")
    assert await jobs_of(app, ALICE) == []


async def test_a_lora_marked_sensitive_puts_the_picture_behind_a_spoiler(easel, tg, lora_dir):
    app, _ = await easel.start(EASEL_LORA_DIR=str(lora_dir))
    mark = said(tg, ALICE, ALICE, "/draw a beach --lora racy --steps 1")
    photo_call = await picture(tg, ALICE, mark)
    [job] = await jobs_of(app, ALICE)
    assert (await settled(app, job.id)).sensitive
    assert tg.message(ALICE, photo_call.result["message_id"]).has_media_spoiler


async def test_a_style_preset_brings_its_lora_along(easel, tg, lora_dir, tmp_path):
    styles = tmp_path / "styles.toml"
    styles.write_text('[inked]\nprompt = "{prompt}, inked"\nloras = ["ink", "racy:0.5"]\n', encoding="utf-8")
    app, _ = await easel.start(EASEL_LORA_DIR=str(lora_dir), EASEL_STYLES_FILE=str(styles))
    mark = said(tg, ALICE, ALICE, "/draw a fox --style inked --steps 1")
    photo_call = await picture(tg, ALICE, mark)
    [job] = await jobs_of(app, ALICE)
    job = await settled(app, job.id)
    assert [tuple(pair) for pair in job.request["loras"]] == [("ink", 0.7), ("racy", 0.5)]
    assert job.sensitive and tg.message(ALICE, photo_call.result["message_id"]).has_media_spoiler


async def test_a_file_added_while_the_bot_runs_is_listed_and_draws(easel, tg, lora_dir, engine):
    app, _ = await easel.start(EASEL_LORA_DIR=str(lora_dir))
    write_lora(lora_dir / "late.safetensors", engine.pipeline.transformer, seed=8)
    try:
        assert "late" in (await say(tg, ALICE, ALICE, "/loras")).params["text"]
        await picture(tg, ALICE, said(tg, ALICE, ALICE, "/draw a boat --lora late:1.2 --steps 1"))
        [job] = await jobs_of(app, ALICE)
        assert (await settled(app, job.id)).request["loras"] == [["late", 1.2]]
    finally:
        (lora_dir / "late.safetensors").unlink()


async def test_lora_reload_answers_admins_with_what_was_installed_and_skipped(easel, tg, lora_dir):
    await easel.start(EASEL_LORA_DIR=str(lora_dir))
    assert (await say(tg, ALICE, ALICE, "/lora reload")).params["text"] == t("not_admin", "en")
    answer = (await say(tg, ADMIN, ADMIN, "/lora reload")).params["text"].splitlines()
    assert answer[0] == t("lora_reloaded", "en", count=3, names="ink, neon-glow, racy")
    assert answer[1:] == [
        t("lora_reloaded_skipped", "en", count=1),
        t(
            "lora_skipped_line",
            "en",
            file="broken.safetensors",
            reason="not a readable safetensors file (SafetensorError)",
        ),
    ]
