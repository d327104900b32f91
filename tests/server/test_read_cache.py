"""The server's read cache: repeated GETs come from memory, and never outlive what they say.

A real server on loopback (``serve(create_app(dir))``) and writes from outside it —
another ``Engine`` on the same directory, and another process.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pulumi_capy.engine import Engine
from pulumi_capy.engine.stores.sqlite import SqliteStore
from pulumi_capy.server import create_app
from pulumi_capy.server.cache import ReadStats, StoreVersion
from tests.server.conftest import AppProject, LiveServer, add_project, serve


@pytest.fixture
def cached(tmp_path: Path) -> Iterator[tuple[LiveServer, AppProject, ReadStats]]:
    """A fresh server (its own stats), a project with a verified backup, and the stats."""
    directory = tmp_path / ".capy"
    app = create_app(directory)
    with Engine(directory) as engine, serve(app) as url:
        server = LiveServer(url=url, directory=directory, engine=engine)
        project = add_project(engine, tmp_path / "apps", "shop")
        yield server, project, app.state.read_stats


def points(http: httpx.Client, project: AppProject) -> list[dict[str, Any]]:
    response = http.get(f"/v1/projects/{project.id}/restore-points")
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["restore_points"]
    return result


def test_a_repeated_read_is_answered_from_memory_with_the_same_bytes(
    cached: tuple[LiveServer, AppProject, ReadStats],
) -> None:
    server, project, stats = cached
    key, _ = server.mint()
    with server.http(key) as http:
        path = f"/v1/projects/{project.id}/restore-points"
        http.get(path)  # the key's first use is recorded: a commit, so the next read computes
        first = http.get(path)
        hits = stats.hits
        second = http.get(path)
        assert stats.hits == hits + 1
        assert second.status_code == first.status_code == 200
        assert second.content == first.content
        assert second.headers["content-type"] == first.headers["content-type"]
        assert second.headers["content-length"] == str(len(first.content))


def test_a_write_by_another_process_is_seen_on_the_very_next_read(
    cached: tuple[LiveServer, AppProject, ReadStats],
) -> None:
    server, project, _ = cached
    key, _ = server.mint()
    script = (
        "import sys\n"
        "from pulumi_capy.api.models import CreateRestorePoint\n"
        "from pulumi_capy.engine import Engine\n"
        "with Engine(sys.argv[1]) as engine:\n"
        "    engine.create_restore_point(sys.argv[2], "
        "CreateRestorePoint(label='from-outside', backup_key=sys.argv[3]))\n"
    )
    with server.http(key) as http:
        assert points(http, project) == []
        assert points(http, project) == []  # now in memory
        arguments = [str(server.directory), project.id, project.backup.backup_key]
        subprocess.run(
            [sys.executable, "-c", script, *arguments],
            check=True,
            timeout=60,
        )
        assert [point["label"] for point in points(http, project)] == ["from-outside"]


def test_a_write_through_another_engine_handle_is_seen_too(
    cached: tuple[LiveServer, AppProject, ReadStats],
) -> None:
    server, project, _ = cached
    key, _ = server.mint()
    with server.http(key) as http:
        point = http.post(
            f"/v1/projects/{project.id}/restore-points",
            json={"label": "a", "backup_key": project.backup.backup_key},
        ).json()["restore_point"]
        assert [p["label"] for p in points(http, project)] == ["a"]
        assert [p["label"] for p in points(http, project)] == ["a"]
        server.engine.delete_restore_point(project.id, point["id"])
        assert points(http, project) == []


def test_a_revoked_key_is_refused_on_the_next_read(
    cached: tuple[LiveServer, AppProject, ReadStats],
) -> None:
    server, project, _ = cached
    key, record = server.mint()
    with server.http(key) as http:
        points(http, project)
        points(http, project)
        server.engine.delete_api_key("org_default", record.id)
        refused = http.get(f"/v1/projects/{project.id}/restore-points")
        assert refused.status_code == 401, refused.text


def test_a_key_that_expires_is_refused_although_nothing_was_written(
    cached: tuple[LiveServer, AppProject, ReadStats],
) -> None:
    server, project, stats = cached
    expires = datetime.now(UTC) + timedelta(seconds=2)
    key, _ = server.mint(expires_at=expires)
    with server.http(key) as http:
        points(http, project)  # the key's first use is recorded (a commit)
        points(http, project)
        hits = stats.hits
        points(http, project)
        assert stats.hits == hits + 1  # the answer was in memory...
        time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.2)
        refused = http.get(f"/v1/projects/{project.id}/restore-points")
        assert refused.status_code == 401, refused.text  # ...and did not outlive the key


def test_an_answer_for_one_key_is_never_given_to_another(
    cached: tuple[LiveServer, AppProject, ReadStats],
) -> None:
    server, project, _ = cached
    org_key, _ = server.mint()
    other = add_project(server.engine, server.directory.parent / "apps2", "other")
    scoped, _ = server.mint(project_id=other.id)
    reader, _ = server.mint(["projects:read"])
    path = f"/v1/projects/{project.id}/restore-points"
    with server.http(org_key) as http:
        assert http.get(path).status_code == 200
        assert http.get(path).status_code == 200
    with server.http(scoped) as http:
        assert http.get(path).status_code == 404
    with server.http(reader) as http:
        assert http.get(path).status_code == 403


def test_errors_are_not_kept(cached: tuple[LiveServer, AppProject, ReadStats]) -> None:
    server, project, stats = cached
    key, _ = server.mint()
    with server.http(key) as http:
        missing = f"/v1/projects/{project.id}/restore-points/rp_missing"
        assert http.get("/v1/projects/prj_nope/restore-points").status_code == 404
        hits = stats.hits
        assert http.get("/v1/projects/prj_nope/restore-points").status_code == 404
        assert http.get(missing).status_code in (404, 405)
        assert stats.hits == hits


def test_the_store_version_moves_with_every_commit_of_another_connection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as writer:
        writer.execute("PRAGMA journal_mode = WAL")
        writer.execute("CREATE TABLE t (x)")
    store = SqliteStore(path)
    version = StoreVersion(store)
    try:
        before = version.current()
        assert version.current() == before
        with sqlite3.connect(path) as writer:
            writer.execute("INSERT INTO t VALUES (1)")
        assert version.current() != before
    finally:
        store.close()
