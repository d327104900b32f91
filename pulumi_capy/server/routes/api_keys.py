"""``/v1/organizations/{organization_id}/api-keys``: create, list and revoke API keys.

Organization-level keys only, and only for their own organization (any other
is 404, as if it did not exist).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from pulumi_capy.api.errors import NotFound
from pulumi_capy.api.models import CreateApiKey, CreatedApiKey, Principal
from pulumi_capy.server import envelopes as env
from pulumi_capy.server.auth import require_org_level, require_scope
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


def require_key_access(caller: Principal, organization_id: str, scope: str) -> None:
    require_scope(caller, scope)
    require_org_level(caller, "managing API keys")
    if caller.organization_id != organization_id:
        raise NotFound(f"organization {organization_id} not found")


@router.post(
    "/v1/organizations/{organization_id}/api-keys",
    status_code=201,
    response_model=CreatedApiKey,
)
def create_api_key(
    caller: Caller, engine: AppEngine, organization_id: str, body: CreateApiKey
) -> JSONResponse:
    require_key_access(caller, organization_id, "api_keys:write")
    created = engine.create_api_key(organization_id, body)
    # the one answer that carries a plaintext key
    return JSONResponse(created.model_dump(mode="json"), status_code=201)


@router.get("/v1/organizations/{organization_id}/api-keys", response_model=env.ApiKeyList)
async def list_api_keys(caller: Caller, engine: AppEngine, organization_id: str) -> env.ApiKeyList:
    require_key_access(caller, organization_id, "api_keys:read")
    return env.ApiKeyList(api_keys=engine.list_api_keys(organization_id))


@router.delete("/v1/organizations/{organization_id}/api-keys/{key_id}", response_model=env.Deleted)
def delete_api_key(
    caller: Caller, engine: AppEngine, organization_id: str, key_id: str
) -> env.Deleted:
    require_key_access(caller, organization_id, "api_keys:write")
    engine.delete_api_key(organization_id, key_id)
    return env.Deleted()
