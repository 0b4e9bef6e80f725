"""LoRA with the tiny real pipeline: the folder's files checked (engine/loras.py), adapters loaded once
and switched per job, and a job without LoRA bit for bit the base model's picture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import InvalidRequest
from engine.loras import resolve, scan, tags
from engine.request import TINY, DrawRequest, validate
from tests.support.loras import write_lora
from tests.support.pipeline import pixels


@pytest.fixture(scope="module")
def lora_engine(tiny_model_dir, tmp_path_factory):
    """An engine of its own (the shared one stays free of adapters) with three LoRAs installed."""
    from engine.engine import Engine

    engine = Engine.load(tiny_model_dir, device="cpu")
    folder = tmp_path_factory.mktemp("loras")
    for seed, name in enumerate(["ink", "neon", "clay"], start=1):
        write_lora(folder / f"{name}.safetensors", engine.pipeline.transformer, seed=seed)
    (folder / "clay.toml").write_text('description = "soft clay"\ntriggers = ["claymation"]\ndefault_weight = 0.5\n')
    engine.install_loras(str(folder), max_mb=5, max_loaded=3)
    return engine


def draw(engine, *loras, seed=3):
    request = DrawRequest("a lighthouse at dusk", seed=seed, width=64, height=64, steps=3, loras=tuple(loras))
    return pixels(engine.generate(request).image)


def test_the_picture_changes_with_a_lora_and_comes_back_without(lora_engine, engine):
    base = draw(engine)  # the shared engine never loaded a LoRA
    assert np.array_equal(draw(lora_engine), base)
    with_ink = draw(lora_engine, ("ink", 1.0))
    assert not np.array_equal(with_ink, base)
    assert np.array_equal(draw(lora_engine), base)  # after a LoRA job: bit for bit the base again
    assert np.array_equal(draw(lora_engine, ("ink", 0.0)), base)
    assert np.array_equal(draw(lora_engine, ("ink", 1.0)), with_ink)
    assert not np.array_equal(draw(lora_engine, ("ink", 0.5)), with_ink)


def test_two_loras_mix(lora_engine):
    ink, neon = draw(lora_engine, ("ink", 1.0)), draw(lora_engine, ("neon", 1.0))
    both = draw(lora_engine, ("ink", 1.0), ("neon", 1.0))
    assert not np.array_equal(both, ink) and not np.array_equal(both, neon)
    swapped = draw(lora_engine, ("neon", 1.0), ("ink", 1.0))  # the same sum, added in another order
    assert np.abs(swapped - both).max() <= 2


def test_result_records_the_weights_with_the_lora_default_filled_in(lora_engine):
    request = DrawRequest("a vase", seed=1, width=64, height=64, steps=1, loras=(("clay", None), ("ink", 0.8)))
    result = lora_engine.generate(request)
    assert result.request.loras == (("clay", 0.5), ("ink", 0.8))
    assert tags(result.request.loras) == "<lora:clay:0.5> <lora:ink:0.8>"
    clay = lora_engine.loras.get("clay")
    assert clay.description == "soft clay" and clay.triggers == ("claymation",)


def test_loaded_adapters_are_bounded_least_recently_used_first(lora_engine, tmp_path):
    folder = lora_engine.loras.directory
    write_lora(folder / "moss.safetensors", lora_engine.pipeline.transformer, seed=9)
    try:
        lora_engine.install_loras(str(folder), max_mb=5)
        ink = draw(lora_engine, ("ink", 1.0))
        draw(lora_engine, ("neon", 1.0))
        draw(lora_engine, ("clay", 1.0))
        draw(lora_engine, ("moss", 1.0))
        loaded = lora_engine._loras.loaded
        assert len(loaded) == 3 and "ink" not in loaded
        assert np.array_equal(draw(lora_engine, ("ink", 1.0)), ink)  # loaded again, same picture
    finally:
        (folder / "moss.safetensors").unlink()
        lora_engine.install_loras(str(folder), max_mb=5)


def test_an_unknown_name_names_the_closest_installed_ones(lora_engine):
    with pytest.raises(InvalidRequest) as error:
        lora_engine.generate(DrawRequest("x", width=64, height=64, steps=1, loras=(("inky", 1.0),)))
    assert error.value.key == "error.lora_unknown"
    assert error.value.params["name"] == "inky" and "ink" in error.value.params["closest"]


def test_bad_files_are_skipped_with_a_log_line(lora_engine, tmp_path, caplog):
    transformer = lora_engine.pipeline.transformer
    write_lora(tmp_path / "good.safetensors", transformer, seed=1)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    (tmp_path / "pickled.ckpt").write_bytes(b"never read")
    big = write_lora(tmp_path / "big.safetensors", transformer, seed=2, rank=64)
    other = write_lora(tmp_path / "other.safetensors", transformer, seed=3)
    _rename_keys(other, "to_q", "to_qq")  # a LoRA for some other transformer
    with caplog.at_level("WARNING", logger="engine.loras"):
        registry = scan(tmp_path, max_mb=big.stat().st_size / 1024**2 - 0.01, transformer=transformer)
    assert registry.names() == ["good"]
    assert set(registry.skipped) == {"junk.safetensors", "big.safetensors", "other.safetensors"}
    assert "EASEL_MAX_LORA_MB" in registry.skipped["big.safetensors"]
    assert "does not match" in registry.skipped["other.safetensors"]
    assert sum("skipped" in record.message for record in caplog.records) == 3
    assert scan(tmp_path / "missing", max_mb=5).names() == []


def _rename_keys(path, old, new):
    from safetensors.torch import load_file, save_file

    weights = load_file(str(path))
    save_file({key.replace(old, new): value for key, value in weights.items()}, str(path))


def test_lora_requests_are_checked_and_survive_a_round_trip():
    request = DrawRequest("x", loras=(("ink", 0.8), ("clay", None)))
    again = DrawRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert again == request
    with pytest.raises(InvalidRequest) as error:
        validate(DrawRequest("x", loras=tuple((f"l{i}", 1.0) for i in range(4))), TINY)
    assert error.value.key == "error.lora_count"
    with pytest.raises(InvalidRequest) as error:
        validate(DrawRequest("x", loras=(("ink", 2.5),)), TINY)
    assert error.value.key == "error.lora_weight"
    with pytest.raises(InvalidRequest) as error:
        validate(DrawRequest("x", loras=(("ink", 1.0), ("ink", 0.5))), TINY)
    assert error.value.key == "error.lora_twice"
    for forged, key in (((("../x", 1.0),), "error.lora_format"), ((("ink", "1"),), "error.lora_weight")):
        with pytest.raises(InvalidRequest) as error:  # what storage or Redis could hand back
            validate(DrawRequest.from_dict({"prompt": "x", "loras": forged}), TINY)
        assert error.value.key == key


@pytest.fixture
def cpu_stands_in_for_the_gpu(monkeypatch):
    """As in tests/test_placement_cpu.py: accelerate's `cpu:0` onload device named plain `cpu`."""
    import accelerate.hooks

    original = accelerate.hooks.set_module_tensor_to_device

    def normalised(module, name, device, *args, **kwargs):
        return original(module, name, "cpu" if str(device) == "cpu:0" else device, *args, **kwargs)

    monkeypatch.setattr(accelerate.hooks, "set_module_tensor_to_device", normalised)


