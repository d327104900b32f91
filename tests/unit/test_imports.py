"""Every module of ``pulumi_capy`` imports on its own, and their imports flow one way.

The graph is read from the source: the imports a module runs when it is
imported (its top level, including ``if TYPE_CHECKING:`` blocks and class
bodies), not those inside functions, which run later and only where needed.
An import of ``pulumi_capy.a.b`` is an edge to ``a.b`` alone, not to the
package ``a`` that Python loads first: a package's ``__init__`` re-exports its
modules, which would otherwise all be cycles.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pulumi_capy

PACKAGE = "pulumi_capy"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name, with its source file."""
    root = Path(pulumi_capy.__file__).parent
    found = {PACKAGE: root / "__init__.py"}
    for info in pkgutil.walk_packages([str(root)], prefix=f"{PACKAGE}."):
        relative = Path(*info.name.split(".")[1:])
        path = root / relative / "__init__.py" if info.ispkg else root / f"{relative}.py"
        found[info.name] = path
    return found


MODULES = _modules()
# ``python -m`` entry points run their program when imported
IMPORTABLE = sorted(name for name in MODULES if not name.endswith(".__main__"))


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements run when the module is imported: all but those in function bodies."""
    for statement in body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        yield statement
        for field in ("body", "orelse", "finalbody"):
            yield from _import_time_statements(getattr(statement, field, []))
        for handler in getattr(statement, "handlers", []):
            yield from _import_time_statements(handler.body)
        for case in getattr(statement, "cases", []):
            yield from _import_time_statements(case.body)


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _imports_of(module: str) -> set[str]:
    """The ``pulumi_capy`` modules that ``module`` imports when it is imported."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    targets: set[str] = set()
    for statement in _import_time_statements(tree.body):
        if isinstance(statement, ast.Import):
            targets.update(alias.name for alias in statement.names)
        elif isinstance(statement, ast.ImportFrom):
            base = statement.module or ""
            if statement.level:
                package = _package_of(module).split(".")
                anchor = package[: len(package) - statement.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in statement.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in MODULES else base)
    return {target for target in targets if target in MODULES and target != module}


GRAPH = {module: _imports_of(module) for module in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# Imports each module first, with no module of the package loaded before it (third-party
# ones stay loaded: they are not under test, and a fresh interpreter each costs seconds).
_IMPORT_EACH_ALONE = """
import importlib, sys, traceback
failures = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "pulumi_capy" or m.startswith("pulumi_capy.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failures.append(f"import {name}:\\n{traceback.format_exc()}")
print("\\n".join(failures))
sys.exit(1 if failures else 0)
"""


def test_every_module_imports_on_its_own() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_ALONE, *IMPORTABLE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_graph_sees_the_imports() -> None:
    # a check of the reader itself
    assert "pulumi_capy.api.errors" in GRAPH["pulumi_capy.api.validation"]
    assert "pulumi_capy.api.models" in GRAPH["pulumi_capy.api.validation"]
    assert "pulumi_capy.api.backend" in GRAPH["pulumi_capy.settings"]  # under TYPE_CHECKING
    assert "pulumi_capy.engine.service" in GRAPH["pulumi_capy.engine"]
    # inside a function: not an import-time edge
    assert "pulumi_capy.engine" not in GRAPH["pulumi_capy.settings"]


def test_imports_among_modules_form_no_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) != []  # it finds one
    assert _cycles(GRAPH) == []


def test_models_need_no_error() -> None:
    assert "pulumi_capy.api.errors" not in _reachable("pulumi_capy.api.models")


def _reachable(start: str) -> set[str]:
    """The modules ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in GRAPH[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_a_provider_process_on_sqlite_never_loads_psycopg() -> None:
    # what the dynamic provider host imports to serve a SQLite project's resources: psycopg
    # and the PostgreSQL driver cost a tenth of a second in every provider process
    code = (
        "import sys, pulumi_capy.resources, pulumi_capy.engine\n"
        "print(sorted(m for m in sys.modules if m.startswith(('psycopg', "
        "'pulumi_capy.engine.drivers.postgres', 'pulumi_capy.engine.pitr.stream'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
