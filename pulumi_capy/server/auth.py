"""Who is calling, and may they: keys, scopes, project scope.

A request carries ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No
key or an unknown, revoked or expired one is 401; a key without the scope the
call needs is 403 naming the scope; a project-scoped key gets 404 for other
projects' objects (their existence is not revealed) and 403 for
organization-level calls.
"""

from __future__ import annotations

from pulumi_capy.api.errors import Forbidden, NotFound, Unauthorized
from pulumi_capy.api.models import Principal

__all__ = [
    "require_org_level",
    "require_project",
    "require_project_access",
    "require_scope",
    "token_from",
    "unauthorized",
]


def token_from(authorization: str | None, api_key: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def unauthorized(token: str | None) -> Unauthorized:
    """The 401 for a request without a key (``token`` is None) or with a bad one."""
    if token is None:
        return Unauthorized(
            "no API key: send `Authorization: Bearer capy_live_…` or `X-API-Key: capy_live_…`"
        )
    return Unauthorized("the API key is unknown, revoked or expired")


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise Forbidden(f"this key lacks the scope {scope!r} that this call needs")


def require_project(principal: Principal, project_id: str) -> None:
    if principal.project_id is not None and principal.project_id != project_id:
        raise NotFound(f"project {project_id} not found")


def require_project_access(principal: Principal, project_id: str, scope: str) -> None:
    """What a call on one project's objects needs: ``scope``, and that project if scoped."""
    require_scope(principal, scope)
    require_project(principal, project_id)


def require_org_level(principal: Principal, what: str) -> None:
    if principal.project_id is not None:
        raise Forbidden(f"{what} needs an organization key; this key is scoped to one project")
