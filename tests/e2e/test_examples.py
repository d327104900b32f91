"""The other examples under the real `pulumi`."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest

from tests.e2e.conftest import Stack


def _columns(stack: Stack) -> list[str]:
    with closing(sqlite3.connect(stack.directory / "app.db")) as db:
        return [str(row[1]) for row in db.execute("PRAGMA table_info(customers)")]


def test_pre_migration_pins_a_restore_point_before_each_migration_and_rolls_back(
    pre_migration: Stack,
) -> None:
    pre_migration.up()
    first = pre_migration.outputs()
    assert "applied migrations/002_add_email.sql" in first["migration_output"]
    assert "email" in _columns(pre_migration)

    # a changed migration: a new restore point first, then the migration again
    migration = pre_migration.directory / "migrations" / "002_add_email.sql"
    migration.write_text(
        migration.read_text() + "\nCREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT);\n"
    )
    # the earlier migration already added the column: start this one from a clean database
    with closing(sqlite3.connect(pre_migration.directory / "app.db")) as db, db:
        db.execute("ALTER TABLE customers DROP COLUMN email")
    pre_migration.up()
    second = pre_migration.outputs()
    assert second["restore_point_id"] != first["restore_point_id"]
    assert second["restore_point_label"] != first["restore_point_label"]

    # the one-line rollback: the database as it was before the migration
    pre_migration.config("rollback", "true")
    pre_migration.up()
    assert "email" not in _columns(pre_migration)
    with closing(sqlite3.connect(pre_migration.directory / "app.db")) as db:
        tables = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master")}
    assert "audit" not in tables
    pre_migration.preview("--expect-no-changes")


def test_hosted_example_needs_a_server() -> None:
    pytest.skip(
        "examples/hosted runs against CapyDB's API; no hosted CapyDB is reachable from the "
        "test machines and the self-hosted `capy serve` (issue 6) does not exist yet"
    )
