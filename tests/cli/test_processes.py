"""``capy worker`` and ``capy serve`` as real processes: jobs run, SIGTERM stops them cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pulumi_capy.api.models import CreateBackup, CreateProject, Job
from pulumi_capy.engine import Engine
from tests.cli.conftest import Capy
from tests.engine.conftest import sqlite_url

STARTUP = 30.0  # seconds a process may take to be ready
STOP = 10.0  # seconds it may take to exit after SIGTERM


def _capy_process(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pulumi_capy.cli.main", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


@contextlib.contextmanager
def _running(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    process = _capy_process(args, log)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STOP)


def _stop(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, then the process must exit 0 within STOP seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(STOP)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {STOP}s after SIGTERM:\n{log.read_text()}")
    assert code == 0, log.read_text()


def eventually(check: Callable[[], bool], what: str, log: Path, limit: float = STARTUP) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {limit}s:\n{log.read_text()}")
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_capy_worker_runs_queued_jobs_and_stops_on_sigterm(
    tmp_path: Path, capy: Capy, app_db: Path
) -> None:
    with Engine(capy.engine_dir) as engine:
        project = engine.create_project(
            CreateProject(name="app", database_url=sqlite_url(app_db))
        ).project
        queued = engine.create_backup(project.id, CreateBackup(label="queued"))
    assert queued.state == "pending"

    log = tmp_path / "worker.log"
    args = ["worker", "--engine-dir", str(capy.engine_dir), "--threads", "1"]
    with _running([*args, "--poll-interval", "0.1"], log) as process:
        with Engine(capy.engine_dir) as engine:

            def finished() -> bool:
                assert process.poll() is None, log.read_text()
                job: Job = engine.get_job(queued.id)
                if job.state != "completed" or job.result is None:
                    return False
                verify = engine.get_job(str(job.result["verify_job_id"]))
                return verify.state == "completed"

            eventually(finished, "the queued backup and its verification", log)
            claimed_by = engine.get_job(queued.id).claimed_by or ""
            assert claimed_by.split(":")[1] == str(process.pid)
            backups = engine.list_backups(project.id)
        assert [(b.label, b.verification_state) for b in backups] == [("queued", "verified")]
        _stop(process, log)
    assert "capy worker: stopped" in log.read_text()


def test_capy_serve_with_workers_serves_keys_and_runs_backups(
    tmp_path: Path, capy: Capy, app_db: Path
) -> None:
    key = capy("keys", "create", "--name", "admin", "--scopes", "all").stdout.strip()
    project_id = capy.json(
        "projects", "create", "--name", "app", "--database-url", sqlite_url(app_db)
    )["project"]["id"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    args = ["serve", "--engine-dir", str(capy.engine_dir), "--port", str(port), "--workers", "1"]
    with _running(args, log) as process, httpx.Client(base_url=url, timeout=5) as http:

        def answers() -> bool:
            assert process.poll() is None, log.read_text()
            try:
                return http.get("/v1/openapi.json").status_code == 200
            except httpx.TransportError:
                return False

        eventually(answers, "the server answering", log)
        me = http.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200, me.text
        assert me.json()["server"]["name"] == "pulumi-capy"
        assert http.get("/v1/me").status_code == 401

        env = {"CAPYDB_API_KEY": key}
        created = capy.raw(
            "--api-url", url, "backups", "create", "--project", project_id, "--wait", "--json",
            env=env,
        )  # fmt: skip
        assert created.exit_code == 0, (created.stderr, log.read_text())
        job = _parse_job(created.stdout)
        assert job.state == "completed"
        assert job.claimed_by is not None  # a worker thread of the server ran it: host:pid:…
        assert job.claimed_by.split(":")[1] == str(process.pid)
        listed = capy.raw(
            "--api-url", url, "backups", "list", "--project", project_id, "--json", env=env
        )
        assert listed.exit_code == 0, listed.stderr
        assert '"verification_state": "verified"' in listed.stdout
        _stop(process, log)


def _parse_job(text: str) -> Job:
    return Job.model_validate_json(text)
