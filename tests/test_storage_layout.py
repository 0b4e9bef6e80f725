"""storage/ stays a tree: no two modules import each other, not even under `if TYPE_CHECKING:`,
and its functions stay short enough to read in one screen."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

STORAGE = Path(__file__).resolve().parent.parent / "storage"
MAX_FUNCTION_LINES = 60


def module_name(path: Path, root: Path = STORAGE) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module name `source` imports, wherever the import statement sits (top level, under
    `if TYPE_CHECKING:`, inside a function).  `from package import name` counts as an import of
    the package (its attribute is read off it) and of `package.name` (in case that is a module)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb level - 1 packages up from this module's package
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path = STORAGE) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports.  The implicit import of a parent
    package that `import storage.x` performs is not an edge: only what the code names is."""
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph = {}
    for module, path in paths.items():
        names = imported_names(path.read_text(), module, is_package=path.name == "__init__.py")
        graph[module] = {name for name in names if name in paths and name != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as error:
        return list(error.args[1])
    return None


def test_storage_modules_import_each_other_without_a_cycle():
    graph = import_graph()
    assert {"storage", "storage.db", "storage.store", "storage.jobs", "storage.quota"} <= graph.keys()
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in storage/: " + " -> ".join(cycle or [])


def test_repositories_depend_on_the_store_not_on_the_database():
    graph = import_graph()
    importers = {module for module, imported in graph.items() if "storage.db" in imported}
    assert importers == {"storage"}
    for repository in ("storage.users", "storage.jobs", "storage.quota", "storage.audit", "storage.moderation"):
        assert "storage.store" in graph[repository]


def test_the_cycle_check_sees_imports_under_type_checking_and_from_the_package(tmp_path):
    package = tmp_path / "storage"
    package.mkdir()
    (package / "__init__.py").write_text("from storage.db import Database\n")
    (package / "db.py").write_text("from storage.jobs import Jobs\n")
    type_checking_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .db import Database\n"
    (package / "jobs.py").write_text(type_checking_only)
    assert find_cycle(import_graph(package)) is not None  # db -> jobs -> db, only while type checking

    (package / "jobs.py").write_text("from storage import quota\n")
    (package / "quota.py").write_text("")
    graph = import_graph(package)
    assert graph["storage.jobs"] == {"storage", "storage.quota"}
    assert find_cycle(graph) is not None  # jobs -> storage (the package) -> db -> jobs

    (package / "jobs.py").write_text("from storage.quota import used_in\n")
    assert find_cycle(import_graph(package)) is None


def long_functions(root: Path = STORAGE) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_storage_function_is_longer_than_60_lines():
    assert long_functions() == []


@pytest.mark.parametrize("lines, too_long", [(MAX_FUNCTION_LINES, False), (MAX_FUNCTION_LINES + 1, True)])
def test_the_length_check_counts_from_def_to_last_line(tmp_path, lines, too_long):
    body = "\n".join("    x = 1" for _ in range(lines - 1))
    (tmp_path / "m.py").write_text(f"def f():\n{body}\n")
    assert bool(long_functions(tmp_path)) is too_long
