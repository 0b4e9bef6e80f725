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


@pytest.fixture
def make_settings(tmp_path, tiny_model_dir):
    """Settings for a test: the tiny model, a temp data dir, no .env; override with aliases."""
    from bot.runtime.settings import Settings

    def make(**overrides):
        values = {"EASEL_MODEL": tiny_model_dir, "EASEL_DATA_DIR": str(tmp_path / "data"), "EASEL_DEVICE": "cpu"}
        values.update({k: v for k, v in overrides.items()})
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
async def make_app(make_settings, engine):
    """Build the real app (SQLite, image store, GPU thread, service) around the shared tiny engine.

    Call `await make_app(**settings_overrides)`; every app is stopped at teardown."""
    from bot.runtime.app import build_app

    apps = []

    async def make(**overrides):
        app = await build_app(make_settings(**overrides), factory=lambda: engine)
        apps.append(app)
        return app

    yield make
    for app in apps:
        await app.stop()


@pytest.fixture
def cpu_as_accelerator(monkeypatch):
    """diffusers names the offload device `cpu:0`, and accelerate re-wraps each onloaded weight with
    `Parameter(...).to("cpu:0")`, which on the CPU returns a plain tensor (on `cuda:0` the same call
    returns the parameter itself).  Only this CPU stand-in needs the name normalised."""
    import accelerate.hooks

    original = accelerate.hooks.set_module_tensor_to_device

    def normalised(module, name, device, *args, **kwargs):
        if str(device) == "cpu:0":
            device = "cpu"
        return original(module, name, device, *args, **kwargs)

    monkeypatch.setattr(accelerate.hooks, "set_module_tensor_to_device", normalised)


@pytest.fixture
def redis_server(tmp_path):
    """A throwaway redis-server of this test's own (tests/support/scale.py)."""
    from tests.support.scale import RedisServer

    server = RedisServer(tmp_path).start()
    yield server
    server.kill()
