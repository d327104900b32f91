"""The one test suite every database driver passes, written against ``Driver`` only.

What is specific to a database (its URLs, how to create a test database and
read it back) sits behind a small harness per driver; add a driver by adding
its harness to ``HARNESSES``. Each database holds one table,
``items (id INTEGER PRIMARY KEY, label TEXT)``, but the rich one (``create_rich``),
which uses what a restore can lose, judged against the plain tools' own copy
(``control``) by a ``fingerprint`` of everything a restore must bring back.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from psycopg import sql

from pulumi_capy.api.errors import InvalidInput
from pulumi_capy.engine.drivers import Driver, DriverFailure, Materialize
from pulumi_capy.engine.drivers.sqlite import SqliteDriver
from tests.pg import PostgresServer
from tests.postgres import fidelity
from tests.postgres.conftest import PgNamespace

Rows = list[tuple[int, str]]

OLD_ROWS: Rows = [(i, f"old {i}") for i in range(1, 51)]
NEW_ROWS: Rows = [(i, f"new {i}") for i in range(1, 81)]


class DriverHarness(Protocol):
    """What the suite needs to know about one kind of database."""

    driver: Driver
    previews_dir: Path  # handed to ``Driver.preview_url``

    def create(self, name: str, rows: Sequence[tuple[int, str]]) -> str:
        """Create a database holding ``items`` with ``rows``; return its URL."""
        ...

    def replace_rows(
        self, url: str, rows: Sequence[tuple[int, str]], *, create: bool = False
    ) -> None:
        """Make ``items`` hold exactly ``rows`` (``create``: make the table first)."""
        ...

    def rows(self, url: str) -> Rows | None:
        """The rows of ``items`` in id order; None when the database has no such table."""
        ...

    def tables(self, url: str) -> list[str]:
        """The user tables of the database, sorted."""
        ...

    def exists(self, url: str) -> bool: ...

    def missing_url(self, name: str) -> str:
        """A well-formed URL of a database that does not exist."""
        ...

    def bad_urls(self) -> list[str]:
        """``database_url`` values ``inspect`` must reject."""
        ...

    def create_rich(self, name: str) -> str:
        """Create a database that uses what a restore can lose; return its URL."""
        ...

    def control(self, url: str) -> str:
        """The plain tools' copy of the database (a new database); return its URL."""
        ...

    def fingerprint(self, url: str) -> dict[str, Any]:
        """Everything a restore must bring back, comparable across databases."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- SQLite

SQLITE_RICH = """
PRAGMA page_size = 8192;
PRAGMA auto_vacuum = INCREMENTAL;
PRAGMA encoding = 'UTF-16le';
PRAGMA journal_mode = WAL;
PRAGMA user_version = 42;
PRAGMA application_id = 1128421721;
CREATE TABLE customers (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE COLLATE NOCASE, name TEXT,
    avatar BLOB, score REAL, joined TEXT DEFAULT CURRENT_TIMESTAMP
) STRICT;
CREATE TABLE tags (name TEXT PRIMARY KEY, uses INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;
CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id INTEGER NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    total NUMERIC, note TEXT, total_cents INTEGER GENERATED ALWAYS AS (total * 100) STORED
);
CREATE INDEX orders_customer ON orders (customer_id, total DESC);
CREATE INDEX customers_big ON customers (score) WHERE score > 50;
CREATE VIEW totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY 1;
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT NOT NULL);
CREATE TRIGGER orders_audit AFTER INSERT ON orders
BEGIN INSERT INTO audit (what) VALUES ('order ' || new.id); END;
CREATE VIRTUAL TABLE notes USING fts5 (body);
"""


def _sqlite_rows(db: sqlite3.Connection, name: str) -> list[tuple[object, ...]]:
    return [
        tuple(row)
        for row in db.execute(f'SELECT * FROM "{name}" ORDER BY 1')  # noqa: S608
    ]


class SqliteHarness:
    def __init__(self, root: Path, request: pytest.FixtureRequest | None = None) -> None:
        self.root = root
        self.driver: Driver = SqliteDriver()
        self.previews_dir = root / "previews"
        root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _path(url: str) -> Path:
        return Path(url.removeprefix("sqlite:///"))

    def _url(self, name: str) -> str:
        return f"sqlite:///{(self.root / f'{name}.db').resolve()}"

    def create(self, name: str, rows: Sequence[tuple[int, str]]) -> str:
        url = self._url(name)
        assert not self._path(url).exists()
        with contextlib.closing(sqlite3.connect(self._path(url))) as db, db:
            db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT)")
            db.executemany("INSERT INTO items (id, label) VALUES (?, ?)", rows)
        return url

    def replace_rows(
        self, url: str, rows: Sequence[tuple[int, str]], *, create: bool = False
    ) -> None:
        with contextlib.closing(sqlite3.connect(self._path(url))) as db, db:
            if create:
                db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT)")
            db.execute("DELETE FROM items")
            db.executemany("INSERT INTO items (id, label) VALUES (?, ?)", rows)

    def _read(self, url: str) -> sqlite3.Connection:
        return sqlite3.connect(f"{self._path(url).as_uri()}?mode=ro", uri=True)

    def rows(self, url: str) -> Rows | None:
        if "items" not in self.tables(url):
            return None
        with contextlib.closing(self._read(url)) as db:
            return [
                (int(i), str(label)) for i, label in db.execute("SELECT * FROM items ORDER BY id")
            ]

    def tables(self, url: str) -> list[str]:
        with contextlib.closing(self._read(url)) as db:
            return [
                str(row[0])
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]

    def exists(self, url: str) -> bool:
        return self._path(url).exists()

    def missing_url(self, name: str) -> str:
        return self._url(f"missing-{name}")

    def bad_urls(self) -> list[str]:
        not_sqlite = self.root / "notes.txt"
        not_sqlite.write_text("not a database\n", encoding="utf-8")
        return [
            "",
            "sqlite:",
            "sqlite://",
            "sqlite:///",
            "sqlite://relative.db",
            self.missing_url("inspect"),
            f"sqlite:///{not_sqlite.resolve()}",
            f"sqlite:///{self.root.resolve()}",  # a directory
        ]

    def create_rich(self, name: str) -> str:
        url = self._url(name)
        with contextlib.closing(sqlite3.connect(self._path(url))) as db:
            db.executescript(SQLITE_RICH)
            with db:
                db.executemany(
                    "INSERT INTO customers (email, name, avatar, score) VALUES (?, ?, ?, ?)",
                    [
                        (
                            f"C{n}@Example.test",
                            f"naïve ünïcødé {n}" if n % 7 else None,
                            secrets.token_bytes(n % 50) or None,
                            n / 3,
                        )
                        for n in range(1, 301)
                    ],
                )
                db.executemany(
                    "INSERT INTO orders (customer_id, total, note) VALUES (?, ?, ?)",
                    [(n % 300 + 1, n * 1.25, "é" * (n % 5)) for n in range(1, 901)],
                )
                db.executemany("INSERT INTO tags VALUES (?, ?)", [(f"t{n}", n) for n in range(40)])
                db.executemany(
                    "INSERT INTO notes (body) VALUES (?)", [(f"note {n} über",) for n in range(50)]
                )
                db.execute("DELETE FROM customers WHERE id % 10 = 0")  # free pages, gaps
        return url

    def control(self, url: str) -> str:
        copy = self._url(f"{self._path(url).stem}-control")
        with (
            contextlib.closing(self._read(url)) as source,
            contextlib.closing(sqlite3.connect(self._path(copy))) as target,
        ):
            source.backup(target)
        return copy

    def fingerprint(self, url: str) -> dict[str, Any]:
        with contextlib.closing(self._read(url)) as db:
            pragmas = {
                name: db.execute(f"PRAGMA {name}").fetchone()
                for name in (
                    "encoding",
                    "page_size",
                    "auto_vacuum",
                    "journal_mode",
                    "user_version",
                    "application_id",
                    "integrity_check",
                    "foreign_keys",
                )
            }
            schema = db.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
            ).fetchall()
            tables = [
                str(row[0])
                for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            rows = {name: _sqlite_rows(db, name) for name in tables}
        return {"pragmas": pragmas, "schema": schema, "rows": rows}

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- PostgreSQL


class PostgresHarness:
    """Databases on the session's real PostgreSQL (tests/pg.py), one prefix per test."""

    installation = "debian"  # tests/pg.py's INSTALLATIONS

    def __init__(self, root: Path, request: pytest.FixtureRequest | None = None) -> None:
        assert request is not None
        from pulumi_capy.engine.drivers.postgres import PostgresDriver

        self.server: PostgresServer = request.getfixturevalue(f"{self.installation}_postgres")
        self.driver: Driver = PostgresDriver()
        self.previews_dir = root / "previews"
        self.prefix = f"c_{secrets.token_hex(4)}"
        self.namespace = PgNamespace(self.server, self.prefix)

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(self.server.url(), autocommit=True)

    def _connect(self, url: str) -> psycopg.Connection:
        return psycopg.connect(url, autocommit=True)

    def create(self, name: str, rows: Sequence[tuple[int, str]]) -> str:
        database = f"{self.prefix}_{name}"
        with self._admin() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        url = self.server.url(database)
        self.replace_rows(url, rows, create=True)
        return url

    def replace_rows(
        self, url: str, rows: Sequence[tuple[int, str]], *, create: bool = False
    ) -> None:
        with self._connect(url) as db, db.transaction():
            if create:
                db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT)")
            db.execute("DELETE FROM items")
            with db.cursor() as cursor:
                cursor.executemany("INSERT INTO items (id, label) VALUES (%s, %s)", list(rows))

    def rows(self, url: str) -> Rows | None:
        if "items" not in self.tables(url):
            return None
        with self._connect(url) as db:
            return [
                (int(i), str(label)) for i, label in db.execute("SELECT * FROM items ORDER BY id")
            ]

    def tables(self, url: str) -> list[str]:
        with self._connect(url) as db:
            return [
                str(row[0])
                for row in db.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                )
            ]

    def exists(self, url: str) -> bool:
        database = url.rsplit("/", 1)[1]
        with self._admin() as admin:
            found = admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
        return found is not None

    def missing_url(self, name: str) -> str:
        return self.server.url(f"{self.prefix}_missing_{name}")

    def bad_urls(self) -> list[str]:
        existing = self.create("inspected", [])
        return [
            "",
            "postgresql://",
            "postgresql://127.0.0.1/",
            self.missing_url("inspect"),
            existing.replace(self.server.password, "wrong-password"),
        ]

    def create_rich(self, name: str) -> str:
        return fidelity.build_rich(self.namespace, name).url

    def control(self, url: str) -> str:
        return fidelity.control(self.namespace, url.rsplit("/", 1)[1], "control")

    def fingerprint(self, url: str) -> dict[str, Any]:
        return fidelity.fingerprint(url)

    def close(self) -> None:
        self.namespace.drop_all()
        with self._admin() as admin:
            names = [
                str(row[0])
                for row in admin.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s", (self.prefix + "%",)
                )
            ]
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


