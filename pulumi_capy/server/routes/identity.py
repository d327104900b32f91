"""``/v1/me``: who the caller is, and what serves the API."""

from __future__ import annotations

from fastapi import APIRouter

from pulumi_capy.api.models import Identity
from pulumi_capy.server.dependencies import AppEngine, Caller
from pulumi_capy.server.responses import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/v1/me", response_model=Identity)
async def me(caller: Caller, engine: AppEngine) -> Identity:
    identity = engine.get_identity()
    return identity.model_copy(update={"principal": caller})
