"""The drawn structure holds: no circle between packages, no import that runs back up a floor.

Every module of ``vidinv`` is parsed (``ast``, so imports inside functions and under
``TYPE_CHECKING`` count too: a lazy import is still a dependency). A package is the first name
under ``vidinv`` (``vidinv.models.folder`` -> ``models``; a top-level module is its own package).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import vidinv

PACKAGE_ROOT = Path(vidinv.__file__).resolve().parent

#: The floors of ARCHITECTURE.md ("Layout"), top first. A package imports only packages on
#: floors below its own, never one on its own floor or above. Where the doc leaves an order open
#: (evaluate/, train/, and which of two packages it puts on one floor imports the other) the floors
#: here split it, each with its reason.
FLOORS: tuple[frozenset[str], ...] = (
    frozenset({"cli"}),
    # the quality evaluation: runs its variants on batch/'s executor
    frozenset({"evaluate"}),
    frozenset({"batch", "ui"}),
    # personalize runs its data pass through pipeline/'s runner
    frozenset({"personalize"}),
    frozenset({"pipeline"}),
    # train: above the networks, metrics and directions it trains with; below pipeline/ (the
    # PTI of adapt) and personalize/ (which trains with the same code)
    frozenset({"stages", "train"}),
    frozenset({"engines", "latent", "metrics"}),
    frozenset({"models", "video", "face"}),
    frozenset({"config", "frame", "io_safety", "native_log"}),
    # the ground: ``vidinv`` is ``vidinv/__init__.py`` (``__version__``); assets/ is data only
    frozenset({"errors", "assets", "vidinv"}),
)

#: Imports allowed to break the floors: (importing module, imported module). Keep it empty.
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()


def _floor_of() -> dict[str, int]:
    return {package: level for level, floor in enumerate(FLOORS) for package in floor}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_module(name: str) -> bool:
    """Whether ``vidinv.<name>`` is a module or package (not a name like ``__version__``)."""
    return (PACKAGE_ROOT / name).is_dir() or (PACKAGE_ROOT / f"{name}.py").is_file()


def _imported_modules(path: Path, module: str) -> list[tuple[str, int]]:
    """(absolute vidinv module, line) for every import in ``path`` (the module ``module``), at
    any depth: top level, inside functions, under ``if TYPE_CHECKING``."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "vidinv":  # from vidinv import models -> vidinv.models
                found += [(f"vidinv.{alias.name}" if _is_module(alias.name) else target,
                           node.lineno) for alias in node.names]
            else:
                found.append((target, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] == "vidinv"]


def _edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> where ("vidinv/x/y.py:12 vidinv.z.w")."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        source = _module_name(path)
        for target, line in _imported_modules(path, source):
            if (source, target) in KNOWN_VIOLATIONS:
                continue
            a, b = _package(source), _package(target)
            if a != b:
                edges[(a, b)].append(f"{path.relative_to(PACKAGE_ROOT.parent)}:{line} {target}")
    return edges


def _against_the_floors(edges: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The edges that import a package on the same floor or above (or one with no floor)."""
    floor = _floor_of()
    return [(a, b) for a, b in edges if floor.get(b, -1) <= floor.get(a, -1)]


def _circles(edges: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The edges a -> b from which a can be reached again."""
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph[node]
        return False

    return sorted((a, b) for a in list(graph) for b in graph[a] if reaches(b, a))


def test_every_package_has_a_floor() -> None:
    packages = {_package(_module_name(path)) for path in PACKAGE_ROOT.rglob("*.py")}
    assert packages - set(_floor_of()) == set(), "add the new package to FLOORS (and the doc)"


def test_no_import_runs_up_or_along_a_floor() -> None:
    edges = _edges()
    assert [f"{a} -> {b}: {edges[a, b][0]}" for a, b in _against_the_floors(edges)] == []


def test_no_circle_between_packages() -> None:
    edges = _edges()
    assert [f"{a} -> {b}: {edges[a, b][0]}" for a, b in _circles(edges)] == []


def test_every_known_violation_is_still_there() -> None:
    """An entry whose import is gone must leave the list (so the list only shrinks)."""
    imports = {(_module_name(path), target) for path in PACKAGE_ROOT.rglob("*.py")
               for target, _ in _imported_modules(path, _module_name(path))}
    assert sorted(KNOWN_VIOLATIONS - imports) == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """An import inside a function and a relative one are seen; an upward import and a circle
    are reported, a downward import is not."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from vidinv.pipeline import wiring\n"
                     "    from ..stages import face\n    from vidinv import errors\n")
    found = [name for name, _ in _imported_modules(probe, "vidinv.models.probe")]
    assert found == ["vidinv.pipeline", "vidinv.stages", "vidinv.errors"]
    edges = [("models", "pipeline"), ("models", "errors"), ("pipeline", "models")]
    assert _against_the_floors(edges) == [("models", "pipeline")]
    assert _circles(edges) == [("models", "pipeline"), ("pipeline", "models")]
    assert _circles([("pipeline", "models"), ("models", "errors")]) == []