class PypiPostgresHarness(PostgresHarness):
    """The same, on the newest PostgreSQL major PyPI serves."""

    installation = "pypi"


HARNESSES: list[Callable[[Path, pytest.FixtureRequest], DriverHarness]] = [
    SqliteHarness,
    PostgresHarness,
    PypiPostgresHarness,
]


@pytest.fixture(params=HARNESSES, ids=lambda factory: factory.__name__.removesuffix("Harness"))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DriverHarness]:
    factory: Callable[[Path, pytest.FixtureRequest], DriverHarness] = request.param
    instance = factory(tmp_path / "databases", request)
    try:
        yield instance
    finally:
        instance.close()


# ---------------------------------------------------------------- helpers


def _copy_of(dump: Path) -> Materialize:
    def materialize(path: Path) -> None:
        if dump.is_dir():  # a driver whose dumps are directories (pg_dump -Fd)
            shutil.copytree(dump, path)
        else:
            shutil.copyfile(dump, path)

    return materialize


class _Calls:
    """A ``before_commit`` that counts its calls (and may raise)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.count = 0
        self.error = error

    def __call__(self) -> None:
        self.count += 1
        if self.error is not None:
            raise self.error


class Boom(Exception):
    pass


def _dump(harness: DriverHarness, url: str, dumps: Path, name: str) -> Path:
    dumps.mkdir(parents=True, exist_ok=True)
    path = dumps / f"{name}.{harness.driver.extension}"
    outcome = harness.driver.dump(url, path)
    assert outcome.exit_code == 0
    assert outcome.summary
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    assert files
    assert sum(file.stat().st_size for file in files) > 0
    return path


# ---------------------------------------------------------------- the contract


def test_the_driver_describes_itself(harness: DriverHarness) -> None:
    driver = harness.driver
    assert driver.kind
    assert driver.format
    assert driver.extension
    assert "/" not in driver.extension


def test_inspect_accepts_an_existing_database(harness: DriverHarness) -> None:
    url = harness.create("source", OLD_ROWS)
    info = harness.driver.inspect(url)
    assert info.kind == harness.driver.kind
    assert info.database_name
    assert harness.driver.inspect(info.url) == info  # the normalised URL is stable


def test_inspect_rejects_bad_urls_naming_database_url(harness: DriverHarness) -> None:
    for url in harness.bad_urls():
        with pytest.raises(InvalidInput) as rejected:
            harness.driver.inspect(url)
        assert rejected.value.fields == ["database_url"], url


def test_dump_check_restore_new_restore_over_drop(harness: DriverHarness, tmp_path: Path) -> None:
    driver = harness.driver
    source = harness.create("source", OLD_ROWS)
    first = _dump(harness, source, tmp_path / "dumps", "first")
    assert driver.check(first, source, {}).exit_code == 0

    # restore into a new database
    target = driver.preview_url(source, "prv_contract", harness.previews_dir)
    assert target != source
    assert not harness.exists(target)
    assert driver.database_name(target)
    before_commit = _Calls()
    outcome = driver.restore_new(_copy_of(first), target, before_commit=before_commit)
    assert outcome.exit_code == 0
    assert outcome.summary
    assert before_commit.count == 1
    assert harness.rows(target) == OLD_ROWS
    assert harness.rows(source) == OLD_ROWS  # the source is only read

    # restore over it from a newer dump
    harness.replace_rows(source, NEW_ROWS)
    second = _dump(harness, source, tmp_path / "dumps", "second")
    assert driver.check(second, source, {}).exit_code == 0
    before_commit = _Calls()
    outcome = driver.restore_over(_copy_of(second), target, before_commit=before_commit)
    assert outcome.exit_code == 0
    assert before_commit.count == 1
    assert harness.rows(target) == NEW_ROWS

    # and back again: a restore replaces the whole database
    driver.restore_over(_copy_of(first), target, before_commit=_Calls())
    assert harness.rows(target) == OLD_ROWS

    driver.drop(target)
    assert not harness.exists(target)
    driver.drop(target)  # gone already is fine
    assert harness.rows(source) == NEW_ROWS


def test_preview_urls_differ_per_preview(harness: DriverHarness) -> None:
    source = harness.create("source", OLD_ROWS)
    one = harness.driver.preview_url(source, "prv_one", harness.previews_dir)
    two = harness.driver.preview_url(source, "prv_two", harness.previews_dir)
    assert len({source, one, two}) == 3
    assert harness.driver.database_name(one) != harness.driver.database_name(two)


def test_before_commit_raising_aborts_a_restore_over_and_leaves_the_target(
    harness: DriverHarness, tmp_path: Path
) -> None:
    driver = harness.driver
    source = harness.create("source", NEW_ROWS)
    dump = _dump(harness, source, tmp_path / "dumps", "new")
    target = harness.create("target", OLD_ROWS)

    before_commit = _Calls(Boom("stop right there"))
    with pytest.raises(Boom):
        driver.restore_over(_copy_of(dump), target, before_commit=before_commit)
    assert before_commit.count == 1
    assert harness.rows(target) == OLD_ROWS
    assert harness.tables(target) == ["items"]

    # the target still takes a restore afterwards
    driver.restore_over(_copy_of(dump), target, before_commit=_Calls())
    assert harness.rows(target) == NEW_ROWS


def test_before_commit_raising_aborts_a_restore_into_a_new_database(
    harness: DriverHarness, tmp_path: Path
) -> None:
    driver = harness.driver
    source = harness.create("source", NEW_ROWS)
    dump = _dump(harness, source, tmp_path / "dumps", "new")
    target = driver.preview_url(source, "prv_aborted", harness.previews_dir)

    before_commit = _Calls(Boom("stop right there"))
    with pytest.raises(Boom):
        driver.restore_new(_copy_of(dump), target, before_commit=before_commit)
    assert before_commit.count == 1
    assert not harness.exists(target)

    # nothing was left behind that blocks the next attempt
    driver.restore_new(_copy_of(dump), target, before_commit=_Calls())
    assert harness.rows(target) == NEW_ROWS


@pytest.mark.parametrize("create", [True, False], ids=["new", "over"])
def test_a_failing_materialize_aborts_before_commit_and_changes_nothing(
    harness: DriverHarness, create: bool
) -> None:
    driver = harness.driver
    source = harness.create("source", OLD_ROWS)
    if create:
        target = driver.preview_url(source, "prv_broken", harness.previews_dir)
    else:
        target = harness.create("target", OLD_ROWS)

    def materialize(path: Path) -> None:
        path.write_bytes(b"half a dump")
        raise Boom("the blob could not be read")

    before_commit = _Calls()
    restore = driver.restore_new if create else driver.restore_over
    with pytest.raises(Boom):
        restore(materialize, target, before_commit=before_commit)
    assert before_commit.count == 0
    if create:
        assert not harness.exists(target)
    else:
        assert harness.rows(target) == OLD_ROWS


def test_restore_new_refuses_an_existing_target(harness: DriverHarness, tmp_path: Path) -> None:
    driver = harness.driver
    source = harness.create("source", NEW_ROWS)
    dump = _dump(harness, source, tmp_path / "dumps", "new")
    target = harness.create("target", OLD_ROWS)

    before_commit = _Calls()
    with pytest.raises(DriverFailure) as refused:
        driver.restore_new(_copy_of(dump), target, before_commit=before_commit)
    assert refused.value.permanent
    assert before_commit.count == 0
    assert harness.rows(target) == OLD_ROWS


def test_restore_over_a_missing_target_fails_permanently(
    harness: DriverHarness, tmp_path: Path
) -> None:
    driver = harness.driver
    dump = _dump(harness, harness.create("source", OLD_ROWS), tmp_path / "dumps", "old")
    target = harness.missing_url("target")

    before_commit = _Calls()
    with pytest.raises(DriverFailure) as refused:
        driver.restore_over(_copy_of(dump), target, before_commit=before_commit)
    assert refused.value.permanent
    assert before_commit.count == 0
    assert not harness.exists(target)


def test_empty_dump_passes_check_and_restores_an_empty_database(
    harness: DriverHarness, tmp_path: Path
) -> None:
    driver = harness.driver
    source = harness.create("source", OLD_ROWS)
    dump = tmp_path / f"empty.{driver.extension}"
    driver.empty_dump(source, dump)
    assert dump.exists()  # a file, or a directory for drivers whose dumps are
    assert driver.check(dump, source, {}).exit_code == 0

    target = driver.preview_url(source, "prv_empty", harness.previews_dir)
    driver.restore_new(_copy_of(dump), target, before_commit=_Calls())
    assert harness.exists(target)
    assert harness.tables(target) == []
    assert harness.rows(target) is None


def test_check_rejects_a_damaged_dump_permanently(harness: DriverHarness, tmp_path: Path) -> None:
    driver = harness.driver
    garbage = tmp_path / f"garbage.{driver.extension}"
    garbage.write_bytes(b"this is not a dump of any database\n" * 200)
    source = harness.create("source", OLD_ROWS)
    with pytest.raises(DriverFailure) as rejected:
        driver.check(garbage, source, {})
    assert rejected.value.permanent


def test_dump_of_a_missing_database_fails_permanently(
    harness: DriverHarness, tmp_path: Path
) -> None:
    with pytest.raises(DriverFailure) as failed:
        harness.driver.dump(harness.missing_url("source"), tmp_path / "never.dump")
    assert failed.value.permanent
    assert not (tmp_path / "never.dump").exists()  # nothing half-written is left
    assert not harness.exists(harness.missing_url("source"))


def test_drop_of_a_missing_database_is_fine(harness: DriverHarness) -> None:
    source = harness.create("source", OLD_ROWS)
    target = harness.driver.preview_url(source, "prv_never", harness.previews_dir)
    harness.driver.drop(target)
    assert not harness.exists(target)
    assert harness.rows(source) == OLD_ROWS


def test_a_restore_is_what_the_plain_tools_make(harness: DriverHarness, tmp_path: Path) -> None:
    """Into a new database and over a changed one, a restore brings back exactly what the
    plain tools' own copy of the source holds (SQLite: the online backup API; PostgreSQL:
    ``pg_dump --create | psql``), judged by the harness's fingerprint."""
    driver = harness.driver
    source = harness.create_rich("rich")
    expected = harness.fingerprint(harness.control(source))
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    dump = dumps / f"rich.{driver.extension}"
    details = driver.dump(source, dump).details

    target = driver.preview_url(source, "prv_exact", harness.previews_dir)
    driver.restore_new(_copy_of(dump), target, before_commit=_Calls(), details=details)
    assert harness.fingerprint(target) == expected

    harness.replace_rows(target, NEW_ROWS, create=True)  # the target changes, then is restored
    assert harness.fingerprint(target) != expected
    driver.restore_over(_copy_of(dump), target, before_commit=_Calls(), details=details)
    assert harness.fingerprint(target) == expected
