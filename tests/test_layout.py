"""The shape of the package: no import cycle under aiwg/ (imports inside
functions and under TYPE_CHECKING count too), and core/ imports no Twisted."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "aiwg").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("aiwg"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                targets.add(candidate if candidate in modules else node.module)
        elif isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name.startswith("aiwg"))
    return {t for t in targets if t in modules}


def test_no_import_cycle_under_aiwg() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_core_imports_no_twisted() -> None:
    for path in (ROOT / "aiwg" / "core").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.startswith("twisted") for n in names), f"{path.name} imports {names}"


def test_every_package_is_installed() -> None:
    """A subpackage missing from pyproject's list is missing from an install."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "aiwg").rglob("__init__.py")}
    assert found - listed == set()


def test_no_module_is_over_600_lines() -> None:
    """A module one person can read in a sitting; past this, split it by responsibility."""
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "aiwg").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 600}
    assert long == {}
