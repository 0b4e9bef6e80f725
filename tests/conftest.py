"""Shared fixtures: the tiny real Z-Image pipeline, written once per session and loaded through the
same `from_pretrained` path as production."""

from __future__ import annotations

import pytest

from engine.tiny import write_tiny_model


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-z-image"))


@pytest.fixture(scope="session")
def engine(tiny_model_dir):
    from engine.engine import Engine

    return Engine.load(tiny_model_dir, device="cpu")
