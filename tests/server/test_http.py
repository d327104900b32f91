"""Envelopes, statuses and error bodies of every endpoint, over real HTTP (the contract)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from pulumi_capy.server.app import BODY_LIMIT
from tests.engine.conftest import make_app_db, sqlite_url, table_contents
from tests.server.conftest import AppProject, LiveServer
from tests.server.helpers import assert_envelope, assert_error

ORG = "org_default"


@pytest.fixture
def http(live_server: LiveServer, org_key: str) -> Iterator[httpx.Client]:
    with live_server.http(org_key) as client:
        yield client


# ---------------------------------------------------------------- envelopes and statuses


def test_restore_points_create_201_list_200_delete_200(
    http: httpx.Client, app_project: AppProject
) -> None:
    base = f"/v1/projects/{app_project.id}/restore-points"
    created = assert_envelope(
        http.post(
            base,
            json={
                "label": "before-migration",
                "backup_key": app_project.backup.backup_key,
                "note": "n",
            },
        ),
        201,
        "restore_point",
    )["restore_point"]
    assert created["label"] == "before-migration"
    assert (created["kind"], created["state"]) == ("backup", "active")
    assert created["backup_key"] == app_project.backup.backup_key
    assert created["project_id"] == app_project.id
    assert created["created_at"].endswith("Z")
    listed = assert_envelope(http.get(base), 200, "restore_points")["restore_points"]
    assert created["id"] in [point["id"] for point in listed]
    deleted = http.delete(f"{base}/{created['id']}")
    assert deleted.status_code == 200
    assert deleted.json() == {"deleted": True}
    listed = assert_envelope(http.get(base), 200, "restore_points")["restore_points"]
    assert created["id"] not in [point["id"] for point in listed]
    assert_error(http.delete(f"{base}/{created['id']}"), 404, created["id"])


def test_restores_backups_and_previews_start_jobs_with_202(
    http: httpx.Client, app_project: AppProject
) -> None:
    base = f"/v1/projects/{app_project.id}"
    restore = assert_envelope(
        http.post(
            f"{base}/restores",
            json={"backup_key": app_project.backup.backup_key, "preview_name": "from-http"},
        ),
        202,
        "job",
    )["job"]
    assert (restore["type"], restore["state"], restore["attempts"]) == (
        "project.restore",
        "pending",
        0,
    )
    assert restore["project_id"] == app_project.id
    assert restore["preview_database_id"].startswith("prv_")

    backup = assert_envelope(http.post(f"{base}/backups", json={"label": "manual"}), 202, "job")
    assert backup["job"]["type"] == "project.backup"
    # the body is optional
    assert_envelope(http.post(f"{base}/backups"), 202, "job")

    created = assert_envelope(
        http.post(f"{base}/preview-databases", json={"name": "scratch", "mode": "empty"}),
        202,
        "job",
        "preview",
    )
    assert created["job"]["type"] == "preview.create"
    assert created["preview"]["name"] == "scratch"
    assert created["job"]["preview_database_id"] == created["preview"]["id"]
    previews = assert_envelope(http.get(f"{base}/preview-databases"), 200, "preview_databases")
    names = {preview["name"] for preview in previews["preview_databases"]}
    assert {"scratch", "from-http"} <= names

    deleting = assert_envelope(
        http.delete(f"/v1/preview-databases/{created['preview']['id']}"), 202, "job"
    )
    assert deleting["job"]["type"] == "preview.delete"

    job = assert_envelope(http.get(f"/v1/jobs/{restore['id']}"), 200, "job")["job"]
    assert job["id"] == restore["id"]
    for field in (
        "claimed_at",
        "claimed_by",
        "locked_resource",
        "retry_classification",
        "last_exit_code",
        "last_stdout",
        "last_stderr",
        "organization_id",
    ):
        assert field in job


def test_jobs_are_listed_newest_first_with_a_limit(
    http: httpx.Client, app_project: AppProject
) -> None:
    base = f"/v1/projects/{app_project.id}"
    started = [
        http.post(f"{base}/backups", json={"label": f"b{i}"}).json()["job"]["id"] for i in range(3)
    ]
    jobs = assert_envelope(http.get(f"{base}/jobs", params={"limit": 3}), 200, "jobs")["jobs"]
    assert [job["id"] for job in jobs] == started[::-1]
    every = http.get(f"{base}/jobs", params={"limit": 1000}).json()["jobs"]
    created = [job["created_at"] for job in every]
    assert created == sorted(created, reverse=True)
    assert_error(http.get(f"{base}/jobs", params={"limit": 0}), 400, "limit")
    assert_error(http.get(f"{base}/jobs", params={"limit": "many"}), 400, "limit")


def test_reads_answer_200_in_their_envelopes(
    http: httpx.Client, live_server: LiveServer, app_project: AppProject
) -> None:
    base = f"/v1/projects/{app_project.id}"
    me = assert_envelope(http.get("/v1/me"), 200, "organization", "principal", "server")
    assert me["server"]["name"] == "pulumi-capy"
    assert me["organization"]["id"] == ORG
    projects = assert_envelope(http.get("/v1/projects"), 200, "projects")["projects"]
    assert app_project.id in [project["id"] for project in projects]
    project = assert_envelope(http.get(base), 200, "project")["project"]
    assert project["name"] == app_project.project.name
    assert "database_url" not in project  # never the URL (it may carry a password)
    backups = assert_envelope(http.get(f"{base}/backups"), 200, "backups")["backups"]
    ours = next(b for b in backups if b["backup_key"] == app_project.backup.backup_key)
    assert (ours["state"], ours["verification_state"]) == ("completed", "verified")


def test_the_schedule_is_put_and_read(http: httpx.Client, app_project: AppProject) -> None:
    base = f"/v1/projects/{app_project.id}/scheduled-backups"
    before = assert_envelope(http.get(base), 200, "scheduled_backups")["scheduled_backups"]
    assert len(before) <= 1
    body = {"cron_hour": 3, "cron_minute": 30, "is_active": True, "retention_days": 7}
    schedule = assert_envelope(http.put(f"{base}/default", json=body), 200, "scheduled_backup")
    assert schedule["scheduled_backup"]["cron_hour"] == 3
    after = assert_envelope(http.get(base), 200, "scheduled_backups")["scheduled_backups"]
    assert [item["id"] for item in after] == [schedule["scheduled_backup"]["id"]]
    assert_error(http.put(f"{base}/default", json=body | {"cron_minute": 60}), 400, "cron_minute")
    assert_error(
        http.put(f"{base}/default", json={"cron_hour": 1}), 400, "cron_minute", "is_active"
    )


def test_projects_are_created_201_and_deleted_200(
    http: httpx.Client, live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    app_db = make_app_db(tmp_path_factory.mktemp("created") / "app.db", rows=5)
    before = table_contents(app_db)
    created = assert_envelope(
        http.post(
            "/v1/projects", json={"name": "made-over-http", "database_url": sqlite_url(app_db)}
        ),
        201,
        "project",
        "job",
    )
    project = created["project"]
    assert created["job"] is None
    assert (project["name"], project["database_kind"]) == ("made-over-http", "sqlite")
    assert "database_url" not in json.dumps(created)
    backup = http.post(f"/v1/projects/{project['id']}/backups").json()["job"]
    live_server.engine.wait_for_job(backup["id"], timeout=30)
    live_server.engine.run_pending()
    conflict = http.delete(f"/v1/projects/{project['id']}")
    assert_error(conflict, 409, "backup")
    deleted = http.delete(f"/v1/projects/{project['id']}", params={"force": "true"})
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": True})
    assert_error(http.get(f"/v1/projects/{project['id']}"), 404, project["id"])
    assert table_contents(app_db) == before  # the protected database itself is never touched


def test_api_keys_are_created_listed_and_revoked(http: httpx.Client) -> None:
    base = f"/v1/organizations/{ORG}/api-keys"
    created = assert_envelope(
        http.post(base, json={"name": "ci", "scopes": ["backups:read", "jobs:read"]}),
        201,
        "api_key",
        "plaintext_api_key",
    )
    plaintext = created["plaintext_api_key"]
    assert plaintext.startswith("capy_live_")
    assert len(plaintext) >= len("capy_live_") + 43  # 32 random bytes, url-safe base64
    record = created["api_key"]
    assert record["scopes"] == ["backups:read", "jobs:read"]
    assert "key_hash" not in record
    assert plaintext[len("capy_live_") :] not in json.dumps(record)
    listing = http.get(base)
    keys = assert_envelope(listing, 200, "api_keys")["api_keys"]
    assert record["id"] in [key["id"] for key in keys]
    assert plaintext not in listing.text
    assert "key_hash" not in listing.text
    deleted = http.delete(f"{base}/{record['id']}")
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": True})
    assert_error(http.delete(f"{base}/key_nonexistent"), 404, "key_nonexistent")
    assert_error(http.get("/v1/organizations/org_other/api-keys"), 404, "org_other")
    assert_error(http.post(base, json={"name": "x", "scopes": ["root"]}), 400, "scopes", "root")
    assert_error(http.post(base, json={"name": "x", "scopes": []}), 400, "scopes")


# ---------------------------------------------------------------- errors


def test_unknown_objects_are_404(http: httpx.Client, app_project: AppProject) -> None:
    assert_error(http.get("/v1/projects/prj_nonexistent"), 404, "prj_nonexistent")
    assert_error(http.get("/v1/projects/prj_nonexistent/restore-points"), 404, "prj_nonexistent")
    assert_error(http.get("/v1/jobs/job_nonexistent"), 404, "job_nonexistent")
    assert_error(http.delete("/v1/preview-databases/prv_nonexistent"), 404, "prv_nonexistent")
    assert_error(
        http.delete(f"/v1/projects/{app_project.id}/backups/bkp_nonexistent"),
        404,
        "bkp_nonexistent",
    )


def test_unknown_routes_and_methods_answer_in_the_error_envelope(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing-here"), 404)
    assert_error(http.get("/"), 404)
    not_allowed = http.patch("/v1/projects")
    assert_error(not_allowed, 405)
    assert not_allowed.headers["allow"] == "GET, POST"  # every method of the path, not one
    other = http.put(f"/v1/organizations/{ORG}/api-keys/key_x")
    assert_error(other, 405)
    assert other.headers["allow"] == "DELETE"


def test_every_path_names_all_its_methods_in_a_405(http: httpx.Client) -> None:
    # every router of the app counts, not only the first route of the path
    document = http.get("/v1/openapi.json").json()
    for path, operations in document["paths"].items():
        concrete = path.replace("{organization_id}", ORG).replace("{", "x_").replace("}", "")
        other = next(m for m in ("patch", "put", "post", "delete") if m not in operations)
        not_allowed = http.request(other.upper(), concrete)
        assert_error(not_allowed, 405)
        assert not_allowed.headers["allow"] == ", ".join(sorted(map(str.upper, operations)))


def test_malformed_json_is_400(http: httpx.Client, app_project: AppProject) -> None:
    for content in (b"{", b'{"label": ', b"not json", b"[]", b'"a string"', b"null"):
        response = http.post(
            f"/v1/projects/{app_project.id}/restore-points",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        assert_error(response, 400, "body", "JSON")


def test_a_missing_body_is_400(http: httpx.Client, app_project: AppProject) -> None:
    assert_error(http.post(f"/v1/projects/{app_project.id}/restores"), 400, "body")


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("restore-points", {"label": 5, "backup_key": "k"}, "label"),
        ("restore-points", {"label": "l", "backup_key": ["k"]}, "backup_key"),
        ("restore-points", {"label": "l", "kind": "snapshot", "backup_key": "k"}, "kind"),
        ("restores", {"backup_key": "k", "ttl_hours": "a day"}, "ttl_hours"),
        ("restores", {"backup_key": "k", "ttl_hours": 169}, "ttl_hours"),
        ("restores", {"backup_key": "k", "recreate": "yes please"}, "recreate"),
        ("restores", {"restore_time": "yesterday"}, "restore_time"),
        ("restores", {"backup_key": "k", "target_kind": "elsewhere"}, "target_kind"),
        ("backups", {"label": {"nested": True}}, "label"),
        ("preview-databases", {"name": "p", "ttl_hours": 0}, "ttl_hours"),
        ("preview-databases", {"name": 7}, "name"),
    ],
)
def test_wrong_types_are_400_naming_the_field(
    http: httpx.Client, app_project: AppProject, path: str, body: dict[str, object], field: str
) -> None:
    response = http.post(f"/v1/projects/{app_project.id}/{path}", json=body)
    message = assert_error(response, 400, field)
    assert message.startswith(f"{field}:"), message


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("restore-points", {"label": "l", "backup_key": "k", "colour": "red"}),
        ("restores", {"backup_key": "k", "force": True}),
        ("backups", {"label": "l", "colour": "red"}),
    ],
)
def test_an_unknown_field_is_400_naming_it(
    http: httpx.Client, app_project: AppProject, path: str, body: dict[str, object]
) -> None:
    extra = next(name for name in body if name not in ("label", "backup_key"))
    response = http.post(f"/v1/projects/{app_project.id}/{path}", json=body)
    assert_error(response, 400, f"{extra}: unknown field")


def test_two_restore_sources_are_400_naming_both(
    http: httpx.Client, app_project: AppProject
) -> None:
    response = http.post(
        f"/v1/projects/{app_project.id}/restores",
        json={"backup_key": "k", "restore_point_id": "rp_x"},
    )
    assert_error(response, 400, "backup_key", "restore_point_id", "exactly one")
    none = http.post(f"/v1/projects/{app_project.id}/restores", json={"target_kind": "new_preview"})
    assert_error(none, 400, "backup_key", "restore_time", "restore_point_id")


def test_a_cross_field_rule_names_its_field(http: httpx.Client, app_project: AppProject) -> None:
    response = http.post(f"/v1/projects/{app_project.id}/restore-points", json={"label": "l"})
    assert_error(response, 400, "backup_key", "kind")
    response = http.post(
        f"/v1/projects/{app_project.id}/restores",
        json={"backup_key": "k", "target_kind": "project", "preview_name": "p"},
    )
    assert_error(response, 400, "preview_name")


def test_a_restore_of_an_unknown_backup_is_400(http: httpx.Client, app_project: AppProject) -> None:
    response = http.post(
        f"/v1/projects/{app_project.id}/restores", json={"backup_key": "bk_nonexistent"}
    )
    assert_error(response, 400, "backup_key", "bk_nonexistent")


def test_an_oversize_body_is_413(http: httpx.Client, app_project: AppProject) -> None:
    path = f"/v1/projects/{app_project.id}/restore-points"
    big = json.dumps({"label": "l", "backup_key": "k", "note": "x" * BODY_LIMIT}).encode()
    declared = http.post(path, content=big, headers={"Content-Type": "application/json"})
    assert_error(declared, 413, str(BODY_LIMIT))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts what arrives
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    streamed = http.post(path, content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, str(BODY_LIMIT))
    # a body just under the limit goes through to validation (and a note that long is refused)
    small = json.dumps({"label": "l", "backup_key": "k", "note": "x" * 3000})
    assert_error(
        http.post(path, content=small, headers={"Content-Type": "application/json"}), 400, "note"
    )


def test_an_oversize_body_is_413_before_auth(live_server: LiveServer) -> None:
    with live_server.http() as http:
        response = http.post(
            "/v1/projects/prj_x/restores",
            content=b"{" + b" " * (BODY_LIMIT + 1) + b"}",
            headers={"Content-Type": "application/json"},
        )
    assert_error(response, 413)
