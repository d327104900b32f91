"""``/v1/projects``: list, create, read, update (its database_url) and delete projects."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from pulumi_capy.api.models import CreateProject, UpdateProject
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import require_org_level, require_project_access, require_scope
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES, answer

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/v1/projects", response_model=env.ProjectList)
async def list_projects(caller: Caller, engine: AppEngine) -> Response:
    require_scope(caller, "projects:read")
    projects = engine.list_projects()
    if caller.project_id is not None:
        projects = [project for project in projects if project.id == caller.project_id]
    return answer(env.ProjectList(projects=projects))


@router.post("/v1/projects", response_model=env.ProjectCreatedEnvelope, status_code=201)
def create_project(
    caller: Caller, engine: AppEngine, body: CreateProject
) -> env.ProjectCreatedEnvelope:
    require_scope(caller, "projects:write")
    require_org_level(caller, "creating a project")
    created = engine.create_project(body)
    return env.ProjectCreatedEnvelope(project=created.project, job=created.job)


@router.get("/v1/projects/{project_id}", response_model=env.ProjectEnvelope)
async def get_project(caller: Caller, engine: AppEngine, project_id: str) -> Response:
    require_project_access(caller, project_id, "projects:read")
    return answer(env.ProjectEnvelope(project=engine.get_project(project_id)))


@router.patch("/v1/projects/{project_id}", response_model=env.ProjectEnvelope)
def update_project(
    caller: Caller, engine: AppEngine, project_id: str, body: UpdateProject
) -> env.ProjectEnvelope:
    require_project_access(caller, project_id, "projects:write")
    require_org_level(caller, "changing a project's database_url")
    return env.ProjectEnvelope(project=engine.update_project(project_id, body))


@router.delete("/v1/projects/{project_id}", response_model=env.Deleted)
def delete_project(
    caller: Caller,
    engine: AppEngine,
    project_id: str,
    force: Annotated[bool, Query()] = False,
) -> env.Deleted:
    require_project_access(caller, project_id, "projects:write")
    require_org_level(caller, "deleting a project")
    engine.delete_project(project_id, force=force)
    return env.Deleted()
