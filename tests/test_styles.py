"""Style presets: built-ins, the admins' TOML file, and what a preset does to a request."""

from __future__ import annotations

import os

from bot.community.styles import BUILT_IN, StyleBook
from engine.request import TINY, DrawRequest


def test_a_preset_wraps_the_prompt_adds_its_negative_and_shape_but_the_user_wins(tmp_path):
    book = StyleBook(tmp_path / "styles.toml", TINY)
    anime = book.get("ANIME")
    styled = anime.apply(DrawRequest("a {fox}", negative_prompt="text"), TINY)
    assert (
        styled.prompt
        == "anime illustration of a {fox}, cel shading, clean line art, vibrant colors, detailed background"
    )
    assert styled.negative_prompt == "text, photo, realistic, 3d render"
    assert (styled.width, styled.height) == TINY.aspect_ratios["2:3"]
    chosen = anime.apply(DrawRequest("a fox", width=256, height=256), TINY)
    assert (chosen.width, chosen.height) == (256, 256)
    assert [style.name for style in book.all()] == [style.name for style in BUILT_IN]


def test_admins_add_and_override_presets_in_toml_and_bad_entries_are_skipped(tmp_path):
    path = tmp_path / "styles.toml"
    path.write_text(
        """
[neon]
prompt = "{prompt}, neon signs, night"
aspect_ratio = "16:9"
description = "Neon night"
description_zh = "霓虹夜景"

[photo]
prompt = "polaroid"

["Bad Name"]
prompt = "{prompt}"

[noprompt]
negative = "x"

[wide]
prompt = "{prompt}"
aspect_ratio = "50:1"
""",
        encoding="utf-8",
    )
    book = StyleBook(path, TINY)
    names = [style.name for style in book.all()]
    assert "neon" in names and "noprompt" not in names and "wide" not in names and "Bad Name" not in names
    assert len(book.problems) == 3
    assert book.get("neon").describe("zh") == "霓虹夜景" and book.get("neon").describe("en") == "Neon night"
    # A template without {prompt} puts the user's words first.
    assert book.get("photo").apply(DrawRequest("a fox"), TINY).prompt == "a fox, polaroid"

    path.write_text('[ink2]\nprompt = "ink of {prompt}"\n', encoding="utf-8")
    os.utime(path, (1, 1))  # a different stamp even within the same second
    assert book.get("neon") is None and book.get("ink2") is not None
    assert book.get("photo").prompt.startswith("{prompt}, professional photograph")


def test_a_broken_file_keeps_the_previous_presets(tmp_path):
    path = tmp_path / "styles.toml"
    path.write_text('[neon]\nprompt = "{prompt}, neon"\n', encoding="utf-8")
    book = StyleBook(path, TINY)
    assert book.get("neon") is not None
    path.write_text("[neon\nprompt = ", encoding="utf-8")
    os.utime(path, (2, 2))
    assert book.get("neon") is not None and book.problems


def test_a_preset_brings_its_loras_and_the_users_own_weight_wins(tmp_path):
    path = tmp_path / "styles.toml"
    path.write_text(
        '[inked]\nprompt = "{prompt}, ink"\nloras = ["ink:0.8", "Paper"]\n'
        '[heavy]\nprompt = "{prompt}"\nloras = ["ink:5"]\n'
        '[many]\nprompt = "{prompt}"\nloras = ["a", "b", "c", "d"]\n',
        encoding="utf-8",
    )
    book = StyleBook(path, TINY)
    assert book.get("heavy") is None and book.get("many") is None and len(book.problems) == 2
    styled = book.get("inked").apply(DrawRequest("a fox", loras=(("ink", -1.0),)), TINY)
    assert styled.loras == (("ink", -1.0), ("paper", None))
