"""``capy serve``: CapyDB's REST API (``shared/capydb-api.md``) over the restore engine.

Same paths, fields, envelopes and statuses as CapyDB, so one client (and one
set of Pulumi resources) works against both. Every error is
``{"error": "<message>"}``; each error class maps to one status
(``server/handlers.py``). The OpenAPI document is at ``/v1/openapi.json``.

``create_app`` assembles the app: the middleware (``body_limit``, ``cache``),
the exception handlers (``handlers``), one router per noun (``routes/``), and
in ``app.state`` what the rest reads:

- ``engine``, ``session_verifier``, ``principals``: the routes' dependencies
  (``dependencies``);
- ``read_stats``: how the read cache has answered;
- ``api_routes``: every route of the routers, for the ``Allow`` header of a 405.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI

from pulumi_capy._version import __version__
from pulumi_capy.engine import Engine
from pulumi_capy.server.body_limit import BODY_LIMIT, BodyLimit
from pulumi_capy.server.cache import Principals, ReadCache, ReadStats, StoreVersion
from pulumi_capy.server.handlers import EXCEPTION_HANDLERS
from pulumi_capy.server.routes import (
    api_keys,
    backups,
    identity,
    jobs,
    pitr,
    previews,
    projects,
    restore_points,
    restores,
    scheduled_backups,
)
from pulumi_capy.server.sessions import SessionSettings, SessionVerifier

__all__ = ["BODY_LIMIT", "create_app"]

# included in this order, which is the order of the OpenAPI document's paths
ROUTERS = (
    identity.router,
    projects.router,
    restore_points.router,
    restores.router,
    backups.router,
    scheduled_backups.router,
    pitr.router,
    jobs.router,
    previews.router,
    api_keys.router,
)


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
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.engine = engine
    app.state.session_verifier = verifier
    app.state.principals = Principals(engine, StoreVersion(engine.rt.store))
    app.state.read_stats = ReadStats()
    app.add_middleware(BodyLimit, limit=body_limit)
    if read_cache:
        app.add_middleware(ReadCache, principals=app.state.principals, stats=app.state.read_stats)
    for router in ROUTERS:
        app.include_router(router)
    app.state.api_routes = [route for router in ROUTERS for route in router.routes]
    _document_without_422(app)
    return app


def _document_without_422(app: FastAPI) -> None:
    """Serve FastAPI's document without the 422 it adds to every operation: invalid input is
    a 400 ``{"error": …}`` here (``handlers.invalid_request``), never a 422."""
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
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
