"""The quickstart under the real `pulumi`: up, no-op, drift, expiry, secrets, failure, destroy,
and a restore to a moment with PITR on."""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pulumi_capy.api.models import JobState, format_timestamp
from pulumi_capy.engine import Engine
from tests.e2e.conftest import CAPY, Stack, wait_for_window, worker_process


def _engine(stack: Stack) -> Engine:
    assert stack.engine_dir.is_dir(), (
        f"the provider kept its engine elsewhere than {stack.engine_dir}"
    )
    return Engine(stack.engine_dir)


def _rows(path: Path, table: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return sorted(db.execute(f'SELECT * FROM "{table}"').fetchall())  # noqa: S608


def test_up_creates_everything_and_a_second_up_changes_nothing(quickstart: Stack) -> None:
    # a preview of a new stack: every id is unknown, and nothing may fail or be made
    planned = quickstart.preview()
    assert "4 to create" in planned.stdout
    assert not quickstart.engine_dir.exists() or not list(quickstart.engine_dir.rglob("*.zst"))
    quickstart.up()
    outputs = quickstart.outputs()

    assert outputs["restore_point_state"] == "active"
    assert outputs["restore_state"] == "completed"
    assert outputs["restore_point_id"].startswith("rp_")
    assert outputs["backup_key"].startswith(f"projects/{outputs['project_id']}/backups/")
    preview = Path(outputs["preview_path"])
    assert preview.is_file()
    assert preview.is_relative_to(quickstart.engine_dir)
    assert outputs["app_row_counts"] == {"customers": 4, "orders": 12}
    assert outputs["preview_row_counts"] == outputs["app_row_counts"]
    assert _rows(preview, "customers") == _rows(quickstart.directory / "app.db", "customers")

    # no changes, no replacements
    quickstart.preview("--expect-no-changes")
    again = quickstart.up("--expect-no-changes")
    assert "replace" not in again.stdout.lower()


def test_stack_state_holds_no_plaintext_secret(quickstart: Stack) -> None:
    key = "capy_live_" + secrets.token_urlsafe(32)
    quickstart.config("capy:apiKey", key, secret=True)
    quickstart.config("capy:mode", "embedded")  # the key is set but the engine is embedded
    quickstart.up()
    outputs = quickstart.outputs()
    exported = quickstart.export()

    assert key not in exported
    database_url = f"sqlite:///{(quickstart.directory / 'app.db').resolve()}"
    assert database_url not in exported
    preview_url = f"sqlite:///{outputs['preview_path']}"
    assert preview_url not in exported
    assert key not in "\n".join(quickstart.log)


def test_refresh_finds_a_vanished_restore_point_and_up_recreates_it(quickstart: Stack) -> None:
    quickstart.up()
    first = quickstart.outputs()
    with _engine(quickstart) as engine:
        engine.delete_restore_point(first["project_id"], first["restore_point_id"])

    drift = quickstart.preview("--refresh", "--expect-no-changes", check=False)
    assert drift.returncode != 0
    assert "before-change" in drift.stdout

    quickstart.up("--refresh")
    second = quickstart.outputs()
    assert second["restore_point_id"] != first["restore_point_id"]
    assert second["restore_point_state"] == "active"
    with _engine(quickstart) as engine:
        listed = [point.id for point in engine.list_restore_points(second["project_id"])]
    assert listed == [second["restore_point_id"]]
    quickstart.preview("--refresh", "--expect-no-changes")


def _preview_of(stack: Stack, outputs: dict[str, object]) -> str:
    """The id of the preview the quickstart's restore made (its file is ``preview_path``)."""
    with _engine(stack) as engine:
        previews = engine.list_preview_databases(str(outputs["project_id"]))
    (preview,) = [p for p in previews if p.database_name == outputs["preview_path"]]
    return preview.id


def test_refresh_finds_a_deleted_preview_and_up_restores_it_again(quickstart: Stack) -> None:
    quickstart.up()
    first = quickstart.outputs()
    preview_id = _preview_of(quickstart, first)
    deleted = subprocess.run(
        [CAPY, "previews", "delete", "--id", preview_id, "--wait"],
        cwd=quickstart.directory,
        env={**quickstart.env, "CAPY_ENGINE_DIR": str(quickstart.engine_dir)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert not Path(first["preview_path"]).exists()

    drift = quickstart.preview("--refresh", "--expect-no-changes", check=False)
    assert drift.returncode != 0
    assert "inspect" in drift.stdout

    refreshed = quickstart.run("refresh", "--yes")
    assert "inspect" in refreshed.stdout
    assert "deleted" in refreshed.stdout
    quickstart.up()  # no refresh of its own: the restore is gone from the state
    second = quickstart.outputs()
    assert second["restore_state"] == "completed"
    assert Path(second["preview_path"]).is_file()  # restored again
    assert _preview_of(quickstart, second) != preview_id
    assert second["preview_row_counts"] == second["app_row_counts"]
    quickstart.preview("--refresh", "--expect-no-changes")


def test_a_preview_past_its_ttl_is_restored_again_on_the_next_refresh(quickstart: Stack) -> None:
    quickstart.up()
    first = quickstart.outputs()
    preview_id = _preview_of(quickstart, first)
    with _engine(quickstart) as engine:
        store_path = engine.rt.store.path  # type: ignore[attr-defined]
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with closing(sqlite3.connect(store_path)) as db, db:
        db.execute(
            "UPDATE preview_databases SET ttl_expires_at = ? WHERE id = ?", (past, preview_id)
        )

    drift = quickstart.preview("--refresh", "--expect-no-changes", check=False)
    assert drift.returncode != 0
    assert "inspect" in drift.stdout
    assert "1 to replace" in drift.stdout

    replaced = quickstart.up("--refresh")
    assert "1 replaced" in replaced.stdout
    second = quickstart.outputs()
    assert second["restore_state"] == "completed"
    assert not Path(first["preview_path"]).exists()
    assert Path(second["preview_path"]).is_file()
    new_id = _preview_of(quickstart, second)
    assert new_id != preview_id
    with _engine(quickstart) as engine:
        previews = engine.list_preview_databases(str(second["project_id"]))
    assert [p.id for p in previews] == [new_id]  # the expired one was dropped first
    assert second["preview_row_counts"] == second["app_row_counts"]
    quickstart.preview("--refresh", "--expect-no-changes")


def test_an_expired_restore_point_is_replaced_on_the_next_refresh(quickstart: Stack) -> None:
    quickstart.up()
    first = quickstart.outputs()
    with _engine(quickstart) as engine:
        backup = next(
            b
            for b in engine.list_backups(first["project_id"])
            if b.backup_key == first["backup_key"]
        )
        assert engine.rt.store.expire_backup(backup.id, datetime.now(UTC))

    quickstart.up("--refresh")
    second = quickstart.outputs()
    assert second["restore_point_id"] != first["restore_point_id"]
    assert second["backup_key"] != first["backup_key"]
    assert second["restore_point_state"] == "active"


def test_a_failing_restore_fails_up_with_the_jobs_error(quickstart: Stack) -> None:
    quickstart.up()
    outputs = quickstart.outputs()
    blob = quickstart.engine_dir / "blobs" / outputs["backup_key"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    quickstart.config("restoreTrigger", "2")  # run the restore again
    failed = quickstart.up(check=False)

    assert failed.returncode != 0
    text = failed.stdout + failed.stderr
    assert "checksum mismatch" in text
    assert "failed after 1 attempt(s)" in text
    # one clean error: no Python traceback from Pulumi's dynamic provider host
    assert "Traceback" not in text, text
    with _engine(quickstart) as engine:
        jobs = engine.list_jobs(outputs["project_id"], 10)
        previews = engine.list_preview_databases(outputs["project_id"])
    restore = next(job for job in jobs if job.type == "project.restore")
    assert restore.state == JobState.failed
    assert restore.retry_classification == "permanent"
    # the failed restore's preview was removed again: nothing the stack does not know of
    assert [job.type for job in jobs[:1]] == ["preview.delete"]
    assert all(p.id != restore.preview_database_id for p in previews)


def test_preview_fails_on_a_restore_into_the_project_without_confirmation(
    quickstart: Stack,
) -> None:
    """What needs no server is checked by `pulumi preview`: the quickstart plus a restore
    over the app database that forgot ``confirm_project_overwrite``."""
    program = quickstart.directory / "__main__.py"
    program.write_text(
        program.read_text()
        + "\n\ncapy.Restore(\n"
        + '    "rollback",\n'
        + "    project_id=project.project_id,\n"
        + "    restore_point_id=before_change.restore_point_id,\n"
        + '    target_kind="project",\n'
        + ")\n"
    )

    planned = quickstart.preview(check=False)

    assert planned.returncode != 0
    text = planned.stdout + planned.stderr
    assert "confirm_project_overwrite: must be true when target_kind is 'project'" in text
    assert "Traceback" not in text
    # nothing ran: no backup was taken, no project registered
    assert not quickstart.engine_dir.exists() or not list(quickstart.engine_dir.rglob("*.zst"))


def test_destroy_removes_what_the_stack_made_and_keeps_backups_without_force(
    quickstart: Stack,
) -> None:
    quickstart.up()
    outputs = quickstart.outputs()
    project_id = outputs["project_id"]
    preview = Path(outputs["preview_path"])

    refused = quickstart.run("destroy", "--yes", check=False)

    assert refused.returncode != 0
    assert "force_destroy" in refused.stdout + refused.stderr
    assert not preview.exists()
    with _engine(quickstart) as engine:
        assert engine.list_restore_points(project_id) == []
        assert engine.list_backups(project_id) != []  # backups are kept

    quickstart.config("forceDestroy", "true")
    quickstart.up()
    quickstart.run("destroy", "--yes")
    with _engine(quickstart) as engine:
        assert engine.list_projects() == []
    assert not any((quickstart.engine_dir / "blobs").rglob("*.zst"))


def test_a_restore_to_a_moment_between_two_commits_holds_exactly_what_was_committed(
    quickstart: Stack, tmp_path: Path
) -> None:
    """PITR on the quickstart's SQLite database: a real `capy worker` ships its log while
    this test commits rows, then `Restore(restore_time=…)` lands a moment between two
    commits in a second preview, holding those rows and no later one."""
    quickstart.env["CAPY_ENGINE_DIR"] = str(quickstart.engine_dir)
    quickstart.config("pitr", "true")
    quickstart.config("forceDestroy", "true")
    log = tmp_path / "worker.log"
    with worker_process(quickstart, log) as worker:
        quickstart.up()
        outputs = quickstart.outputs()
        project_id = str(outputs["project_id"])
        assert outputs["restore_state"] == "completed"
        wait_for_window(quickstart, project_id, log)

        app = quickstart.directory / "app.db"
        marks: list[datetime] = []  # each commit returned
        befores: list[datetime] = []  # each next one began
        with closing(sqlite3.connect(app, isolation_level=None)) as db:
            db.execute("CREATE TABLE events (i INTEGER PRIMARY KEY)")
            for i in range(6):
                befores.append(datetime.now(UTC))
                db.execute("INSERT INTO events VALUES (?)", (i,))
                marks.append(datetime.now(UTC))
                time.sleep(0.1)  # the moments between two commits are clearly apart
        moment = marks[2] + (befores[3] - marks[2]) / 2
        later = marks[4] + (befores[5] - marks[4]) / 2
        wait_for_window(quickstart, project_id, log, covering=later)

        quickstart.config("restoreTime", format_timestamp(moment))
        quickstart.up("--refresh")
        outputs = quickstart.outputs()
        assert outputs["moment_state"] == "completed", outputs
        start = datetime.fromisoformat(outputs["pitr_window_start"])
        assert start <= moment <= datetime.fromisoformat(outputs["pitr_window_end"])
        first = Path(outputs["moment_path"])
        assert first.is_relative_to(quickstart.engine_dir)
        assert _rows(first, "events") == [(0,), (1,), (2,)]
        assert outputs["moment_row_counts"]["customers"] == 4
        # the restore-point preview and the app database are left as they were
        assert _rows(Path(outputs["preview_path"]), "customers") == _rows(app, "customers")
        assert [row[0] for row in _rows(app, "events")] == list(range(6))

        # another moment: a new restore; its preview takes the name, the old one goes
        quickstart.config("restoreTime", format_timestamp(later))
        quickstart.up()
        outputs = quickstart.outputs()
        assert _rows(Path(outputs["moment_path"]), "events") == [(i,) for i in range(5)]
        with _engine(quickstart) as engine:
            previews = engine.list_preview_databases(project_id)
        assert sorted(p.database_name or "" for p in previews) == sorted(
            [outputs["moment_path"], outputs["preview_path"]]
        )
        quickstart.preview("--expect-no-changes")  # the restore is an event

        quickstart.run("destroy", "--yes")
        with _engine(quickstart) as engine:
            assert engine.list_projects() == []
    assert worker.returncode == 0, log.read_text()
    assert not [path for path in (quickstart.engine_dir / "blobs").rglob("*") if path.is_file()]
