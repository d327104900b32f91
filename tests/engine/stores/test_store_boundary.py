"""The store is the only way to the engine's metadata: no other module opens SQLite."""

from __future__ import annotations

import ast
from pathlib import Path

import pulumi_capy

PACKAGE = Path(pulumi_capy.__file__).parent
# SQLite projects' databases, not the store: the driver, and their point-in-time recovery
ALLOWED = {
    "engine/drivers/sqlite.py",
    "engine/pitr/sqlite_replicate.py",
    "engine/pitr/sqlite_recovery.py",
}


def _imports_sqlite3(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name == "sqlite3" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "sqlite3":
            return True
    return False


def test_only_the_sqlite_store_and_the_sqlite_driver_import_sqlite3() -> None:
    importers = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if _imports_sqlite3(path)
    }
    outside = {
        name for name in importers if name not in ALLOWED and not name.startswith("engine/stores/")
    }
    assert outside == set()
    assert "engine/stores/contract.py" not in importers  # the contract is store-neutral
