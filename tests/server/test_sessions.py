"""Session tokens (``--session-jwks``): JWTs from an identity provider, on the real server.

Real keys (``cryptography``), real signatures (PyJWT), the real server on loopback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pulumi_capy.api.errors import InvalidInput
from pulumi_capy.cli.main import cli
from pulumi_capy.engine import Engine
from pulumi_capy.server import create_app
from pulumi_capy.server.sessions import SessionSettings, session_settings_from_env
from tests.server.conftest import AppProject, LiveServer, add_project, serve
from tests.server.helpers import assert_error

AUDIENCE = "capy"
ISSUER = "https://idp.example"


@dataclass
class Keys:
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    jwks: Path


def jwk(public: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    entry: dict[str, Any] = json.loads(algorithm.to_jwk(public))
    entry.update(kid=kid, alg=alg, use="sig")
    return entry


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path_factory.mktemp("idp") / "jwks.json"
    path.write_text(
        json.dumps(
            {
                "keys": [
                    jwk(rsa_key.public_key(), "rsa-1", "RS256"),
                    jwk(ec_key.public_key(), "ec-1", "ES256"),
                ]
            }
        )
    )
    return Keys(rsa_key, ec_key, path)


@pytest.fixture(scope="module")
def session_server(
    keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LiveServer, AppProject]]:
    root = tmp_path_factory.mktemp("sessions")
    directory = root / ".capy"
    settings = SessionSettings(
        jwks=keys.jwks, audience=AUDIENCE, issuer=ISSUER, organizations={"acme": "org_default"}
    )
    with Engine(directory) as engine, serve(create_app(directory, sessions=settings)) as url:
        project = add_project(engine, root / "apps", "shop")
        yield LiveServer(url=url, directory=directory, engine=engine), project


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "user_42",
        "org_id": "acme",
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 600,
    }
    base.update(changes)
    return {name: value for name, value in base.items() if value is not None}


def rs256(keys: Keys, kid: str = "rsa-1", **changes: Any) -> str:
    return jwt.encode(claims(**changes), keys.rsa, algorithm="RS256", headers={"kid": kid})


def test_an_rs256_session_token_is_an_organization_principal(
    keys: Keys, session_server: tuple[LiveServer, AppProject]
) -> None:
    server, _ = session_server
    with server.http(rs256(keys)) as http:
        response = http.get("/v1/me")
    assert response.status_code == 200, response.text
    principal = response.json()["principal"]
    assert principal["auth_source"] == "session"
    assert principal["organization_id"] == "org_default"
    assert principal["actor_id"] == "user_42"
    assert principal["project_id"] is None
    assert "backups:write" in principal["scopes"]


def test_an_es256_session_token_reads_restore_points(
    keys: Keys, session_server: tuple[LiveServer, AppProject]
) -> None:
    server, project = session_server
    token = jwt.encode(claims(), keys.ec, algorithm="ES256", headers={"kid": "ec-1"})
    with server.http(token) as http:
        response = http.get(f"/v1/projects/{project.id}/restore-points")
    assert response.status_code == 200, response.text
    assert response.json() == {"restore_points": []}


def test_the_scope_claim_limits_what_a_session_may_do(
    keys: Keys, session_server: tuple[LiveServer, AppProject]
) -> None:
    server, project = session_server
    with server.http(rs256(keys, scope="backups:read made:up")) as http:
        assert http.get(f"/v1/projects/{project.id}/restore-points").status_code == 200
        assert_error(http.get("/v1/projects"), 403, "projects:read")


def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    "why",
    [
        "expired",
        "wrong audience",
        "wrong issuer",
        "unmapped organization",
        "no organization claim",
        "no subject",
        "unknown kid",
        "signed by another key",
        "alg none",
        "hs256 with the public key as secret",
        "not a jwt",
    ],
)
def test_a_bad_session_token_is_401(
    why: str, keys: Keys, session_server: tuple[LiveServer, AppProject]
) -> None:
    server, _ = session_server
    now = int(time.time())
    public_pem = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    makers: dict[str, Callable[[], str]] = {
        "expired": lambda: rs256(keys, iat=now - 7200, exp=now - 3600),
        "wrong audience": lambda: rs256(keys, aud="someone-else"),
        "wrong issuer": lambda: rs256(keys, iss="https://evil.example"),
        "unmapped organization": lambda: rs256(keys, org_id="globex"),
        "no organization claim": lambda: rs256(keys, org_id=None),
        "no subject": lambda: rs256(keys, sub=None),
        "unknown kid": lambda: rs256(keys, kid="rsa-9"),
        "signed by another key": lambda: jwt.encode(
            claims(), other_rsa_key(), algorithm="RS256", headers={"kid": "rsa-1"}
        ),
        "alg none": lambda: jwt.encode(claims(), "", algorithm="none", headers={"kid": "rsa-1"}),
        "hs256 with the public key as secret": lambda: hs256_confusion(public_pem),
        "not a jwt": lambda: "definitely.not.a-jwt",
    }
    token = makers[why]()
    with server.http(token) as http:
        assert_error(http.get("/v1/me"), 401, "unknown, revoked or expired")


def hs256_confusion(secret: bytes) -> str:
    """An HMAC made with the public key as its secret (PyJWT refuses to make one: by hand)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
    payload = b64(json.dumps(claims()).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_without_a_jwks_the_server_refuses_session_tokens(
    keys: Keys, live_server: LiveServer
) -> None:
    with live_server.http(rs256(keys)) as http:
        assert_error(http.get("/v1/me"), 401, "unknown, revoked or expired")


def test_api_keys_still_work_beside_sessions(session_server: tuple[LiveServer, AppProject]) -> None:
    server, _ = session_server
    key, _ = server.mint()
    with server.http(key) as http:
        assert http.get("/v1/me").json()["principal"]["auth_source"] == "api_key"


def test_an_unusable_jwks_file_is_refused_naming_the_option(tmp_path: Path) -> None:
    cases: dict[str, object] = {
        "missing.json": None,
        "empty.json": {"keys": []},
        "hmac.json": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "h"}]},
        "garbage.json": "not json",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(InvalidInput, match="session_jwks"):
            create_app(tmp_path / ".capy", sessions=SessionSettings(jwks=path))


def test_settings_come_from_flags_then_the_environment(tmp_path: Path) -> None:
    assert session_settings_from_env(environ={}) is None
    settings = session_settings_from_env(
        environ={"CAPY_SESSION_JWKS": str(tmp_path / "k.json"), "CAPY_SESSION_AUDIENCE": "a"}
    )
    assert settings is not None
    assert (settings.jwks, settings.audience, settings.org_claim) == (
        tmp_path / "k.json",
        "a",
        "org_id",
    )
    flagged = session_settings_from_env(
        tmp_path / "f.json", "b", organizations=["acme=org_default"], environ={}
    )
    assert flagged is not None
    assert (flagged.audience, dict(flagged.organizations)) == ("b", {"acme": "org_default"})
    with pytest.raises(InvalidInput, match="session_org"):
        session_settings_from_env(tmp_path / "f.json", organizations=["acme"], environ={})


def test_capy_serve_with_an_unusable_jwks_fails_in_one_line(tmp_path: Path) -> None:
    jwks = tmp_path / "missing.json"
    arguments = ["serve", "--engine-dir", str(tmp_path / ".capy"), "--session-jwks", str(jwks)]
    result = CliRunner().invoke(cli, arguments)
    assert result.exit_code != 0
    assert "session_jwks" in result.output
    assert "Traceback" not in result.output
