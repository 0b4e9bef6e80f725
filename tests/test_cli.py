"""`easel draw` and `easel doctor` end to end, and the settings object."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from bot.cli.main import main
from bot.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "EASEL_LOG_LEVEL": "WARNING", **(env or {})},
        cwd=cwd,
        timeout=120,
    )


def test_draw_writes_a_png_with_parameters(tmp_path, tiny_model_dir):
    out = tmp_path / "fox.png"
    result = run_cli(
        "draw",
        "a red fox in snow",
        "--ar",
        "3:2",
        "--seed",
        "42",
        "--out",
        str(out),
        "--model",
        tiny_model_dir,
        env={"EASEL_DEVICE": "cpu"},
    )
    assert result.returncode == 0, result.stderr
    assert str(out) in result.stdout and "seed 42" in result.stdout
    with Image.open(out) as image:
        assert image.size == (320, 208)
        parameters = image.text["parameters"]
    assert parameters.startswith("a red fox in snow\n")
    assert "Steps: 8" in parameters and "Seed: 42" in parameters and "Size: 320x208" in parameters
    assert "CFG scale: 1" in parameters and "Model: " in parameters


def test_draw_with_a_bad_flag_says_what_to_type(tmp_path, tiny_model_dir, capsys):
    code = main(["draw", "a fox", "--cfg", "9", "--model", tiny_model_dir, "--out", str(tmp_path / "x.png")])
    printed = capsys.readouterr().out
    assert code == 1
    assert "2.5" in printed and "/draw a fox --cfg 2.5" in printed
    assert not (tmp_path / "x.png").exists()


def test_doctor_reports_plans_and_the_gpu_requirement(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EASEL_DEVICE", "cpu")
    monkeypatch.setenv("EASEL_MODEL", "Tongyi-MAI/Z-Image-Turbo")
    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    assert any("needs an NVIDIA GPU" in problem for problem in report["problems"])
    assert set(report["plans"]) == {"512x512", "768x768", "1024x1024", "1536x1536"}
    assert report["mode"].startswith("console")


def test_doctor_is_happy_with_a_local_model(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EASEL_MODEL", tiny_model_dir)
    monkeypatch.setenv("EASEL_ADMINS", "telegram:1,nonsense")
    main(["doctor"])
    text = capsys.readouterr().out
    assert "model: " in text and "(local)" in text
    assert "EASEL_ADMINS entry 'nonsense'" in text
    main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["status"] == "local" and report["model"]["hint"] == ""  # found: nothing to fix


def test_doctor_names_unreadable_word_lists_broken_style_presets_and_lora_files(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "styles.toml").write_text('[neon]\nprompt = "{prompt}, neon"\n[Bad]\nprompt = "x"\n')
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EASEL_MODEL", tiny_model_dir)
    monkeypatch.setenv("EASEL_BLOCKED_WORDS_FILE", str(tmp_path / "missing.txt"))
    monkeypatch.setenv("EASEL_STYLES_FILE", str(tmp_path / "styles.toml"))
    (tmp_path / "data" / "loras").mkdir(parents=True)
    (tmp_path / "data" / "loras" / "broken.safetensors").write_bytes(b"not a LoRA")
    assert main(["doctor", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert any("EASEL_BLOCKED_WORDS_FILE" in problem and "missing.txt" in problem for problem in problems)
    assert any(problem.startswith("style preset skipped: name 'Bad'") for problem in problems)
    assert any(problem.startswith("LoRA skipped: broken.safetensors: not a readable") for problem in problems)
    assert len(problems) == 3


def test_the_shipped_env_example_loads_as_a_dotenv(tmp_path):
    """Copying .env.example to .env must start the bot: empty values mean "use the default"."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / ".env.example"
    settings = Settings(_env_file=example)
    assert settings.metrics_port is None and settings.telegram_token is None and settings.blocked_words == []
    assert settings.cooldown_s == 0 and settings.strike_limit == 3 and settings.styles_file is None


def test_settings_read_env_file_and_lists(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "TELEGRAM_TOKEN=123:secret\nEASEL_ADMINS=telegram:1, discord:2\nEASEL_ROLE_QUOTAS=vip:200,guest:5\n"
        "EASEL_LANGUAGE=zh-CN\nDISCORD_GUILD_IDS=10,20\n"
    )
    settings = Settings(_env_file=env_file)
    assert settings.telegram_token.get_secret_value() == "123:secret"
    assert "secret" not in repr(settings)
    assert settings.admins == ["telegram:1", "discord:2"] and settings.is_admin("discord", "2")
    assert settings.role_quotas == {"vip": 200, "guest": 5}
    assert settings.default_language == "zh" and settings.discord_guild_ids == [10, 20]


def test_doctor_warns_when_system_ram_cannot_hold_what_the_plan_offloads(tmp_path, monkeypatch, capsys):
    """An 8 GB card offloads the weights to RAM: a 16 GB machine without swap would be killed loading."""
    import engine.device
    from engine.planner import DeviceFacts

    def small_machine(ram_gb: float):
        return lambda requested="auto": DeviceFacts("cuda", "RTX 3070", 8.0, 7.6, (8, 6), True, system_ram_gb=ram_gb)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EASEL_MODEL", "Tongyi-MAI/Z-Image-Turbo")
    monkeypatch.setenv("EASEL_QUANTIZE", "none")  # an admin who wants the model's own weights
    monkeypatch.setattr(engine.device, "probe_device", small_machine(16.0))
    main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    [problem] = [p for p in report["problems"] if "system RAM" in p]
    assert "runs as sequential_offload" in problem and "16 GB RAM + 0 GB swap" in problem
    assert report["plans"]["1024x1024"].startswith("sequential_offload")
    assert "EASEL_QUANTIZE" in report["weights"]

    monkeypatch.setattr(engine.device, "probe_device", small_machine(64.0))
    main(["doctor", "--json"])
    assert not [p for p in json.loads(capsys.readouterr().out)["problems"] if "system RAM" in p]


def test_doctor_shows_the_recipe_auto_picks_and_every_recipe_per_size(tmp_path, monkeypatch, capsys):
    """The same 8 GB card in a 16 GB machine with EASEL_QUANTIZE=auto: int8 weights, no RAM warning,
    and the text report lists what each size would run as in each recipe."""
    import engine.device
    from engine.planner import DeviceFacts

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EASEL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("EASEL_MODEL", "Tongyi-MAI/Z-Image-Turbo")
    facts = DeviceFacts("cuda", "RTX 3070", 8.0, 7.6, (8, 6), True, system_ram_gb=16.0)
    monkeypatch.setattr(engine.device, "probe_device", lambda requested="auto": facts)
    main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["weights"].startswith("int8 (auto)")
    assert "int8 weights" in report["plans"]["1024x1024"]
    assert not [p for p in report["problems"] if "system RAM" in p]
    assert set(report["recipes"]["1024x1024"]) == {"none", "int8", "int4"}
    main(["doctor"])
    text = capsys.readouterr().out
    assert "weights: int8 (auto)" in text and "1024x1024 as int4: " in text
