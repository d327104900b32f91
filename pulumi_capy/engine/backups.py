"""Backups of a project and its daily schedule.

A backup is taken by a ``project.backup`` job; deleting one is refused while a
restore point pins it or a job uses it. ``by_key`` is how restores and restore
points name the backup they start from.
"""

from __future__ import annotations

from pulumi_capy.api.errors import Conflict, FieldError, InvalidInput, NotFound
from pulumi_capy.api.models import (
    Backup,
    BackupDetail,
    JobType,
    PutScheduledBackup,
    ScheduledBackup,
)
from pulumi_capy.engine import projects
from pulumi_capy.engine.queue import new_id
from pulumi_capy.engine.runtime import DEFAULT_ORGANIZATION_ID, Runtime
from pulumi_capy.engine.stores.contract import BackupRecord

__all__ = [
    "by_key",
    "create_backup",
    "delete_backup",
    "get_backup",
    "get_schedule",
    "list_backups",
    "put_schedule",
    "verify_backup",
]


def by_key(rt: Runtime, project_id: str, key: str, field: str) -> BackupRecord:
    """The project's unexpired backup ``key``; else ``InvalidInput`` blaming ``field``."""
    backup = rt.store.get_backup_by_key(project_id, key)
    if backup is None:
        raise InvalidInput([FieldError(field, f"no backup {key!r} in project {project_id}")])
    if backup.state == "expired":
        raise InvalidInput([FieldError(field, f"backup {key!r} expired; pick a newer backup")])
    return backup


def list_backups(rt: Runtime, project_id: str) -> list[Backup]:
    projects.require(rt, project_id)
    return [backup.public() for backup in rt.store.list_backups(project_id)]


def get_backup(rt: Runtime, project_id: str, backup_id: str) -> BackupDetail:
    """The backup with what its manifest recorded (nothing of it when the blob is gone)."""
    projects.require(rt, project_id)
    backup = rt.store.get_backup(backup_id)
    if backup is None or backup.project_id != project_id:
        raise NotFound(f"backup {backup_id} not found in project {project_id}")
    detail = BackupDetail.model_validate(backup.model_dump())
    try:
        manifest = rt.blobs.read_manifest(backup.backup_key)
    except (OSError, ValueError):  # an expired backup's blob is gone; a torn file says nothing
        return detail
    details = manifest.get("details") or {}
    tables = details.get("tables")
    counts = details.get("row_counts")
    if isinstance(counts, dict):
        counts = {str(name): int(rows) for name, rows in counts.items()}
        tables = tables if isinstance(tables, int) else len(counts)
    source = manifest.get("source") or {}
    versions = manifest.get("versions") or {}
    return detail.model_copy(
        update={
            "table_count": tables if isinstance(tables, int) else None,
            "row_counts": counts if isinstance(counts, dict) else None,
            "source_kind": source.get("kind") if isinstance(source, dict) else None,
            "pulumi_capy_version": versions.get("pulumi_capy")
            if isinstance(versions, dict)
            else None,
        }
    )


def create_backup(rt: Runtime, project_id: str, label: str | None) -> str:
    """Queue a ``project.backup`` job; return its id."""
    projects.require(rt, project_id)
    with rt.store.transaction() as tx:
        return rt.enqueue(
            tx,
            JobType.project_backup,
            project_id=project_id,
            payload={"backup_id": new_id("bkp"), "label": label},
            locked_resource=f"project:{project_id}",
        )


def verify_backup(rt: Runtime, project_id: str, backup_id: str) -> str:
    """Queue a ``backup.verify`` job (restore into a throwaway target, check); its id.

    A verification already pending or running is the answer (no second one). The
    backup keeps its verification state until the job ends: verified again (a new
    ``verified_at``) or failed, with the reason."""
    projects.require(rt, project_id)
    with rt.store.transaction() as tx:
        backup = rt.store.get_backup(backup_id)
        if backup is None or backup.project_id != project_id:
            raise NotFound(f"backup {backup_id} not found in project {project_id}")
        if backup.state == "expired":
            raise Conflict(f"backup {backup.backup_key} expired: its blob is gone")
        outstanding = rt.store.outstanding_verification(backup_id)
        if outstanding is not None:
            return outstanding
        return rt.enqueue(
            tx,
            JobType.backup_verify,
            project_id=project_id,
            payload={"backup_id": backup_id},
            locked_resource=f"backup:{backup_id}",
        )


def delete_backup(rt: Runtime, project_id: str, backup_id: str) -> None:
    """Delete the backup and its blob; ``Conflict`` while it is pinned or in use."""
    projects.require(rt, project_id)
    backup = rt.store.get_backup(backup_id)
    if backup is None or backup.project_id != project_id:
        raise NotFound(f"backup {backup_id} not found in project {project_id}")
    pinned = [
        point
        for point in rt.store.list_restore_points(project_id, backup_id=backup_id)
        if point.state == "active"
    ]
    if pinned:
        names = ", ".join(f"{point.id} ({point.label})" for point in pinned)
        raise Conflict(
            f"backup {backup.backup_key} is pinned by restore point(s) {names}; delete them first"
        )
    users = rt.store.jobs_using_backup(backup_id, backup.backup_key)
    if users:
        raise Conflict(
            f"backup {backup.backup_key} is in use by job(s) {', '.join(users)}; "
            "wait for them, then delete"
        )
    rt.store.delete_backup(backup_id)
    rt.blobs.delete(backup.backup_key)


def get_schedule(rt: Runtime, project_id: str) -> ScheduledBackup | None:
    projects.require(rt, project_id)
    return rt.store.get_schedule(project_id)


def put_schedule(rt: Runtime, project_id: str, request: PutScheduledBackup) -> ScheduledBackup:
    """Create or replace the project's one schedule, keeping its id and creation time."""
    projects.require(rt, project_id)
    existing = rt.store.get_schedule(project_id)
    now = rt.now()
    return rt.store.put_schedule(
        ScheduledBackup(
            id=existing.id if existing else new_id("sch"),
            project_id=project_id,
            organization_id=DEFAULT_ORGANIZATION_ID,
            cron_hour=request.cron_hour,
            cron_minute=request.cron_minute,
            is_active=request.is_active,
            label=request.label,
            retention_days=request.retention_days,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )
    )
