"""``capy serve``: CapyDB's REST API (``shared/capydb-api.md``) over the restore engine.

Same paths, fields, envelopes and statuses as CapyDB, so one client (and one
set of Pulumi resources) works against both. Every error is
``{"error": "<message>"}``; each error class maps to one status. The OpenAPI
document is at ``/v1/openapi.json``.
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations
# at runtime, and `Caller` is local to create_app.

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from pulumi_capy._version import __version__
from pulumi_capy.api.credentials import API_KEY_PREFIX
from pulumi_capy.api.errors import (
    ApiError,
    CapyError,
    FieldError,
    Forbidden,
    InvalidInput,
    NotFound,
    NotSupported,
)
from pulumi_capy.api.models import (
    CreateApiKey,
    CreateBackup,
    CreatedApiKey,
    CreatePreview,
    CreateProject,
    CreateRestorePoint,
    Identity,
    Principal,
    PutScheduledBackup,
    RestoreRequest,
    RuleError,
    TargetKind,
)
from pulumi_capy.engine import Engine
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import (
    require_org_level,
    require_project,
    require_scope,
    token_from,
    unauthorized,
)
from pulumi_capy.server.cache import Principals, ReadCache, ReadStats, StoreVersion
from pulumi_capy.server.sessions import SessionSettings, SessionVerifier

__all__ = ["BODY_LIMIT", "create_app"]

log = logging.getLogger(__name__)

BODY_LIMIT = 1 << 20  # bytes of a request body [ours]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before they are read whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        too_large = started = refused = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                too_large = True
                raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            # FastAPI turns the error of a body read into its own 400: answer 413 instead
            nonlocal started, refused
            if too_large and not started:
                if not refused:
                    refused = True
                    await self._refuse(send)
                return
            started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except _TooLarge:
            if not started and not refused:
                refused = True
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"error": f"the request body is larger than {self.limit} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_body, send)


class _TooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _status(error: CapyError) -> int:
    if isinstance(error, ApiError):
        return error.status
    if isinstance(error, NotSupported):
        return 501
    return 500


def _field_name(location: tuple[Any, ...]) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _allowed_methods(app: FastAPI, request: Request) -> str:
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE and isinstance(route, APIRoute):
            methods.update(route.methods or ())
    return ", ".join(sorted(methods))


def _answer(model: BaseModel) -> Response:
    """A 200 of ``model``, serialized once by pydantic (what FastAPI would answer for the
    route's ``response_model``, without its dump, re-validation and second serialization)."""
    return Response(model.model_dump_json(), media_type="application/json")


def create_app(
    engine_dir: str | Path,
    *,
    body_limit: int = BODY_LIMIT,
    sessions: SessionSettings | None = None,
    read_cache: bool = True,
) -> FastAPI:
    """The ASGI app over the engine in ``engine_dir`` (one ``Engine``, shared by threads);
    ``sessions`` also accepts session JWTs (``server/sessions.py``); ``read_cache=False``
    computes every answer (``bench/server_load.py`` measures both)."""
    engine = Engine(engine_dir)
    try:
        verifier = SessionVerifier(sessions, engine) if sessions is not None else None
    except BaseException:
        engine.close()
        raise
    app = FastAPI(
        title="pulumi-capy",
        version=__version__,
        description="CapyDB's restore surface, served by pulumi_capy's restore engine.",
        openapi_url="/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine
    principals = Principals(engine, StoreVersion(engine.rt.store))
    app.add_middleware(BodyLimit, limit=body_limit)
    app.state.read_stats = ReadStats()
    if read_cache:
        app.add_middleware(ReadCache, principals=principals, stats=app.state.read_stats)

    @app.exception_handler(CapyError)
    async def capy_error(_: Request, exc: CapyError) -> JSONResponse:
        status = _status(exc)
        if status >= 500:
            log.error("server fault: %s", exc)
        return JSONResponse({"error": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems: list[FieldError] = []
        for error in exc.errors():
            cause = (error.get("ctx") or {}).get("error")
            if isinstance(cause, RuleError):  # a rule over several fields names each of them
                problems.extend(FieldError(name, cause.message) for name in cause.fields)
                continue
            field = _field_name(tuple(error.get("loc", ())))
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            if error.get("type") == "json_invalid" or field == "body":
                field, message = "body", "must be a JSON object (is it valid JSON?)"
            elif error.get("type") == "extra_forbidden":
                message = "unknown field"
            problems.append(FieldError(field, message))
        return JSONResponse({"error": InvalidInput(problems).detail}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first route of the path; a path has one route per method
            headers["Allow"] = _allowed_methods(app, request)
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(Exception)
    async def fault(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected server fault")
        return JSONResponse({"error": "internal server error"}, status_code=500)

    bearer = HTTPBearer(auto_error=False)
    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

    async def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        api_key: Annotated[str | None, Security(api_key_header)],
    ) -> Principal:
        authorization = f"Bearer {credentials.credentials}" if credentials else None
        token = token_from(authorization, api_key)
        if token is None:
            raise unauthorized(None)
        if verifier is not None and not token.startswith(API_KEY_PREFIX):
            session = verifier.principal(token)
            if session is None:
                raise unauthorized(token)
            return session
        version = principals.version.current()
        known = principals.lookup(token, version)
        if known is None:  # the engine's answer, off the event loop (it may record last use)
            known = await run_in_threadpool(principals.remember, token, version)
        if known.principal is None:
            raise unauthorized(token)
        return known.principal

    Caller = Annotated[Principal, Depends(principal)]
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": env.ErrorBody} for code in (400, 401, 403, 404, 409, 413)
    }

    def project_access(caller: Principal, project_id: str, scope: str) -> None:
        require_scope(caller, scope)
        require_project(caller, project_id)

    # Reads are `async def`: they run on the event loop, not in the thread pool. A read is a
    # few indexed SQLite queries on this thread's own WAL reading connection, which never
    # waits for a writer; in a thread, each query would drop the GIL and then queue for it
    # behind the other threads (bench/server_load.py, read cache off: 0.08 -> 0.19 of the
    # static app).
    # Writes stay in the thread pool: they may wait for SQLite's write lock.

    # ------------------------------------------------------------ identity

    @app.get("/v1/me", response_model=Identity, responses=errors)
    async def me(caller: Caller) -> Identity:
        identity = engine.get_identity()
        return identity.model_copy(update={"principal": caller})

    # ------------------------------------------------------------ projects

    @app.get("/v1/projects", response_model=env.ProjectList, responses=errors)
    async def list_projects(caller: Caller) -> Response:
        require_scope(caller, "projects:read")
        projects = engine.list_projects()
        if caller.project_id is not None:
            projects = [project for project in projects if project.id == caller.project_id]
        return _answer(env.ProjectList(projects=projects))

    @app.post(
        "/v1/projects",
        response_model=env.ProjectCreatedEnvelope,
        status_code=201,
        responses=errors,
    )
    def create_project(caller: Caller, body: CreateProject) -> env.ProjectCreatedEnvelope:
        require_scope(caller, "projects:write")
        require_org_level(caller, "creating a project")
        created = engine.create_project(body)
        return env.ProjectCreatedEnvelope(project=created.project, job=created.job)

    @app.get("/v1/projects/{project_id}", response_model=env.ProjectEnvelope, responses=errors)
    async def get_project(caller: Caller, project_id: str) -> Response:
        project_access(caller, project_id, "projects:read")
        return _answer(env.ProjectEnvelope(project=engine.get_project(project_id)))

    @app.delete("/v1/projects/{project_id}", response_model=env.Deleted, responses=errors)
    def delete_project(
        caller: Caller, project_id: str, force: Annotated[bool, Query()] = False
    ) -> env.Deleted:
        project_access(caller, project_id, "projects:write")
        require_org_level(caller, "deleting a project")
        engine.delete_project(project_id, force=force)
        return env.Deleted()

    # ------------------------------------------------------------ restore points

    @app.get(
        "/v1/projects/{project_id}/restore-points",
        response_model=env.RestorePointList,
        responses=errors,
    )
    async def list_restore_points(caller: Caller, project_id: str) -> Response:
        project_access(caller, project_id, "backups:read")
        return _answer(env.RestorePointList(restore_points=engine.list_restore_points(project_id)))

    @app.post(
        "/v1/projects/{project_id}/restore-points",
        response_model=env.RestorePointEnvelope,
        status_code=201,
        responses=errors,
    )
    def create_restore_point(
        caller: Caller, project_id: str, body: CreateRestorePoint
    ) -> env.RestorePointEnvelope:
        project_access(caller, project_id, "backups:write")
        return env.RestorePointEnvelope(restore_point=engine.create_restore_point(project_id, body))

    @app.delete(
        "/v1/projects/{project_id}/restore-points/{restore_point_id}",
        response_model=env.Deleted,
        responses=errors,
    )
    def delete_restore_point(caller: Caller, project_id: str, restore_point_id: str) -> env.Deleted:
        project_access(caller, project_id, "backups:write")
        engine.delete_restore_point(project_id, restore_point_id)
        return env.Deleted()

    # ------------------------------------------------------------ restores

    @app.post(
        "/v1/projects/{project_id}/restores",
        response_model=env.JobEnvelope,
        status_code=202,
        responses=errors,
    )
    def create_restore(caller: Caller, project_id: str, body: RestoreRequest) -> env.JobEnvelope:
        project_access(caller, project_id, "backups:write")
        if body.target_kind is TargetKind.project and caller.project_id is not None:
            raise Forbidden(
                "overwriting a project database needs an organization key with backups:write"
            )
        return env.JobEnvelope(job=engine.create_restore(project_id, body))

    # ------------------------------------------------------------ backups

    @app.get("/v1/projects/{project_id}/backups", response_model=env.BackupList, responses=errors)
    async def list_backups(caller: Caller, project_id: str) -> Response:
        project_access(caller, project_id, "backups:read")
        return _answer(env.BackupList(backups=engine.list_backups(project_id)))

    @app.post(
        "/v1/projects/{project_id}/backups",
        response_model=env.JobEnvelope,
        status_code=202,
        responses=errors,
    )
    def create_backup(
        caller: Caller, project_id: str, body: CreateBackup | None = None
    ) -> env.JobEnvelope:
        project_access(caller, project_id, "backups:write")
        return env.JobEnvelope(job=engine.create_backup(project_id, body))

    @app.delete(
        "/v1/projects/{project_id}/backups/{backup_id}",
        response_model=env.Deleted,
        responses=errors,
    )
    def delete_backup(caller: Caller, project_id: str, backup_id: str) -> env.Deleted:
        project_access(caller, project_id, "backups:write")
        engine.delete_backup(project_id, backup_id)
        return env.Deleted()

    @app.get(
        "/v1/projects/{project_id}/scheduled-backups",
        response_model=env.ScheduledBackupList,
        responses=errors,
    )
    async def list_schedules(caller: Caller, project_id: str) -> Response:
        project_access(caller, project_id, "backups:read")
        schedule = engine.get_scheduled_backup(project_id)
        return _answer(env.ScheduledBackupList(scheduled_backups=[schedule] if schedule else []))

    @app.put(
        "/v1/projects/{project_id}/scheduled-backups/default",
        response_model=env.ScheduledBackupEnvelope,
        responses=errors,
    )
    def put_schedule(
        caller: Caller, project_id: str, body: PutScheduledBackup
    ) -> env.ScheduledBackupEnvelope:
        project_access(caller, project_id, "backups:write")
        return env.ScheduledBackupEnvelope(
            scheduled_backup=engine.put_scheduled_backup(project_id, body)
        )

    # ------------------------------------------------------------ jobs

    @app.get("/v1/projects/{project_id}/jobs", response_model=env.JobList, responses=errors)
    async def list_jobs(
        caller: Caller, project_id: str, limit: Annotated[int, Query(ge=1, le=1000)] = 25
    ) -> Response:
        project_access(caller, project_id, "jobs:read")
        return _answer(env.JobList(jobs=engine.list_jobs(project_id, limit)))

    @app.get("/v1/jobs/{job_id}", response_model=env.JobEnvelope, responses=errors)
    async def get_job(caller: Caller, job_id: str) -> Response:
        require_scope(caller, "jobs:read")
        job = engine.get_job(job_id)
        if caller.project_id is not None and job.project_id != caller.project_id:
            raise NotFound(f"job {job_id} not found")
        return _answer(env.JobEnvelope(job=job))

    # ------------------------------------------------------------ previews

    @app.get(
        "/v1/projects/{project_id}/preview-databases",
        response_model=env.PreviewList,
        responses=errors,
    )
    async def list_previews(caller: Caller, project_id: str) -> Response:
        project_access(caller, project_id, "projects:read")
        return _answer(env.PreviewList(preview_databases=engine.list_preview_databases(project_id)))

    @app.post(
        "/v1/projects/{project_id}/preview-databases",
        response_model=env.PreviewCreatedEnvelope,
        status_code=202,
        responses=errors,
    )
    def create_preview(
        caller: Caller, project_id: str, body: CreatePreview
    ) -> env.PreviewCreatedEnvelope:
        project_access(caller, project_id, "projects:write")
        created = engine.create_preview_database(project_id, body)
        return env.PreviewCreatedEnvelope(job=created.job, preview=created.preview)

    @app.delete(
        "/v1/preview-databases/{preview_id}",
        response_model=env.JobEnvelope,
        status_code=202,
        responses=errors,
    )
    def delete_preview(caller: Caller, preview_id: str) -> env.JobEnvelope:
        require_scope(caller, "projects:write")
        preview = engine.get_preview_database(preview_id)
        if caller.project_id is not None and preview.project_id != caller.project_id:
            raise NotFound(f"preview database {preview_id} not found")
        return env.JobEnvelope(job=engine.delete_preview_database(preview_id))

    # ------------------------------------------------------------ API keys

    def key_access(caller: Caller, organization_id: str, scope: str) -> None:
        require_scope(caller, scope)
        require_org_level(caller, "managing API keys")
        if caller.organization_id != organization_id:
            raise NotFound(f"organization {organization_id} not found")

    @app.post(
        "/v1/organizations/{organization_id}/api-keys",
        status_code=201,
        response_model=CreatedApiKey,
        responses=errors,
    )
    def create_api_key(caller: Caller, organization_id: str, body: CreateApiKey) -> JSONResponse:
        key_access(caller, organization_id, "api_keys:write")
        created = engine.create_api_key(organization_id, body)
        # the one answer that carries a plaintext key
        return JSONResponse(created.model_dump(mode="json"), status_code=201)

    @app.get(
        "/v1/organizations/{organization_id}/api-keys",
        response_model=env.ApiKeyList,
        responses=errors,
    )
    async def list_api_keys(caller: Caller, organization_id: str) -> env.ApiKeyList:
        key_access(caller, organization_id, "api_keys:read")
        return env.ApiKeyList(api_keys=engine.list_api_keys(organization_id))

    @app.delete(
        "/v1/organizations/{organization_id}/api-keys/{key_id}",
        response_model=env.Deleted,
        responses=errors,
    )
    def delete_api_key(caller: Caller, organization_id: str, key_id: str) -> env.Deleted:
        key_access(caller, organization_id, "api_keys:write")
        engine.delete_api_key(organization_id, key_id)
        return env.Deleted()

    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document without the 422 it adds to every operation: invalid input is a
        400 ``{"error": …}`` here (``invalid_request``), never a 422."""
        if app.openapi_schema is None:
            document = generate_openapi()
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
        return app.openapi_schema or generate_openapi()

    app.openapi = openapi  # type: ignore[method-assign]
    return app
