"""``capy pitr enable --wait`` with a worker streaming the log: it returns once the window
is open, and ``pitr status`` shows that window and the streamer."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from datetime import datetime

import pytest

from pulumi_capy.engine import Engine
from tests.cli.conftest import Capy
from tests.pg import PostgresServer
from tests.postgres.conftest import PgNamespace


@pytest.fixture
def streamed_project(capy: Capy, debian_postgres: PostgresServer) -> Iterator[str]:
    """A PostgreSQL project of the CLI's engine, with a worker thread running (as
    ``capy worker`` does) that streams its log once PITR is on."""
    namespace = PgNamespace(debian_postgres, f"t{secrets.token_hex(4)}")
    url = namespace.create_database("app")
    created = capy.json("projects", "create", "--name", "pg-app", "--database-url", url)
    project_id = str(created["project"]["id"])
    stop = threading.Event()
    with Engine(capy.engine_dir) as worker_engine:
        worker = threading.Thread(
            target=worker_engine.run_worker,
            args=(stop,),
            kwargs={"poll_interval": 0.05, "tick_interval": 3600.0},
            daemon=True,
        )
        worker.start()
        try:
            yield project_id
        finally:
            capy("pitr", "disable", "--project", project_id)  # drops the slot
            stop.set()
            worker.join(timeout=60)
            namespace.drop_all()
    assert not worker.is_alive()


def test_enable_wait_returns_with_the_window_open(capy: Capy, streamed_project: str) -> None:
    done = capy.json("pitr", "enable", "--project", streamed_project, "--wait", "--timeout", "3")

    assert done["job"]["type"] == "pitr.base_backup"
    assert done["job"]["state"] == "completed"
    status = done["pitr"]
    assert status["enabled"] is True
    assert status["window_start"] is not None
    assert status["streamer"] is not None
    start = datetime.fromisoformat(status["window_start"])
    assert start.utcoffset() is not None

    lines = capy("pitr", "status", "--project", streamed_project).stdout.splitlines()
    assert lines[2].startswith("window start:  20")
    assert lines[2].endswith("Z")
    assert lines[5].startswith(f"streamer:      worker {status['streamer']['worker_id']}")
    assert not any("nothing streams" in line for line in lines)


def test_a_pitr_restore_point_pins_a_moment_of_the_window(
    capy: Capy, streamed_project: str
) -> None:
    status = capy.json("pitr", "enable", "--project", streamed_project, "--wait", "--timeout", "3")
    moment = status["pitr"]["window_start"]

    pinned = capy.json(
        "restore-points", "create", "--project", streamed_project, "--label", "start",
        "--kind", "pitr", "--pitr-time", moment,
    )  # fmt: skip
    assert (pinned["kind"], pinned["state"], pinned["backup_key"]) == ("pitr", "active", None)
    assert datetime.fromisoformat(pinned["pitr_time"]) == datetime.fromisoformat(moment)

    human = capy(
        "restore-points", "create", "--project", streamed_project, "--label", "now",
        "--kind", "pitr",
    )  # fmt: skip
    assert "(now) pins the moment 20" in human.stdout
    listed = capy.json("restore-points", "list", "--project", streamed_project)
    assert sorted(point["label"] for point in listed) == ["now", "start"]
