"""``/v1/projects/{project_id}/restores``: start a restore (a job)."""

from __future__ import annotations

from fastapi import APIRouter

from pulumi_capy.api.errors import Forbidden
from pulumi_capy.api.models import RestoreRequest, TargetKind
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import require_project_access
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


@router.post("/v1/projects/{project_id}/restores", response_model=env.JobEnvelope, status_code=202)
def create_restore(
    caller: Caller, engine: AppEngine, project_id: str, body: RestoreRequest
) -> env.JobEnvelope:
    require_project_access(caller, project_id, "backups:write")
    if body.target_kind is TargetKind.project and caller.project_id is not None:
        raise Forbidden(
            "overwriting a project database needs an organization key with backups:write"
        )
    return env.JobEnvelope(job=engine.create_restore(project_id, body))
