"""``/v1/projects/{project_id}/restore-points``: list, create and delete restore points."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from pulumi_capy.api.models import CreateRestorePoint
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import require_project_access
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES, answer

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/v1/projects/{project_id}/restore-points", response_model=env.RestorePointList)
async def list_restore_points(caller: Caller, engine: AppEngine, project_id: str) -> Response:
    require_project_access(caller, project_id, "backups:read")
    return answer(env.RestorePointList(restore_points=engine.list_restore_points(project_id)))


@router.post(
    "/v1/projects/{project_id}/restore-points",
    response_model=env.RestorePointEnvelope,
    status_code=201,
)
def create_restore_point(
    caller: Caller, engine: AppEngine, project_id: str, body: CreateRestorePoint
) -> env.RestorePointEnvelope:
    require_project_access(caller, project_id, "backups:write")
    return env.RestorePointEnvelope(restore_point=engine.create_restore_point(project_id, body))


@router.delete(
    "/v1/projects/{project_id}/restore-points/{restore_point_id}", response_model=env.Deleted
)
def delete_restore_point(
    caller: Caller, engine: AppEngine, project_id: str, restore_point_id: str
) -> env.Deleted:
    require_project_access(caller, project_id, "backups:write")
    engine.delete_restore_point(project_id, restore_point_id)
    return env.Deleted()