@pytest.mark.parametrize("placement", ["model_offload", "group_offload", "sequential_offload"])
def test_loras_draw_the_same_under_each_offload_placement(
    tiny_model_dir, lora_engine, placement, monkeypatch, cpu_stands_in_for_the_gpu
):
    import engine.engine as engine_module
    from engine.engine import Engine
    from engine.planner import Placement, Plan

    expected = [draw(lora_engine), draw(lora_engine, ("ink", 1.0)), draw(lora_engine, ("ink", 1.0), ("neon", 0.5))]
    offloaded = Engine.load(tiny_model_dir, device="cpu")
    offloaded.install_loras(str(lora_engine.loras.directory), max_mb=5)
    rung = Plan("cpu", "float32", Placement(placement), False, False, 0.0, True)
    monkeypatch.setattr(engine_module, "ladder", lambda *args, **kwargs: [rung])
    got = [draw(offloaded), draw(offloaded, ("ink", 1.0)), draw(offloaded, ("ink", 1.0), ("neon", 0.5))]
    # As every offload placement draws next to the plain CPU (tests/test_placement_cpu.py): a pixel
    # may round one or two steps apart, never more, and hardly any do.
    for a, b in zip(got, expected, strict=True):
        assert np.abs(a - b).max() <= 2 and np.abs(a - b).mean() < 0.01
    assert not np.array_equal(got[0], got[1]) and offloaded._applied.placement.value == placement


