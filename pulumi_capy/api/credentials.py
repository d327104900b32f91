"""What a CapyDB credential looks like, checked before any request is sent.

A credential is an organization or project API key (``capy_live_…``) or a
session token (a JWT). Neither is ever echoed: errors give only its length.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from pydantic import SecretStr

from pulumi_capy.api.errors import ConfigError

__all__ = ["API_KEY_PREFIX", "check_credential", "credential_kind"]

API_KEY_PREFIX = "capy_live_"
API_KEY_MIN_SECRET = 16  # characters after the prefix
_API_KEY_SECRET = re.compile(r"[A-Za-z0-9_\-]+")
_API_KEY = re.compile(rf"{API_KEY_PREFIX}[A-Za-z0-9_\-]{{{API_KEY_MIN_SECRET},}}")
_JWT_SEGMENT = re.compile(r"[A-Za-z0-9_\-]+")
JWT_PARTS = 3  # header.payload.signature


def _is_jwt(token: str) -> bool:
    parts = token.split(".")
    if len(parts) != JWT_PARTS or not all(_JWT_SEGMENT.fullmatch(part) for part in parts):
        return False
    header = parts[0] + "=" * (-len(parts[0]) % 4)
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header))
    except (binascii.Error, ValueError):
        return False
    return isinstance(decoded, dict) and "alg" in decoded


def _what_is_wrong(api_key: str) -> str:
    """Why a value that starts like an API key is not one, without echoing any of it."""
    secret = api_key.removeprefix(API_KEY_PREFIX)
    reasons = []
    if len(secret) < API_KEY_MIN_SECRET:
        reasons.append(f"only {len(secret)} after {API_KEY_PREFIX} (too short: truncated?)")
    if secret and not _API_KEY_SECRET.fullmatch(secret):
        reasons.append("with other characters among them (a space or quote pasted with it?)")
    return ": " + "; ".join(reasons) if reasons else ""


def credential_kind(token: str) -> str | None:
    """``"api_key"``, ``"session"`` (a JWT) or ``None`` when it is neither."""
    if _API_KEY.fullmatch(token):
        return "api_key"
    if _is_jwt(token):
        return "session"
    return None


def check_credential(value: str | SecretStr, *, source: str) -> SecretStr:
    """Return the credential as a ``SecretStr``, or raise ``ConfigError`` naming ``source``."""
    token = value.get_secret_value() if isinstance(value, SecretStr) else value
    token = token.strip()
    if credential_kind(token) is None:
        if token.startswith(API_KEY_PREFIX):
            raise ConfigError(
                f"{source} is malformed: an API key is {API_KEY_PREFIX} followed by at least "
                f"{API_KEY_MIN_SECRET} letters, digits, '_' or '-'; got {len(token)} characters"
                f"{_what_is_wrong(token)}. Copy the key again from `capy keys create` or "
                "CapyDB's console."
            )
        raise ConfigError(
            f"{source} is malformed: expected an API key starting with {API_KEY_PREFIX} "
            f"or a session token (JWT); got {len(token)} characters that are neither. "
            "Copy the key again from `capy keys create` or CapyDB's console."
        )
    return SecretStr(token)
