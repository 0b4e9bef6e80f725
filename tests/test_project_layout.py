"""The shape issue 14 set: no import cycles among project modules, no mixins in bot/, short functions."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "engine", "storage")
LONGEST_FUNCTION = 60
# Declarative tables, read as data rather than followed as logic.
TABLES = {("bot.adapters.discord.slash", "build_commands")}


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return modules


def _imported(name: str, path: Path, node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join([*parts, base] if base else parts)
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(modules: dict[str, tuple[Path, ast.Module]]) -> dict[str, set[str]]:
    """Every import, at the top, under TYPE_CHECKING or inside a function, as module -> modules."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, tree) in modules.items():
        for node in ast.walk(tree):
            graph[name] |= {target for target in _imported(name, path, node) if target in modules and target != name}
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        return error.args[1]
    return None


def test_no_import_cycles_among_project_modules():
    assert cycle_in(import_graph(_modules())) is None


def test_the_cycle_check_sees_a_cycle_through_a_function_level_import():
    graph = {"bot.a": {"bot.b"}, "bot.b": {"bot.a"}, "bot.c": set()}
    assert set(cycle_in(graph) or ()) == {"bot.a", "bot.b"}


def test_no_mixins_in_bot():
    mixed = []
    for name, (_, tree) in _modules().items():
        if name.startswith("bot."):
            for node in ast.walk(tree):
                project_bases = (
                    [b for b in node.bases if isinstance(b, ast.Name) and b.id[0].isupper()]
                    if isinstance(node, ast.ClassDef)
                    else []
                )
                if len(project_bases) > 1:
                    mixed.append(f"{name}.{node.name}")
    assert mixed == []


def test_no_function_passes_sixty_lines():
    long = []
    for name, (_, tree) in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (name, node.name) not in TABLES:
                length = node.end_lineno - node.lineno + 1
                if length > LONGEST_FUNCTION:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert long == []
