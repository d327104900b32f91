"""Who may call what, over real HTTP: no key, bad keys, revoked, expired, scopes, project keys."""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from pulumi_capy.api.models import RestoreRequest
from pulumi_capy.engine.stores.sqlite import to_timestamp
from tests.server.conftest import ALL_SCOPES, AppProject, LiveServer, add_project
from tests.server.helpers import assert_envelope, assert_error

ORG = "org_default"


@dataclass
class Other:
    """A second project, with a job and a preview, that a key scoped to the first must not see."""

    project: AppProject
    job_id: str
    preview_id: str


@pytest.fixture(scope="module")
def other(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> Other:
    project = add_project(live_server.engine, tmp_path_factory.mktemp("other"), "other")
    job = live_server.engine.create_restore(
        project.id, RestoreRequest(backup_key=project.backup.backup_key)
    )
    assert job.preview_database_id is not None
    return Other(project=project, job_id=job.id, preview_id=job.preview_database_id)


def project_calls(project_id: str) -> list[tuple[str, str, dict[str, object] | None]]:
    """One call of each kind on a project, with a valid body where one is needed."""
    return [
        ("GET", f"/v1/projects/{project_id}", None),
        ("GET", f"/v1/projects/{project_id}/restore-points", None),
        ("POST", f"/v1/projects/{project_id}/restore-points", {"label": "x", "backup_key": "k"}),
        ("DELETE", f"/v1/projects/{project_id}/restore-points/rp_x", None),
        ("POST", f"/v1/projects/{project_id}/restores", {"backup_key": "k"}),
        ("GET", f"/v1/projects/{project_id}/backups", None),
        ("POST", f"/v1/projects/{project_id}/backups", {"label": "x"}),
        ("DELETE", f"/v1/projects/{project_id}/backups/bkp_x", None),
        ("GET", f"/v1/projects/{project_id}/scheduled-backups", None),
        (
            "PUT",
            f"/v1/projects/{project_id}/scheduled-backups/default",
            {"cron_hour": 1, "cron_minute": 2, "is_active": True},
        ),
        ("GET", f"/v1/projects/{project_id}/jobs", None),
        ("GET", f"/v1/projects/{project_id}/preview-databases", None),
        ("POST", f"/v1/projects/{project_id}/preview-databases", {"name": "p"}),
        ("GET", f"/v1/projects/{project_id}/pitr", None),
        ("PUT", f"/v1/projects/{project_id}/pitr", {"enabled": False}),
    ]


# ---------------------------------------------------------------- 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/me"),
        ("GET", "/v1/projects"),
        ("POST", "/v1/projects"),
        ("GET", "/v1/projects/prj_x/restore-points"),
        ("POST", "/v1/projects/prj_x/restores"),
        ("GET", "/v1/jobs/job_x"),
        ("DELETE", "/v1/preview-databases/prv_x"),
        ("GET", f"/v1/organizations/{ORG}/api-keys"),
    ],
)
def test_no_key_is_401(live_server: LiveServer, method: str, path: str) -> None:
    with live_server.http() as http:
        response = http.request(method, path, json={"label": "x"} if method == "POST" else None)
    assert_error(response, 401, "no API key")


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Bearer capy_live_"},
        {"Authorization": f"Bearer capy_live_{secrets.token_urlsafe(32)}"},  # well formed, unknown
        {"X-API-Key": f"capy_live_{secrets.token_urlsafe(32)}"},
        {"X-API-Key": "capy_live_' OR 1=1 --"},
    ],
    ids=["not-a-key", "prefix-only", "unknown-bearer", "unknown-x-api-key", "injection"],
)
def test_a_rejected_key_is_401(live_server: LiveServer, headers: dict[str, str]) -> None:
    with live_server.http() as http:
        response = http.get("/v1/projects", headers=headers)
    assert_error(response, 401, "unknown, revoked or expired")


def test_a_key_in_another_scheme_is_no_key(live_server: LiveServer) -> None:
    key, _ = live_server.mint()
    with live_server.http() as http:
        response = http.get("/v1/me", headers={"Authorization": f"Basic {key}"})
    assert_error(response, 401, "no API key")


def test_the_error_never_echoes_the_key(live_server: LiveServer) -> None:
    key, record = live_server.mint()
    live_server.engine.delete_api_key(ORG, record.id)
    with live_server.http(key) as http:
        response = http.get("/v1/me")
    assert key not in response.text
    assert_error(response, 401)


