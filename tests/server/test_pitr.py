"""``GET``/``PUT /v1/projects/{id}/pitr`` over real HTTP: envelopes, statuses, bad bodies,
unknown projects, the read cache, and a real PostgreSQL project turned on and off."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pulumi_capy.api.models import CreateProject
from pulumi_capy.engine import Engine
from pulumi_capy.engine.pitr.control import NO_STREAMER
from pulumi_capy.engine.pitr.server import slot_name
from pulumi_capy.server import create_app
from pulumi_capy.server.cache import ReadStats
from tests.pg import PostgresServer
from tests.postgres.conftest import PgNamespace
from tests.server.conftest import AppProject, LiveServer, add_project, serve
from tests.server.helpers import assert_envelope, assert_error


@pytest.fixture
def http(live_server: LiveServer, org_key: str) -> Iterator[httpx.Client]:
    with live_server.http(org_key) as client:
        yield client


def pitr_path(project_id: str) -> str:
    return f"/v1/projects/{project_id}/pitr"


def test_a_project_without_pitr_reads_off(http: httpx.Client, app_project: AppProject) -> None:
    response = http.get(pitr_path(app_project.id))
    body = assert_envelope(response, 200, "pitr")
    assert body["pitr"] == {
        "enabled": False,
        "method": None,
        "window_start": None,
        "window_end": None,
        "lag_seconds": None,
        "streamer": None,
        "notices": [],
        "generations": [],
    }
    assert response.headers["cache-control"] == "no-store"
    project = assert_envelope(http.get(f"/v1/projects/{app_project.id}"), 200, "project")
    assert (project["project"]["pitr_window_start"], project["project"]["pitr_window_end"]) == (
        None,
        None,
    )


def test_turning_off_what_is_off_is_a_200(http: httpx.Client, app_project: AppProject) -> None:
    body = assert_envelope(
        http.put(pitr_path(app_project.id), json={"enabled": False}), 200, "pitr"
    )
    assert body["pitr"]["enabled"] is False


def test_a_sqlite_project_not_in_wal_mode_is_a_400_naming_set_wal(
    http: httpx.Client, app_project: AppProject
) -> None:
    response = http.put(pitr_path(app_project.id), json={"enabled": True})
    assert_error(response, 400, "database_url", "journal_mode=delete", "--set-wal", "set_wal")
    assert http.get(pitr_path(app_project.id)).json()["pitr"]["enabled"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "enabled"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"enabled": None}, "enabled"),
        ({"enabled": True, "method": "carrier-pigeon"}, "method"),
        ({"enabled": True, "colour": "blue"}, "colour"),
    ],
)
def test_a_bad_body_is_400_naming_the_field(
    http: httpx.Client, app_project: AppProject, body: dict[str, Any], field: str
) -> None:
    assert_error(http.put(pitr_path(app_project.id), json=body), 400, field)


def test_a_missing_body_is_400(http: httpx.Client, app_project: AppProject) -> None:
    assert_error(http.put(pitr_path(app_project.id)), 400)


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_an_unknown_project_is_404(http: httpx.Client, method: str) -> None:
    body = {"enabled": False} if method == "PUT" else None
    response = http.request(method, pitr_path("prj_nonexistent"), json=body)
    assert_error(response, 404, "prj_nonexistent")


def test_a_project_key_reads_its_own_pitr(live_server: LiveServer, app_project: AppProject) -> None:
    key, _ = live_server.mint(["backups:read", "backups:write"], project_id=app_project.id)
    with live_server.http(key) as http:
        assert_envelope(http.get(pitr_path(app_project.id)), 200, "pitr")
        assert_envelope(http.put(pitr_path(app_project.id), json={"enabled": False}), 200, "pitr")


def test_the_read_cache_never_keeps_the_status(tmp_path: Path) -> None:
    directory = tmp_path / ".capy"
    app = create_app(directory)
    with Engine(directory) as engine, serve(app) as url:
        server = LiveServer(url=url, directory=directory, engine=engine)
        project = add_project(engine, tmp_path / "apps", "shop")
        key, _ = server.mint()
        stats: ReadStats = app.state.read_stats
        with server.http(key) as http:
            http.get(f"/v1/projects/{project.id}")  # the key's first use is a commit
            for _ in range(3):
                assert http.get(pitr_path(project.id)).status_code == 200
            hits = stats.hits
            for _ in range(3):
                assert http.get(pitr_path(project.id)).status_code == 200
            assert stats.hits == hits
            # while the other reads still come from memory
            http.get(f"/v1/projects/{project.id}")
            http.get(f"/v1/projects/{project.id}")
            assert stats.hits == hits + 1


# ---------------------------------------------------------------- a real PostgreSQL project


@pytest.fixture
def pg_project(
    live_server: LiveServer, debian_postgres: PostgresServer
) -> Iterator[tuple[str, str]]:
    """A PostgreSQL project of the live server: (its id, its database URL). The project
    stays (its base backup job is pending: no worker runs here); its database goes."""
    namespace = PgNamespace(debian_postgres, f"t{secrets.token_hex(4)}")
    url = namespace.create_database("app")
    project = live_server.engine.create_project(CreateProject(name="pg-app", database_url=url))
    try:
        yield project.project.id, url
    finally:
        namespace.drop_all()


def slots(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [str(row[0]) for row in conn.execute("SELECT slot_name FROM pg_replication_slots")]


def test_a_postgresql_project_is_turned_on_202_then_off_200(
    http: httpx.Client, pg_project: tuple[str, str]
) -> None:
    project_id, url = pg_project
    slot = slot_name(project_id)
    try:
        started = assert_envelope(
            http.put(pitr_path(project_id), json={"enabled": True}), 202, "pitr", "job"
        )
        assert started["job"]["type"] == "pitr.base_backup"
        assert started["job"]["project_id"] == project_id
        assert started["pitr"]["enabled"] is True
        assert started["pitr"]["method"] == "stream"
        assert slot in slots(url)

        status = assert_envelope(http.get(pitr_path(project_id)), 200, "pitr")["pitr"]
        assert (status["enabled"], status["method"], status["streamer"]) == (True, "stream", None)
        assert NO_STREAMER in status["notices"]  # no worker runs beside this server

        # on again: nothing new starts
        again = assert_envelope(
            http.put(pitr_path(project_id), json={"enabled": True}), 200, "pitr"
        )
        assert again["pitr"]["enabled"] is True
        # another method while on: a 400 naming it
        assert_error(
            http.put(pitr_path(project_id), json={"enabled": True, "method": "archive"}),
            400,
            "method",
        )
    finally:
        off = assert_envelope(http.put(pitr_path(project_id), json={"enabled": False}), 200, "pitr")
    assert off["pitr"]["enabled"] is False
    assert slot not in slots(url)
    assert http.get(pitr_path(project_id)).json()["pitr"]["enabled"] is False
