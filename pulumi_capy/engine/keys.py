"""API keys of a self-hosted server: minted once, kept only as a SHA-256.

A key is ``capy_live_`` + 32 random bytes (url-safe base64); the plaintext is
returned once, at creation. ``authenticate`` finds a key by its hash and
compares the hashes in constant time; a revoked or expired key is refused.
In embedded mode there are no keys: the caller is the whole default
organization with every scope (``identity``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Any

from pydantic import SecretStr

from pulumi_capy._version import __version__
from pulumi_capy.api.credentials import API_KEY_PREFIX
from pulumi_capy.api.errors import FieldError, InvalidInput, NotFound
from pulumi_capy.api.models import (
    SCOPES,
    ApiKey,
    CreateApiKey,
    CreatedApiKey,
    Identity,
    Organization,
    Principal,
    ServerInfo,
)
from pulumi_capy.engine.queue import new_id
from pulumi_capy.engine.runtime import DEFAULT_ORGANIZATION_ID, Runtime

__all__ = ["authenticate", "create_key", "hash_key", "identity", "list_keys", "revoke_key"]

# last_used_at is written at most this often per key (a write per request would serialize reads)
TOUCH_EVERY = timedelta(minutes=1)


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _public(row: dict[str, Any]) -> ApiKey:
    return ApiKey.model_validate({k: v for k, v in row.items() if k != "key_hash"})


def create_key(rt: Runtime, organization_id: str, request: CreateApiKey) -> CreatedApiKey:
    if rt.store.get_organization(organization_id) is None:
        raise NotFound(f"organization {organization_id} not found")
    if request.project_id is not None:
        project = rt.store.get_project(request.project_id)
        if project is None or project.organization_id != organization_id:
            raise InvalidInput([FieldError("project_id", f"no project {request.project_id}")])
    now = rt.now()
    if request.expires_at is not None and request.expires_at <= now:
        raise InvalidInput([FieldError("expires_at", "must be in the future")])
    plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key")
    rt.store.insert_api_key(
        {
            "id": key_id,
            "organization_id": organization_id,
            "name": request.name,
            "key_hash": hash_key(plaintext),
            "prefix": plaintext[: len(API_KEY_PREFIX) + 4],
            "scopes": list(request.scopes),
            "project_id": request.project_id,
            "created_at": now,
            "expires_at": request.expires_at,
        }
    )
    row = rt.store.get_api_key(key_id)
    assert row is not None
    return CreatedApiKey(api_key=_public(row), plaintext_api_key=SecretStr(plaintext))


def list_keys(rt: Runtime, organization_id: str) -> list[ApiKey]:
    if rt.store.get_organization(organization_id) is None:
        raise NotFound(f"organization {organization_id} not found")
    return [_public(row) for row in rt.store.list_api_keys(organization_id)]


def revoke_key(rt: Runtime, organization_id: str, key_id: str) -> None:
    row = rt.store.get_api_key(key_id)
    if row is None or row["organization_id"] != organization_id:
        raise NotFound(f"API key {key_id} not found")
    rt.store.revoke_api_key(key_id, rt.now())


def authenticate(rt: Runtime, token: str, now: datetime | None = None) -> Principal | None:
    """The principal of a valid, unrevoked, unexpired key; ``None`` otherwise."""
    if not token.startswith(API_KEY_PREFIX):
        return None
    digest = hash_key(token)
    row = rt.store.find_api_key(digest)
    if row is None or not hmac.compare_digest(str(row["key_hash"]), digest):
        return None
    now = now or rt.now()
    if row["revoked_at"] is not None:
        return None
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return None
    last_used = row["last_used_at"]
    if last_used is None or now - last_used >= TOUCH_EVERY:
        rt.store.touch_api_key(str(row["id"]), now)
    return Principal(
        auth_source="api_key",
        organization_id=str(row["organization_id"]),
        scopes=list(row["scopes"]),
        project_id=row["project_id"],
        api_key_id=str(row["id"]),
    )


def identity(rt: Runtime) -> Identity:
    """Who an embedded caller is: the default organization, with every scope."""
    organization = rt.store.get_organization(DEFAULT_ORGANIZATION_ID) or {}
    return Identity(
        organization=Organization(
            id=DEFAULT_ORGANIZATION_ID, name=organization.get("name", "default")
        ),
        principal=Principal(
            auth_source="embedded",
            organization_id=DEFAULT_ORGANIZATION_ID,
            scopes=list(SCOPES),
        ),
        server=ServerInfo(name="pulumi-capy", version=__version__),
    )
