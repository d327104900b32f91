"""What a route is given (FastAPI dependencies): the app's engine and the caller.

Both are read from ``app.state``, where ``create_app`` puts them: ``engine``
(one ``Engine``, shared by threads), ``principals`` (who each key stands for, as
of a store version: ``server/cache.py``) and ``session_verifier`` (``None``
unless session JWTs are on: ``server/sessions.py``).

Both dependencies are ``async``: FastAPI runs a plain ``def`` dependency in the
thread pool, a hop per request that the reads on the event loop avoid.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from pulumi_capy.api.credentials import API_KEY_PREFIX
from pulumi_capy.api.models import Principal
from pulumi_capy.engine import Engine
from pulumi_capy.server.auth import token_from, unauthorized
from pulumi_capy.server.cache import Principals
from pulumi_capy.server.sessions import SessionVerifier

__all__ = ["AppEngine", "Caller", "app_engine", "calling_principal"]

bearer = HTTPBearer(auto_error=False)
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def app_engine(request: Request) -> Engine:
    """The engine the app serves."""
    served: Engine = request.app.state.engine
    return served


async def calling_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    api_key: Annotated[str | None, Security(api_key_header)],
) -> Principal:
    """Who sent the request: the principal of its API key or session token, else 401."""
    authorization = f"Bearer {credentials.credentials}" if credentials else None
    token = token_from(authorization, api_key)
    if token is None:
        raise unauthorized(None)
    verifier: SessionVerifier | None = request.app.state.session_verifier
    if verifier is not None and not token.startswith(API_KEY_PREFIX):
        session = verifier.principal(token)
        if session is None:
            raise unauthorized(token)
        return session
    principals: Principals = request.app.state.principals
    version = principals.version.current()
    known = principals.lookup(token, version)
    if known is None:  # the engine's answer, off the event loop (it may record last use)
        known = await run_in_threadpool(principals.remember, token, version)
    if known.principal is None:
        raise unauthorized(token)
    return known.principal


AppEngine = Annotated[Engine, Depends(app_engine)]
Caller = Annotated[Principal, Depends(calling_principal)]
