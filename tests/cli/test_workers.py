"""``capy workers list`` over real ``capy worker`` processes on one store: alive ones, the
job one runs, one stopped by SIGTERM, one lost to SIGKILL; and the SQLite directories each
declared decide who runs a SQLite project's job."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pulumi_capy.api.models import CreateBackup, CreateProject
from pulumi_capy.engine import Engine
from tests.cli.conftest import Capy
from tests.cli.test_processes import STOP, _running, _stop, eventually
from tests.engine.conftest import sqlite_url

FAST = ["--heartbeat-interval", "0.2", "--poll-interval", "0.05"]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on a SQLite file: a backup of it waits (its busy timeout)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        yield
        db.execute("ROLLBACK")
    finally:
        db.close()


def _workers(capy: Capy, *options: str) -> dict[int, dict[str, Any]]:
    """``capy workers list --json`` by pid (one thread per worker process here)."""
    listed = capy.json("workers", "list", *options)
    return {int(worker["pid"]): worker for worker in listed}


def test_capy_workers_list_shows_alive_running_stopped_and_lost_workers(
    tmp_path: Path, capy: Capy, app_db: Path
) -> None:
    with Engine(capy.engine_dir) as engine:
        project = engine.create_project(
            CreateProject(name="app", database_url=sqlite_url(app_db))
        ).project

    base = ["worker", "--engine-dir", str(capy.engine_dir), *FAST]
    logs = {name: tmp_path / f"{name}.log" for name in ("apps", "none", "other")}
    with (
        _running([*base, "--sqlite-dir", str(app_db.parent)], logs["apps"]) as apps,
        _running([*base, "--no-sqlite"], logs["none"]) as none,
        _running([*base, "--sqlite-dir", str(tmp_path / "other")], logs["other"]) as other,
    ):
        pids = {apps.pid, none.pid, other.pid}

        def all_alive() -> bool:
            listed = _workers(capy, "--lost-after", "5")
            return set(listed) == pids and all(w["state"] == "alive" for w in listed.values())

        eventually(all_alive, "three workers alive", logs["apps"])
        listed = _workers(capy)
        assert listed[apps.pid]["sqlite_dirs"] == [f"{app_db.parent}/"]
        assert listed[none.pid]["sqlite_dirs"] == []
        assert listed[other.pid]["sqlite_dirs"] == [f"{tmp_path / 'other'}/"]
        table = capy("workers", "list").stdout
        assert "STATE" in table
        assert "alive" in table
        assert "none" in table  # the --no-sqlite worker's directories

        # a backup of the project waits on its locked file: the one worker that may open it
        # holds the job meanwhile, and the list says so
        with _locked(app_db), Engine(capy.engine_dir) as engine:
            job = engine.create_backup(project.id, CreateBackup(label="held"))

            def running_it() -> bool:
                return bool(_workers(capy)[apps.pid]["running"])

            eventually(running_it, "the backup running on the apps worker", logs["apps"])
            listed = _workers(capy)
            assert listed[apps.pid]["running"] == [
                {"id": job.id, "type": "project.backup", "project_id": project.id}
            ]
            assert listed[none.pid]["running"] == listed[other.pid]["running"] == []
            assert job.id in capy("workers", "list").stdout
        with Engine(capy.engine_dir) as engine:
            eventually(
                lambda: engine.get_job(job.id).state == "completed",
                "the backup once the file is free",
                logs["apps"],
            )

        _stop(none, logs["none"])
        assert none.pid not in _workers(capy)  # only with --all
        assert _workers(capy, "--all")[none.pid]["state"] == "stopped"

        other.send_signal(signal.SIGKILL)
        other.wait(STOP)

        def other_lost() -> bool:
            listed = _workers(capy, "--lost-after", "1")
            return bool(listed[other.pid]["state"] == "lost")

        eventually(other_lost, "the killed worker lost", logs["other"])
        listed = _workers(capy, "--lost-after", "1")
        assert listed[apps.pid]["state"] == "alive"
        assert listed[other.pid]["stopped_at"] is None
        lost = capy("workers", "list", "--lost-after", "1")
        assert "lost" in lost.stdout
        assert "no stop recorded" in lost.stderr
        _stop(apps, logs["apps"])


def test_capy_workers_list_against_an_api_says_it_reads_the_store(capy: Capy) -> None:
    refused = capy.raw("workers", "list", "--api-url", "http://capy.example:8080")
    assert refused.exit_code == 1
    assert "reads the engine's metadata store directly" in refused.stderr
    assert "CAPY_STORE_URL" in refused.stderr


def test_a_worker_given_both_no_sqlite_and_a_directory_is_refused(capy: Capy) -> None:
    for command in ("worker", "serve"):
        refused = capy.raw(command, "--no-sqlite", "--sqlite-dir", "/srv/apps")
        assert refused.exit_code == 2, refused.output
        assert "--no-sqlite and --sqlite-dir" in refused.stderr