def test_the_folder_is_read_again_for_a_new_name_and_unchanged_files_are_not(lora_engine, tmp_path, caplog):
    transformer = lora_engine.pipeline.transformer
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    registry = scan(tmp_path, max_mb=5, transformer=transformer)
    assert registry.names() == []
    write_lora(tmp_path / "fresh.safetensors", transformer, seed=4)
    caplog.clear()
    with caplog.at_level("WARNING", logger="engine.loras"):
        assert resolve((("fresh", None),), registry) == (("fresh", 1.0),)  # an unknown name reads again
    assert not caplog.records  # the junk file, unchanged, was not read (nor logged) again
    (tmp_path / "fresh.toml").write_text("default_weight = -0.5\n")
    (tmp_path / "junk.safetensors").unlink()
    registry.rescan()
    assert registry.get("fresh").default_weight == -0.5 and registry.skipped == {}


def test_the_engine_draws_with_a_file_added_after_it_started(lora_engine):
    folder = lora_engine.loras.directory
    write_lora(folder / "late.safetensors", lora_engine.pipeline.transformer, seed=7)
    try:
        assert not np.array_equal(draw(lora_engine, ("late", 1.0)), draw(lora_engine))
    finally:
        (folder / "late.safetensors").unlink()
        lora_engine.loras.rescan()
    assert lora_engine.loras.get("late") is None


def test_a_file_that_fails_to_load_is_refused_clearly_and_not_offered_until_it_changes(lora_engine, engine):
    from engine.errors import LoraUnusable
    from tests.support.loras import write_misshapen_lora

    folder = lora_engine.loras.directory
    warped = write_misshapen_lora(folder / "warped.safetensors", lora_engine.pipeline.transformer)
    try:
        lora_engine.install_loras(str(folder), max_mb=5, max_loaded=3)
        assert "warped" in lora_engine.loras.names()  # its keys pass the checks; only loading tells
        with pytest.raises(LoraUnusable) as refused:
            draw(lora_engine, ("warped", 1.0))
        assert refused.value.key == "error.lora_bad" and refused.value.params == {"name": "warped"}
        assert "warped" not in lora_engine.loras.names()
        assert lora_engine.loras.skipped["warped.safetensors"].startswith("failed to load: ")
        lora_engine.loras.rescan()  # unchanged: still skipped, not read again
        assert "warped" not in lora_engine.loras.names()
        with pytest.raises(InvalidRequest):  # no longer offered: an unknown name now
            draw(lora_engine, ("warped", 1.0))
        assert np.array_equal(draw(lora_engine), draw(engine))  # nothing of it is left on the model
        write_lora(warped, lora_engine.pipeline.transformer, seed=11)  # the admin replaces the file
        assert not np.array_equal(draw(lora_engine, ("warped", 1.0)), draw(engine))
    finally:
        warped.unlink()
        lora_engine.install_loras(str(folder), max_mb=5)


