"""``GET /v1/openapi.json``: a valid OpenAPI 3 document that lists every path of the contract."""

from __future__ import annotations

import re
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.server.conftest import LiveServer

# shared/capydb-api.md, "Endpoints": method, path, success status
CONTRACT: list[tuple[str, str, str]] = [
    ("GET", "/v1/projects/{projectID}/restore-points", "200"),
    ("POST", "/v1/projects/{projectID}/restore-points", "201"),
    ("DELETE", "/v1/projects/{projectID}/restore-points/{restorePointID}", "200"),
    ("POST", "/v1/projects/{projectID}/restores", "202"),
    ("GET", "/v1/projects/{projectID}/backups", "200"),
    ("POST", "/v1/projects/{projectID}/backups", "202"),
    ("GET", "/v1/projects/{projectID}/scheduled-backups", "200"),
    ("PUT", "/v1/projects/{projectID}/scheduled-backups/default", "200"),
    ("GET", "/v1/projects/{projectID}/jobs", "200"),
    ("GET", "/v1/jobs/{jobID}", "200"),
    ("GET", "/v1/projects/{projectID}/preview-databases", "200"),
    ("POST", "/v1/projects/{projectID}/preview-databases", "202"),
    ("DELETE", "/v1/preview-databases/{previewID}", "202"),
    ("GET", "/v1/projects", "200"),
    ("GET", "/v1/projects/{id}", "200"),
    ("POST", "/v1/projects", "201"),
    ("GET", "/v1/me", "200"),
    ("POST", "/v1/organizations/{orgID}/api-keys", "201"),
    ("GET", "/v1/organizations/{orgID}/api-keys", "200"),
    ("DELETE", "/v1/organizations/{orgID}/api-keys/{keyID}", "200"),
]

# shared/capydb-api.md, "PITR control [ours]": method, path, success statuses
PITR_CONTROL: list[tuple[str, str, list[str]]] = [
    ("GET", "/v1/projects/{projectID}/pitr", ["200"]),
    # 202 with the job when turning it on started the first base backup, else 200
    ("PUT", "/v1/projects/{projectID}/pitr", ["200", "202"]),
]


def shape(path: str) -> str:
    """The path with every parameter written ``{}``: names differ, places must not."""
    return re.sub(r"\{[^}]+\}", "{}", path)


@pytest.fixture(scope="module")
def document(live_server: LiveServer) -> dict[str, Any]:
    with live_server.http() as http:  # no key: the document is public
        response = http.get("/v1/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    return body


def test_the_document_is_valid_openapi_3(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    validate(document)  # raises on any violation of the OpenAPI 3.x schema


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), shape(path)): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


@pytest.mark.parametrize(("method", "path", "status"), CONTRACT)
def test_every_contract_path_is_listed_with_its_status(
    document: dict[str, Any], method: str, path: str, status: str
) -> None:
    operation = operations(document).get((method, shape(path)))
    assert operation is not None, f"{method} {path} is missing from /v1/openapi.json"
    responses = operation["responses"]
    assert status in responses
    successes = [code for code in responses if code.startswith("2")]
    assert successes == [status]
    assert operation.get("security"), f"{method} {path} declares no credential"


@pytest.mark.parametrize(("method", "path", "statuses"), PITR_CONTROL)
def test_pitr_control_is_listed_with_its_statuses(
    document: dict[str, Any], method: str, path: str, statuses: list[str]
) -> None:
    operation = operations(document).get((method, shape(path)))
    assert operation is not None, f"{method} {path} is missing from /v1/openapi.json"
    responses = operation["responses"]
    assert sorted(code for code in responses if code.startswith("2")) == statuses
    assert operation.get("security"), f"{method} {path} declares no credential"
    schemas = document["components"]["schemas"]
    for status in statuses:
        reference = responses[status]["content"]["application/json"]["schema"]["$ref"]
        envelope = schemas[reference.split("/")[-1]]
        # 200 is {"pitr": …}; the 202 of a PUT also carries the job it started
        assert envelope["required"] == (["pitr", "job"] if status == "202" else ["pitr"])


def test_every_error_is_declared_as_the_error_envelope(document: dict[str, Any]) -> None:
    error_body = document["components"]["schemas"]["ErrorBody"]
    assert error_body["required"] == ["error"]
    assert set(error_body["properties"]) == {"error"}
    for (method, path), operation in operations(document).items():
        for code, response in operation["responses"].items():
            if code.startswith("2"):
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
        # invalid input is a 400 here, never FastAPI's 422
        assert "422" not in operation["responses"], (method, path)
        assert {"400", "401", "403", "404"} <= set(operation["responses"]), (method, path)
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_both_credentials_are_declared(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["HTTPBearer"].items()
    assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}


def test_the_documented_paths_are_the_contract_and_our_additions(document: dict[str, Any]) -> None:
    ours = {  # [ours] the self-hosted server can delete what the engine protects
        ("DELETE", "/v1/projects/{}"),
        ("PATCH", "/v1/projects/{}"),  # and point a project at a new database_url
        ("DELETE", "/v1/projects/{}/backups/{}"),
        ("GET", "/v1/projects/{}/backups/{}"),  # one backup with its manifest's record
        ("POST", "/v1/projects/{}/backups/{}/verify"),  # verify it again
        ("POST", "/v1/jobs/{}/cancel"),  # cancel a pending job
    } | {(method, shape(path)) for method, path, _ in PITR_CONTROL}
    contract = {(method, shape(path)) for method, path, _ in CONTRACT}
    assert set(operations(document)) == contract | ours
