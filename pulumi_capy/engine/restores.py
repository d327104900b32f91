"""Restores: a backup (named by key or by restore point) into a target database.

The target is one of three: a new preview made for the restore, an existing
preview of the project, or the project's own database (only with
``confirm_project_overwrite``). ``create_restore`` checks the request, writes
what the target needs and queues one ``project.restore`` job holding the
target's lock, all in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pulumi_capy.api.errors import FieldError, Forbidden, InvalidInput
from pulumi_capy.api.models import JobType, PreviewDatabase, RestoreRequest, TargetKind
from pulumi_capy.engine import backups, projects
from pulumi_capy.engine.pitr import control
from pulumi_capy.engine.queue import new_id
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import BackupRecord, ProjectRecord, Transaction

__all__ = ["PREVIEW_TTL_HOURS", "RestoreTarget", "choose_target", "create_restore"]

# how long a preview made for a restore lives when the request names no ttl_hours
PREVIEW_TTL_HOURS = 24


@dataclass(frozen=True)
class RestoreTarget:
    """Where a restore job writes: the lock it holds and the preview, if it is one."""

    locked_resource: str
    preview_id: str | None


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput([FieldError(field, message)])


def create_restore(rt: Runtime, project_id: str, request: RestoreRequest) -> str:
    """Queue the restore ``request`` describes; return the job's id."""
    project = projects.require(rt, project_id)
    source = _source(rt, project, request)
    backup = source.backup
    if (
        backup is not None
        and backup.verification_state == "failed"
        and not request.allow_unverified_backup
    ):
        field = "restore_point_id" if request.restore_point_id else "backup_key"
        raise _invalid(
            field,
            f"backup {backup.backup_key} failed verification "
            f"({backup.verification_error or 'no detail'}); set allow_unverified_backup "
            "to restore it anyway",
        )
    payload: dict[str, Any] = {
        "request": request.to_wire(),
        "source_kind": request.source_kind,
    }
    if backup is not None:
        payload["backup_id"] = backup.id
    else:
        payload["restore_time"] = (source.restore_time or rt.now()).isoformat()
    now = rt.now()
    job_id = new_id("job")
    with rt.store.transaction() as tx:
        target = choose_target(
            rt, tx, project, backup, request, now=now, restore_time=source.restore_time
        )
        rt.enqueue(
            tx,
            JobType.project_restore,
            project_id=project_id,
            payload=payload,
            locked_resource=target.locked_resource,
            preview_database_id=target.preview_id,
            job_id=job_id,
        )
    return job_id


def choose_target(
    rt: Runtime,
    tx: Transaction,
    project: ProjectRecord,
    backup: BackupRecord | None,
    request: RestoreRequest,
    *,
    now: datetime,
    restore_time: datetime | None = None,
) -> RestoreTarget:
    """The target ``request.target_kind`` names, checked; a new preview is inserted in ``tx``
    (restored from ``backup``, or to ``restore_time``)."""
    if request.target_kind is TargetKind.project:
        if not request.confirm_project_overwrite:
            raise Forbidden(
                f"target_kind 'project' overwrites the database of project "
                f"{project.name}; set confirm_project_overwrite to true to allow it"
            )
        return RestoreTarget(locked_resource=f"project:{project.id}", preview_id=None)
    if request.target_kind is TargetKind.preview:
        return _existing_preview(rt, project.id, request.preview_id)
    return _new_preview(rt, tx, project, backup, request, now=now, restore_time=restore_time)


def _existing_preview(rt: Runtime, project_id: str, preview_id: str | None) -> RestoreTarget:
    preview = rt.store.get_preview(preview_id or "")
    if preview is None or preview.state == "deleted":
        raise _invalid("preview_id", f"no preview database {preview_id}")
    if preview.project_id != project_id:
        raise _invalid(
            "preview_id", f"preview {preview_id} belongs to another project, not {project_id}"
        )
    return RestoreTarget(locked_resource=f"preview:{preview_id}", preview_id=preview_id)


def _new_preview(
    rt: Runtime,
    tx: Transaction,
    project: ProjectRecord,
    backup: BackupRecord | None,
    request: RestoreRequest,
    *,
    now: datetime,
    restore_time: datetime | None,
) -> RestoreTarget:
    preview_id = new_id("prv")
    ttl = request.ttl_hours or PREVIEW_TTL_HOURS
    rt.store.insert_preview(
        tx,
        PreviewDatabase(
            id=preview_id,
            project_id=project.id,
            name=request.preview_name or f"{project.name}-{preview_id[4:12]}",
            mode="restore",
            state="creating",
            source_kind=request.source_kind,
            source_database=project.database_name,
            source_backup_key=backup.backup_key if backup else None,
            source_restore_time=restore_time,
            ttl_expires_at=now + timedelta(hours=ttl),
            created_at=now,
            updated_at=now,
        ),
    )
    return RestoreTarget(locked_resource=f"preview:{preview_id}", preview_id=preview_id)


@dataclass(frozen=True)
class _Source:
    """What a restore reads: a backup, or the log replayed to ``restore_time``."""

    backup: BackupRecord | None = None
    restore_time: datetime | None = None


def _source(rt: Runtime, project: ProjectRecord, request: RestoreRequest) -> _Source:
    """The backup to restore (the restore point's, or the one ``backup_key`` names), or
    the moment to restore to, checked against the PITR window."""
    project_id = project.id
    if request.restore_time is not None:
        control.check_time(rt, project, request.restore_time, "restore_time")
        return _Source(restore_time=request.restore_time)
    if request.restore_point_id is not None:
        point = rt.store.get_restore_point(project_id, request.restore_point_id)
        if point is None:
            raise _invalid(
                "restore_point_id",
                f"no restore point {request.restore_point_id} in project {project_id}",
            )
        if point.state != "active":
            raise _invalid(
                "restore_point_id", f"restore point {point.id} ({point.label}) is {point.state}"
            )
        if point.kind == "pitr" and point.pitr_time is not None:
            control.check_time(rt, project, point.pitr_time, "restore_point_id")
            return _Source(restore_time=point.pitr_time)
        backup = backups.by_key(rt, project_id, point.backup_key or "", "restore_point_id")
        return _Source(backup=backup)
    return _Source(backup=backups.by_key(rt, project_id, request.backup_key or "", "backup_key"))
