"""Point-in-time recovery of a SQLite project through its surface: ``capy pitr …``,
``capy restore-points create --kind pitr`` and ``capy restore`` speaking to ``capy
serve`` over real HTTP on loopback, and the HTTP answers themselves, with a real worker
(``Engine.run_worker`` in a thread, as ``capy worker`` runs it) replicating a real
SQLite file. The engine's own tests cover the replicator's exactness under load; these
cover what a user sees and that it is true."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import Result

from pulumi_capy.api.models import SCOPES, CreateApiKey, CreateProject, PutPitr, format_timestamp
from pulumi_capy.engine import Engine
from pulumi_capy.server import create_app
from tests.cli.conftest import Capy
from tests.engine.conftest import make_app_db, sqlite_url
from tests.postgres.pitr_harness import WorkerThread
from tests.server.conftest import serve
from tests.server.helpers import assert_error

WAIT = 20.0  # seconds at most for a condition (the window opens ~1 s after enable)


def wait_until(what: str, condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("capy: error: "), stderr
    return lines[0]


def journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def commit(path: Path, label: str) -> datetime:
    """Commit one row into ``marks``; the clock right after the commit."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("INSERT INTO marks (label) VALUES (?)", (label,))
    return datetime.now(UTC)


def marks(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [str(row[0]) for row in db.execute("SELECT label FROM marks ORDER BY rowid")]


def schema(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [str(row[0]) for row in db.execute("SELECT name FROM sqlite_master ORDER BY name")]


@dataclass
class Served:
    """``capy serve`` over an engine directory with a worker beside it, a SQLite project
    (``app_db``, in rollback-journal mode as SQLite makes it) and an org key."""

    capy: Capy
    url: str
    key: str
    project_id: str
    app_db: Path
    engine: Engine  # a handle of the test's own on the same directory
    worker: WorkerThread

    def __call__(self, *args: str, code: int = 0) -> Result:
        """``capy --api-url <server> *args`` with the key in the environment."""
        result = self.capy.raw("--api-url", self.url, *args, env={"CAPYDB_API_KEY": self.key})
        assert result.exit_code == code, (
            f"capy {' '.join(args)} exited {result.exit_code}, not {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\nexception: {result.exception!r}"
        )
        assert self.key not in result.stdout + result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def pitr(self, *args: str, code: int = 0) -> Result:
        return self("pitr", *args, "--project", self.project_id, code=code)

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=30
        )

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.json("pitr", "status", "--project", self.project_id)
        return found

    def wait_covered(self, moment: datetime) -> datetime:
        """Wait until the window's end reaches ``moment``; that end."""
        ends: list[datetime] = []

        def reached() -> bool:
            end = self.engine.get_pitr(self.project_id).window_end
            if end is not None and end >= moment:
                ends.append(end)
            return bool(ends)

        wait_until(f"the window to reach {format_timestamp(moment)}", reached)
        return ends[0]

    def turn_on(self) -> dict[str, Any]:
        """``capy pitr enable --set-wal --wait``: on, with the window open."""
        done: dict[str, Any] = self.json(
            "pitr", "enable", "--project", self.project_id, "--set-wal", "--wait",
            "--timeout", str(WAIT),
        )  # fmt: skip
        return done


@pytest.fixture
def served(capy: Capy, tmp_path: Path) -> Iterator[Served]:
    app_db = make_app_db(tmp_path / "app" / "app.db", rows=20)
    with contextlib.closing(sqlite3.connect(app_db)) as db, db:
        db.execute("CREATE TABLE marks (label TEXT PRIMARY KEY)")
    directory = capy.engine_dir
    worker = WorkerThread(directory)
    with Engine(directory) as engine:
        key = engine.create_api_key(
            "org_default", CreateApiKey(name="cli", scopes=list(SCOPES))
        ).plaintext_api_key.get_secret_value()
        project = engine.create_project(
            CreateProject(name="shop", database_url=sqlite_url(app_db))
        ).project
        with serve(create_app(directory)) as url:
            worker.start()
            try:
                yield Served(capy, url, key, project.id, app_db, engine, worker)
            finally:
                engine.put_pitr(project.id, PutPitr(enabled=False))
                worker.halt()


# ---------------------------------------------------------------- turning it on


def test_enable_on_a_database_not_in_wal_mode_is_a_400_that_changes_nothing(
    served: Served,
) -> None:
    with served.http() as http:
        message = assert_error(
            http.put(f"/v1/projects/{served.project_id}/pitr", json={"enabled": True}),
            400,
            "database_url",
            "journal_mode=delete",
            "--set-wal",
        )
    assert str(served.app_db) in message
    line = one_error_line(served.pitr("enable", code=1).stderr)
    assert "database_url" in line
    assert "--set-wal" in line

    assert journal_mode(served.app_db) == "delete"
    assert served.status()["enabled"] is False
    assert served.pitr("status").stdout.splitlines()[0].endswith(": off")


def test_enable_set_wal_switches_the_database_and_turns_pitr_on(served: Served) -> None:
    done = served.turn_on()

    assert journal_mode(served.app_db) == "wal"
    status = done["pitr"]
    assert (status["enabled"], status["method"], done["job"]) == (True, "stream", None)
    assert status["window_start"] is not None
    assert status["streamer"] is not None  # the worker's replicator holds the lease
    # on again: nothing changes, no error (WAL mode now, --set-wal or not)
    again = served.json("pitr", "enable", "--project", served.project_id)
    assert again["pitr"]["enabled"] is True
    assert [g["number"] for g in again["pitr"]["generations"]] == [1]


def test_set_wal_while_another_connection_writes_fails_and_changes_nothing(
    served: Served,
) -> None:
    writer = sqlite3.connect(served.app_db, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("INSERT INTO marks (label) VALUES ('uncommitted')")
        line = one_error_line(served.pitr("enable", "--set-wal", code=1).stderr)
        assert "database_url" in line
        assert "could not switch" in line
        assert str(served.app_db) in line
        assert journal_mode(served.app_db) == "delete"
        assert served.status()["enabled"] is False
        writer.execute("COMMIT")  # the application's transaction was not disturbed
    finally:
        writer.close()
    assert marks(served.app_db) == ["uncommitted"]
    assert journal_mode(served.app_db) == "delete"


def test_method_archive_is_refused_naming_method(served: Served) -> None:
    with contextlib.closing(sqlite3.connect(served.app_db)) as db:
        db.execute("PRAGMA journal_mode = WAL")
    line = one_error_line(served.pitr("enable", "--method", "archive", code=1).stderr)
    assert "method" in line
    assert "replicator" in line
    with served.http() as http:
        assert_error(
            http.put(
                f"/v1/projects/{served.project_id}/pitr",
                json={"enabled": True, "method": "archive"},
            ),
            400,
            "method",
        )
    assert served.status()["enabled"] is False


# ---------------------------------------------------------------- status


def test_status_shows_the_current_generation_and_its_window(served: Served) -> None:
    served.turn_on()

    status = served.status()
    assert status["window_start"] is not None
    [generation] = status["generations"]
    assert (generation["number"], generation["current"]) == (1, True)
    assert generation["reason"] == "point-in-time recovery turned on"
    assert generation["restorable_from"] == status["window_start"]
    assert generation["restorable_to"] == status["window_end"]
    started = datetime.fromisoformat(generation["started_at"])
    assert started <= datetime.fromisoformat(generation["restorable_from"])
    assert not any("nothing streams" in text for text in status["notices"])

    lines = served.pitr("status").stdout.splitlines()
    assert lines[0] == f"point-in-time recovery of {served.project_id}: on"
    assert lines[1] == "method:        stream"
    assert lines[5].startswith(f"streamer:      worker {status['streamer']['worker_id']}")
    [shown] = [line for line in lines if line.startswith("generation ")]
    assert shown.startswith(
        f"generation 1 (current): since {format_timestamp(started)}, restorable 20"
    )
    assert shown.endswith("; point-in-time recovery turned on")


# ---------------------------------------------------------------- restores


def test_a_restore_time_outside_the_window_is_a_400_naming_it(served: Served) -> None:
    served.turn_on()
    for moment in (
        "2020-01-01T00:00:00Z",
        format_timestamp(datetime.now(UTC) + timedelta(hours=1)),
    ):
        result = served("restore", "--project", served.project_id, "--restore-time", moment, code=1)
        line = one_error_line(result.stderr)
        assert "--restore-time" in line
        assert "outside the PITR window" in line
        with served.http() as http:
            assert_error(
                http.post(
                    f"/v1/projects/{served.project_id}/restores", json={"restore_time": moment}
                ),
                400,
                "restore_time",
                "outside the PITR window",
            )
    assert [job["type"] for job in served.json("jobs", "list", "--project", served.project_id)] == [
        "pitr.base_backup"
    ]  # the snapshot that opened the window; no restore started


def test_a_restore_to_a_moment_holds_what_was_committed_by_then_and_nothing_after(
    served: Served,
) -> None:
    served.turn_on()
    commit(served.app_db, "before")
    # once the window's end reaches past a commit, that commit is labelled at or before it
    moment = served.wait_covered(datetime.now(UTC))
    after = commit(served.app_db, "after")
    served.wait_covered(after)  # "after" is shipped too: the restore leaves it out by time

    job = served.json(
        "restore", "--project", served.project_id, "--restore-time", format_timestamp(moment),
        "--wait", "--timeout", str(WAIT),
    )  # fmt: skip
    assert job["state"] == "completed", job
    restored = Path(
        served.engine.get_preview_database(str(job["result"]["preview_database_id"])).database_name
        or ""
    )
    assert marks(restored) == ["before"]
    assert marks(served.app_db) == ["before", "after"]
    with contextlib.closing(sqlite3.connect(restored)) as db:
        assert db.execute("SELECT count(*) FROM customers").fetchone()[0] == 20
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # the replicator wrote nothing into the user's database: the same tables come back
    assert schema(restored) == schema(served.app_db)


def test_a_pitr_restore_point_pins_now_and_restores_it(served: Served) -> None:
    served.turn_on()
    commit(served.app_db, "before")
    served.wait_covered(datetime.now(UTC))

    point = served.json(
        "restore-points", "create", "--project", served.project_id, "--label", "pre-deploy",
        "--kind", "pitr",
    )  # fmt: skip
    assert (point["kind"], point["state"], point["backup_key"]) == ("pitr", "active", None)
    commit(served.app_db, "after")

    job = served.json(
        "restore", "--project", served.project_id, "--restore-point", point["id"],
        "--wait", "--timeout", str(WAIT),
    )  # fmt: skip
    assert job["state"] == "completed", job
    assert job["result"]["restore_time"] == format_timestamp(
        datetime.fromisoformat(point["pitr_time"])
    )
    preview = served.engine.get_preview_database(str(job["result"]["preview_database_id"]))
    assert marks(Path(preview.database_name or "")) == ["before"]


def test_a_moment_between_two_generations_is_refused_naming_the_hole(served: Served) -> None:
    served.turn_on()
    first_end = served.wait_covered(datetime.now(UTC))
    # the worker stops and another starts (a crash, a redeploy): continuity cannot be
    # proven across that, so a new generation starts from a fresh snapshot
    served.worker.halt()
    served.worker.start()
    wait_until(
        "a restorable second generation",
        lambda: any(
            g["number"] == 2 and g["restorable_from"] is not None
            for g in served.status()["generations"]
        ),
    )
    one, two = served.status()["generations"]
    assert (one["current"], two["current"]) == (False, True)
    assert two["reason"].startswith("the replicator started")
    gap_start = datetime.fromisoformat(one["restorable_to"])
    gap_end = datetime.fromisoformat(two["restorable_from"])
    assert first_end <= gap_start < gap_end
    inside = format_timestamp(gap_start + (gap_end - gap_start) / 2)
    with served.http() as http:
        assert_error(
            http.post(f"/v1/projects/{served.project_id}/restores", json={"restore_time": inside}),
            400,
            "restore_time",
            "falls between generation 1",
            "generation 2",
        )
    human = served.pitr("status").stdout
    assert "generation 1: since " in human
    assert "generation 2 (current): since " in human


# ---------------------------------------------------------------- turning it off


def test_disable_stops_the_replicator(served: Served) -> None:
    served.turn_on()
    end = served.wait_covered(datetime.now(UTC))
    served.wait_covered(end + timedelta(milliseconds=300))  # the end moves while it ships

    disabled = served.pitr("disable")
    assert "is off" in disabled.stdout
    assert "replicator lets go of its file" in disabled.stdout
    status = served.status()
    assert (status["enabled"], status["window_start"], status["window_end"]) == (False, None, None)

    # the replicator lets go of the database: nothing holds a reader that keeps SQLite
    # from resetting its log any more
    def log_reset() -> bool:
        with contextlib.closing(sqlite3.connect(served.app_db, timeout=0)) as db:
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return bool(busy == 0)

    wait_until("the replicator to let go of the database", log_reset)
    covered = served.engine.rt.store.get_pitr(served.project_id)
    assert covered is not None
    commit(served.app_db, "unshipped")
    time.sleep(0.6)  # more than two of the replicator's shipments, had it still run
    still = served.engine.rt.store.get_pitr(served.project_id)
    assert still is not None
    assert (still.covered_at, still.streamed_lsn) == (covered.covered_at, covered.streamed_lsn)
    assert served.pitr("status").stdout.splitlines()[0].endswith(": off")
