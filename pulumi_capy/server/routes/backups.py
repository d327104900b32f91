"""``/v1/projects/{project_id}/backups``: list, read, start, verify again (jobs), delete."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from pulumi_capy.api.models import CreateBackup
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import require_project_access
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES, answer

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/v1/projects/{project_id}/backups", response_model=env.BackupList)
async def list_backups(caller: Caller, engine: AppEngine, project_id: str) -> Response:
    require_project_access(caller, project_id, "backups:read")
    return answer(env.BackupList(backups=engine.list_backups(project_id)))


@router.post("/v1/projects/{project_id}/backups", response_model=env.JobEnvelope, status_code=202)
def create_backup(
    caller: Caller, engine: AppEngine, project_id: str, body: CreateBackup | None = None
) -> env.JobEnvelope:
    require_project_access(caller, project_id, "backups:write")
    return env.JobEnvelope(job=engine.create_backup(project_id, body))


@router.get(
    "/v1/projects/{project_id}/backups/{backup_id}", response_model=env.BackupDetailEnvelope
)
async def get_backup(
    caller: Caller, engine: AppEngine, project_id: str, backup_id: str
) -> Response:
    require_project_access(caller, project_id, "backups:read")
    return answer(env.BackupDetailEnvelope(backup=engine.get_backup(project_id, backup_id)))


@router.post(
    "/v1/projects/{project_id}/backups/{backup_id}/verify",
    response_model=env.JobEnvelope,
    status_code=202,
)
def verify_backup(
    caller: Caller, engine: AppEngine, project_id: str, backup_id: str
) -> env.JobEnvelope:
    require_project_access(caller, project_id, "backups:write")
    return env.JobEnvelope(job=engine.verify_backup(project_id, backup_id))


@router.delete("/v1/projects/{project_id}/backups/{backup_id}", response_model=env.Deleted)
def delete_backup(
    caller: Caller, engine: AppEngine, project_id: str, backup_id: str
) -> env.Deleted:
    require_project_access(caller, project_id, "backups:write")
    engine.delete_backup(project_id, backup_id)
    return env.Deleted()
