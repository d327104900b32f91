"""Shared fixtures of the engine tests: real SQLite files in tmp dirs, a ManualClock.

Helpers (import them from ``tests.engine.conftest``):

- ``make_app_db(path, rows=100)``: an application database with two tables and
  known rows (``customers`` and ``orders``); returns the path.
- ``change_app_db(path)``: changes every table of such a database (updates,
  deletes, inserts and a new table), so that its contents differ from a backup.
- ``table_contents(path)``: ``{table: sorted rows}`` of a SQLite file, for comparing.
- ``sqlite_url(path)``: the ``sqlite:////absolute/path`` URL of a file.
- ``take_backup(engine, project_id, label)``: back up, run the verification, return the Backup.

Fixtures: ``engine_dir``, ``clock`` (a ``ManualClock`` at ``START``), ``engine``
(an ``Engine`` on ``engine_dir`` with that clock, closed afterwards), ``app_db``
and ``project`` (a project protecting ``app_db``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pulumi_capy.api.models import Backup, CreateBackup, CreateProject, Project
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.service import Engine

__all__ = [
    "START",
    "change_app_db",
    "make_app_db",
    "sqlite_url",
    "table_contents",
    "take_backup",
]

START = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday, midnight UTC


def sqlite_url(path: Path) -> str:
    """``sqlite:////abs/path.db`` for a file."""
    return f"sqlite:///{Path(path).resolve()}"


def make_app_db(path: Path, rows: int = 100) -> Path:
    """Create a SQLite application database with known rows; return its path.

    ``customers(id, name, email)`` holds ``rows`` rows and ``orders(id,
    customer_id, amount_cents, note)`` holds ``2 * rows`` (with some NULL notes).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT)"
        )
        db.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, "
            "customer_id INTEGER NOT NULL REFERENCES customers (id), "
            "amount_cents INTEGER NOT NULL, note TEXT)"
        )
        db.execute("CREATE INDEX orders_customer ON orders (customer_id)")
        db.executemany(
            "INSERT INTO customers (id, name, email) VALUES (?, ?, ?)",
            [(i, f"customer-{i}", f"c{i}@example.test") for i in range(1, rows + 1)],
        )
        db.executemany(
            "INSERT INTO orders (id, customer_id, amount_cents, note) VALUES (?, ?, ?, ?)",
            [
                (i, (i - 1) % rows + 1, i * 125, None if i % 3 == 0 else f"order {i}")
                for i in range(1, 2 * rows + 1)
            ],
        )
    return path


def change_app_db(path: Path) -> None:
    """Change every table of a ``make_app_db`` database and add one."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE customers SET name = name || ' (renamed)' WHERE id % 2 = 0")
        db.execute("DELETE FROM orders WHERE id % 5 = 0")
        db.execute(
            "INSERT INTO customers (name, email) VALUES ('late customer', 'late@example.test')"
        )
        db.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, event TEXT NOT NULL)")
        db.execute("INSERT INTO audit (event) VALUES ('changed after the backup')")


def table_contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """``{table: rows sorted}`` of every user table of a SQLite file (opened read-only)."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        tables = [
            str(row[0])
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            table: sorted(
                (tuple(row) for row in db.execute(f'SELECT * FROM "{table}"')),  # noqa: S608
                key=repr,
            )
            for table in tables
        }


def take_backup(engine: Engine, project_id: str, label: str | None = None) -> Backup:
    """Back up a project, run its verification, and return the backup."""
    job = engine.wait_for_job(engine.create_backup(project_id, CreateBackup(label=label)).id)
    engine.run_pending()
    assert job.result is not None
    key = job.result["backup_key"]
    return next(backup for backup in engine.list_backups(project_id) if backup.backup_key == key)


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    return tmp_path / ".capy"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def engine(engine_dir: Path, clock: ManualClock) -> Iterator[Engine]:
    with Engine(engine_dir, clock=clock) as instance:
        yield instance


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    return make_app_db(tmp_path / "app" / "app.db")


@pytest.fixture
def project(engine: Engine, app_db: Path) -> Project:
    return engine.create_project(CreateProject(name="app", database_url=sqlite_url(app_db))).project
