"""``/v1/projects/{project_id}/preview-databases`` and ``/v1/preview-databases/{preview_id}``:
list, create (a job) and delete (a job) preview databases."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from pulumi_capy.api.errors import NotFound
from pulumi_capy.api.models import CreatePreview
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import require_project_access, require_scope
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES, answer

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/v1/projects/{project_id}/preview-databases", response_model=env.PreviewList)
async def list_previews(caller: Caller, engine: AppEngine, project_id: str) -> Response:
    require_project_access(caller, project_id, "projects:read")
    return answer(env.PreviewList(preview_databases=engine.list_preview_databases(project_id)))


@router.post(
    "/v1/projects/{project_id}/preview-databases",
    response_model=env.PreviewCreatedEnvelope,
    status_code=202,
)
def create_preview(
    caller: Caller, engine: AppEngine, project_id: str, body: CreatePreview
) -> env.PreviewCreatedEnvelope:
    require_project_access(caller, project_id, "projects:write")
    created = engine.create_preview_database(project_id, body)
    return env.PreviewCreatedEnvelope(job=created.job, preview=created.preview)


@router.delete(
    "/v1/preview-databases/{preview_id}", response_model=env.JobEnvelope, status_code=202
)
def delete_preview(caller: Caller, engine: AppEngine, preview_id: str) -> env.JobEnvelope:
    require_scope(caller, "projects:write")
    preview = engine.get_preview_database(preview_id)
    if caller.project_id is not None and preview.project_id != caller.project_id:
        raise NotFound(f"preview database {preview_id} not found")
    return env.JobEnvelope(job=engine.delete_preview_database(preview_id))
