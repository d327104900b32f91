"""A server killed with SIGKILL in the middle of a restore, and started again on the same
directory, finishes the job through lease rescue; the data is intact throughout."""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pulumi_capy.api.models import SCOPES, CreateApiKey, CreateProject
from pulumi_capy.engine import Engine
from tests.engine.conftest import (
    change_app_db,
    make_app_db,
    sqlite_url,
    table_contents,
    take_backup,
)

SCRIPT = Path(__file__).with_name("serve_with_worker.py")
DEADLINE = 30.0  # seconds for any one thing to happen; the test takes a few


class ServerProcess:
    """``serve_with_worker.py`` in a process of its own."""

    def __init__(self, engine_dir: Path, workdir: Path, name: str, *extra: str) -> None:
        self.port_file = workdir / f"{name}.port"
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    str(SCRIPT),
                    "--engine-dir",
                    str(engine_dir),
                    "--port-file",
                    str(self.port_file),
                    "--lease-seconds",
                    "1.0",
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        wait_for(self.port_file.is_file, "the server to listen", self)
        self.url = f"http://127.0.0.1:{self.port_file.read_text().strip()}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_for(condition: Any, what: str, server: ServerProcess | None = None) -> Any:
    """Poll ``condition()`` until it is truthy (and return it), or fail after ``DEADLINE``."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if value:
            return value
        if server is not None and server.process.poll() is not None:
            code = server.process.returncode
            pytest.fail(f"the server exited ({code}) waiting for {what}:\n{server.output()}")
        if time.monotonic() > deadline:
            detail = f"\n{server.output()}" if server is not None else ""
            pytest.fail(f"gave up waiting for {what} after {DEADLINE:g}s{detail}")
        time.sleep(0.02)


@contextlib.contextmanager
def running(engine_dir: Path, workdir: Path, name: str, *extra: str) -> Iterator[ServerProcess]:
    server = ServerProcess(engine_dir, workdir, name, *extra)
    try:
        yield server
    finally:
        server.stop()


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def test_a_restore_cut_by_sigkill_completes_after_a_restart(tmp_path: Path) -> None:
    engine_dir = tmp_path / ".capy"
    app_db = make_app_db(tmp_path / "app" / "app.db", rows=200)
    with Engine(engine_dir) as engine:
        project = engine.create_project(CreateProject(name="app", database_url=sqlite_url(app_db)))
        project_id = project.project.id
        backup = take_backup(engine, project_id, label="before")
        key = engine.create_api_key(
            "org_default", CreateApiKey(name="admin", scopes=list(SCOPES))
        ).plaintext_api_key.get_secret_value()
    backed_up = table_contents(app_db)
    change_app_db(app_db)  # written after the backup: the restore must undo it
    changed = table_contents(app_db)
    assert changed != backed_up

    marker = tmp_path / "hanging"
    headers = {"Authorization": f"Bearer {key}"}
    with running(engine_dir, tmp_path, "first", "--hang-marker", str(marker)) as first:
        with httpx.Client(base_url=first.url, headers=headers, timeout=10) as http:
            response = http.post(
                f"/v1/projects/{project_id}/restores",
                json={
                    "backup_key": backup.backup_key,
                    "target_kind": "project",
                    "confirm_project_overwrite": True,
                },
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["job"]["id"]
            wait_for(marker.is_file, "the restore to reach its commit", first)
            assert marker.read_text() == job_id
            job = http.get(f"/v1/jobs/{job_id}").json()["job"]
            assert (job["state"], job["attempts"]) == ("running", 1)
        first.process.kill()  # SIGKILL: no handler, no cleanup, the lease just stops
        first.process.wait(timeout=DEADLINE)

    # everything was ready to commit, nothing was: the database is as it was, and whole
    assert table_contents(app_db) == changed
    assert integrity(app_db) == "ok"

    with running(engine_dir, tmp_path, "second") as second:
        with httpx.Client(base_url=second.url, headers=headers, timeout=10) as http:

            def finished() -> dict[str, Any] | None:
                job = http.get(f"/v1/jobs/{job_id}").json()["job"]
                return job if job["state"] in ("completed", "failed") else None

            job = wait_for(finished, "the rescued job to finish", second)
            assert job["state"] == "completed", job
            assert job["attempts"] == 2
            assert job["claimed_by"] is not None
            assert job["result"]["safety_backup_key"]
            jobs = http.get(f"/v1/projects/{project_id}/jobs").json()["jobs"]
            backups = http.get(f"/v1/projects/{project_id}/backups").json()["backups"]
        assert "Traceback" not in second.output(), second.output()

    assert table_contents(app_db) == backed_up
    assert integrity(app_db) == "ok"
    assert not list(app_db.parent.glob("*.restoring*"))  # no scratch copy left behind
    # each attempt took its own safety backup of the database it was about to overwrite
    safety = [b for b in backups if b["backup_key"] != backup.backup_key]
    assert len(safety) == 2
    assert [j["id"] for j in jobs if j["type"] == "project.restore"] == [job_id]
