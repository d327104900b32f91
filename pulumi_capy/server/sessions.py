"""Session tokens: JWTs from the team's identity provider, next to API keys.

``capy serve --session-jwks FILE`` (or ``CAPY_SESSION_JWKS``) turns them on. A
request's ``Authorization: Bearer <token>`` that is not a ``capy_live_`` key is
then read as a JWT and accepted when:

- it is signed with RS256 or ES256 (no other algorithm: never ``none``, never an
  HMAC made with a public key) by a key of the JWKS file — the token's ``kid``
  picks it, or the only key of the file when there is one;
- it has an ``exp`` in the future (and ``nbf``/``iat`` not in the future), and
  the ``aud``/``iss`` given with ``--session-audience``/``--session-issuer``;
- its organization claim (``org_id``; ``--session-org-claim``) maps to an
  organization of the engine: through ``--session-org EXTERNAL=org_…`` when given,
  else it must be the organization's own id.

The principal is ``auth_source: "session"``, organization-level, ``actor_id`` the
token's ``sub``, with the scopes of its ``scope`` claim (space-separated, as
OAuth writes them; unknown ones ignored) or every scope when it has none.
Anything else is 401 with one message, whatever the reason: the reason stays in
the server's log at debug level.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi_capy.api.errors import FieldError, InvalidInput
from pulumi_capy.api.models import SCOPES, Principal
from pulumi_capy.engine import Engine

__all__ = ["ALGORITHMS", "SessionVerifier", "session_settings_from_env"]

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")
LEEWAY_SECONDS = 30  # clock skew between the identity provider and this server
ENV_JWKS = "CAPY_SESSION_JWKS"
ENV_AUDIENCE = "CAPY_SESSION_AUDIENCE"
ENV_ISSUER = "CAPY_SESSION_ISSUER"
ENV_ORG_CLAIM = "CAPY_SESSION_ORG_CLAIM"


@dataclass(frozen=True)
class SessionSettings:
    jwks: Path
    audience: str | None = None
    issuer: str | None = None
    org_claim: str = "org_id"
    organizations: Mapping[str, str] = field(default_factory=dict)  # external id -> ours


def session_settings_from_env(
    jwks: Path | None = None,
    audience: str | None = None,
    *,
    issuer: str | None = None,
    org_claim: str | None = None,
    organizations: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> SessionSettings | None:
    """Flags first, then ``CAPY_SESSION_*``; ``None`` when no JWKS is configured."""
    environ = os.environ if environ is None else environ
    path = jwks or (Path(environ[ENV_JWKS]) if environ.get(ENV_JWKS) else None)
    if path is None:
        return None
    mapping: dict[str, str] = {}
    for item in organizations:
        external, sep, ours = item.partition("=")
        if not sep or not external.strip() or not ours.strip():
            raise InvalidInput(
                [
                    FieldError(
                        "session_org", f"{item!r}: write EXTERNAL_ID=org_id, e.g. acme=org_default"
                    )
                ]
            )
        mapping[external.strip()] = ours.strip()
    return SessionSettings(
        jwks=path,
        audience=audience or environ.get(ENV_AUDIENCE) or None,
        issuer=issuer or environ.get(ENV_ISSUER) or None,
        org_claim=org_claim or environ.get(ENV_ORG_CLAIM) or "org_id",
        organizations=mapping,
    )


class SessionVerifier:
    """Verifies session JWTs against the keys of a JWKS file (read once, at start)."""

    def __init__(self, settings: SessionSettings, engine: Engine) -> None:
        import jwt  # the server extra

        self._jwt = jwt
        self.settings = settings
        self.engine = engine
        self._keys: dict[str | None, Any] = {}
        try:
            document = json.loads(settings.jwks.read_text(encoding="utf-8"))
            entries = document["keys"]
            if not isinstance(entries, list) or not entries:
                raise ValueError("it has no keys")
            for entry in entries:
                key = jwt.PyJWK(entry)
                if key.algorithm_name not in ALGORITHMS:
                    raise ValueError(
                        f"key {entry.get('kid')!r} is for {key.algorithm_name}; "
                        f"only {', '.join(ALGORITHMS)} keys are accepted"
                    )
                self._keys[entry.get("kid")] = key
        except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
            problem = (
                f"{settings.jwks} is not a usable JWKS file ({exc}); "
                'write {"keys": [<RS256 or ES256 public JWKs>]}'
            )
            raise InvalidInput([FieldError("session_jwks", problem)]) from None

    def _key_for(self, token: str) -> Any:
        kid = self._jwt.get_unverified_header(token).get("kid")
        if kid in self._keys:
            return self._keys[kid]
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        raise self._jwt.InvalidKeyError(f"no key with kid {kid!r} in the JWKS file")

    def principal(self, token: str) -> Principal | None:
        """The principal a valid session token stands for, or ``None``."""
        jwt = self._jwt
        settings = self.settings
        try:
            key = self._key_for(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[key.algorithm_name],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={
                    "require": ["exp", "sub", settings.org_claim],
                    "verify_aud": settings.audience is not None,
                },
            )
        except jwt.PyJWTError as exc:
            log.debug("session token refused: %s", exc)
            return None
        external = str(claims[settings.org_claim])
        organization = settings.organizations.get(external, external)
        if settings.organizations and external not in settings.organizations:
            log.debug("session token refused: organization %r is not mapped", external)
            return None
        if self.engine.rt.store.get_organization(organization) is None:
            log.debug("session token refused: no organization %r", organization)
            return None
        granted = claims.get("scope", claims.get("scopes"))
        if isinstance(granted, str):
            granted = granted.split()
        scopes = list(SCOPES) if granted is None else [s for s in SCOPES if s in granted]
        return Principal(
            auth_source="session",
            organization_id=organization,
            scopes=scopes,
            actor_id=str(claims["sub"]),
        )
