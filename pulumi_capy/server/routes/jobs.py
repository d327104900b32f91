"""``/v1/projects/{project_id}/jobs`` and ``/v1/jobs/{job_id}``: what the engine is doing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from pulumi_capy.api.errors import NotFound
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import require_project_access, require_scope
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES, answer

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/v1/projects/{project_id}/jobs", response_model=env.JobList)
async def list_jobs(
    caller: Caller,
    engine: AppEngine,
    project_id: str,
    limit: Annotated[int, Query(ge=1, le=1000)] = 25,
) -> Response:
    require_project_access(caller, project_id, "jobs:read")
    return answer(env.JobList(jobs=engine.list_jobs(project_id, limit)))


@router.post("/v1/jobs/{job_id}/cancel", response_model=env.JobEnvelope)
def cancel_job(caller: Caller, engine: AppEngine, job_id: str) -> env.JobEnvelope:
    # no jobs:write in the contract's scopes: cancelling is writing the project's work
    require_scope(caller, "backups:write")
    job = engine.get_job(job_id)
    if caller.project_id is not None and job.project_id != caller.project_id:
        raise NotFound(f"job {job_id} not found")
    return env.JobEnvelope(job=engine.cancel_job(job_id))


@router.get("/v1/jobs/{job_id}", response_model=env.JobEnvelope)
async def get_job(caller: Caller, engine: AppEngine, job_id: str) -> Response:
    require_scope(caller, "jobs:read")
    job = engine.get_job(job_id)
    if caller.project_id is not None and job.project_id != caller.project_id:
        raise NotFound(f"job {job_id} not found")
    return answer(env.JobEnvelope(job=job))
