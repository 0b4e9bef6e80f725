"""The full-size architecture the GPU matrix measures, checked without a GPU: its sizes built on the
meta device (no memory, no compute), and the matrix script itself rehearsed with the tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.full_size import full_size_modules, size_gb
from engine.planner import Z_WEIGHTS_GB
from engine.request import Z_IMAGE_TURBO

ROOT = Path(__file__).resolve().parents[1]
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the rehearsal's path, also on a GPU machine


@pytest.fixture(scope="module")
def modules():
    return full_size_modules("meta")


def test_the_full_size_modules_weigh_what_the_planner_assumes(modules):
    sizes = {name: size_gb(module) for name, module in modules.items()}
    assert sizes["transformer"] == pytest.approx(Z_IMAGE_TURBO.transformer_gb, rel=0.01)
    assert sizes["text_encoder"] == pytest.approx(Z_IMAGE_TURBO.text_encoder_gb, rel=0.01)
    assert sizes["vae"] == pytest.approx(Z_IMAGE_TURBO.vae_gb, rel=0.05)
    assert sum(sizes.values()) == pytest.approx(Z_WEIGHTS_GB, rel=0.01)


def test_the_full_size_transformer_is_the_turbo_configuration(modules):
    config = modules["transformer"].config
    assert (config.dim, config.n_layers, config.n_heads, config.cap_feat_dim) == (3840, 30, 30, 2560)
    # The transformer reads the text encoder's hidden states: the two must agree.
    assert config.cap_feat_dim == modules["text_encoder"].config.hidden_size
    assert modules["vae"].config.latent_channels == config.in_channels


def run_matrix(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_matrix.py"), "--tiny", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env=CPU_ONLY,
    )


def table_rows(markdown: Path) -> list[dict[str, str]]:
    """The markdown table's rows, each by column name."""
    lines = [line for line in markdown.read_text().splitlines() if line.startswith("| ") and "---" not in line]
    header, *rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_the_matrix_rehearses_every_cell_with_the_tiny_model(tmp_path):
    markdown = tmp_path / "matrix.md"
    done = run_matrix(
        "--sizes", "64,128", "--budgets", "6,0", "--steps", "2", "--batch", "3", "--markdown", str(markdown)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = table_rows(markdown)
    # Unlimited first (the baseline) whatever the order asked for, then the budget; the batch last in each.
    assert [(r["budget"], r["size"], r["n"]) for r in rows] == [
        ("unlimited", "64", "1"),
        ("unlimited", "128", "1"),
        ("unlimited", "128", "3"),
        ("6 GB", "64", "1"),
        ("6 GB", "128", "1"),
        ("6 GB", "128", "3"),
    ]
    assert all(r["ok"] == "yes" for r in rows)
    assert all(r["x unl."] == "1.00" for r in rows[:3])  # the baseline against itself
    assert all(float(r["x unl."]) > 0 and float(r["encode s"]) > 0 for r in rows[3:])  # every run encodes anew
    assert rows[2]["notes"] == "one call" and rows[5]["notes"] == "one call"
    assert "tiny-z-image (random weights) on cpu" in markdown.read_text()


def test_the_matrix_adds_rows_for_quantized_weights_loaded_as_a_bot_start_loads_them(tmp_path):
    """--recipes: after the model's own rows, each recipe's, written to --model-dir, quantized once
    beside it and loaded through Engine.load; the ratio stays against unlimited bf16."""
    markdown = tmp_path / "matrix.md"
    done = run_matrix(
        "--sizes", "64", "--budgets", "6", "--steps", "2", "--batch", "1", "--markdown", str(markdown),
        "--recipes", "none,int8,int4", "--model-dir", str(tmp_path / "model"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = table_rows(markdown)
    assert [r["budget"] for r in rows] == [
        "unlimited",
        "6 GB",
        "unlimited int8",
        "6 GB int8",
        "unlimited int4",
        "6 GB int4",
    ]
    assert [r["plan"].split()[-2] for r in rows[2:]] == ["int8", "int8", "int4", "int4"]
    assert all(r["ok"] == "yes" and float(r["x unl."]) > 0 for r in rows)
    assert (tmp_path / "model-quantized").is_dir()


def test_the_matrix_stops_starting_cells_at_its_deadline(tmp_path):
    markdown = tmp_path / "matrix.md"
    done = run_matrix(
        "--sizes", "64", "--budgets", "0", "--batch", "1", "--deadline", "0.001", "--markdown", str(markdown)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert [(r["budget"], r["ok"], r["notes"]) for r in table_rows(markdown)] == [("unlimited", "skipped", "deadline")]


def test_a_cell_the_engine_refuses_is_a_row_and_the_matrix_goes_on(tmp_path):
    markdown = tmp_path / "matrix.md"
    done = run_matrix(
        "--sizes", "1040,64", "--budgets", "0", "--batch", "1", "--steps", "1", "--markdown", str(markdown)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [refused, drawn] = table_rows(markdown)
    assert (refused["size"], refused["ok"]) == ("1040", "failed") and refused["notes"].startswith("error.")
    assert (drawn["size"], drawn["ok"]) == ("64", "yes")


def test_the_matrix_refuses_to_run_full_size_without_a_gpu():
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_matrix.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env=CPU_ONLY,
    )
    assert done.returncode == 1
    assert "needs a CUDA GPU" in done.stderr
