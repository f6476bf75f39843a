"""Which code a stage runs: its module plus the irforge packages it imports, directly or not.

Found by reading import statements (function-level ones included) with :mod:`ast`, never by importing, so
the answer does not depend on what else the process has loaded. The same list is the stage's code
dependency in dvc.yaml (editing a core package a stage uses re-runs that stage) and what ``code_sha256``
in provenance hashes.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "irforge"
_ROOT = Path(__file__).resolve().parents[2]  # the project folder holding irforge/, stages/, pipelines/


def _imported_packages(source: Path, lazy: bool = True) -> set[str]:
    """irforge subpackages (``irforge.corpus`` -> ``corpus``) imported in ``source``.

    ``lazy``: also the imports inside functions. A stage's own lazy imports run when it runs; inside the core,
    a function-level import of another package is an optional path (the context's generator helper) that a
    stage only takes by importing that package itself. ``if TYPE_CHECKING:`` blocks never run.
    """
    tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    found: set[str] = set()
    for node in _statements(tree.body, lazy):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE and len(parts) > 1 and (_ROOT / PACKAGE / parts[1]).is_dir():
                found.add(parts[1])
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body: list[ast.stmt], lazy: bool):
    """Every statement that can run, nested ones included; ``if TYPE_CHECKING:`` blocks never do, and function
    bodies only count when ``lazy``."""
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.orelse, lazy)
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not lazy:
            continue
        yield node
        for field in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(node, field, None) or [], lazy)
        for clause in [*(getattr(node, "handlers", None) or []), *(getattr(node, "cases", None) or [])]:
            yield from _statements(clause.body, lazy)  # except handlers and match cases


@cache
def package_closure(start: frozenset[str]) -> tuple[str, ...]:
    """The irforge subpackages reachable from ``start`` through imports, sorted."""
    seen, todo = set(), list(start)
    while todo:
        package = todo.pop()
        if package in seen:
            continue
        seen.add(package)
        for source in (_ROOT / PACKAGE / package).rglob("*.py"):
            todo += _imported_packages(source, lazy=False) - seen
    return tuple(sorted(seen))


def code_paths(module_file: Path | str) -> list[str]:
    """Project-relative paths of a stage's code: its module and the irforge package folders it uses."""
    module_file = Path(module_file).resolve()
    packages = package_closure(frozenset(_imported_packages(module_file)))
    own = module_file.relative_to(_ROOT).as_posix() if module_file.is_relative_to(_ROOT) else module_file.as_posix()
    return [own, *(f"{PACKAGE}/{p}" for p in packages)]


def code_sha256(paths: list[str]) -> str:
    """One hash over every source file of ``paths`` (Python and package data, no bytecode)."""
    h = hashlib.sha256()
    for rel in paths:
        path = _ROOT / rel  # an absolute ``rel`` (a stage module outside the project) stays itself
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                      and "__pycache__" not in p.parts and p.suffix != ".pyc")
        for f in files:
            name = f.relative_to(_ROOT).as_posix() if f.is_relative_to(_ROOT) else f.as_posix()
            h.update(name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()
