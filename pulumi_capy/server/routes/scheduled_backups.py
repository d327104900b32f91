"""``/v1/projects/{project_id}/scheduled-backups``: a project's one schedule, read and set."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from pulumi_capy.api.models import PutScheduledBackup
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import require_project_access
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES, answer

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/v1/projects/{project_id}/scheduled-backups", response_model=env.ScheduledBackupList)
async def list_schedules(caller: Caller, engine: AppEngine, project_id: str) -> Response:
    require_project_access(caller, project_id, "backups:read")
    schedule = engine.get_scheduled_backup(project_id)
    return answer(env.ScheduledBackupList(scheduled_backups=[schedule] if schedule else []))


@router.put(
    "/v1/projects/{project_id}/scheduled-backups/default",
    response_model=env.ScheduledBackupEnvelope,
)
def put_schedule(
    caller: Caller, engine: AppEngine, project_id: str, body: PutScheduledBackup
) -> env.ScheduledBackupEnvelope:
    require_project_access(caller, project_id, "backups:write")
    return env.ScheduledBackupEnvelope(
        scheduled_backup=engine.put_scheduled_backup(project_id, body)
    )
