"""bot/contract.py is the only way in: adapters never import the service, and both workers are `Worker`s."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from bot.contract import Worker
from bot.runtime.worker import GpuWorker, failure_of
from bot.scale.pool import WorkerPool
from engine.errors import BadOutput, Cancelled
from storage.jobs import JobStatus

ADAPTERS = Path(__file__).resolve().parent.parent / "bot" / "adapters"
SERVICE_SIDE = ("bot.core.service", "bot.core.handlers", "bot.core.dispatch", "bot.core.delivery", "bot.core.queue")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_adapters_import_the_contract_not_the_service():
    offenders = {
        f"{path.relative_to(ADAPTERS)}: {module}"
        for path in ADAPTERS.rglob("*.py")
        for module in imported_modules(path)
        if module.startswith(SERVICE_SIDE)
    }
    assert offenders == set()


def protocol_members(protocol: type) -> set[str]:
    names = {name for name in vars(protocol) if not name.startswith("_")}
    return names | set(protocol.__annotations__)


@pytest.mark.parametrize("worker", [GpuWorker, WorkerPool])
def test_both_workers_have_every_call_the_service_makes(worker):
    for name in protocol_members(Worker):
        assert hasattr(worker, name), f"{worker.__name__} lacks {name}"
        expected = getattr(Worker, name, None)
        if inspect.iscoroutinefunction(expected):
            assert inspect.iscoroutinefunction(getattr(worker, name)), f"{worker.__name__}.{name} must be async"


def test_one_reading_of_what_a_generation_raised():
    assert failure_of(Cancelled(), 1).status is JobStatus.CANCELLED
    bad = failure_of(BadOutput(), 1)
    assert (bad.status, bad.key) == (JobStatus.FAILED, "error.bad_output")
    crash = failure_of(RuntimeError("boom"), 7)
    assert (crash.status, crash.key, crash.params) == (JobStatus.FAILED, "error.unexpected", {})
