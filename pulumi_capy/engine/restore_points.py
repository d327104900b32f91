"""Restore points: named pins on a backup (kind ``backup``) or on a moment of the PITR
window (kind ``pitr``, default now), kept until deleted; ``tick`` marks a ``pitr`` point
``expired`` once retention moved the window past it.
"""

from __future__ import annotations

from pulumi_capy.api.errors import NotFound
from pulumi_capy.api.models import CreateRestorePoint, RestorePoint, RestorePointKind
from pulumi_capy.engine import backups, projects
from pulumi_capy.engine.pitr import control
from pulumi_capy.engine.queue import new_id
from pulumi_capy.engine.runtime import DEFAULT_ORGANIZATION_ID, Runtime

__all__ = ["create_restore_point", "delete_restore_point", "list_restore_points"]


def list_restore_points(rt: Runtime, project_id: str) -> list[RestorePoint]:
    projects.require(rt, project_id)
    return rt.store.list_restore_points(project_id)


def create_restore_point(rt: Runtime, project_id: str, request: CreateRestorePoint) -> RestorePoint:
    """Pin the unexpired backup ``request.backup_key`` under ``request.label``."""
    project = projects.require(rt, project_id)
    now = rt.now()
    backup_id = backup_key = pitr_time = None
    if request.kind is RestorePointKind.pitr:
        pitr_time = request.pitr_time or now
        control.check_time(rt, project, pitr_time, "pitr_time")
    else:
        backup = backups.by_key(rt, project_id, request.backup_key or "", "backup_key")
        backup_id, backup_key = backup.id, backup.backup_key
    return rt.store.insert_restore_point(
        RestorePoint(
            id=new_id("rp"),
            project_id=project_id,
            organization_id=DEFAULT_ORGANIZATION_ID,
            label=request.label,
            note=request.note,
            kind=request.kind.value,
            backup_id=backup_id,
            backup_key=backup_key,
            pitr_time=pitr_time,
            state="active",
            created_by_actor_id="embedded",
            created_by_actor_kind="engine",
            created_at=now,
            updated_at=now,
        )
    )


def delete_restore_point(rt: Runtime, project_id: str, restore_point_id: str) -> None:
    projects.require(rt, project_id)
    if rt.store.get_restore_point(project_id, restore_point_id) is None:
        raise NotFound(f"restore point {restore_point_id} not found in project {project_id}")
    rt.store.delete_restore_point(restore_point_id)
