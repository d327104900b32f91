"""The quickstart under the real `pulumi`: up, no-op, drift, expiry, secrets, failure, destroy."""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from pulumi_capy.api.models import JobState
from pulumi_capy.engine import Engine
from tests.e2e.conftest import Stack


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
    with _engine(quickstart) as engine:
        jobs = engine.list_jobs(outputs["project_id"], 10)
        previews = engine.list_preview_databases(outputs["project_id"])
    restore = next(job for job in jobs if job.type == "project.restore")
    assert restore.state == JobState.failed
    assert restore.retry_classification == "permanent"
    # the failed restore's preview was removed again: nothing the stack does not know of
    assert [job.type for job in jobs[:1]] == ["preview.delete"]
    assert all(p.id != restore.preview_database_id for p in previews)


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
