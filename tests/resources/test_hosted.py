"""The capy dynamic providers in hosted mode, against a fake hosted CapyDB.

Hosted CapyDB is the one edge the tests cannot reach, so the providers' HTTP
client is pointed (through ``_provider.http_transport``) at an
``httpx.MockTransport`` whose handler is a small in-memory CapyDB: restore
points, backups, jobs that move ``pending -> running -> completed`` over
successive GETs, restores, preview databases and ``/v1/me`` without a
``server`` block (that is what tells hosted CapyDB from ``capy serve``).
The providers are called as the Pulumi engine calls them: synchronously, with
the resource's properties, from up to several threads.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pulumi.dynamic import Config, ConfigureRequest, CreateResult, ReadResult

import pulumi_capy.api.client as client_module
from pulumi_capy.resources import _provider
from pulumi_capy.resources._provider import LISTINGS, CapyResourceError
from pulumi_capy.resources.backup import BackupProvider
from pulumi_capy.resources.project import ProjectProvider
from pulumi_capy.resources.restore import RestoreProvider
from pulumi_capy.resources.restore_point import RestorePointProvider

API_URL = "https://capydb.example/api/capydb"
PREFIX = "/api/capydb"
KEY_SECRET_PART = "Zq7-hosted_SECRET_part_0123456789abcdefg"
API_KEY = "capy_live_" + KEY_SECRET_PART
assert len(KEY_SECRET_PART) == 40
PROJECT = "prj_1"
STAMP = "2026-11-26T05:00:00Z"


# ---------------------------------------------------------------- the fake hosted CapyDB


def error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message})


@dataclass
class FakeJob:
    """A job and the states its next GETs show (the last one stays)."""

    record: dict[str, Any]
    script: list[dict[str, Any]] = field(default_factory=list)

    def advance(self) -> dict[str, Any]:
        if self.script:
            self.record.update(self.script.pop(0))
        return dict(self.record)


@dataclass
class FakeCapyDB:
    """An in-memory hosted CapyDB: only the endpoints the providers call."""

    restore_points: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    backups: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    previews: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    jobs: dict[str, FakeJob] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    # what the next restore job does: "complete", "fail" or "hang"
    restore_outcome: str = "complete"
    # answer every call with this (status, message) instead
    refuse: tuple[int, str] | None = None
    listing_delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: dict[str, Iterator[int]] = field(default_factory=dict)

    def calls(self, method: str | None = None, path_part: str = "") -> list[tuple[str, str, Any]]:
        with self.lock:
            seen = list(self.requests)
        return [
            call for call in seen if (method is None or call[0] == method) and path_part in call[1]
        ]

    def new_id(self, prefix: str) -> str:
        counter = self._ids.setdefault(prefix, itertools.count(1))
        return f"{prefix}_{next(counter)}"

    def new_job(self, job_type: str, script: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        job_id = self.new_id("job")
        record = {
            "id": job_id,
            "type": job_type,
            "state": "pending",
            "attempts": 0,
            "max_attempts": 3,
            "project_id": PROJECT,
            "created_at": STAMP,
            **fields,
        }
        self.jobs[job_id] = FakeJob(record, script)
        return dict(record)

    # ------------------------------------------------------------ dispatch

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix(PREFIX)
        body = json.loads(request.content) if request.content else None
        with self.lock:
            self.requests.append((request.method, path, body))
        if request.headers.get("Authorization") != f"Bearer {API_KEY}":
            return error(401, "unauthorized")
        if self.refuse is not None:
            return error(*self.refuse)
        parts = path.strip("/").split("/")
        if parts[:2] == ["v1", "projects"] and len(parts) >= 4:
            project, collection, rest = parts[2], parts[3], parts[4:]
            return self.project_call(request.method, project, collection, rest, body)
        if parts[:2] == ["v1", "jobs"] and len(parts) == 3 and request.method == "GET":
            with self.lock:
                job = self.jobs.get(parts[2])
                answer = job.advance() if job else None
            if answer is None:
                return error(404, f"job {parts[2]} not found")
            return httpx.Response(200, json={"job": answer})
        if parts[:2] == ["v1", "preview-databases"] and request.method == "DELETE":
            return self.delete_preview(parts[2])
        if parts == ["v1", "me"] and request.method == "GET":
            # hosted CapyDB: no "server" block
            return httpx.Response(
                200,
                json={
                    "organization": {"id": "org_1", "name": "Acme"},
                    "principal": {
                        "auth_source": "api_key",
                        "organization_id": "org_1",
                        "scopes": ["backups:read", "backups:write", "jobs:read"],
                    },
                },
            )
        return error(404, f"no route {request.method} {path}")

    def project_call(
        self, method: str, project: str, collection: str, rest: list[str], body: Any
    ) -> httpx.Response:
        if collection == "restore-points":
            if method == "GET" and not rest:
                if self.listing_delay:
                    time.sleep(self.listing_delay)
                with self.lock:
                    points = list(self.restore_points.get(project, []))
                return httpx.Response(200, json={"restore_points": points})
            if method == "POST" and not rest:
                return self.create_restore_point(project, body)
            if method == "DELETE" and len(rest) == 1:
                with self.lock:
                    points = self.restore_points.get(project, [])
                    kept = [point for point in points if point["id"] != rest[0]]
                    if len(kept) == len(points):
                        return error(404, f"restore point {rest[0]} not found")
                    self.restore_points[project] = kept
                return httpx.Response(200, json={"deleted": True})
        if collection == "backups" and not rest:
            if method == "GET":
                with self.lock:
                    backups = list(self.backups.get(project, []))
                return httpx.Response(200, json={"backups": backups})
            if method == "POST":
                return self.create_backup(project, body or {})
        if collection == "restores" and method == "POST" and not rest:
            return self.create_restore(project, body)
        if collection == "preview-databases" and method == "GET" and not rest:
            with self.lock:
                previews = list(self.previews.get(project, []))
            return httpx.Response(200, json={"preview_databases": previews})
        return error(404, f"no route {method} {collection}")

    # ------------------------------------------------------------ behaviour

    def create_restore_point(self, project: str, body: dict[str, Any]) -> httpx.Response:
        if not body.get("label"):
            return error(400, "label: required")
        with self.lock:
            point = {
                "id": self.new_id("rp"),
                "project_id": project,
                "organization_id": "org_1",
                "label": body["label"],
                "note": body.get("note"),
                "kind": body.get("kind", "backup"),
                "backup_key": body.get("backup_key"),
                "pitr_time": body.get("pitr_time"),
                "state": "active",
                "created_at": STAMP,
                "updated_at": STAMP,
            }
            self.restore_points.setdefault(project, []).append(point)
        return httpx.Response(201, json={"restore_point": point})

    def create_backup(self, project: str, body: dict[str, Any]) -> httpx.Response:
        with self.lock:
            backup_id = self.new_id("bkp")
            key = f"bk_{backup_id}"
            self.backups.setdefault(project, []).append(
                {
                    "id": backup_id,
                    "project_id": project,
                    "backup_key": key,
                    "label": body.get("label"),
                    "size_bytes": 4096,
                    "state": "completed",
                    "verification_state": "verified",
                    "created_at": STAMP,
                }
            )
            job = self.new_job(
                "project.backup",
                [
                    {"state": "running", "attempts": 1, "started_at": STAMP},
                    {
                        "state": "completed",
                        "completed_at": STAMP,
                        "result": {"backup_id": backup_id, "backup_key": key},
                    },
                ],
                locked_resource=f"project:{project}",
            )
        return httpx.Response(202, json={"job": job})

    def create_restore(self, project: str, body: dict[str, Any]) -> httpx.Response:
        if body.get("target_kind") is None:
            return error(400, "target_kind: required")
        with self.lock:
            preview_id = None
            if body["target_kind"] == "new_preview":
                preview_id = self.new_id("pv")
                self.previews.setdefault(project, []).append(
                    {
                        "id": preview_id,
                        "project_id": project,
                        "name": body.get("preview_name") or f"restore-{preview_id}",
                        "mode": "clone",
                        "state": "ready",
                        "database_name": "shop_restore",
                        "role_name": "preview_role",
                        "public_host": "pv.capydb.example",
                        "direct_port": 5432,
                        "ssl_mode": "require",
                    }
                )
            running = {"state": "running", "attempts": 1, "started_at": STAMP}
            script: list[dict[str, Any]]
            if self.restore_outcome == "complete":
                script = [
                    running,
                    {
                        "state": "completed",
                        "completed_at": STAMP,
                        "last_exit_code": 0,
                        "result": {"preview_database_id": preview_id},
                    },
                ]
            elif self.restore_outcome == "fail":
                script = [
                    running,
                    {
                        "state": "failed",
                        "attempts": 1,
                        "max_attempts": 1,
                        "error": "pg_restore exited with status 1",
                        "retry_classification": "permanent",
                        "last_exit_code": 1,
                        "last_stdout": "restoring table public.orders",
                        "last_stderr": "pg_restore: error: could not execute query: "
                        'relation "orders" already exists',
                    },
                ]
            else:  # "hang": running forever
                script = [running]
            job = self.new_job(
                "project.restore",
                script,
                locked_resource=f"project:{project}",
                preview_database_id=preview_id,
            )
        return httpx.Response(202, json={"job": job})

    def delete_preview(self, preview_id: str) -> httpx.Response:
        with self.lock:
            for project, previews in self.previews.items():
                if any(preview["id"] == preview_id for preview in previews):
                    self.previews[project] = [p for p in previews if p["id"] != preview_id]
                    job = self.new_job(
                        "preview.delete",
                        [{"state": "completed", "attempts": 1, "completed_at": STAMP}],
                        preview_database_id=preview_id,
                    )
                    return httpx.Response(202, json={"job": job})
        return error(404, f"preview {preview_id} not found")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _fresh_provider_state() -> Iterator[None]:
    """No capy:* config nor listing of another test leaks into this one."""
    _provider._CONFIG.clear()
    LISTINGS._entries.clear()
    yield
    _provider._CONFIG.clear()
    LISTINGS._entries.clear()


@pytest.fixture
def capydb(monkeypatch: pytest.MonkeyPatch) -> FakeCapyDB:
    """A fake hosted CapyDB, reached with a valid key from the environment."""
    fake = FakeCapyDB()
    monkeypatch.setenv("CAPYDB_API_KEY", API_KEY)
    monkeypatch.setenv("CAPYDB_API_URL", API_URL)
    monkeypatch.setattr(_provider, "http_transport", httpx.MockTransport(fake.handle))
    monkeypatch.setattr(_provider, "_ANNOUNCED", set())
    monkeypatch.setattr(client_module, "POLL_START", 0.01)
    return fake


def restore_point_props(**extra: Any) -> dict[str, Any]:
    """What the engine passes to create: every input, unset ones as None."""
    props: dict[str, Any] = {
        "project_id": PROJECT,
        "label": "before-migration",
        "kind": "backup",
        "backup_key": None,
        "pitr_time": None,
        "note": None,
        "adopt_id": None,
    }
    props.update(extra)
    return props


def restore_props(**extra: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "project_id": PROJECT,
        "backup_key": "bk_base",
        "timeout_minutes": 1,
    }
    props.update(extra)
    return props


# ---------------------------------------------------------------- RestorePoint


def test_restore_point_with_backup_key_posts_the_body_and_returns_outputs(
    capydb: FakeCapyDB,
) -> None:
    result = RestorePointProvider().create(
        restore_point_props(backup_key="bk_given", note="before v42")
    )

    posts = capydb.calls("POST")
    assert posts == [
        (
            "POST",
            f"/v1/projects/{PROJECT}/restore-points",
            {
                "label": "before-migration",
                "kind": "backup",
                "backup_key": "bk_given",
                "note": "before v42",
            },
        )
    ]
    assert capydb.calls(path_part="/backups") == []  # no fresh backup taken
    assert isinstance(result, CreateResult)
    assert result.id == "rp_1"
    outs = result.outs or {}
    assert outs["restore_point_id"] == "rp_1"
    assert outs["project_id"] == PROJECT
    assert outs["organization_id"] == "org_1"
    assert outs["label"] == "before-migration"
    assert outs["backup_key"] == "bk_given"
    assert outs["note"] == "before v42"
    assert outs["state"] == "active"
    assert outs["created_at"] == STAMP
    assert outs["requested"]["backup_key"] == "bk_given"
    assert "pitr_time" not in outs["requested"]  # not given: left out, read back as None
    assert "id" not in outs


def test_restore_point_without_backup_key_takes_a_backup_waits_then_pins_it(
    capydb: FakeCapyDB, capfd: pytest.CaptureFixture[str]
) -> None:
    result = RestorePointProvider().create(restore_point_props(label="pre-risky"))

    methods_paths = [(method, path) for method, path, _ in capydb.requests]
    backup_post = ("POST", f"/v1/projects/{PROJECT}/backups")
    point_post = ("POST", f"/v1/projects/{PROJECT}/restore-points")
    assert methods_paths[0] == backup_post
    assert methods_paths[-1] == point_post
    job_gets = [path for method, path in methods_paths[1:-1] if method == "GET"]
    assert job_gets, "the backup job was not polled"
    assert all(path.startswith("/v1/jobs/") for path in job_gets)
    # the job shows running, then completed: polled until terminal, not past it
    assert len(job_gets) == 2
    assert capydb.requests[0][2] == {"label": "pre-risky"}
    assert capydb.requests[-1][2] == {
        "label": "pre-risky",
        "kind": "backup",
        "backup_key": "bk_bkp_1",
    }
    outs = result.outs or {}
    assert result.id == outs["restore_point_id"]
    assert outs["backup_key"] == "bk_bkp_1"
    # the fresh key was not an input: a later diff must not see a change
    assert "backup_key" not in outs["requested"]
    err = capfd.readouterr().err
    assert "taking a fresh backup" in err
    assert "completed" in err


def test_restore_point_with_a_fresh_backup_has_no_diff_against_the_same_inputs(
    capydb: FakeCapyDB,
) -> None:
    provider = RestorePointProvider()
    inputs = restore_point_props(label="pre-risky")
    created = provider.create(inputs)
    assert created.outs is not None

    same = provider.diff(created.id, created.outs, inputs)
    relabelled = provider.diff(created.id, created.outs, {**inputs, "label": "other"})

    assert not same.changes
    assert relabelled.changes
    assert relabelled.replaces == ["label"]


def test_restore_point_read_of_a_point_missing_from_the_listing_is_deleted(
    capydb: FakeCapyDB,
) -> None:
    created = RestorePointProvider().create(restore_point_props(backup_key="bk_1"))
    assert created.outs is not None
    capydb.restore_points[PROJECT].clear()  # removed behind the stack's back
    LISTINGS._entries.clear()

    result = RestorePointProvider().read(created.id, created.outs)

    assert isinstance(result, ReadResult)
    assert result.id == ""
    assert not result.outs


def test_restore_point_read_returns_the_current_state(capydb: FakeCapyDB) -> None:
    created = RestorePointProvider().create(restore_point_props(backup_key="bk_1"))
    assert created.outs is not None
    capydb.restore_points[PROJECT][0]["state"] = "expired"
    LISTINGS._entries.clear()

    result = RestorePointProvider().read(created.id, created.outs)

    assert result.id == created.id
    assert (result.outs or {})["state"] == "expired"


def test_refresh_of_six_restore_points_from_three_threads_lists_once(
    capydb: FakeCapyDB,
) -> None:
    capydb.restore_points[PROJECT] = [
        {
            "id": f"rp_{n}",
            "project_id": PROJECT,
            "label": f"point-{n}",
            "kind": "backup",
            "backup_key": f"bk_{n}",
            "state": "active",
        }
        for n in range(6)
    ]
    capydb.listing_delay = 0.05  # so that the threads' misses overlap
    provider = RestorePointProvider()

    def read(n: int) -> ReadResult:
        return provider.read(f"rp_{n}", restore_point_props(label=f"point-{n}"))

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(read, range(6)))

    assert [result.id for result in results] == [f"rp_{n}" for n in range(6)]
    assert len(capydb.calls("GET", "/restore-points")) == 1


# ---------------------------------------------------------------- Restore


@pytest.mark.parametrize(
    "given",
    [
        pytest.param({}, id="target_kind-omitted"),
        pytest.param({"target_kind": "new_preview"}, id="target_kind-default"),
    ],
)
def test_restore_sends_target_kind_always_and_waits_for_the_job(
    capydb: FakeCapyDB, capfd: pytest.CaptureFixture[str], given: dict[str, Any]
) -> None:
    result = RestoreProvider().create(restore_props(**given))

    posts = capydb.calls("POST", "/restores")
    assert len(posts) == 1
    body = posts[0][2]
    assert body["target_kind"] == "new_preview"
    assert body["backup_key"] == "bk_base"
    assert "restore_time" not in body
    assert "restore_point_id" not in body
    assert len(capydb.calls("GET", "/v1/jobs/")) == 2  # running, then completed
    outs = result.outs or {}
    assert result.id == outs["job_id"]
    assert outs["state"] == "completed"
    assert outs["type"] == "project.restore"
    assert outs["preview_database_id"] == "pv_1"
    assert outs["preview_database_url"] == (
        "postgresql://preview_role@pv.capydb.example:5432/shop_restore?sslmode=require"
    )
    err = capfd.readouterr().err
    assert f"restore job {result.id} started (backup -> new_preview)" in err


def test_restore_into_the_project_sends_its_target_kind(capydb: FakeCapyDB) -> None:
    result = RestoreProvider().create(
        restore_props(target_kind="project", confirm_project_overwrite=True)
    )

    body = capydb.calls("POST", "/restores")[0][2]
    assert body["target_kind"] == "project"
    assert body["confirm_project_overwrite"] is True
    outs = result.outs or {}
    assert outs["state"] == "completed"
    assert outs["preview_database_id"] is None
    assert outs["preview_database_url"] is None


def test_restore_without_wait_does_not_poll(capydb: FakeCapyDB) -> None:
    result = RestoreProvider().create(restore_props(wait=False))

    assert capydb.calls("GET", "/v1/jobs/") == []
    assert (result.outs or {})["state"] == "pending"


def test_failed_restore_job_fails_create_with_error_and_output_tail(
    capydb: FakeCapyDB,
) -> None:
    capydb.restore_outcome = "fail"

    with pytest.raises(CapyResourceError) as caught:
        RestoreProvider().create(restore_props())

    message = str(caught.value)
    job_id = capydb.calls("GET", "/v1/jobs/")[0][1].rsplit("/", 1)[1]
    assert message.startswith(f"restore: job {job_id} (project.restore) failed after")
    assert message.count(job_id) == 1  # said once
    assert "pg_restore exited with status 1" in message
    assert "[exit code 1]" in message
    assert 'relation "orders" already exists' in message  # the stderr tail
    assert "restoring table public.orders" in message  # the stdout tail
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_failed_new_preview_restore_removes_the_preview_it_made(capydb: FakeCapyDB) -> None:
    capydb.restore_outcome = "fail"

    with pytest.raises(CapyResourceError):
        RestoreProvider().create(restore_props())

    deletes = capydb.calls("DELETE")
    assert [path for _, path, _ in deletes] == ["/v1/preview-databases/pv_1"]
    assert capydb.previews[PROJECT] == []


def test_restore_job_that_never_ends_times_out_naming_the_job(
    capydb: FakeCapyDB,
) -> None:
    capydb.restore_outcome = "hang"
    started = time.monotonic()

    with pytest.raises(CapyResourceError) as caught:
        RestoreProvider().create(restore_props(timeout_minutes=0.001))  # 60 ms

    assert time.monotonic() - started < 5
    message = str(caught.value)
    job_id = capydb.calls("GET", "/v1/jobs/")[0][1].rsplit("/", 1)[1]
    assert f"restore job {job_id} did not finish in 0.001 minutes" in message
    assert "still running" in message
    assert f"capy jobs get --job-id {job_id}" in message
    assert capydb.calls("DELETE") == []  # the job goes on: its preview is not touched


def test_restore_delete_of_a_new_preview_deletes_the_preview(capydb: FakeCapyDB) -> None:
    # as the Restore resource passes it: target_kind defaults to "new_preview"
    created = RestoreProvider().create(restore_props(target_kind="new_preview"))
    assert created.outs is not None

    RestoreProvider().delete(created.id, created.outs)

    assert [path for _, path, _ in capydb.calls("DELETE")] == ["/v1/preview-databases/pv_1"]
    assert capydb.previews[PROJECT] == []


def test_restore_delete_keeps_the_preview_when_asked_to(capydb: FakeCapyDB) -> None:
    created = RestoreProvider().create(
        restore_props(target_kind="new_preview", retain_preview_on_delete=True)
    )
    assert created.outs is not None

    RestoreProvider().delete(created.id, created.outs)

    assert capydb.calls("DELETE") == []


def test_restore_delete_of_a_restore_without_target_kind_deletes_its_preview(
    capydb: FakeCapyDB,
) -> None:
    # `Restore(..., target_kind=None)`: Pulumi drops None inputs, so create gets no
    # target_kind, sends the contract's default "new_preview" and a preview is made.
    created = RestoreProvider().create(restore_props())
    assert created.outs is not None
    assert created.outs["preview_database_id"] == "pv_1"

    RestoreProvider().delete(created.id, created.outs)

    # regression: an unset target_kind is new_preview at delete as it was at create
    assert [path for _, path, _ in capydb.calls("DELETE")] == ["/v1/preview-databases/pv_1"]


# ---------------------------------------------------------------- Backup


def test_backup_delete_in_hosted_mode_only_forgets_it(
    capydb: FakeCapyDB, capfd: pytest.CaptureFixture[str]
) -> None:
    created = BackupProvider().create({"project_id": PROJECT, "label": "nightly", "wait": True})
    outs = created.outs or {}
    assert outs["backup_key"] == "bk_bkp_1"
    assert outs["verification_state"] == "verified"
    before = len(capydb.requests)
    capfd.readouterr()

    BackupProvider().delete(created.id, outs)

    assert capydb.calls("DELETE") == []
    # only the question "is this a self-hosted capy serve?" (it is not): no DELETE
    assert [(m, p) for m, p, _ in capydb.requests[before:]] == [("GET", "/v1/me")]
    assert capydb.backups[PROJECT][0]["id"] == created.id  # still there
    err = capfd.readouterr().err
    assert "backup bk_bkp_1 stays in CapyDB" in err
    assert "forgets it" in err


# ---------------------------------------------------------------- Project


def test_project_create_against_hosted_capydb_fails_before_any_post(
    capydb: FakeCapyDB,
) -> None:
    props = {
        "name": "shop",
        "database_url": "postgresql://shop:db-pw-Xk29@db.internal/shop",
        "environment": "non_production",
        "force_destroy": False,
    }

    with pytest.raises(CapyResourceError) as caught:
        ProjectProvider().create(props)

    assert [(method, path) for method, path, _ in capydb.requests] == [("GET", "/v1/me")]
    message = str(caught.value)
    assert "create project shop" in message
    assert "Terraform provider" in message
    assert "db-pw-Xk29" not in message


# ---------------------------------------------------------------- errors and secrets


def test_rejected_key_surfaces_as_a_clean_message_naming_where_to_set_it(
    capydb: FakeCapyDB,
) -> None:
    capydb.refuse = (401, "invalid API key")

    with pytest.raises(CapyResourceError) as caught:
        RestorePointProvider().create(restore_point_props(backup_key="bk_1"))

    message = str(caught.value)
    assert message.startswith("create restore point before-migration: 401 from POST ")
    assert "invalid API key" in message
    assert "CAPYDB_API_KEY" in message
    assert "capy:apiKey" in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    assert "Traceback" not in message


def test_rejected_key_on_read_is_an_error_not_a_deletion(capydb: FakeCapyDB) -> None:
    capydb.refuse = (401, "invalid API key")

    with pytest.raises(CapyResourceError, match="CAPYDB_API_KEY"):
        RestorePointProvider().read("rp_1", restore_point_props(backup_key="bk_1"))


def _every_call(capydb: FakeCapyDB) -> tuple[list[object], list[str]]:
    """Run every provider operation once; return what came back and every error text."""
    returned: list[object] = []
    errors: list[str] = []

    def attempt(call: Callable[[], object]) -> None:
        try:
            returned.append(call())
        except Exception as exc:
            errors.extend([str(exc), repr(exc), repr(exc.args)])

    point = RestorePointProvider()
    restore = RestoreProvider()
    backup = BackupProvider()
    project = ProjectProvider()
    attempt(lambda: point.check({}, restore_point_props()))
    attempt(lambda: point.create(restore_point_props(backup_key="bk_1")))
    attempt(lambda: point.create(restore_point_props(label="fresh")))
    attempt(lambda: point.read("rp_1", restore_point_props()))
    attempt(lambda: point.diff("rp_1", restore_point_props(), restore_point_props(label="x")))
    attempt(lambda: point.delete("rp_1", restore_point_props()))
    attempt(lambda: point.delete("rp_missing", restore_point_props()))
    attempt(lambda: restore.create(restore_props()))
    capydb.restore_outcome = "fail"
    attempt(lambda: restore.create(restore_props()))
    capydb.restore_outcome = "hang"
    attempt(lambda: restore.create(restore_props(timeout_minutes=0.0005)))
    attempt(lambda: restore.read("job_nope", restore_props()))
    attempt(lambda: backup.create({"project_id": PROJECT, "label": "b"}))
    attempt(lambda: backup.delete("bkp_1", {"project_id": PROJECT}))
    attempt(lambda: project.create({"name": "shop", "database_url": "sqlite:///x.db"}))
    # a proxy that echoes the credential back in its error
    capydb.refuse = (401, f"bad token Bearer {API_KEY}")
    attempt(lambda: point.create(restore_point_props(backup_key="bk_1")))
    attempt(lambda: restore.create(restore_props()))
    capydb.refuse = (500, f"internal error for {API_KEY}")
    attempt(lambda: point.read("rp_1", restore_point_props()))
    return returned, errors


def _assert_no_key(text: str, where: str) -> None:
    assert API_KEY not in text, f"the API key leaked into {where}"
    assert KEY_SECRET_PART not in text, f"the API key leaked into {where}"


def _describe(value: object) -> str:
    return repr(value) + repr(getattr(value, "__dict__", None))


@pytest.mark.parametrize("source", ["environment", "stack-config"])
def test_the_api_key_never_appears_in_errors_output_or_results(
    capydb: FakeCapyDB,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    source: str,
) -> None:
    if source == "stack-config":
        monkeypatch.delenv("CAPYDB_API_KEY")
        monkeypatch.delenv("CAPYDB_API_URL")
        RestorePointProvider().configure(
            ConfigureRequest(Config({"capy:apiKey": API_KEY, "capy:apiUrl": API_URL}, "shop-infra"))
        )

    returned, errors = _every_call(capydb)

    out, err = capfd.readouterr()
    # the operations really ran, and really failed where expected
    assert any(isinstance(result, CreateResult) for result in returned)
    assert any("did not finish" in text for text in errors)
    assert any("failed" in text for text in errors)
    assert any("401" in text for text in errors)
    assert any("bad token Bearer **********" in text for text in errors)  # echo redacted
    assert "capy: mode api" in err
    for text in errors:
        _assert_no_key(text, "an error")
    _assert_no_key(out, "stdout")
    _assert_no_key(err, "stderr")
    for result in returned:
        _assert_no_key(_describe(result), f"the repr of {type(result).__name__}")
        _assert_no_key(json.dumps(getattr(result, "outs", None), default=str), "outputs")
    _assert_no_key(repr(_provider.current_settings()), "the settings repr")
    with _provider.backend_session() as backend:
        _assert_no_key(repr(backend), "the back end's repr")


# ---------------------------------------------------------------- point-in-time inputs

WHEN = "2026-11-26T14:32:00Z"


def test_hosted_pitr_restore_point_posts_kind_and_time(capydb: FakeCapyDB) -> None:
    result = RestorePointProvider().create(restore_point_props(kind="pitr", pitr_time=WHEN))

    assert capydb.calls("POST") == [
        (
            "POST",
            f"/v1/projects/{PROJECT}/restore-points",
            {"label": "before-migration", "kind": "pitr", "pitr_time": WHEN},
        )
    ]
    assert capydb.calls(path_part="/backups") == []  # a moment is pinned, no backup taken
    outs = result.outs or {}
    assert (outs["kind"], outs["pitr_time"], outs["backup_key"]) == ("pitr", WHEN, None)


def test_hosted_restore_to_a_time_posts_restore_time(capydb: FakeCapyDB) -> None:
    RestoreProvider().create(restore_props(backup_key=None, restore_time=WHEN))

    (post,) = capydb.calls("POST", "/restores")
    body = post[2]
    assert body["restore_time"] == WHEN
    assert "backup_key" not in body
    assert body["target_kind"] == "new_preview"
