"""The test suite's own layout: shared helpers live in tests/support/, so no module imports a test module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def is_test_module(dotted: str) -> bool:
    """`tests.test_x`, `test_x` or (relative) `test_x`, with anything after it."""
    parts = dotted.split(".")
    if parts[0] == "tests":
        parts = parts[1:]
    return bool(parts) and parts[0].startswith("test_")


def imported_test_modules(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if is_test_module(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module, dots = node.module or "", "." * node.level
            if is_test_module(module):
                found.append(dots + module)
            elif module in ("tests", ""):  # from tests import test_x, from . import test_x
                prefix = dots + (module + "." if module else "")
                found += [prefix + alias.name for alias in node.names if is_test_module(alias.name)]
    return found


def test_no_module_of_the_suite_imports_a_test_module():
    modules = [
        *TESTS.glob("test_*.py"),
        *TESTS.glob("conftest.py"),
        *(TESTS / "support").glob("*.py"),
        *(TESTS / "fakes").glob("*.py"),
    ]
    assert len(modules) > 10
    offenders = {str(path.relative_to(TESTS)): names for path in modules if (names := imported_test_modules(path))}
    assert offenders == {}, "move shared helpers into tests/support/ instead"


def test_the_check_sees_every_way_of_importing_a_test_module(tmp_path):
    source = tmp_path / "test_sample.py"
    source.write_text(
        "import tests.test_a\nfrom tests.test_b import x\nfrom tests import test_c\nfrom . import test_d\n"
        "from .test_e import y\nimport test_f\nfrom tests.support.service import alice\nfrom tests import support\n"
    )
    assert imported_test_modules(source) == [
        "tests.test_a",
        "tests.test_b",
        "tests.test_c",
        ".test_d",
        ".test_e",
        "test_f",
    ]
