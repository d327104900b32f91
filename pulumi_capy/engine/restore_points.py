"""Restore points: named pins on a backup, kept until deleted.

Only kind ``backup`` exists: a ``pitr`` point needs a transaction-log archive,
which the engine does not have yet.
"""

from __future__ import annotations

from pulumi_capy.api.errors import FieldError, InvalidInput, NotFound
from pulumi_capy.api.models import CreateRestorePoint, RestorePoint, RestorePointKind
from pulumi_capy.engine import backups, projects
from pulumi_capy.engine.queue import new_id
from pulumi_capy.engine.runtime import DEFAULT_ORGANIZATION_ID, Runtime

__all__ = ["create_restore_point", "delete_restore_point", "list_restore_points"]


def list_restore_points(rt: Runtime, project_id: str) -> list[RestorePoint]:
    projects.require(rt, project_id)
    return rt.store.list_restore_points(project_id)


def create_restore_point(rt: Runtime, project_id: str, request: CreateRestorePoint) -> RestorePoint:
    """Pin the unexpired backup ``request.backup_key`` under ``request.label``."""
    projects.require(rt, project_id)
    if request.kind is RestorePointKind.pitr:
        raise InvalidInput(
            [
                FieldError(
                    "kind",
                    f"point-in-time recovery (kind 'pitr') is not available for project "
                    f"{project_id}: the engine has no transaction-log archive yet; pin a "
                    "backup with kind 'backup'",
                )
            ]
        )
    backup = backups.by_key(rt, project_id, request.backup_key or "", "backup_key")
    now = rt.now()
    return rt.store.insert_restore_point(
        RestorePoint(
            id=new_id("rp"),
            project_id=project_id,
            organization_id=DEFAULT_ORGANIZATION_ID,
            label=request.label,
            note=request.note,
            kind=request.kind.value,
            backup_id=backup.id,
            backup_key=backup.backup_key,
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
