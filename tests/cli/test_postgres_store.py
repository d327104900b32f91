"""The ``capy`` command on an engine whose metadata is in PostgreSQL (``CAPY_STORE_URL``):
a host's empty engine directory is enough to work on the shared store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.cli.conftest import Capy
from tests.engine.conftest import sqlite_url
from tests.engine.stores.conftest import drop_database, fresh_database
from tests.pg import PostgresServer


@pytest.fixture
def store_env(debian_postgres: PostgresServer) -> Iterator[dict[str, str]]:
    url = fresh_database(debian_postgres)
    yield {"CAPY_STORE_URL": url, "CAPY_SECRET_KEY": Fernet.generate_key().decode()}
    drop_database(debian_postgres, url)


def test_another_host_lists_what_one_host_made(
    capy: Capy, app_db: Path, tmp_path: Path, store_env: dict[str, str]
) -> None:
    made = capy(
        "projects",
        "create",
        "--name",
        "shop",
        "--database-url",
        sqlite_url(app_db),
        "--json",
        env=store_env,
    )
    project_id = json.loads(made.stdout)["project"]["id"]
    assert not (capy.engine_dir / "engine.db").exists()
    other_host = Capy(engine_dir=tmp_path / "other-host", runner=capy.runner)
    listed = json.loads(other_host("projects", "list", "--json", env=store_env).stdout)
    assert [project["id"] for project in listed] == [project_id]


def test_without_capy_secret_key_the_command_names_it(
    capy: Capy, store_env: dict[str, str], debian_postgres: PostgresServer
) -> None:
    env = {**store_env, "CAPY_SECRET_KEY": ""}
    result = capy("projects", "list", code=1, env=env)
    assert "CAPY_SECRET_KEY" in result.output
    assert debian_postgres.password not in result.output