def test_a_file_replaced_under_the_same_name_is_loaded_afresh(lora_engine, engine):
    folder = lora_engine.loras.directory
    fresh = folder / "fresh.safetensors"
    write_lora(fresh, lora_engine.pipeline.transformer, seed=21)
    try:
        first = draw(lora_engine, ("fresh", 1.0))
        write_lora(fresh, lora_engine.pipeline.transformer, seed=22)  # the admin copies a new version over it
        second = draw(lora_engine, ("fresh", 1.0))
        assert not np.array_equal(first, second)
        assert np.array_equal(draw(lora_engine), draw(engine))
    finally:
        fresh.unlink()
        lora_engine.install_loras(str(folder), max_mb=5)


def test_a_files_hash_is_read_once_per_version(tmp_path):
    import hashlib
    import os

    from engine import loras

    path = tmp_path / "ink.safetensors"
    path.write_bytes(b"first version")
    assert loras.content_hash(path) == hashlib.sha256(b"first version").hexdigest()
    os.utime(path, ns=(1, 1))
    key = (str(path), path.stat().st_size, 1)
    loras._HASHES[key] = "remembered"  # as if read before: not read again while size and mtime hold
    assert loras.content_hash(path) == "remembered"
    path.write_bytes(b"second version")  # replaced: read afresh, the old entry forgotten
    assert loras.content_hash(path) == hashlib.sha256(b"second version").hexdigest()
    assert key not in loras._HASHES


def test_loaded_adapters_are_bounded_by_their_memory_too(tiny_model_dir, tmp_path):
    """EASEL_MAX_LORA_MEMORY_MB: a budget of one and a half adapters keeps one loaded, least
    recently used dropped first, but never the ones the job at hand needs together."""
    from engine.engine import Engine

    engine = Engine.load(tiny_model_dir, device="cpu")
    for seed, name in enumerate(["ink", "neon", "clay"], start=1):
        write_lora(tmp_path / f"{name}.safetensors", engine.pipeline.transformer, seed=seed)
    engine.install_loras(str(tmp_path), max_mb=5, max_loaded=4, max_memory_mb=1024)
    ink = draw(engine, ("ink", 1.0))
    one = engine._loras.sizes["ink"]
    assert one > 0 and one == sum(
        p.numel() * p.element_size() for k, p in engine.pipeline.transformer.named_parameters() if ".ink." in k
    )
    engine._loras.max_bytes = 1.5 * one
    draw(engine, ("neon", 1.0))
    assert list(engine._loras.loaded) == ["neon"]
    both = draw(engine, ("ink", 1.0), ("clay", 1.0))  # over budget, but one job's set stays together
    assert list(engine._loras.loaded) == ["ink", "clay"] and not np.array_equal(both, ink)
    assert np.array_equal(draw(engine, ("ink", 1.0)), ink)  # loaded already: nothing to load or drop
    assert list(engine._loras.loaded) == ["clay", "ink"]
    draw(engine, ("neon", 1.0))  # the next load makes room: both dropped, least recently used first
    assert list(engine._loras.loaded) == ["neon"]


def test_a_file_removed_after_the_scan_is_refused_clearly(tiny_model_dir, tmp_path):
    """Between the folder's scan and the job: the job fails with the LoRA's own message (refunded by
    the service), not an internal error."""
    from engine.engine import Engine
    from engine.errors import LoraUnusable

    engine = Engine.load(tiny_model_dir, device="cpu")
    write_lora(tmp_path / "ink.safetensors", engine.pipeline.transformer, seed=1)
    engine.install_loras(str(tmp_path), max_mb=5)
    (tmp_path / "ink.safetensors").unlink()
    engine._loras.registry = engine.loras  # the scan from before the removal stays in force
    with pytest.raises((LoraUnusable, InvalidRequest)):
        engine._loras.use((("ink", 1.0),))
