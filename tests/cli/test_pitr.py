"""``capy pitr …``, ``capy wal-push`` / ``wal-fetch`` and the PITR options of
``restore-points create`` and ``restore``, on a real embedded engine: SQLite projects, a
real PostgreSQL project, real WAL files in a temp directory."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from pulumi_capy.api.client import HOSTED_PITR
from pulumi_capy.api.models import SCOPES, CreateApiKey, PitrStatus, PitrStreamer
from pulumi_capy.cli import pitr as pitr_cli
from pulumi_capy.cli.pitr import describe_status
from pulumi_capy.cli.wal import FATAL_EXIT
from pulumi_capy.engine import Engine
from pulumi_capy.engine.pitr.server import slot_name
from pulumi_capy.server import create_app
from tests.cli.conftest import Capy
from tests.pg import PostgresServer
from tests.postgres.conftest import PgNamespace
from tests.server.conftest import serve

SEGMENT = "000000010000000000000001"


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("capy: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# ---------------------------------------------------------------- help and output


def test_enable_documents_its_options(capy: Capy) -> None:
    text = capy.raw("pitr", "enable", "--help").stdout
    for option in ("--project", "--method", "--set-wal", "--wait", "--timeout", "--json"):
        assert option in text
    assert "capy wal-push" in text
    assert "restore_command" in capy.raw("wal-fetch", "--help").stdout
    assert "archive_command" in capy.raw("wal-push", "--help").stdout
    points = capy.raw("restore-points", "create", "--help").stdout
    assert "--kind [backup|pitr]" in points
    assert "--pitr-time" in points


def test_an_open_window_reads_in_rfc_3339_utc() -> None:
    status = PitrStatus(
        enabled=True,
        method="stream",
        window_start=datetime(2026, 11, 26, 5, 0, tzinfo=UTC),
        window_end=datetime(2026, 11, 26, 14, 32, 7, tzinfo=UTC),
        lag_seconds=0.8,
        streamer=PitrStreamer(
            worker_id="wrk_1", heartbeat_at=datetime(2026, 11, 26, 14, 32, 8, tzinfo=UTC)
        ),
        notices=["a gap in the log at 0/3000000", "second notice"],
    )
    assert describe_status("prj_1", status) == [
        "point-in-time recovery of prj_1: on",
        "method:        stream",
        "window start:  2026-11-26T05:00:00Z",
        "window end:    2026-11-26T14:32:07Z",
        "lag:           0.8 s",
        "streamer:      worker wrk_1, last heartbeat 2026-11-26T14:32:08Z",
        "notice: a gap in the log at 0/3000000",
        "notice: second notice",
    ]


def test_hosted_capydb_reads_always_on_with_its_window_not_reported() -> None:
    status = PitrStatus(enabled=True, method=None, notices=[HOSTED_PITR])
    assert describe_status("prj_1", status) == [
        "point-in-time recovery of prj_1: on",
        "method:        not reported",
        "window start:  not reported",
        "window end:    not reported",
        "lag:           -",
        "streamer:      -",
        f"notice: {HOSTED_PITR}",
    ]


def test_a_project_without_pitr_says_off_and_how_to_turn_it_on(capy: Capy, project_id: str) -> None:
    lines = capy("pitr", "status", "--project", project_id).stdout.splitlines()
    assert lines == [
        f"point-in-time recovery of {project_id}: off",
        f"turn it on with: capy pitr enable --project {project_id}",
    ]
    status = capy.json("pitr", "status", "--project", project_id)
    assert status["enabled"] is False
    assert set(status) == {
        "enabled",
        "method",
        "window_start",
        "window_end",
        "lag_seconds",
        "streamer",
        "notices",
        "generations",
    }
    assert status["generations"] == []


def journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def test_a_sqlite_project_not_in_wal_mode_is_told_to_switch_and_stays_off(
    capy: Capy, project_id: str, app_db: Path
) -> None:
    result = capy("pitr", "enable", "--project", project_id, code=1)
    line = one_error_line(result.stderr)
    assert "database_url" in line
    assert "journal_mode=delete" in line
    assert "--set-wal" in line
    assert journal_mode(app_db) == "delete"  # nothing switched behind the user's back
    assert capy.json("pitr", "status", "--project", project_id)["enabled"] is False
    assert capy.json("pitr", "disable", "--project", project_id)["pitr"]["enabled"] is False


def test_an_unknown_project_is_one_line(capy: Capy) -> None:
    capy.start_engine()
    for args in (("status",), ("enable",), ("disable",)):
        result = capy("pitr", *args, "--project", "prj_nope", code=1)
        assert one_error_line(result.stderr) == "capy: error: project prj_nope not found"


def test_pitr_restores_and_points_while_pitr_is_off_are_refused(
    capy: Capy, project_id: str
) -> None:
    point = capy(
        "restore-points", "create", "--project", project_id, "--label", "x", "--kind", "pitr",
        code=1,
    )  # fmt: skip
    assert "point-in-time recovery" in one_error_line(point.stderr)
    restore = capy(
        "restore", "--project", project_id, "--restore-time", "2026-11-26T05:00:00Z", code=1
    )
    line = one_error_line(restore.stderr)
    assert "--restore-time" in line
    assert "point-in-time recovery" in line
    assert capy.json("jobs", "list", "--project", project_id) == []  # no job started


def test_pitr_point_options_are_checked(capy: Capy, project_id: str) -> None:
    both = capy(
        "restore-points", "create", "--project", project_id, "--label", "x", "--kind", "pitr",
        "--backup-key", "bk_1", code=2,
    )  # fmt: skip
    assert "--backup-key is for --kind backup" in both.stderr
    time_without_kind = capy(
        "restore-points", "create", "--project", project_id, "--label", "x",
        "--pitr-time", "2026-11-26T05:00:00Z", code=2,
    )  # fmt: skip
    assert "--pitr-time is for --kind pitr" in time_without_kind.stderr
    bad_time = capy(
        "restore-points", "create", "--project", project_id, "--label", "x", "--kind", "pitr",
        "--pitr-time", "yesterday", code=1,
    )  # fmt: skip
    assert "--pitr-time" in one_error_line(bad_time.stderr)


# ---------------------------------------------------------------- a real PostgreSQL project


@pytest.fixture
def pg_project(capy: Capy, debian_postgres: PostgresServer) -> Iterator[tuple[str, str]]:
    """A PostgreSQL project of the CLI's engine: (its id, its database URL)."""
    namespace = PgNamespace(debian_postgres, f"t{secrets.token_hex(4)}")
    url = namespace.create_database("app")
    try:
        created = capy.json("projects", "create", "--name", "pg-app", "--database-url", url)
        project_id = str(created["project"]["id"])
        try:
            yield project_id, url
        finally:
            capy("pitr", "disable", "--project", project_id)  # drops the slot
    finally:
        namespace.drop_all()


