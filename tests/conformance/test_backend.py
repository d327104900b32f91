"""One suite, every ``Backend``: the same calls give the same results and the same errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import BadRequest, Conflict, Forbidden, NotFound
from pulumi_capy.api.models import (
    Backup,
    CreateApiKey,
    CreateBackup,
    CreatePreview,
    CreateProject,
    CreateRestorePoint,
    Job,
    Project,
    PutScheduledBackup,
    RestoreRequest,
    UpdateProject,
)
from tests.engine.conftest import make_app_db, sqlite_url, table_contents

TIMEOUT = 60.0
ORG = "org_default"


def new_project(backend: Backend, app_db: Path, name: str = "shop") -> Project:
    created = backend.create_project(CreateProject(name=name, database_url=sqlite_url(app_db)))
    assert created.job is None
    return created.project


def backed_up(backend: Backend, project_id: str, label: str) -> tuple[Job, Job]:
    """Back up, wait for the backup and for its verification; return both jobs."""
    backup = backend.wait_for_job(
        backend.create_backup(project_id, CreateBackup(label=label)).id, timeout=TIMEOUT
    )
    assert backup.result is not None
    verify = backend.wait_for_job(str(backup.result["verify_job_id"]), timeout=TIMEOUT)
    return backup, verify


def test_it_is_a_backend_served_by_pulumi_capy(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    identity = backend.get_identity()
    assert identity.is_pulumi_capy_server
    assert identity.organization is not None
    assert identity.organization.id == ORG
    assert identity.principal.organization_id == ORG


def test_backup_restore_point_restore_and_preview(backend: Backend, app_db: Path) -> None:
    contents = table_contents(app_db)
    project = new_project(backend, app_db)
    assert (project.name, project.database_kind) == ("shop", "sqlite")
    assert backend.get_project(project.id) == project
    assert [p.id for p in backend.list_projects()] == [project.id]

    # backup, then its verification
    backup_job, verify_job = backed_up(backend, project.id, "first")
    assert (backup_job.type, backup_job.state, backup_job.attempts) == (
        "project.backup",
        "completed",
        1,
    )
    assert (verify_job.type, verify_job.state) == ("backup.verify", "completed")
    assert backup_job.result is not None
    backup_key = backup_job.result["backup_key"]
    backups = backend.list_backups(project.id)
    assert [(b.backup_key, b.label, b.state, b.verification_state) for b in backups] == [
        (backup_key, "first", "completed", "verified")
    ]
    assert backups[0].id == backup_job.result["backup_id"]
    assert backups[0].verified_at is not None
    assert backups[0].size_bytes is not None
    assert backups[0].size_bytes > 0

    # restore points: create, list, delete
    assert backend.list_restore_points(project.id) == []
    point = backend.create_restore_point(
        project.id, CreateRestorePoint(label="before-migration", backup_key=backup_key, note="n")
    )
    assert (point.label, point.kind, point.state, point.backup_key, point.note) == (
        "before-migration",
        "backup",
        "active",
        backup_key,
        "n",
    )
    assert point.backup_id == backups[0].id
    assert backend.list_restore_points(project.id) == [point]
    spare = backend.create_restore_point(
        project.id, CreateRestorePoint(label="spare", backup_key=backup_key)
    )
    backend.delete_restore_point(project.id, spare.id)
    assert backend.list_restore_points(project.id) == [point]
    with pytest.raises(NotFound):
        backend.delete_restore_point(project.id, spare.id)

    # the schedule
    assert backend.get_scheduled_backup(project.id) is None
    schedule = backend.put_scheduled_backup(
        project.id, PutScheduledBackup(cron_hour=4, cron_minute=15, is_active=True)
    )
    assert (schedule.cron_hour, schedule.cron_minute, schedule.is_active) == (4, 15, True)
    assert backend.get_scheduled_backup(project.id) == schedule

    # restore the point into a new preview
    restore = backend.create_restore(
        project.id,
        RestoreRequest(restore_point_id=point.id, preview_name="from-point", ttl_hours=2),
    )
    assert (restore.type, restore.state, restore.attempts) == ("project.restore", "pending", 0)
    assert restore.preview_database_id is not None
    assert restore.locked_resource == f"preview:{restore.preview_database_id}"
    seen: list[tuple[str, int]] = []
    done = backend.wait_for_job(
        restore.id,
        timeout=TIMEOUT,
        on_update=lambda job: seen.append((str(job.state), job.attempts)),
    )
    assert (done.state, done.attempts, done.error) == ("completed", 1, None)
    assert seen[-1] == ("completed", 1)
    assert done.result is not None
    assert done.result["preview_database_id"] == restore.preview_database_id
    assert done.result["backup_key"] == backup_key
    previews = backend.list_preview_databases(project.id)
    assert [(p.id, p.name, p.state, p.mode) for p in previews] == [
        (restore.preview_database_id, "from-point", "ready", "restore")
    ]
    preview = previews[0]
    assert preview.source_backup_key == backup_key
    assert preview.ttl_expires_at is not None
    assert preview.created_at is not None
    assert preview.ttl_expires_at - preview.created_at == timedelta(hours=2)
    assert preview.database_name is not None
    assert table_contents(Path(preview.database_name)) == contents

    # delete the preview
    deleting = backend.delete_preview_database(preview.id)
    assert (deleting.type, deleting.preview_database_id) == ("preview.delete", preview.id)
    backend.wait_for_job(deleting.id, timeout=TIMEOUT)
    assert backend.list_preview_databases(project.id) == []
    assert not Path(preview.database_name).exists()

    # every job, newest first
    jobs = backend.list_jobs(project.id)
    assert [job.type for job in jobs] == [
        "preview.delete",
        "project.restore",
        "backup.verify",
        "project.backup",
    ]
    assert all(job.state == "completed" for job in jobs)
    created = [job.created_at for job in jobs]
    assert all(stamp is not None for stamp in created)
    assert created == sorted(created, key=lambda stamp: stamp or datetime.min, reverse=True)
    assert [job.id for job in backend.list_jobs(project.id, limit=2)] == [j.id for j in jobs[:2]]
    assert backend.get_job(restore.id) == backend.list_jobs(project.id)[1]
    assert table_contents(app_db) == contents  # nothing here touched the project database


def test_errors_are_the_same(backend: Backend, app_db: Path) -> None:
    with pytest.raises(NotFound) as unknown_project:
        backend.get_project("prj_nonexistent")
    assert "prj_nonexistent" in str(unknown_project.value)
    for call in (
        lambda: backend.list_restore_points("prj_nonexistent"),
        lambda: backend.list_backups("prj_nonexistent"),
        lambda: backend.create_backup("prj_nonexistent"),
        lambda: backend.list_jobs("prj_nonexistent"),
        lambda: backend.list_preview_databases("prj_nonexistent"),
    ):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(NotFound) as unknown_job:
        backend.get_job("job_nonexistent")
    assert "job_nonexistent" in str(unknown_job.value)
    with pytest.raises(NotFound):
        backend.wait_for_job("job_nonexistent", timeout=5)

    project = new_project(backend, app_db)
    with pytest.raises(Conflict):
        new_project(backend, app_db)  # the name is taken
    with pytest.raises(BadRequest) as no_url:
        backend.create_project(CreateProject(name="nowhere"))
    assert "database_url" in str(no_url.value)
    backup_job, _ = backed_up(backend, project.id, "base")
    assert backup_job.result is not None
    backup_key = str(backup_job.result["backup_key"])

    # two sources: a caller that bypasses the request model reaches each back end's check
    two_sources: Any = {"backup_key": backup_key, "restore_point_id": "rp_x"}
    with pytest.raises(BadRequest) as both:
        backend.create_restore(project.id, two_sources)
    assert "backup_key" in str(both.value)
    assert "restore_point_id" in str(both.value)
    assert both.value.detail == (
        "backup_key, restore_point_id: give exactly one restore source "
        "(backup_key, restore_time, restore_point_id); got 2"
    )
    unknown_field: Any = {"backup_key": backup_key, "colour": "red"}
    with pytest.raises(BadRequest) as extra:
        backend.create_restore(project.id, unknown_field)
    assert extra.value.detail == "colour: unknown field"
    with pytest.raises(BadRequest) as missing:
        backend.create_restore(project.id, RestoreRequest(backup_key="bk_nonexistent"))
    assert "backup_key" in str(missing.value)
    assert "bk_nonexistent" in str(missing.value)

    # overwriting the project needs the confirmation
    with pytest.raises(Forbidden) as unconfirmed:
        backend.create_restore(
            project.id, RestoreRequest(backup_key=backup_key, target_kind="project")
        )
    assert "confirm_project_overwrite" in str(unconfirmed.value)

    # a preview name in use
    backend.create_restore(project.id, RestoreRequest(backup_key=backup_key, preview_name="dup"))
    with pytest.raises(Conflict) as taken:
        backend.create_restore(
            project.id, RestoreRequest(backup_key=backup_key, preview_name="dup")
        )
    assert "dup" in str(taken.value)
    backend.create_preview_database(project.id, CreatePreview(name="scratch", mode="empty"))
    with pytest.raises(Conflict):
        backend.create_preview_database(project.id, CreatePreview(name="scratch"))

    # nothing refused left a job behind
    types = sorted(str(job.type) for job in backend.list_jobs(project.id))
    assert types == ["backup.verify", "preview.create", "project.backup", "project.restore"]


def test_get_backup_has_the_manifest_record(backend: Backend, app_db: Path) -> None:
    project = new_project(backend, app_db)
    backed_up(backend, project.id, "shown")
    [listed] = backend.list_backups(project.id)
    detail = backend.get_backup(project.id, listed.id)
    assert detail.model_dump(include=set(Backup.model_fields)) == listed.model_dump()
    assert detail.verification_state == "verified"
    assert (detail.source_kind, detail.format) == ("sqlite", "sqlite3")
    assert detail.table_count == len(table_contents(app_db))
    assert detail.size_bytes == app_db.stat().st_size
    assert detail.blob_bytes is not None
    assert 0 < detail.blob_bytes < detail.size_bytes
    assert detail.sha256 is not None
    assert len(detail.sha256) == 64
    assert detail.row_counts is None  # a SQLite dump counts tables, not rows
    with pytest.raises(NotFound):
        backend.get_backup(project.id, "bkp_0000000000000000")


def test_verify_backup_again(backend: Backend, app_db: Path) -> None:
    project = new_project(backend, app_db)
    backed_up(backend, project.id, "again")
    [before] = backend.list_backups(project.id)
    assert before.verification_state == "verified"
    job = backend.verify_backup(project.id, before.id)
    assert (job.type, job.project_id) == ("backup.verify", project.id)
    assert job.state in ("pending", "running", "completed")
    done = backend.wait_for_job(job.id, timeout=TIMEOUT)
    assert done.result == {"backup_id": before.id, "backup_key": before.backup_key}
    [after] = backend.list_backups(project.id)
    assert after.verification_state == "verified"
    assert after.verified_at is not None
    assert before.verified_at is not None
    assert after.verified_at >= before.verified_at
    with pytest.raises(NotFound):
        backend.verify_backup(project.id, "bkp_0000000000000000")


def test_cancel_job_refuses_an_ended_job(backend: Backend, app_db: Path) -> None:
    project = new_project(backend, app_db)
    backup, _ = backed_up(backend, project.id, "ended")
    with pytest.raises(Conflict, match="completed already"):
        backend.cancel_job(backup.id)
    with pytest.raises(NotFound):
        backend.cancel_job("job_0000000000000000")
    assert backend.get_job(backup.id).state == "completed"


def test_update_project_points_it_at_a_new_database(
    backend: Backend, app_db: Path, tmp_path: Path
) -> None:
    project = new_project(backend, app_db)
    moved = make_app_db(tmp_path / "moved" / "app.db")
    updated = backend.update_project(
        project.id, UpdateProject.model_validate({"database_url": sqlite_url(moved)})
    )
    assert (updated.id, updated.database_kind) == (project.id, "sqlite")
    assert updated.database_name == str(moved.resolve())
    assert backend.get_project(project.id) == updated
    assert "database_url" not in updated.model_dump()
    backup, _ = backed_up(backend, project.id, "after-move")  # the new database is backed up
    assert backup.state == "completed"

    with pytest.raises(BadRequest, match="database_url"):
        backend.update_project(
            project.id,
            UpdateProject.model_validate({"database_url": sqlite_url(tmp_path / "none.db")}),
        )
    with pytest.raises(BadRequest, match=r"postgresql database; project .* protects a sqlite"):
        backend.update_project(
            project.id,
            UpdateProject.model_validate({"database_url": "postgresql://u:hunter2@127.0.0.1:1/db"}),
        )
    with pytest.raises(NotFound):
        backend.update_project(
            "prj_0000000000000000",
            UpdateProject.model_validate({"database_url": sqlite_url(moved)}),
        )
    assert backend.get_project(project.id) == updated


def test_api_keys(backend: Backend, app_db: Path) -> None:
    project = new_project(backend, app_db)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    created = backend.create_api_key(
        ORG,
        CreateApiKey(
            name="ci",
            scopes=["backups:read", "jobs:read"],
            project_id=project.id,
            expires_at=expires,
        ),
    )
    plaintext = created.plaintext_api_key.get_secret_value()
    assert plaintext.startswith("capy_live_")
    assert plaintext not in repr(created)
    key = created.api_key
    assert (key.name, key.scopes, key.project_id, key.expires_at) == (
        "ci",
        ["backups:read", "jobs:read"],
        project.id,
        expires,
    )
    assert key.revoked_at is None
    assert key.prefix is not None
    assert plaintext.startswith(key.prefix)
    listed = {item.id: item for item in backend.list_api_keys(ORG)}
    assert listed[key.id] == key
    backend.delete_api_key(ORG, key.id)
    revoked = {item.id: item for item in backend.list_api_keys(ORG)}[key.id]
    assert revoked.revoked_at is not None
    with pytest.raises(NotFound):
        backend.delete_api_key(ORG, "key_nonexistent")
    with pytest.raises(NotFound):
        backend.list_api_keys("org_nonexistent")
    with pytest.raises(BadRequest) as other_project:
        backend.create_api_key(
            ORG, CreateApiKey(name="x", scopes=["jobs:read"], project_id="prj_nonexistent")
        )
    assert "project_id" in str(other_project.value)
