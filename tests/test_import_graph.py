"""The house plan, pinned: which module may import which (an AST walk of the package).

- Ground floor (errors, version, progress, names, formatting, ...) imports no other langneurons
  module except the ground floor.
- The rooms (store, extract, analysis, reports) never import the front door (the package
  ``__init__``, the CLI, the demo, the workflows); extract may use store; reports may use
  analysis and store; analysis and store use only the ground floor.
- No import cycle between modules, lazy (function-level) imports included.
- Inside ``analysis``, a private name crosses modules only from its kernel, resampling and
  validation modules.
- No module is over about 600 lines unless a reason is written at its top.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Source directory of each package (see ``[tool.setuptools.package-dir]`` in pyproject.toml).
PACKAGES = {
    "langneurons": ROOT / "langneurons",
    "langneurons.store": ROOT / "store",
    "langneurons.extract": ROOT / "extract",
    "langneurons.analysis": ROOT / "analysis",
    "langneurons.reports": ROOT / "reports",
}
GROUND = {
    "langneurons.errors",
    "langneurons.names",
    "langneurons._version",
    "langneurons._progress",
    "langneurons._fs",
    "langneurons._format",
    "langneurons._deprecate",
    "langneurons._defaults",
    "langneurons._type_codes",
    "langneurons.plain",
}
#: The rooms each room may import (the ground floor is open to all).
ROOMS = {
    "langneurons.store": {"langneurons.store"},
    "langneurons.analysis": {"langneurons.analysis"},
    "langneurons.extract": {"langneurons.extract", "langneurons.store"},
    "langneurons.reports": {"langneurons.reports", "langneurons.analysis", "langneurons.store"},
}
#: Analysis modules whose private names other analysis modules may import.
SHARED_PRIVATE = {"_kernels", "_resample", "_validate"}
MAX_LINES = 650
#: Words at a module's top that introduce the reason it is longer than MAX_LINES.
REASON = re.compile(r"why this module is (long|over \d+ lines)", re.IGNORECASE)


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(p in ("data",) for p in rel.parts[:-1]):
                continue
            name = ".".join([package, *parts])
            others = (p for p in PACKAGES if p != package and p.startswith(package + "."))
            if any(name == p or name.startswith(p + ".") for p in others):
                continue  # a folder inside langneurons/ that another package maps
            out[name] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(module: str) -> Iterator[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every langneurons import."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "langneurons":
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != "langneurons":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub, None, node.lineno
                else:
                    yield target, alias.name, node.lineno


def _room(name: str) -> str | None:
    for room in ROOMS:
        if name == room or name.startswith(room + "."):
            return room
    return None


def _edges() -> dict[str, set[str]]:
    return {m: {t for t, _, _ in _imports(m) if t in MODULES and t != m} for m in MODULES}


def test_the_walk_sees_the_whole_package() -> None:
    assert {"langneurons.errors", "langneurons.store", "langneurons.analysis.identify"} <= set(
        MODULES
    )
    assert all(path.exists() for path in MODULES.values())


def test_ground_floor_imports_only_the_ground_floor() -> None:
    bad = [
        f"{m} imports {t} (line {line})"
        for m in sorted(GROUND & set(MODULES))
        for t, _, line in _imports(m)
        if t not in GROUND
    ]
    assert not bad, "\n".join(bad)


def test_rooms_never_import_the_front_door_or_a_room_above() -> None:
    bad = []
    for m in sorted(MODULES):
        room = _room(m)
        if room is None:
            continue
        for target, _, line in _imports(m):
            if target in GROUND:
                continue
            allowed = _room(target) in ROOMS[room]
            if not allowed:
                bad.append(f"{m} imports {target} (line {line})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    edges = _edges()
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    # a package __init__ re-exporting its children is not a cycle unless a child imports it back
    assert not cycles, f"import cycles: {cycles}"


def test_analysis_shares_private_names_only_through_its_shared_modules() -> None:
    bad = []
    for m in sorted(MODULES):
        if not m.startswith("langneurons.analysis."):
            continue
        for target, name, line in _imports(m):
            if not target.startswith("langneurons.analysis.") or target == m:
                continue
            leaf = target.rsplit(".", 1)[-1]
            if leaf in SHARED_PRIVATE:
                continue
            private_module = leaf.startswith("_") and name is None
            private_name = name is not None and name.startswith("_")
            if (private_module and m != "langneurons.analysis") or private_name:
                bad.append(f"{m} imports {target}{'.' + name if name else ''} (line {line})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_short_or_say_why(module: str) -> None:
    text = MODULES[module].read_text(encoding="utf-8")
    lines = text.count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert REASON.search(doc), (
        f"{module} has {lines} lines; split it by concern or say at its top "
        "'Why this module is long: ...'"
    )


def test_the_rules_catch_what_they_should() -> None:
    """The walk itself: a relative import resolves, and a lazy import counts."""
    fake = ast.parse("from .identify import _x\n")
    node = fake.body[0]
    assert isinstance(node, ast.ImportFrom)
    assert _resolve("langneurons.analysis.stability", node) == "langneurons.analysis.identify"
    assert _resolve("langneurons.analysis", node) == "langneurons.analysis.identify"