def test_a_key_revoked_over_http_stops_working_at_once(
    live_server: LiveServer, org_key: str
) -> None:
    key, record = live_server.mint(["projects:read"])
    with live_server.http(key) as http:
        assert http.get("/v1/projects").status_code == 200
        with live_server.http(org_key) as admin:
            revoked = admin.delete(f"/v1/organizations/{ORG}/api-keys/{record.id}")
        assert revoked.json() == {"deleted": True}
        assert_error(http.get("/v1/projects"), 401, "unknown, revoked or expired")
    listed = {item.id: item for item in live_server.engine.list_api_keys(ORG)}
    assert listed[record.id].revoked_at is not None  # listed as revoked, not gone


def test_an_expired_key_is_401(live_server: LiveServer) -> None:
    key, record = live_server.mint(expires_at=datetime.now(UTC) + timedelta(hours=1))
    with live_server.http(key) as http:
        assert http.get("/v1/me").status_code == 200
        past = datetime.now(UTC) - timedelta(seconds=1)
        engine_db = live_server.engine.directory / "engine.db"
        with contextlib.closing(sqlite3.connect(engine_db)) as db, db:
            expire = "UPDATE api_keys SET expires_at = ? WHERE id = ?"
            assert db.execute(expire, (to_timestamp(past), record.id)).rowcount == 1
        assert_error(http.get("/v1/me"), 401, "unknown, revoked or expired")
        assert_error(http.get("/v1/projects"), 401)


def test_a_key_cannot_be_minted_already_expired(live_server: LiveServer, org_key: str) -> None:
    with live_server.http(org_key) as http:
        response = http.post(
            f"/v1/organizations/{ORG}/api-keys",
            json={"name": "late", "scopes": ["jobs:read"], "expires_at": "2020-01-01T00:00:00Z"},
        )
    assert_error(response, 400, "expires_at")


# ---------------------------------------------------------------- X-API-Key


def test_x_api_key_works_like_bearer(live_server: LiveServer, app_project: AppProject) -> None:
    key, record = live_server.mint(["backups:read"])
    with live_server.http(key, header="x-api-key") as http:
        me = assert_envelope(http.get("/v1/me"), 200, "organization", "principal", "server")
        listed = http.get(f"/v1/projects/{app_project.id}/restore-points")
        forbidden = http.get("/v1/projects")
    assert me["principal"]["api_key_id"] == record.id
    assert me["principal"]["auth_source"] == "api_key"
    assert me["principal"]["scopes"] == ["backups:read"]
    assert_envelope(listed, 200, "restore_points")
    assert_error(forbidden, 403, "projects:read")


# ---------------------------------------------------------------- scopes


@pytest.mark.parametrize(
    ("scope", "method", "path", "body"),
    [
        ("projects:read", "GET", "/v1/projects", None),
        ("projects:read", "GET", "/v1/projects/{project}", None),
        ("projects:write", "POST", "/v1/projects", {"name": "n", "database_url": "sqlite:///x"}),
        ("backups:read", "GET", "/v1/projects/{project}/restore-points", None),
        (
            "backups:write",
            "POST",
            "/v1/projects/{project}/restore-points",
            {"label": "l", "backup_key": "k"},
        ),
        ("backups:write", "DELETE", "/v1/projects/{project}/restore-points/rp_x", None),
        ("backups:write", "POST", "/v1/projects/{project}/restores", {"backup_key": "k"}),
        ("backups:read", "GET", "/v1/projects/{project}/backups", None),
        ("backups:write", "POST", "/v1/projects/{project}/backups", None),
        ("backups:read", "GET", "/v1/projects/{project}/scheduled-backups", None),
        ("backups:read", "GET", "/v1/projects/{project}/pitr", None),
        ("backups:write", "PUT", "/v1/projects/{project}/pitr", {"enabled": False}),
        ("jobs:read", "GET", "/v1/projects/{project}/jobs", None),
        ("jobs:read", "GET", "/v1/jobs/job_x", None),
        ("projects:read", "GET", "/v1/projects/{project}/preview-databases", None),
        ("projects:write", "POST", "/v1/projects/{project}/preview-databases", {"name": "p"}),
        ("projects:write", "DELETE", "/v1/preview-databases/prv_x", None),
        ("api_keys:read", "GET", f"/v1/organizations/{ORG}/api-keys", None),
        ("api_keys:write", "POST", f"/v1/organizations/{ORG}/api-keys", None),
        ("api_keys:write", "DELETE", f"/v1/organizations/{ORG}/api-keys/key_x", None),
    ],
)
def test_a_key_without_the_scope_is_403_naming_it(
    live_server: LiveServer,
    app_project: AppProject,
    scope: str,
    method: str,
    path: str,
    body: dict[str, object] | None,
) -> None:
    if body is None and method == "POST" and "api-keys" in path:
        body = {"name": "k", "scopes": ["jobs:read"]}
    # every scope but the one the call needs
    key, _ = live_server.mint([other for other in ALL_SCOPES if other != scope])
    with live_server.http(key) as http:
        response = http.request(method, path.format(project=app_project.id), json=body)
    assert_error(response, 403, repr(scope))


