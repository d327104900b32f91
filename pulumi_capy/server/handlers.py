"""The app's exception handlers: every error is ``{"error": "<message>"}`` with one status.

``EXCEPTION_HANDLERS`` is given to ``FastAPI(exception_handlers=…)``. A
``CapyError`` answers its class's status (``ApiError.status``; 501 for
``NotSupported``; 500 otherwise), except the engine's ``DriverFailure`` and
``TarDamaged``, faults like any other exception: a 500 that reveals nothing.
Invalid input is a 400 naming each field, never FastAPI's 422; Starlette's own
errors (404, 405, …) keep their status.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from pulumi_capy.api.errors import ApiError, CapyError, InvalidInput, NotSupported
from pulumi_capy.api.validation import http_field_errors
from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.tarstream import TarDamaged

__all__ = ["EXCEPTION_HANDLERS"]

log = logging.getLogger(__name__)


def _status(error: CapyError) -> int:
    if isinstance(error, ApiError):
        return error.status
    if isinstance(error, NotSupported):
        return 501
    return 500


def _allowed_methods(request: Request) -> str:
    """Every method of the request's path. ``app.state.api_routes`` lists the routes of the
    included routers (a FastAPI app may keep an included router whole, as one route)."""
    routes: Sequence[BaseRoute] = request.app.state.api_routes
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(request.scope)
        if match is not Match.NONE and isinstance(route, APIRoute):
            methods.update(route.methods or ())
    return ", ".join(sorted(methods))


async def capy_error(_: Request, exc: CapyError) -> JSONResponse:
    status = _status(exc)
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        log.error("server fault: %s", exc)
    return JSONResponse({"error": str(exc)}, status_code=status)


async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = http_field_errors(exc.errors())
    return JSONResponse({"error": InvalidInput(problems).detail}, status_code=400)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        # Starlette names only the first route of the path; a path has one route per method
        headers["Allow"] = _allowed_methods(request)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=headers)


async def fault(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected server fault")
    return JSONResponse({"error": "internal server error"}, status_code=500)


EXCEPTION_HANDLERS: dict[
    int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]
] = {
    CapyError: capy_error,
    # engine failures a request meets outside a job (a driver call) are faults, as any
    # exception the app does not expect: a 500 that reveals nothing
    DriverFailure: fault,
    TarDamaged: fault,
    RequestValidationError: invalid_request,
    StarletteHTTPException: http_error,
    Exception: fault,
}
