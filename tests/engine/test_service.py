"""``Engine`` as a ``Backend``: every call of the restore surface on real SQLite files.

No part of the engine is mocked; time is a ``ManualClock``, so nothing sleeps.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import Conflict, Forbidden, InvalidInput, JobFailed, NotFound
from pulumi_capy.api.models import (
    Backup,
    CreateBackup,
    CreatePreview,
    CreateProject,
    CreateRestorePoint,
    Job,
    JobState,
    PreviewDatabase,
    PreviewMode,
    Project,
    PutScheduledBackup,
    RestorePointKind,
    RestoreRequest,
    TargetKind,
)
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.service import Engine
from tests.engine.conftest import (
    START,
    change_app_db,
    make_app_db,
    sqlite_url,
    table_contents,
    take_backup,
)

WORKER_ID = re.compile(r"^[^:\s]+:\d+:[0-9a-f]{6}$")


# ---------------------------------------------------------------- helpers


def blob_path(engine: Engine, backup_key: str) -> Path:
    return engine.directory / "blobs" / backup_key


def preview_of(engine: Engine, project_id: str, preview_id: str) -> PreviewDatabase:
    return next(p for p in engine.list_preview_databases(project_id) if p.id == preview_id)


def backup_of(engine: Engine, project_id: str, backup_id: str) -> Backup:
    return next(b for b in engine.list_backups(project_id) if b.id == backup_id)


def restore_to_new_preview(engine: Engine, project_id: str, backup_key: str) -> PreviewDatabase:
    """Restore a backup into a new preview; return the (ready) preview."""
    job = engine.wait_for_job(
        engine.create_restore(project_id, RestoreRequest(backup_key=backup_key)).id
    )
    assert job.preview_database_id is not None
    return preview_of(engine, project_id, job.preview_database_id)


def preview_file(preview: PreviewDatabase) -> Path:
    assert preview.database_name is not None
    return Path(preview.database_name)


def job_ids(engine: Engine, project_id: str) -> set[str]:
    return {job.id for job in engine.list_jobs(project_id, limit=1000)}


# ---------------------------------------------------------------- projects


def test_create_project_with_an_absolute_url(engine: Engine, app_db: Path) -> None:
    url = sqlite_url(app_db)
    assert url.startswith("sqlite:////")

    created = engine.create_project(CreateProject(name="shop", database_url=url))

    assert created.job is None
    project = created.project
    assert project.name == "shop"
    assert project.database_kind == "sqlite"
    assert project.database_name == str(app_db.resolve())
    assert project.state == "active"
    assert engine.get_project(project.id) == project
    assert engine.list_projects() == [project]


def test_create_project_with_a_relative_url_stores_it_absolute(
    engine: Engine, app_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(app_db.parent)

    project = engine.create_project(
        CreateProject(name="shop", database_url="sqlite:///app.db")
    ).project

    assert project.database_name == str(app_db.resolve())
    record = engine.rt.store.get_project(project.id)
    assert record is not None
    assert record.database_url == f"sqlite:///{app_db.resolve()}"
    # the stored URL does not depend on the working directory any more
    monkeypatch.chdir(tmp_path)
    backup = take_backup(engine, project.id)
    assert backup.database_name == str(app_db.resolve())
    assert backup.verification_state == "verified"


@pytest.mark.parametrize(
    "case",
    ["missing file", "not sqlite", "directory", "postgres", "mysql", "no file", "empty", "none"],
)
def test_create_project_refuses_a_bad_database_url(
    engine: Engine, tmp_path: Path, case: str
) -> None:
    text_file = tmp_path / "notes.txt"
    text_file.write_text("this is not a SQLite database, just some text of some length\n")
    url = {
        "missing file": sqlite_url(tmp_path / "missing.db"),
        "not sqlite": sqlite_url(text_file),
        "directory": sqlite_url(tmp_path),
        "postgres": "postgresql://user:secret@db.example.test:5432/app",
        "mysql": "mysql://user@db.example.test/app",
        "no file": "sqlite:///",
        "empty": "  ",
        "none": None,
    }[case]

    request: Any = {"name": "app", "database_url": url}  # validated by the engine

    with pytest.raises(InvalidInput) as caught:
        engine.create_project(request)

    assert caught.value.fields == ["database_url"]
    assert "secret" not in str(caught.value)
    assert engine.list_projects() == []


def test_create_project_refuses_a_duplicate_name(
    engine: Engine, project: Project, tmp_path: Path
) -> None:
    other = make_app_db(tmp_path / "other.db")

    with pytest.raises(Conflict, match=project.name):
        engine.create_project(CreateProject(name=project.name, database_url=sqlite_url(other)))

    assert [p.id for p in engine.list_projects()] == [project.id]


def test_get_unknown_project_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.get_project("prj_0000000000000000")


# ---------------------------------------------------------------- backups


def test_backup_completes_and_is_verified_by_the_next_run(
    engine: Engine, project: Project, app_db: Path
) -> None:
    job = engine.create_backup(project.id, CreateBackup(label="first"))
    assert job.state == JobState.pending
    assert job.type == "project.backup"

    done = engine.wait_for_job(job.id)

    assert done.state == JobState.completed
    assert done.result is not None
    key = done.result["backup_key"]
    assert key.startswith(f"projects/{project.id}/backups/")
    assert blob_path(engine, key).is_file()
    [backup] = engine.list_backups(project.id)
    assert backup.id == done.result["backup_id"]
    assert backup.backup_key == key
    assert backup.label == "first"
    assert backup.state == "completed"
    assert backup.database_name == str(app_db.resolve())
    assert backup.size_bytes == app_db.stat().st_size
    assert backup.verification_state == "pending"
    assert backup.verified_at is None

    assert engine.run_pending() == 1

    [verified] = engine.list_backups(project.id)
    assert verified.verification_state == "verified"
    assert verified.verification_error is None
    assert verified.verified_at is not None
    verify_job = engine.get_job(done.result["verify_job_id"])
    assert verify_job.type == "backup.verify"
    assert verify_job.state == JobState.completed


def test_list_backups_in_creation_order(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    assert engine.list_backups(project.id) == []
    first = take_backup(engine, project.id, "one")
    clock.advance(60)
    second = take_backup(engine, project.id, "two")

    assert [b.id for b in engine.list_backups(project.id)] == [first.id, second.id]
    assert first.backup_key != second.backup_key


@pytest.mark.parametrize("call", ["list_backups", "create_backup"])
def test_backups_of_an_unknown_project_are_not_found(engine: Engine, call: str) -> None:
    with pytest.raises(NotFound):
        getattr(engine, call)("prj_0000000000000000")


# ---------------------------------------------------------------- restore points


def test_create_restore_point_pins_a_backup(engine: Engine, project: Project) -> None:
    backup = take_backup(engine, project.id)

    point = engine.create_restore_point(
        project.id,
        CreateRestorePoint(label="before migration", backup_key=backup.backup_key, note="n"),
    )

    assert point.project_id == project.id
    assert point.kind == "backup"
    assert point.backup_key == backup.backup_key
    assert point.backup_id == backup.id
    assert point.state == "active"
    assert point.label == "before migration"
    assert point.note == "n"
    assert engine.list_restore_points(project.id) == [point]


def test_create_restore_point_of_an_unknown_backup_key(engine: Engine, project: Project) -> None:
    take_backup(engine, project.id)

    with pytest.raises(InvalidInput) as caught:
        engine.create_restore_point(
            project.id,
            CreateRestorePoint(
                label="x", backup_key=f"projects/{project.id}/backups/bkp_nope.sqlite.zst"
            ),
        )

    assert caught.value.fields == ["backup_key"]
    assert engine.list_restore_points(project.id) == []


def test_create_restore_point_of_kind_pitr_is_refused_while_pitr_is_off(
    engine: Engine, project: Project
) -> None:
    with pytest.raises(InvalidInput) as caught:
        engine.create_restore_point(
            project.id, CreateRestorePoint(label="now", kind=RestorePointKind.pitr)
        )

    assert caught.value.fields == ["pitr_time"]
    assert "point-in-time recovery is off" in str(caught.value)
    assert f"capy pitr enable --project {project.id}" in str(caught.value)
    assert engine.list_restore_points(project.id) == []


def test_delete_restore_point_keeps_its_backup(engine: Engine, project: Project) -> None:
    backup = take_backup(engine, project.id)
    point = engine.create_restore_point(
        project.id, CreateRestorePoint(label="keep", backup_key=backup.backup_key)
    )

    engine.delete_restore_point(project.id, point.id)

    assert engine.list_restore_points(project.id) == []
    assert [b.id for b in engine.list_backups(project.id)] == [backup.id]
    assert blob_path(engine, backup.backup_key).is_file()
    with pytest.raises(NotFound):
        engine.delete_restore_point(project.id, point.id)


def test_delete_restore_point_used_by_a_pending_restore(engine: Engine, project: Project) -> None:
    backup = take_backup(engine, project.id)
    point = engine.create_restore_point(
        project.id, CreateRestorePoint(label="busy", backup_key=backup.backup_key)
    )
    job = engine.create_restore(project.id, RestoreRequest(restore_point_id=point.id))

    with pytest.raises(Conflict, match=job.id):
        engine.delete_restore_point(project.id, point.id)

    engine.wait_for_job(job.id)
    engine.delete_restore_point(project.id, point.id)
    assert engine.list_restore_points(project.id) == []


def test_delete_unknown_restore_point_is_not_found(engine: Engine, project: Project) -> None:
    with pytest.raises(NotFound):
        engine.delete_restore_point(project.id, "rp_0000000000000000")


# ---------------------------------------------------------------- restores


def test_restore_to_a_new_preview(engine: Engine, project: Project, app_db: Path) -> None:
    at_backup = table_contents(app_db)
    backup = take_backup(engine, project.id)
    change_app_db(app_db)
    changed = table_contents(app_db)
    assert changed != at_backup

    job = engine.create_restore(
        project.id, RestoreRequest(backup_key=backup.backup_key, preview_name="restored")
    )
    assert job.state == JobState.pending
    assert job.preview_database_id is not None
    creating = preview_of(engine, project.id, job.preview_database_id)
    assert creating.state == "creating"
    done = engine.wait_for_job(job.id)

    assert done.result is not None
    assert done.result["preview_database_id"] == job.preview_database_id
    assert done.result["backup_key"] == backup.backup_key
    preview = preview_of(engine, project.id, job.preview_database_id)
    assert preview.name == "restored"
    assert preview.state == "ready"
    assert preview.mode == "restore"
    assert preview.source_backup_key == backup.backup_key
    assert preview.ttl_expires_at == START + timedelta(hours=24)
    path = preview_file(preview)
    assert path.is_file()
    assert path.is_relative_to(engine.directory)
    assert table_contents(path) == at_backup
    assert table_contents(app_db) == changed  # the project database is untouched


def test_restore_over_an_existing_preview(engine: Engine, project: Project, app_db: Path) -> None:
    at_backup = table_contents(app_db)
    backup = take_backup(engine, project.id)
    change_app_db(app_db)
    created = engine.create_preview_database(
        project.id, CreatePreview(name="staging", mode=PreviewMode.clone)
    )
    engine.wait_for_job(created.job.id)
    path = preview_file(preview_of(engine, project.id, created.preview.id))
    assert table_contents(path) == table_contents(app_db) != at_backup

    job = engine.create_restore(
        project.id,
        RestoreRequest(
            backup_key=backup.backup_key,
            target_kind=TargetKind.preview,
            preview_id=created.preview.id,
        ),
    )
    assert job.locked_resource == f"preview:{created.preview.id}"
    done = engine.wait_for_job(job.id)

    assert done.result is not None
    assert done.result["preview_database_id"] == created.preview.id
    preview = preview_of(engine, project.id, created.preview.id)
    assert preview.state == "ready"
    assert preview.source_backup_key == backup.backup_key
    assert preview_file(preview) == path
    assert table_contents(path) == at_backup
    assert [p.id for p in engine.list_preview_databases(project.id)] == [created.preview.id]


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_restore_over_the_project_keeps_a_safety_backup(
    engine: Engine, project: Project, app_db: Path, journal_mode: str
) -> None:
    with contextlib.closing(sqlite3.connect(app_db)) as db:
        assert db.execute(f"PRAGMA journal_mode = {journal_mode}").fetchone() == (journal_mode,)
    at_backup = table_contents(app_db)
    backup = take_backup(engine, project.id)
    change_app_db(app_db)
    before_restore = table_contents(app_db)

    job = engine.create_restore(
        project.id,
        RestoreRequest(
            backup_key=backup.backup_key,
            target_kind=TargetKind.project,
            confirm_project_overwrite=True,
        ),
    )
    assert job.locked_resource == f"project:{project.id}"
    assert job.preview_database_id is None
    done = engine.wait_for_job(job.id)

    assert table_contents(app_db) == at_backup
    assert done.result is not None
    [safety] = [b for b in engine.list_backups(project.id) if b.label == f"pre-restore-{job.id}"]
    assert done.result["safety_backup_key"] == safety.backup_key
    assert blob_path(engine, safety.backup_key).is_file()
    assert done.last_stdout is not None
    assert safety.backup_key in done.last_stdout
    # the safety backup holds the state the restore overwrote
    preview = restore_to_new_preview(engine, project.id, safety.backup_key)
    assert table_contents(preview_file(preview)) == before_restore


def test_restore_over_the_project_needs_confirmation(engine: Engine, project: Project) -> None:
    backup = take_backup(engine, project.id)
    before = job_ids(engine, project.id)

    with pytest.raises(Forbidden, match="confirm_project_overwrite"):
        engine.create_restore(
            project.id,
            RestoreRequest(backup_key=backup.backup_key, target_kind=TargetKind.project),
        )

    assert job_ids(engine, project.id) == before


def test_restore_from_a_restore_point(engine: Engine, project: Project, app_db: Path) -> None:
    at_backup = table_contents(app_db)
    backup = take_backup(engine, project.id)
    point = engine.create_restore_point(
        project.id, CreateRestorePoint(label="golden", backup_key=backup.backup_key)
    )
    change_app_db(app_db)

    job = engine.create_restore(project.id, RestoreRequest(restore_point_id=point.id))
    done = engine.wait_for_job(job.id)

    assert done.result is not None
    assert done.result["backup_key"] == backup.backup_key
    assert done.preview_database_id is not None
    preview = preview_of(engine, project.id, done.preview_database_id)
    assert preview.source_kind == "restore_point"
    assert table_contents(preview_file(preview)) == at_backup


def test_restore_from_a_time_is_refused(engine: Engine, project: Project) -> None:
    take_backup(engine, project.id)
    before = job_ids(engine, project.id)

    with pytest.raises(InvalidInput) as caught:
        engine.create_restore(project.id, RestoreRequest(restore_time=START))

    assert caught.value.fields == ["restore_time"]
    assert job_ids(engine, project.id) == before
    assert engine.list_preview_databases(project.id) == []


def test_restore_from_two_sources_is_refused(engine: Engine, project: Project) -> None:
    backup = take_backup(engine, project.id)
    point = engine.create_restore_point(
        project.id, CreateRestorePoint(label="p", backup_key=backup.backup_key)
    )
    before = job_ids(engine, project.id)
    request: Any = {"backup_key": backup.backup_key, "restore_point_id": point.id}

    with pytest.raises(InvalidInput) as caught:
        engine.create_restore(project.id, request)

    assert sorted(caught.value.fields) == ["backup_key", "restore_point_id"]
    assert job_ids(engine, project.id) == before


def test_restore_into_a_preview_name_in_use(engine: Engine, project: Project) -> None:
    backup = take_backup(engine, project.id)
    engine.wait_for_job(
        engine.create_preview_database(project.id, CreatePreview(name="taken")).job.id
    )
    before = job_ids(engine, project.id)

    with pytest.raises(Conflict, match="taken"):
        engine.create_restore(
            project.id, RestoreRequest(backup_key=backup.backup_key, preview_name="taken")
        )

    assert job_ids(engine, project.id) == before
    assert [p.name for p in engine.list_preview_databases(project.id)] == ["taken"]


def test_restore_into_a_preview_of_another_project(
    engine: Engine, project: Project, tmp_path: Path
) -> None:
    other = engine.create_project(
        CreateProject(name="other", database_url=sqlite_url(make_app_db(tmp_path / "o.db")))
    ).project
    foreign = engine.create_preview_database(other.id, CreatePreview(name="theirs"))
    engine.wait_for_job(foreign.job.id)
    backup = take_backup(engine, project.id)
    before = job_ids(engine, project.id)

    with pytest.raises(InvalidInput) as caught:
        engine.create_restore(
            project.id,
            RestoreRequest(
                backup_key=backup.backup_key,
                target_kind=TargetKind.preview,
                preview_id=foreign.preview.id,
            ),
        )

    assert caught.value.fields == ["preview_id"]
    assert job_ids(engine, project.id) == before


def test_restore_of_a_backup_still_being_verified_waits_for_it(
    engine: Engine, project: Project, app_db: Path
) -> None:
    at_backup = table_contents(app_db)
    backup_job = engine.wait_for_job(engine.create_backup(project.id).id)
    assert backup_job.result is not None
    [backup] = engine.list_backups(project.id)
    assert backup.verification_state == "pending"

    job = engine.create_restore(project.id, RestoreRequest(backup_key=backup.backup_key))
    # run the restore before the verification: it defers, without counting an attempt
    assert engine.worker.run_once(only_id=job.id)
    waiting = engine.get_job(job.id)
    assert waiting.state == JobState.pending
    assert waiting.attempts == 0
    assert waiting.last_stdout is not None
    assert waiting.last_stdout.startswith("waiting")

    done = engine.wait_for_job(job.id)

    assert done.attempts == 1
    assert engine.get_job(backup_job.result["verify_job_id"]).state == JobState.completed
    assert backup_of(engine, project.id, backup.id).verification_state == "verified"
    assert done.preview_database_id is not None
    preview = preview_of(engine, project.id, done.preview_database_id)
    assert table_contents(preview_file(preview)) == at_backup


def test_backup_that_failed_verification_is_refused_unless_allowed(
    engine: Engine, project: Project
) -> None:
    backup_job = engine.wait_for_job(engine.create_backup(project.id).id)
    assert backup_job.result is not None
    [backup] = engine.list_backups(project.id)
    # damage the blob: still a valid zstd frame, but not the bytes that were written
    blob_path(engine, backup.backup_key).write_bytes(
        zstandard.ZstdCompressor().compress(b"not a database " * 512)
    )
    engine.run_pending()
    verify_job = engine.get_job(backup_job.result["verify_job_id"])
    assert verify_job.state == JobState.failed
    assert verify_job.retry_classification == "permanent"
    failed = backup_of(engine, project.id, backup.id)
    assert failed.verification_state == "failed"
    assert failed.verification_error
    point = engine.create_restore_point(
        project.id, CreateRestorePoint(label="bad", backup_key=backup.backup_key)
    )
    before = job_ids(engine, project.id)

    with pytest.raises(InvalidInput) as by_key:
        engine.create_restore(project.id, RestoreRequest(backup_key=backup.backup_key))
    with pytest.raises(InvalidInput) as by_point:
        engine.create_restore(project.id, RestoreRequest(restore_point_id=point.id))

    assert by_key.value.fields == ["backup_key"]
    assert "allow_unverified_backup" in str(by_key.value)
    assert by_point.value.fields == ["restore_point_id"]
    assert job_ids(engine, project.id) == before
    assert engine.list_preview_databases(project.id) == []

    # allowed: the restore is accepted, and then fails on the damaged blob, touching nothing
    job = engine.create_restore(
        project.id, RestoreRequest(backup_key=backup.backup_key, allow_unverified_backup=True)
    )
    with pytest.raises(JobFailed) as caught:
        engine.wait_for_job(job.id)
    assert caught.value.job.retry_classification == "permanent"
    assert caught.value.job.attempts == 1
    assert job.preview_database_id is not None
    preview = preview_of(engine, project.id, job.preview_database_id)
    assert preview.state == "failed"
    assert preview.last_error


def test_restore_of_an_unknown_backup_key(engine: Engine, project: Project) -> None:
    with pytest.raises(InvalidInput) as caught:
        engine.create_restore(
            project.id, RestoreRequest(backup_key=f"projects/{project.id}/backups/none.zst")
        )
    assert caught.value.fields == ["backup_key"]
    assert engine.list_jobs(project.id) == []


# ---------------------------------------------------------------- jobs


def test_list_jobs_newest_first_with_a_limit(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    jobs: list[Job] = []
    for label in ("a", "b", "c"):
        jobs.append(engine.create_backup(project.id, CreateBackup(label=label)))
        clock.advance(1)

    assert [j.id for j in engine.list_jobs(project.id)] == [j.id for j in reversed(jobs)]
    assert [j.id for j in engine.list_jobs(project.id, limit=2)] == [jobs[2].id, jobs[1].id]
    assert [j.id for j in engine.list_jobs(project.id, limit=1)] == [jobs[2].id]


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_list_jobs_refuses_a_bad_limit(engine: Engine, project: Project, limit: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        engine.list_jobs(project.id, limit=limit)
    assert caught.value.fields == ["limit"]


def test_get_unknown_job_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.get_job("job_0000000000000000")


def test_list_jobs_of_an_unknown_project_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.list_jobs("prj_0000000000000000")


@pytest.mark.parametrize("target", ["project", "preview"])
def test_fields_of_a_completed_job(engine: Engine, project: Project, target: str) -> None:
    if target == "project":
        job = engine.create_backup(project.id)
        lock = f"project:{project.id}"
    else:
        backup = take_backup(engine, project.id)
        job = engine.create_restore(project.id, RestoreRequest(backup_key=backup.backup_key))
        lock = f"preview:{job.preview_database_id}"
    assert job.claimed_by is None
    assert job.started_at is None
    assert job.attempts == 0

    done = engine.wait_for_job(job.id)

    assert done.locked_resource == lock
    assert done.project_id == project.id
    assert done.organization_id
    assert done.claimed_by is not None
    assert WORKER_ID.match(done.claimed_by), done.claimed_by
    assert done.claimed_by == engine.rt.worker_id
    assert done.claimed_at is not None
    assert done.started_at is not None
    assert done.completed_at is not None
    assert done.created_at is not None
    assert done.created_at <= done.started_at <= done.completed_at
    assert done.attempts == 1
    assert done.max_attempts >= 1
    assert done.last_exit_code == 0
    assert done.last_stdout
    assert "\n" not in done.last_stdout.strip()
    assert done.error is None
    assert done.retry_classification is None
    assert done.is_terminal


def test_wait_for_job_reports_updates(engine: Engine, project: Project) -> None:
    seen: list[tuple[str, int]] = []
    job = engine.create_backup(project.id)

    engine.wait_for_job(job.id, on_update=lambda j: seen.append((str(j.state), j.attempts)))

    assert seen[0] == ("pending", 0)
    assert seen[-1] == ("completed", 1)


# ---------------------------------------------------------------- previews


def test_create_an_empty_preview(engine: Engine, project: Project) -> None:
    created = engine.create_preview_database(
        project.id, CreatePreview(name="scratch", mode=PreviewMode.empty, ttl_hours=2)
    )
    assert created.preview.state == "creating"
    assert created.job.preview_database_id == created.preview.id
    assert created.job.locked_resource == f"preview:{created.preview.id}"

    engine.wait_for_job(created.job.id)

    preview = preview_of(engine, project.id, created.preview.id)
    assert preview.state == "ready"
    assert preview.mode == "empty"
    assert preview.ttl_expires_at == START + timedelta(hours=2)
    path = preview_file(preview)
    assert path.is_file()
    assert path.is_relative_to(engine.directory)
    assert table_contents(path) == {}


def test_create_a_clone_preview(engine: Engine, project: Project, app_db: Path) -> None:
    change_app_db(app_db)
    created = engine.create_preview_database(
        project.id, CreatePreview(name="clone", mode=PreviewMode.clone)
    )

    engine.wait_for_job(created.job.id)

    preview = preview_of(engine, project.id, created.preview.id)
    assert preview.state == "ready"
    assert preview.mode == "clone"
    assert table_contents(preview_file(preview)) == table_contents(app_db)
    assert preview_file(preview) != app_db.resolve()


def test_delete_a_preview(engine: Engine, project: Project, app_db: Path) -> None:
    before = table_contents(app_db)
    created = engine.create_preview_database(project.id, CreatePreview(name="gone"))
    engine.wait_for_job(created.job.id)
    path = preview_file(preview_of(engine, project.id, created.preview.id))

    job = engine.delete_preview_database(created.preview.id)
    assert job.type == "preview.delete"
    engine.wait_for_job(job.id)

    assert not path.exists()
    assert engine.list_preview_databases(project.id) == []
    row = engine.rt.store.get_preview(created.preview.id)
    assert row is not None
    assert row.state == "deleted"
    assert table_contents(app_db) == before
    with pytest.raises(NotFound):
        engine.delete_preview_database(created.preview.id)
    # its name is free again
    again = engine.create_preview_database(project.id, CreatePreview(name="gone"))
    engine.wait_for_job(again.job.id)


def test_delete_unknown_preview_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.delete_preview_database("prv_0000000000000000")


# ---------------------------------------------------------------- schedules and tick


def test_put_and_get_the_scheduled_backup(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    assert engine.get_scheduled_backup(project.id) is None

    put = engine.put_scheduled_backup(
        project.id,
        PutScheduledBackup(
            cron_hour=3, cron_minute=30, is_active=True, label="nightly", retention_days=7
        ),
    )

    assert put.project_id == project.id
    assert (put.cron_hour, put.cron_minute, put.is_active) == (3, 30, True)
    assert put.label == "nightly"
    assert put.retention_days == 7
    assert put.last_run_at is None
    assert engine.get_scheduled_backup(project.id) == put

    clock.advance(hours=1)
    changed = engine.put_scheduled_backup(
        project.id, PutScheduledBackup(cron_hour=4, cron_minute=0, is_active=False)
    )
    assert changed.id == put.id
    assert changed.created_at == put.created_at
    assert (changed.cron_hour, changed.cron_minute, changed.is_active) == (4, 0, False)
    assert changed.retention_days is None
    assert engine.get_scheduled_backup(project.id) == changed


def test_tick_starts_a_due_scheduled_backup_once(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    engine.put_scheduled_backup(
        project.id, PutScheduledBackup(cron_hour=3, cron_minute=0, is_active=True, label="daily")
    )
    assert engine.tick().backup_jobs == []  # 00:00: not due yet

    clock.advance(hours=4)  # 04:00, after the daily 03:00
    report = engine.tick()
    assert len(report.backup_jobs) == 1
    assert engine.tick().backup_jobs == []  # the same time again: nothing new

    job = engine.wait_for_job(report.backup_jobs[0])
    assert job.type == "project.backup"
    [backup] = engine.list_backups(project.id)
    assert backup.label == "daily"
    schedule = engine.get_scheduled_backup(project.id)
    assert schedule is not None
    assert schedule.last_job_id == job.id
    assert schedule.last_run_at == START + timedelta(hours=4)

    clock.advance(hours=23)  # 03:00 the next day: due again
    assert len(engine.tick().backup_jobs) == 1


def test_a_schedule_made_after_todays_time_waits_for_tomorrow(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    clock.advance(hours=5)  # 05:00
    engine.put_scheduled_backup(
        project.id, PutScheduledBackup(cron_hour=3, cron_minute=0, is_active=True)
    )

    assert engine.tick().backup_jobs == []
    clock.advance(hours=21, minutes=59)  # 02:59 the next day
    assert engine.tick().backup_jobs == []
    clock.advance(minutes=1)  # 03:00
    assert len(engine.tick().backup_jobs) == 1


def test_an_inactive_schedule_never_fires(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    engine.put_scheduled_backup(
        project.id, PutScheduledBackup(cron_hour=3, cron_minute=0, is_active=False)
    )
    clock.advance(days=2)
    assert engine.tick().backup_jobs == []
    assert engine.list_jobs(project.id) == []


def test_tick_reads_the_schedule_in_utc_whatever_the_offset_of_now(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    engine.put_scheduled_backup(
        project.id, PutScheduledBackup(cron_hour=3, cron_minute=0, is_active=True)
    )
    clock.advance(hours=4)  # 04:00 UTC: the 03:00 UTC run is due
    now = clock.now().astimezone(timezone(timedelta(hours=5)))  # 09:00+05:00, the same instant

    # read in the offset's wall time, 03:00+05:00 would be 22:00 UTC the day before
    assert len(engine.tick(now).backup_jobs) == 1


def test_retention_expires_old_backups(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    old = take_backup(engine, project.id, "old")
    point = engine.create_restore_point(
        project.id, CreateRestorePoint(label="pinned", backup_key=old.backup_key)
    )
    clock.advance(hours=25)
    new = take_backup(engine, project.id, "new")
    new_point = engine.create_restore_point(
        project.id, CreateRestorePoint(label="fresh", backup_key=new.backup_key)
    )
    # 12:00 daily: not due before tomorrow, so this tick only applies retention
    engine.put_scheduled_backup(
        project.id,
        PutScheduledBackup(cron_hour=12, cron_minute=0, is_active=True, retention_days=1),
    )

    report = engine.tick()

    assert report.expired_backups == [old.backup_key]
    assert report.backup_jobs == []
    expired = backup_of(engine, project.id, old.id)
    assert expired.state == "expired"
    points = {p.id: p for p in engine.list_restore_points(project.id)}
    assert points[point.id].state == "expired"
    assert points[new_point.id].state == "active"
    assert backup_of(engine, project.id, new.id).state == "completed"

    engine.run_pending()

    assert not blob_path(engine, old.backup_key).exists()
    assert blob_path(engine, new.backup_key).is_file()
    assert engine.tick().expired_backups == []  # expired once only
    with pytest.raises(InvalidInput) as caught:
        engine.create_restore(project.id, RestoreRequest(backup_key=old.backup_key))
    assert caught.value.fields == ["backup_key"]
    with pytest.raises(InvalidInput) as by_point:
        engine.create_restore(project.id, RestoreRequest(restore_point_id=point.id))
    assert by_point.value.fields == ["restore_point_id"]


def test_tick_deletes_a_preview_past_its_ttl(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    backup = take_backup(engine, project.id)
    short = engine.wait_for_job(
        engine.create_restore(
            project.id, RestoreRequest(backup_key=backup.backup_key, ttl_hours=1)
        ).id
    )
    long = engine.wait_for_job(
        engine.create_restore(
            project.id, RestoreRequest(backup_key=backup.backup_key, ttl_hours=3)
        ).id
    )
    assert short.preview_database_id is not None
    assert long.preview_database_id is not None
    short_path = preview_file(preview_of(engine, project.id, short.preview_database_id))
    long_path = preview_file(preview_of(engine, project.id, long.preview_database_id))

    clock.advance(hours=2)
    report = engine.tick()

    assert report.deleted_previews == [short.preview_database_id]
    assert preview_of(engine, project.id, short.preview_database_id).state == "deleting"
    engine.run_pending()
    assert not short_path.exists()
    assert long_path.is_file()
    assert [p.id for p in engine.list_preview_databases(project.id)] == [long.preview_database_id]


# ---------------------------------------------------------------- deleting projects and backups


def test_delete_project_with_backups_needs_force(
    engine: Engine, project: Project, app_db: Path
) -> None:
    take_backup(engine, project.id)

    with pytest.raises(Conflict, match=r"force=true"):
        engine.delete_project(project.id)

    assert engine.get_project(project.id) == project


def test_delete_project_without_backups(engine: Engine, project: Project, app_db: Path) -> None:
    engine.delete_project(project.id)

    with pytest.raises(NotFound):
        engine.get_project(project.id)
    assert app_db.is_file()


def test_delete_project_with_force_removes_everything(
    engine: Engine, project: Project, app_db: Path
) -> None:
    before = table_contents(app_db)
    backup = take_backup(engine, project.id)
    engine.create_restore_point(
        project.id, CreateRestorePoint(label="p", backup_key=backup.backup_key)
    )
    preview = restore_to_new_preview(engine, project.id, backup.backup_key)
    clone = engine.create_preview_database(project.id, CreatePreview(name="clone"))
    engine.wait_for_job(clone.job.id)
    engine.put_scheduled_backup(
        project.id, PutScheduledBackup(cron_hour=1, cron_minute=0, is_active=True)
    )
    files = [
        blob_path(engine, backup.backup_key),
        preview_file(preview),
        preview_file(preview_of(engine, project.id, clone.preview.id)),
    ]
    assert all(path.is_file() for path in files)

    engine.delete_project(project.id, force=True)

    assert [path for path in files if path.exists()] == []
    assert list((engine.directory / "blobs").rglob("*.zst")) == []
    with pytest.raises(NotFound):
        engine.get_project(project.id)
    assert engine.list_projects() == []
    with pytest.raises(NotFound):
        engine.list_backups(project.id)
    assert app_db.is_file()  # the protected database itself is never deleted
    assert table_contents(app_db) == before
    # the name can be used again
    again = engine.create_project(CreateProject(name=project.name, database_url=sqlite_url(app_db)))
    assert engine.list_backups(again.project.id) == []
    assert engine.list_restore_points(again.project.id) == []
    assert engine.list_preview_databases(again.project.id) == []
    assert engine.get_scheduled_backup(again.project.id) is None


def test_delete_project_is_refused_while_an_old_job_is_pending_behind_many_newer(
    engine: Engine, project: Project, app_db: Path
) -> None:
    pending = engine.create_backup(project.id)
    # more finished jobs of the project than any listing page holds, all newer than it
    with contextlib.closing(sqlite3.connect(engine.directory / "engine.db")) as db, db:
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) "
            "INSERT INTO jobs (id, type, state, max_attempts, created_at, updated_at, "
            "run_after, project_id, payload) "
            "SELECT printf('job_done_%04d', i), 'backup.verify', 'completed', 3, "
            "'2100-01-01T00:00:00.000000Z', '2100-01-01T00:00:00.000000Z', "
            "'2100-01-01T00:00:00.000000Z', ?, '{}' FROM n",
            (project.id,),
        )

    with pytest.raises(Conflict, match=pending.id):
        engine.delete_project(project.id)

    assert engine.get_project(project.id) == project
    assert engine.get_job(pending.id).state == JobState.pending


def test_delete_backup_pinned_by_a_restore_point(engine: Engine, project: Project) -> None:
    backup = take_backup(engine, project.id)
    point = engine.create_restore_point(
        project.id, CreateRestorePoint(label="pin", backup_key=backup.backup_key)
    )

    with pytest.raises(Conflict, match=point.id):
        engine.delete_backup(project.id, backup.id)
    assert blob_path(engine, backup.backup_key).is_file()

    engine.delete_restore_point(project.id, point.id)
    engine.delete_backup(project.id, backup.id)

    assert engine.list_backups(project.id) == []
    assert not blob_path(engine, backup.backup_key).exists()


def test_delete_backup_removes_its_blob(engine: Engine, project: Project) -> None:
    keep = take_backup(engine, project.id, "keep")
    drop = take_backup(engine, project.id, "drop")

    engine.delete_backup(project.id, drop.id)

    assert [b.id for b in engine.list_backups(project.id)] == [keep.id]
    assert not blob_path(engine, drop.backup_key).exists()
    assert blob_path(engine, keep.backup_key).is_file()
    with pytest.raises(NotFound):
        engine.delete_backup(project.id, drop.id)


def test_delete_backup_used_by_a_pending_job(engine: Engine, project: Project) -> None:
    backup = take_backup(engine, project.id)
    job = engine.create_restore(project.id, RestoreRequest(backup_key=backup.backup_key))

    with pytest.raises(Conflict, match=job.id):
        engine.delete_backup(project.id, backup.id)

    engine.wait_for_job(job.id)
    engine.delete_backup(project.id, backup.id)
    assert engine.list_backups(project.id) == []


# ---------------------------------------------------------------- identity, protocol, processes


def test_identity_names_the_server(engine: Engine) -> None:
    identity = engine.get_identity()

    assert identity.is_pulumi_capy_server is True
    assert identity.organization is not None
    assert identity.principal.organization_id == identity.organization.id


def test_engine_is_a_backend(engine: Engine) -> None:
    assert isinstance(engine, Backend)


def test_two_engines_on_one_directory_share_everything(
    engine_dir: Path, clock: ManualClock, app_db: Path
) -> None:
    with (
        Engine(engine_dir, clock=clock) as first,
        Engine(engine_dir, clock=clock) as second,
    ):
        assert first.rt.worker_id != second.rt.worker_id
        project = first.create_project(
            CreateProject(name="shared", database_url=sqlite_url(app_db))
        ).project
        assert second.list_projects() == [project]
        assert second.get_project(project.id) == project

        job = second.create_backup(project.id)
        assert first.get_job(job.id) == job
        done = first.wait_for_job(job.id)

        assert done.claimed_by == first.rt.worker_id
        assert second.get_job(job.id) == done
        assert [j.id for j in second.list_jobs(project.id)] == [
            j.id for j in first.list_jobs(project.id)
        ]
        assert second.run_pending() == 1  # the verification, queued by the first engine
        [backup] = first.list_backups(project.id)
        assert backup.verification_state == "verified"

    # and a new engine (a later process) finds it all again
    with Engine(engine_dir, clock=clock) as later:
        assert later.list_projects() == [project]
        assert [b.id for b in later.list_backups(project.id)] == [backup.id]