# ---------------------------------------------------------------- project-scoped keys


def test_a_project_key_acts_on_its_project(
    live_server: LiveServer, app_project: AppProject
) -> None:
    key, _ = live_server.mint(project_id=app_project.id)
    with live_server.http(key) as http:
        projects = assert_envelope(http.get("/v1/projects"), 200, "projects")
        points = http.get(f"/v1/projects/{app_project.id}/restore-points")
        backups = assert_envelope(
            http.get(f"/v1/projects/{app_project.id}/backups"), 200, "backups"
        )
        jobs = assert_envelope(http.get(f"/v1/projects/{app_project.id}/jobs"), 200, "jobs")
        job = http.get(f"/v1/jobs/{jobs['jobs'][0]['id']}")
    assert [project["id"] for project in projects["projects"]] == [app_project.id]
    assert_envelope(points, 200, "restore_points")
    assert app_project.backup.backup_key in {b["backup_key"] for b in backups["backups"]}
    assert_envelope(job, 200, "job")


def test_a_project_key_gets_404_for_other_projects(
    live_server: LiveServer, app_project: AppProject, other: Other
) -> None:
    key, _ = live_server.mint(project_id=app_project.id)
    with live_server.http(key) as http:
        for method, path, body in project_calls(other.project.id):
            assert_error(http.request(method, path, json=body), 404, "not found")
        assert_error(http.get(f"/v1/jobs/{other.job_id}"), 404, other.job_id)
        assert_error(http.delete(f"/v1/preview-databases/{other.preview_id}"), 404)
        # and the same answer for a project that does not exist at all
        for method, path, body in project_calls("prj_nonexistent"):
            assert_error(http.request(method, path, json=body), 404, "not found")
    # nothing of the other project changed
    assert live_server.engine.get_preview_database(other.preview_id).state == "creating"


def test_a_project_key_gets_403_for_organization_calls(
    live_server: LiveServer, app_project: AppProject
) -> None:
    key, _ = live_server.mint(project_id=app_project.id)
    calls: list[tuple[str, str, dict[str, object] | None]] = [
        ("POST", "/v1/projects", {"name": "n", "database_url": "sqlite:////tmp/x.db"}),
        ("DELETE", f"/v1/projects/{app_project.id}", None),
        ("GET", f"/v1/organizations/{ORG}/api-keys", None),
        ("POST", f"/v1/organizations/{ORG}/api-keys", {"name": "k", "scopes": ["jobs:read"]}),
        ("DELETE", f"/v1/organizations/{ORG}/api-keys/key_x", None),
    ]
    with live_server.http(key) as http:
        for method, path, body in calls:
            assert_error(http.request(method, path, json=body), 403, "organization key")


# ---------------------------------------------------------------- project overwrite


def test_a_project_overwrite_needs_an_organization_key(
    live_server: LiveServer, app_project: AppProject
) -> None:
    key, _ = live_server.mint(project_id=app_project.id)
    body = {
        "backup_key": app_project.backup.backup_key,
        "target_kind": "project",
        "confirm_project_overwrite": True,
    }
    with live_server.http(key) as http:
        response = http.post(f"/v1/projects/{app_project.id}/restores", json=body)
    assert_error(response, 403, "organization key", "backups:write")


def test_a_project_overwrite_needs_the_confirmation(
    live_server: LiveServer, org_key: str, app_project: AppProject
) -> None:
    body: dict[str, object] = {
        "backup_key": app_project.backup.backup_key,
        "target_kind": "project",
    }
    with live_server.http(org_key) as http:
        unconfirmed = http.post(f"/v1/projects/{app_project.id}/restores", json=body)
        refused = http.post(
            f"/v1/projects/{app_project.id}/restores",
            json=body | {"confirm_project_overwrite": False},
        )
    assert_error(unconfirmed, 403, "confirm_project_overwrite")
    assert_error(refused, 403, "confirm_project_overwrite")
    jobs = live_server.engine.list_jobs(app_project.id)
    assert all(job.type != "project.restore" for job in jobs)  # nothing was queued


def test_the_confirmed_overwrite_with_an_organization_key_is_accepted(
    live_server: LiveServer, org_key: str, other: Other
) -> None:
    body = {
        "backup_key": other.project.backup.backup_key,
        "target_kind": "project",
        "confirm_project_overwrite": True,
    }
    with live_server.http(org_key) as http:
        response = http.post(f"/v1/projects/{other.project.id}/restores", json=body)
    job = assert_envelope(response, 202, "job")["job"]
    assert (job["type"], job["state"]) == ("project.restore", "pending")
    assert job["locked_resource"] == f"project:{other.project.id}"