def slots(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [str(row[0]) for row in conn.execute("SELECT slot_name FROM pg_replication_slots")]


def test_enable_status_and_disable_a_postgresql_project(
    capy: Capy, pg_project: tuple[str, str]
) -> None:
    project_id, url = pg_project
    enabled = capy("pitr", "enable", "--project", project_id)
    lines = enabled.stdout.splitlines()
    assert lines[0].startswith(
        f"point-in-time recovery of {project_id} is on (method stream); "
        "its first base backup runs as job job_"
    )
    # without a worker nothing streams, and enable says so plainly
    assert any(line.startswith("notice: nothing streams") for line in lines[1:]), lines
    assert f"capy pitr status --project {project_id}" in enabled.stderr
    assert slot_name(project_id) in slots(url)

    again = capy.json("pitr", "enable", "--project", project_id)
    assert again["job"] is None
    assert again["pitr"]["enabled"] is True

    status = capy("pitr", "status", "--project", project_id).stdout.splitlines()
    assert status[:6] == [
        f"point-in-time recovery of {project_id}: on",
        "method:        stream",
        "window start:  not open",
        "window end:    not open",
        "lag:           -",
        "streamer:      none",
    ]
    notices = status[6:]
    assert notices
    assert all(line.startswith("notice: ") for line in notices)
    assert any("capy worker" in line and "capy serve --workers N" in line for line in notices)

    as_json = capy.json("pitr", "status", "--project", project_id)
    assert (as_json["enabled"], as_json["method"], as_json["streamer"]) == (True, "stream", None)
    assert (as_json["window_start"], as_json["window_end"]) == (None, None)
    jobs = capy.json("jobs", "list", "--project", project_id)
    assert [job["type"] for job in jobs] == ["pitr.base_backup"]

    disabled = capy("pitr", "disable", "--project", project_id)
    assert "is off" in disabled.stdout
    assert slot_name(project_id) not in slots(url)
    assert capy.json("pitr", "status", "--project", project_id)["enabled"] is False


def test_enable_wait_without_a_worker_fails_plainly(
    capy: Capy, pg_project: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id, _ = pg_project
    capy("pitr", "enable", "--project", project_id)  # on; its base backup job is queued
    monkeypatch.setattr(pitr_cli, "STREAMER_GRACE", 0.5)
    monkeypatch.setattr(pitr_cli, "POLL_SECONDS", 0.1)

    result = capy("pitr", "enable", "--project", project_id, "--wait", "--json", code=1)

    line = one_error_line(result.stderr.splitlines()[-1])
    assert "nothing streams" in line
    assert "capy worker" in line
    assert "capy serve --workers N" in line
    last_seen = json.loads(result.stdout)  # scripts still get the status
    assert (last_seen["enabled"], last_seen["window_start"]) == (True, None)


# ---------------------------------------------------------------- wal-push and wal-fetch


@pytest.fixture
def archive_project(capy: Capy, pg_project: tuple[str, str]) -> str:
    """A PostgreSQL project with PITR on, method archive: what wal-push pushes into."""
    project_id, _ = pg_project
    capy("pitr", "enable", "--project", project_id, "--method", "archive")
    return project_id


def test_wal_push_into_a_project_without_archive_pitr_is_refused(
    capy: Capy, project_id: str, tmp_path: Path
) -> None:
    segment = wal_file(tmp_path / "pg_wal", b"x" * 1024)
    refused = capy("wal-push", "--project", project_id, str(segment), code=1)
    line = one_error_line(refused.stderr)
    assert f"capy pitr enable --project {project_id} --method archive" in line
    fetch = capy("wal-fetch", "--project", project_id, SEGMENT, str(tmp_path / "x"), code=1)
    assert SEGMENT in fetch.stderr  # nothing was archived


def wal_file(directory: Path, content: bytes, name: str = SEGMENT) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(content)
    return path


def test_wal_push_is_idempotent_and_refuses_other_bytes(
    capy: Capy, archive_project: str, tmp_path: Path
) -> None:
    content = os.urandom(256 * 1024)
    segment = wal_file(tmp_path / "pg_wal", content)

    first = capy("wal-push", "--project", archive_project, str(segment))
    assert (first.stdout, first.stderr) == ("", "")
    capy("wal-push", "--project", archive_project, str(segment))  # archive_command retried

    other = wal_file(tmp_path / "other_server" / "pg_wal", os.urandom(256 * 1024))
    refused = capy("wal-push", "--project", archive_project, str(other), code=1)
    line = one_error_line(refused.stderr)
    assert SEGMENT in line
    assert "other contents" in line

    fetched = tmp_path / "restored" / "RECOVERYXLOG"
    fetched.parent.mkdir()
    capy("wal-fetch", "--project", archive_project, SEGMENT, str(fetched))
    assert fetched.read_bytes() == content  # the first bytes, never overwritten


def test_wal_fetch_of_a_missing_file_exits_1_in_one_line(
    capy: Capy, project_id: str, tmp_path: Path
) -> None:
    destination = tmp_path / "RECOVERYXLOG"
    result = capy("wal-fetch", "--project", project_id, SEGMENT, str(destination), code=1)
    assert result.stdout == ""
    assert result.stderr.startswith("capy wal-fetch: WAL file 000000010000000000000001 ")
    assert len(result.stderr.splitlines()) == 1
    assert not destination.exists()


def test_wal_fetch_stops_a_recovery_on_other_failures(capy: Capy, tmp_path: Path) -> None:
    capy.start_engine()
    result = capy(
        "wal-fetch", "--project", "prj_nope", SEGMENT, str(tmp_path / "x"), code=FATAL_EXIT
    )
    assert "prj_nope" in one_error_line(result.stderr)


def test_wal_commands_refuse_a_directory_without_an_engine(capy: Capy, tmp_path: Path) -> None:
    segment = wal_file(tmp_path / "pg_wal", b"x" * 1024)
    push = capy("wal-push", "--project", "prj_1", str(segment), code=1)
    assert "no capy engine in" in one_error_line(push.stderr)
    fetch = capy("wal-fetch", "--project", "prj_1", SEGMENT, str(tmp_path / "x"), code=FATAL_EXIT)
    assert "no capy engine in" in one_error_line(fetch.stderr)
    assert not capy.engine_dir.exists()  # nothing was created in its place


def test_wal_push_refuses_a_file_not_named_like_wal(
    capy: Capy, archive_project: str, tmp_path: Path
) -> None:
    stray = wal_file(tmp_path, b"x", name="postmaster.pid")
    result = capy("wal-push", "--project", archive_project, str(stray), code=1)
    line = one_error_line(result.stderr)
    assert "postmaster.pid" in line
    assert "path" in line


def test_wal_push_of_a_missing_file_names_it(
    capy: Capy, archive_project: str, tmp_path: Path
) -> None:
    missing = tmp_path / "pg_wal" / SEGMENT
    result = capy("wal-push", "--project", archive_project, str(missing), code=1)
    assert SEGMENT in one_error_line(result.stderr)


def test_wal_push_passes_over_backup_history_files(
    capy: Capy, archive_project: str, tmp_path: Path
) -> None:
    history = wal_file(
        tmp_path, b"START WAL LOCATION: 0/2000028\n", name=f"{SEGMENT}.00000028.backup"
    )
    result = capy("wal-push", "--project", archive_project, str(history))
    assert "backup history file" in result.stderr


# ---------------------------------------------------------------- against capy serve


def test_pitr_commands_speak_to_a_capy_server(capy: Capy, project_id: str) -> None:
    with Engine(capy.engine_dir) as engine:
        key = engine.create_api_key(
            "org_default", CreateApiKey(name="cli", scopes=list(SCOPES))
        ).plaintext_api_key.get_secret_value()
    env = {"CAPYDB_API_KEY": key}
    with serve(create_app(capy.engine_dir)) as url:
        status = capy.raw("--api-url", url, "pitr", "status", "--project", project_id, env=env)
        assert status.exit_code == 0, status.stderr
        assert status.stdout.splitlines()[0] == f"point-in-time recovery of {project_id}: off"
        refused = capy.raw("--api-url", url, "pitr", "enable", "--project", project_id, env=env)
        assert refused.exit_code == 1
        line = one_error_line(refused.stderr)
        assert "database_url" in line
        assert "--set-wal" in line
        off = capy.raw(
            "--api-url", url, "--json", "pitr", "disable", "--project", project_id, env=env
        )
        assert off.exit_code == 0, off.stderr
        assert json.loads(off.stdout) == {
            "pitr": {
                "enabled": False,
                "method": None,
                "window_start": None,
                "window_end": None,
                "lag_seconds": None,
                "streamer": None,
                "notices": [],
                "generations": [],
            },
            "job": None,
        }
    assert key not in status.stdout + status.stderr + refused.stderr


def test_method_archive_tells_how_to_set_archive_command(
    capy: Capy, pg_project: tuple[str, str]
) -> None:
    project_id, url = pg_project
    enabled = capy("pitr", "enable", "--project", project_id, "--method", "archive")

    assert "is on (method archive); its first base backup runs as job job_" in enabled.stdout
    command = f"'capy wal-push --engine-dir {capy.engine_dir.resolve()} --project {project_id} %p'"
    assert f"archive_command = {command}" in enabled.stdout
    assert slot_name(project_id) not in slots(url)  # the server pushes: no slot to stream from
    status = capy("pitr", "status", "--project", project_id).stdout.splitlines()
    assert status[1] == "method:        archive"
    assert status[5].startswith("streamer:      none (method archive")
    assert not any("nothing streams" in line for line in status)

    refused = capy("pitr", "enable", "--project", project_id, code=1)  # stream, while archive
    assert "method" in one_error_line(refused.stderr)
