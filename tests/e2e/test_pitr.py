"""The PITR example under the real `pulumi`, on a real PostgreSQL, with a real `capy worker`
process streaming the log: PITR on, rows committed at known server times, a restore to a
moment between two commits into a new preview, another moment replacing it, then destroy
leaves no preview, no slot, no project and no blob."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from pathlib import Path
from typing import LiteralString

import psycopg

from pulumi_capy.api.models import format_timestamp
from pulumi_capy.engine import Engine
from pulumi_capy.engine.pitr.server import slot_name
from tests.e2e.conftest import Stack, wait_for_window, worker_process
from tests.pg import PostgresServer
from tests.postgres.conftest import PgNamespace

SLOT_TIMEOUT = 15.0


def _commit(
    conn: psycopg.Connection, statement: LiteralString, params: tuple[object, ...] = ()
) -> datetime:
    """Run ``statement`` (autocommit) and return the server's clock right after its commit."""
    conn.execute(statement, params)
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _rows(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [int(row[0]) for row in conn.execute("SELECT i FROM t ORDER BY i")]


def _slots(admin_url: str) -> list[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return [str(row[0]) for row in conn.execute("SELECT slot_name FROM pg_replication_slots")]


def _drop_slots_left_behind(admin_url: str, keep: list[str]) -> None:
    """After a failure: a slot left on the session's server would keep its log for ever."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE starts_with(slot_name, 'capy_') AND NOT active AND slot_name <> ALL(%s)",
            (keep,),
        )


def test_a_restore_to_a_moment_between_two_commits_lands_in_a_preview_and_destroy_cleans_up(
    pitr: Stack, debian_postgres: PostgresServer, tmp_path: Path
) -> None:
    namespace = PgNamespace(debian_postgres, f"t{secrets.token_hex(4)}")
    url = namespace.create_database("app")
    admin_url = debian_postgres.url()
    pitr.env["CAPY_ENGINE_DIR"] = str(pitr.engine_dir)
    # (the provider runs the base backup and the restore inline, in its gRPC process: the
    # engine starts their children without Python code in the fork, which crashed there)
    pitr.config("database_url", url, secret=True)
    pitr.config("force_destroy", "true")
    log = tmp_path / "worker.log"
    # the engine's slots of other tests on this server, if any (each drops its own)
    before = [slot for slot in _slots(admin_url) if slot.startswith("capy_")]
    try:
        with worker_process(pitr, log) as worker:
            pitr.up()
            project_id = str(pitr.outputs()["project_id"])
            assert slot_name(project_id) in _slots(admin_url)
            wait_for_window(pitr, project_id, log)

            with psycopg.connect(url, autocommit=True) as conn:
                _commit(conn, "CREATE TABLE t (i int PRIMARY KEY)")
                marks: list[datetime] = []
                befores: list[datetime] = []
                for i in range(5):
                    befores.append(_commit(conn, "SELECT 1"))
                    marks.append(_commit(conn, "INSERT INTO t VALUES (%s)", (i,)))
                    if i == 1:
                        conn.execute("SELECT pg_switch_wal()")  # the restore spans segments
                    time.sleep(0.1)  # the moments between two commits are clearly apart
            # after row 2 was committed, before row 3's insert began; the same for row 3
            moment = marks[2] + (befores[3] - marks[2]) / 2
            later = marks[3] + (befores[4] - marks[3]) / 2
            status = wait_for_window(pitr, project_id, log, covering=later)
            assert status["streamer"] is not None, status

            pitr.config("restore_time", format_timestamp(moment))
            pitr.up("--refresh")
            outputs = pitr.outputs()
            assert outputs["restore_state"] == "completed", outputs
            assert datetime.fromisoformat(outputs["restored_to"]) == moment
            start = datetime.fromisoformat(outputs["pitr_window_start"])
            assert start <= moment <= datetime.fromisoformat(outputs["pitr_window_end"])
            first_preview = str(outputs["preview_database_name"])
            assert outputs["preview_database_id"], outputs
            assert _rows(debian_postgres.url(first_preview)) == [0, 1, 2]

            # another moment: a new restore into a new preview, and the old preview goes
            pitr.config("restore_time", format_timestamp(later))
            pitr.up()
            outputs = pitr.outputs()
            preview_name = str(outputs["preview_database_name"])
            assert preview_name != first_preview
            assert _rows(debian_postgres.url(preview_name)) == [0, 1, 2, 3]
            assert not namespace.exists(first_preview)

            # the restore is an event: nothing runs again by itself
            pitr.preview("--expect-no-changes")
            assert debian_postgres.password not in pitr.export()  # the URL stays a secret

            pitr.run("destroy", "--yes")
            assert not namespace.exists(preview_name)
            # the project's slot is dropped by destroy; the streamer's receiver slot, if
            # any, by the streamer as it stops (the running worker notices within a cycle)
            deadline = time.monotonic() + SLOT_TIMEOUT
            while [slot for slot in _slots(admin_url) if slot.startswith("capy_")] != before:
                assert time.monotonic() < deadline, (_slots(admin_url), log.read_text())
                time.sleep(0.1)
            assert namespace.exists(namespace.name("app")), "the source is never dropped"
        assert worker.returncode == 0, log.read_text()
        # nor did the worker make the slot again before it stopped
        assert [slot for slot in _slots(admin_url) if slot.startswith("capy_")] == before
        with Engine(pitr.engine_dir) as engine:
            assert engine.list_projects() == []
        # the base backups and the archived log went with the project, the partial
        # segment a streamer was archiving meanwhile too
        left = [path for path in (pitr.engine_dir / "blobs").rglob("*") if path.is_file()]
        assert not left, left
    finally:
        _drop_slots_left_behind(admin_url, keep=before)
        namespace.drop_all()
