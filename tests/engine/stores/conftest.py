"""A harness per metadata store: how the contract suite opens one, and what it raises.

Add a store by adding its harness to ``HARNESSES``; the suite in
``test_store_contract.py`` then runs against it unchanged.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import psycopg
import psycopg_pool
import pytest
from cryptography.fernet import Fernet

from pulumi_capy.engine.stores.contract import NewJob, ProjectRecord, Store
from pulumi_capy.engine.stores.postgres import PostgresStore
from pulumi_capy.engine.stores.sqlite import SqliteStore
from tests.pg import PostgresServer


class StoreHarness(Protocol):
    """What the suite needs to know about one kind of store."""

    closed_error: type[Exception]  # what a read of a closed store raises

    def open(self) -> Store:
        """A new handle on the one store of this test (as another process would open it)."""
        ...


class SqliteHarness:
    closed_error: type[Exception] = sqlite3.ProgrammingError

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "engine.db"

    @classmethod
    def make(cls, request: pytest.FixtureRequest, tmp_path: Path) -> SqliteHarness:
        return cls(tmp_path)

    def open(self) -> Store:
        return SqliteStore(self.path)


def fresh_database(server: PostgresServer) -> str:
    """The URL of a new, empty database on ``server``."""
    name = f"capy_store_{secrets.token_hex(6)}"
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server.url(name)


def drop_database(server: PostgresServer, url: str) -> None:
    name = url.rsplit("/", 1)[-1]
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class PostgresHarness:
    """A fresh database on the session's PostgreSQL (Debian's) for each test."""

    closed_error: type[Exception] = psycopg_pool.PoolClosed

    def __init__(self, url: str) -> None:
        self.url = url
        self.environ = {"CAPY_SECRET_KEY": Fernet.generate_key().decode()}

    @classmethod
    def make(cls, request: pytest.FixtureRequest, tmp_path: Path) -> PostgresHarness:
        server: PostgresServer = request.getfixturevalue("debian_postgres")
        url = fresh_database(server)
        request.addfinalizer(lambda: drop_database(server, url))
        return cls(url)

    def open(self) -> Store:
        return PostgresStore(self.url, environ=self.environ)


HARNESSES = [SqliteHarness, PostgresHarness]


@pytest.fixture(params=HARNESSES, ids=lambda factory: factory.__name__.removesuffix("Harness"))
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> StoreHarness:
    factory: Any = request.param
    made: StoreHarness = factory.make(request, tmp_path)
    return made


@pytest.fixture
def store(harness: StoreHarness) -> Iterator[Store]:
    with contextlib.closing(harness.open()) as opened:
        yield opened


def project_record(project_id: str, name: str, now: datetime) -> ProjectRecord:
    return ProjectRecord(
        id=project_id,
        organization_id="org_default",
        name=name,
        environment="production",
        database_url="sqlite:////tmp/app.db",
        database_kind="sqlite",
        database_name="app",
        state="active",
        created_at=now,
        updated_at=now,
    )


def new_job(
    job_id: str,
    now: datetime,
    *,
    lock: str | None,
    job_type: str = "project.backup",
    project_id: str = "prj_1",
    run_after: datetime | None = None,
    payload: dict[str, Any] | None = None,
    preview_id: str | None = None,
    max_attempts: int = 3,
    sqlite_dir: str | None = None,
) -> NewJob:
    return NewJob(
        id=job_id,
        type=job_type,
        project_id=project_id,
        organization_id="org_default",
        payload=payload or {},
        locked_resource=lock,
        max_attempts=max_attempts,
        created_at=now,
        run_after=now if run_after is None else run_after,
        preview_database_id=preview_id,
        sqlite_dir=sqlite_dir,
    )


def enqueue(store: Store, *jobs: NewJob) -> None:
    with store.transaction() as tx:
        for job in jobs:
            store.enqueue(tx, job)


def later(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)
