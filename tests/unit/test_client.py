"""Unit tests of ``CapyClient`` over ``httpx.MockTransport``.

No network and no real waiting: every client gets a fake monotonic clock whose
``sleep`` records the requested delay and moves the clock forward, and
``rng=lambda: 0.5`` so that backoff delays are exact (``0.75 * ceiling``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pulumi_capy._version import __version__
from pulumi_capy.api.backend import Backend
from pulumi_capy.api.client import DEFAULT_API_URL, CapyClient
from pulumi_capy.api.errors import (
    ApiError,
    BadRequest,
    CapyError,
    ConfigError,
    Conflict,
    Forbidden,
    JobFailed,
    JobTimeout,
    NotFound,
    NotSupported,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
)
from pulumi_capy.api.models import (
    ApiKey,
    Backup,
    CreateApiKey,
    CreateBackup,
    CreatedApiKey,
    CreatePreview,
    CreateProject,
    CreateRestorePoint,
    Environment,
    Identity,
    Job,
    JobState,
    PitrStatus,
    PreviewCreated,
    PreviewDatabase,
    PreviewMode,
    Project,
    ProjectCreated,
    PutScheduledBackup,
    RestorePoint,
    RestorePointKind,
    RestoreRequest,
    ScheduledBackup,
    TargetKind,
)
from pulumi_capy.api.retry import HttpRetryPolicy

BASE_URL = "https://capydb.example/api/capydb"
BASE_PATH = "/api/capydb"
API_KEY = "capy_live_" + "a" * 40
KEY_SECRET_PART = "a" * 40
DATABASE_PASSWORD = "db-pw-Xk29slQ"
DATABASE_URL = f"postgresql://shop:{DATABASE_PASSWORD}@db.internal:5432/shop"
PLAINTEXT_NEW_KEY = "capy_live_" + "b" * 40

# Backoff with rng() == 0.5 and the default policy: 0.75 * min(10, 0.5 * 2**(n-1)).
DEFAULT_BACKOFF = [0.375, 0.75, 1.5, 3.0]

Handler = Callable[[httpx.Request], httpx.Response]

# ---------------------------------------------------------------- sample answers

JOB: dict[str, Any] = {
    "id": "job_1",
    "type": "project.restore",
    "state": "pending",
    "attempts": 0,
    "max_attempts": 3,
    "project_id": "prj_1",
    "created_at": "2026-11-26T05:00:00Z",
}
RESTORE_POINT: dict[str, Any] = {
    "id": "rp_1",
    "project_id": "prj_1",
    "organization_id": "org_1",
    "label": "before-migration",
    "kind": "backup",
    "backup_key": "bk_1",
    "state": "active",
    "created_at": "2026-11-26T05:00:00Z",
}
BACKUP: dict[str, Any] = {
    "id": "bkp_1",
    "project_id": "prj_1",
    "backup_key": "bk_1",
    "size_bytes": 1024,
    "state": "completed",
    "verification_state": "verified",
}
SCHEDULE: dict[str, Any] = {
    "id": "sch_1",
    "project_id": "prj_1",
    "cron_hour": 5,
    "cron_minute": 30,
    "is_active": True,
    "retention_days": 14,
}
PREVIEW: dict[str, Any] = {
    "id": "pv_1",
    "project_id": "prj_1",
    "name": "pr-1",
    "mode": "clone",
    "state": "creating",
}
PROJECT: dict[str, Any] = {"id": "prj_1", "name": "shop", "environment": "non_production"}
PITR: dict[str, Any] = {
    "enabled": True,
    "method": "stream",
    "window_start": "2026-11-26T05:00:00Z",
    "window_end": "2026-11-26T06:00:00Z",
    "lag_seconds": 0.8,
    "streamer": {"worker_id": "wrk_1", "heartbeat_at": "2026-11-26T06:00:01Z"},
    "notices": [],
}
API_KEY_OBJECT: dict[str, Any] = {
    "id": "key_1",
    "name": "ci",
    "organization_id": "org_1",
    "scopes": ["backups:read"],
    "prefix": "capy_live_b",
}
PRINCIPAL: dict[str, Any] = {
    "auth_source": "api_key",
    "organization_id": "org_1",
    "scopes": ["backups:read", "jobs:read"],
    "api_key_id": "key_1",
}
IDENTITY: dict[str, Any] = {
    "organization": {"id": "org_1", "name": "Acme"},
    "principal": PRINCIPAL,
    "server": {"name": "pulumi-capy", "version": "0.1.0"},
}


def job(state: str, attempts: int = 0, **extra: Any) -> dict[str, Any]:
    return {**JOB, "state": state, "attempts": attempts, **extra}


# ---------------------------------------------------------------- harness


class FakeClock:
    """A monotonic clock that only moves when ``sleep`` is called (or ``advance``)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Harness:
    client: CapyClient
    clock: FakeClock
    requests: list[httpx.Request] = field(default_factory=list)

    @property
    def sleeps(self) -> list[float]:
        return self.clock.sleeps

    @property
    def request(self) -> httpx.Request:
        assert len(self.requests) == 1, f"expected one request, got {len(self.requests)}"
        return self.requests[0]


def make_client(
    handler: Handler,
    *,
    retry: HttpRetryPolicy | None = None,
    api_key: str | SecretStr | None = API_KEY,
    base_url: str | None = BASE_URL,
    rng: Callable[[], float] = lambda: 0.5,
    clock: FakeClock | None = None,
) -> Harness:
    fake_clock = clock or FakeClock()
    requests: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return handler(request)

    client = CapyClient(
        base_url,
        api_key,
        transport=httpx.MockTransport(record),
        retry=retry,
        sleep=fake_clock.sleep,
        clock=fake_clock,
        rng=rng,
    )
    return Harness(client, fake_clock, requests)


def reply(
    status: int = 200, body: Any = None, *, text: str | None = None, **headers: str
) -> httpx.Response:
    """One answer; ``headers`` use ``_`` for ``-`` (``Retry_After="7"``)."""
    header_items = {name.replace("_", "-"): value for name, value in headers.items()}
    if text is not None:
        return httpx.Response(status, text=text, headers=header_items)
    return httpx.Response(status, json=body if body is not None else {}, headers=header_items)


def refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


def scripted(*answers: httpx.Response | Handler) -> Handler:
    """A handler giving ``answers`` in order (a callable answer is called with the request)."""
    pending = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        assert pending, f"unexpected extra request {request.method} {request.url}"
        answer = pending.pop(0)
        return answer if isinstance(answer, httpx.Response) else answer(request)

    return handle


def always(status: int, body: Any = None, **headers: str) -> Handler:
    return lambda request: reply(status, body, **headers)


def sent_path(request: httpx.Request) -> str:
    """The path as sent on the wire (percent-encoding kept, no query)."""
    return request.url.raw_path.decode("ascii").partition("?")[0]


def sent_body(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


def list_restore_points(client: CapyClient) -> object:
    return client.list_restore_points("prj_1")


def create_restore_point(client: CapyClient) -> object:
    return client.create_restore_point(
        "prj_1", CreateRestorePoint(label="before-migration", backup_key="bk_1")
    )


RP_PATH = f"{BASE_URL}/v1/projects/prj_1/restore-points"

# ---------------------------------------------------------------- 1. every endpoint


@dataclass(frozen=True)
class Endpoint:
    call: Callable[[CapyClient], object]
    method: str
    path: str  # under BASE_PATH
    answer: dict[str, Any]
    body: Any  # the JSON body sent, None when there is none
    expected: object  # what the call returns


ENDPOINTS = [
    pytest.param(
        Endpoint(
            list_restore_points,
            "GET",
            "/v1/projects/prj_1/restore-points",
            {"restore_points": [RESTORE_POINT]},
            None,
            [RestorePoint.model_validate(RESTORE_POINT)],
        ),
        id="list_restore_points",
    ),
    pytest.param(
        Endpoint(
            create_restore_point,
            "POST",
            "/v1/projects/prj_1/restore-points",
            {"restore_point": RESTORE_POINT},
            {"label": "before-migration", "kind": "backup", "backup_key": "bk_1"},
            RestorePoint.model_validate(RESTORE_POINT),
        ),
        id="create_restore_point-backup",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_restore_point(
                "prj_1",
                CreateRestorePoint(
                    label="pitr-point",
                    kind=RestorePointKind.pitr,
                    pitr_time=datetime(2026, 11, 26, 5, 0, tzinfo=UTC),
                    note="before the release",
                ),
            ),
            "POST",
            "/v1/projects/prj_1/restore-points",
            {"restore_point": {**RESTORE_POINT, "kind": "pitr", "backup_key": None}},
            {
                "label": "pitr-point",
                "kind": "pitr",
                "pitr_time": "2026-11-26T05:00:00Z",
                "note": "before the release",
            },
            RestorePoint.model_validate({**RESTORE_POINT, "kind": "pitr", "backup_key": None}),
        ),
        id="create_restore_point-pitr",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.delete_restore_point("prj_1", "rp_1"),
            "DELETE",
            "/v1/projects/prj_1/restore-points/rp_1",
            {"deleted": True},
            None,
            None,
        ),
        id="delete_restore_point",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_restore("prj_1", RestoreRequest(backup_key="bk_1")),
            "POST",
            "/v1/projects/prj_1/restores",
            {"job": JOB},
            {
                "backup_key": "bk_1",
                "target_kind": "new_preview",
                "recreate": False,
                "allow_unverified_backup": False,
                "confirm_project_overwrite": False,
            },
            Job.model_validate(JOB),
        ),
        id="create_restore-new_preview",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_restore(
                "prj_1",
                RestoreRequest(
                    restore_point_id="rp_1",
                    target_kind=TargetKind.project,
                    recreate=True,
                    confirm_project_overwrite=True,
                ),
            ),
            "POST",
            "/v1/projects/prj_1/restores",
            {"job": JOB},
            {
                "restore_point_id": "rp_1",
                "target_kind": "project",
                "recreate": True,
                "allow_unverified_backup": False,
                "confirm_project_overwrite": True,
            },
            Job.model_validate(JOB),
        ),
        id="create_restore-project",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.list_backups("prj_1"),
            "GET",
            "/v1/projects/prj_1/backups",
            {"backups": [BACKUP, {**BACKUP, "id": "bkp_2", "backup_key": "bk_2"}]},
            None,
            [
                Backup.model_validate(BACKUP),
                Backup.model_validate({**BACKUP, "id": "bkp_2", "backup_key": "bk_2"}),
            ],
        ),
        id="list_backups",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_backup("prj_1"),
            "POST",
            "/v1/projects/prj_1/backups",
            {"job": {**JOB, "type": "project.backup"}},
            {},
            Job.model_validate({**JOB, "type": "project.backup"}),
        ),
        id="create_backup-no-label",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_backup("prj_1", CreateBackup(label="nightly")),
            "POST",
            "/v1/projects/prj_1/backups",
            {"job": {**JOB, "type": "project.backup"}},
            {"label": "nightly"},
            Job.model_validate({**JOB, "type": "project.backup"}),
        ),
        id="create_backup-label",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.get_scheduled_backup("prj_1"),
            "GET",
            "/v1/projects/prj_1/scheduled-backups",
            {"scheduled_backups": []},
            None,
            None,
        ),
        id="get_scheduled_backup-none",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.get_scheduled_backup("prj_1"),
            "GET",
            "/v1/projects/prj_1/scheduled-backups",
            {"scheduled_backups": [SCHEDULE]},
            None,
            ScheduledBackup.model_validate(SCHEDULE),
        ),
        id="get_scheduled_backup-one",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.put_scheduled_backup(
                "prj_1",
                PutScheduledBackup(cron_hour=5, cron_minute=30, is_active=True, retention_days=14),
            ),
            "PUT",
            "/v1/projects/prj_1/scheduled-backups/default",
            {"scheduled_backup": SCHEDULE},
            {"cron_hour": 5, "cron_minute": 30, "is_active": True, "retention_days": 14},
            ScheduledBackup.model_validate(SCHEDULE),
        ),
        id="put_scheduled_backup",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.get_pitr("prj_1"),
            "GET",
            "/v1/projects/prj_1/pitr",
            {"pitr": PITR},
            None,
            PitrStatus.model_validate(PITR),
        ),
        id="get_pitr",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.list_jobs("prj_1"),
            "GET",
            "/v1/projects/prj_1/jobs",
            {"jobs": [JOB, {**JOB, "id": "job_0", "state": "completed"}]},
            None,
            [
                Job.model_validate(JOB),
                Job.model_validate({**JOB, "id": "job_0", "state": "completed"}),
            ],
        ),
        id="list_jobs",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.get_job("job_1"),
            "GET",
            "/v1/jobs/job_1",
            {"job": JOB},
            None,
            Job.model_validate(JOB),
        ),
        id="get_job",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.list_preview_databases("prj_1"),
            "GET",
            "/v1/projects/prj_1/preview-databases",
            {"preview_databases": [PREVIEW]},
            None,
            [PreviewDatabase.model_validate(PREVIEW)],
        ),
        id="list_preview_databases",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_preview_database("prj_1", CreatePreview(name="pr-1")),
            "POST",
            "/v1/projects/prj_1/preview-databases",
            {"job": {**JOB, "type": "preview.create"}, "preview": PREVIEW},
            {"name": "pr-1", "mode": "clone", "ttl_hours": 24},
            PreviewCreated(
                job=Job.model_validate({**JOB, "type": "preview.create"}),
                preview=PreviewDatabase.model_validate(PREVIEW),
            ),
        ),
        id="create_preview_database",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_preview_database(
                "prj_1", CreatePreview(name="pr-2", mode=PreviewMode.empty, ttl_hours=168)
            ),
            "POST",
            "/v1/projects/prj_1/preview-databases",
            {"job": {**JOB, "type": "preview.create"}, "preview": PREVIEW},
            {"name": "pr-2", "mode": "empty", "ttl_hours": 168},
            PreviewCreated(
                job=Job.model_validate({**JOB, "type": "preview.create"}),
                preview=PreviewDatabase.model_validate(PREVIEW),
            ),
        ),
        id="create_preview_database-empty",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.delete_preview_database("pv_1"),
            "DELETE",
            "/v1/preview-databases/pv_1",
            {"job": {**JOB, "type": "preview.delete"}},
            None,
            Job.model_validate({**JOB, "type": "preview.delete"}),
        ),
        id="delete_preview_database",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.list_projects(),
            "GET",
            "/v1/projects",
            {"projects": [PROJECT]},
            None,
            [Project.model_validate(PROJECT)],
        ),
        id="list_projects",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.get_project("prj_1"),
            "GET",
            "/v1/projects/prj_1",
            {"project": PROJECT},
            None,
            Project.model_validate(PROJECT),
        ),
        id="get_project",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_project(CreateProject(name="shop")),
            "POST",
            "/v1/projects",
            {"project": PROJECT, "job": None},
            {"name": "shop", "environment": "non_production"},
            ProjectCreated(project=Project.model_validate(PROJECT), job=None),
        ),
        id="create_project-no-job",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_project(
                CreateProject(
                    name="shop",
                    environment=Environment.production,
                    database_url=SecretStr(DATABASE_URL),
                )
            ),
            "POST",
            "/v1/projects",
            {"project": PROJECT, "job": JOB},
            {"name": "shop", "environment": "production", "database_url": DATABASE_URL},
            ProjectCreated(project=Project.model_validate(PROJECT), job=Job.model_validate(JOB)),
        ),
        id="create_project-with-job-and-database_url",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.get_identity(),
            "GET",
            "/v1/me",
            IDENTITY,
            None,
            Identity.model_validate(IDENTITY),
        ),
        id="get_identity",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.create_api_key(
                "org_1", CreateApiKey(name="ci", scopes=["backups:read", "backups:read"])
            ),
            "POST",
            "/v1/organizations/org_1/api-keys",
            {"api_key": API_KEY_OBJECT, "plaintext_api_key": PLAINTEXT_NEW_KEY},
            {"name": "ci", "scopes": ["backups:read"]},
            CreatedApiKey(
                api_key=ApiKey.model_validate(API_KEY_OBJECT),
                plaintext_api_key=SecretStr(PLAINTEXT_NEW_KEY),
            ),
        ),
        id="create_api_key",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.list_api_keys("org_1"),
            "GET",
            "/v1/organizations/org_1/api-keys",
            {"api_keys": [API_KEY_OBJECT]},
            None,
            [ApiKey.model_validate(API_KEY_OBJECT)],
        ),
        id="list_api_keys",
    ),
    pytest.param(
        Endpoint(
            lambda c: c.delete_api_key("org_1", "key_1"),
            "DELETE",
            "/v1/organizations/org_1/api-keys/key_1",
            {"deleted": True},
            None,
            None,
        ),
        id="delete_api_key",
    ),
]


def call_endpoint(endpoint: Endpoint) -> tuple[Harness, object]:
    harness = make_client(scripted(reply(200, endpoint.answer)))
    return harness, endpoint.call(harness.client)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_endpoint_sends_method_path_and_body(endpoint: Endpoint) -> None:
    harness, _ = call_endpoint(endpoint)

    request = harness.request
    assert request.method == endpoint.method
    assert request.url.scheme == "https"
    assert request.url.host == "capydb.example"
    assert sent_path(request) == BASE_PATH + endpoint.path
    assert sent_body(request) == endpoint.body
    if endpoint.body is not None:
        assert request.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_endpoint_parses_answer_envelope(endpoint: Endpoint) -> None:
    _, result = call_endpoint(endpoint)

    assert type(result) is type(endpoint.expected)
    assert result == endpoint.expected
    if isinstance(result, list):
        assert isinstance(endpoint.expected, list)
        assert [type(item) for item in result] == [type(item) for item in endpoint.expected]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_endpoint_headers(endpoint: Endpoint) -> None:
    harness, _ = call_endpoint(endpoint)

    headers = harness.request.headers
    assert headers["Authorization"] == f"Bearer {API_KEY}"
    assert headers["User-Agent"] == f"pulumi-capy/{__version__}"
    assert headers["Accept"] == "application/json"
    if endpoint.method == "POST":
        assert uuid.UUID(headers["Idempotency-Key"]).version == 4
    else:
        assert "Idempotency-Key" not in headers


def _ignores_its_answer(param: Any) -> bool:
    """Deletes of restore points and API keys return nothing from their answer."""
    endpoint: Endpoint = param.values[0]
    return endpoint.method == "DELETE" and endpoint.expected is None


PARSING_ENDPOINTS = [param for param in ENDPOINTS if not _ignores_its_answer(param)]


@pytest.mark.parametrize("endpoint", PARSING_ENDPOINTS)
def test_endpoint_answer_without_its_envelope_raises_server_error(endpoint: Endpoint) -> None:
    if endpoint.expected is None:
        # get_scheduled_backup answering no schedule: swap in a malformed list instead
        answer: dict[str, Any] = {"scheduled_backups": [{"id": "x"}]}
    else:
        answer = {"something_else": {"id": "x"}}
    harness = make_client(scripted(reply(200, answer)))
    with pytest.raises(ServerError, match="unexpected answer"):
        endpoint.call(harness.client)


def test_created_api_key_reveals_plaintext_only_on_purpose() -> None:
    harness = make_client(
        scripted(reply(201, {"api_key": API_KEY_OBJECT, "plaintext_api_key": PLAINTEXT_NEW_KEY}))
    )

    created = harness.client.create_api_key("org_1", CreateApiKey(name="ci", scopes=["jobs:read"]))

    assert created.plaintext_api_key.get_secret_value() == PLAINTEXT_NEW_KEY
    assert PLAINTEXT_NEW_KEY not in repr(created)
    assert created.api_key.scopes == ["backups:read"]


@pytest.mark.parametrize(
    ("call", "expected_limit"),
    [
        pytest.param(lambda c: c.list_jobs("prj_1"), "25", id="default"),
        pytest.param(lambda c: c.list_jobs("prj_1", limit=5), "5", id="five"),
        pytest.param(lambda c: c.list_jobs("prj_1", 100), "100", id="hundred"),
    ],
)
def test_list_jobs_sends_limit_query(
    call: Callable[[CapyClient], object], expected_limit: str
) -> None:
    harness = make_client(scripted(reply(200, {"jobs": []})))

    assert call(harness.client) == []

    assert dict(harness.request.url.params) == {"limit": expected_limit}
    assert sent_path(harness.request) == f"{BASE_PATH}/v1/projects/prj_1/jobs"


def test_answer_parsing_keeps_enum_members() -> None:
    harness = make_client(
        scripted(
            reply(200, {"job": job("running", 1)}),
            reply(200, {"restore_points": [RESTORE_POINT]}),
        )
    )

    got_job = harness.client.get_job("job_1")
    (point,) = harness.client.list_restore_points("prj_1")

    assert got_job.state is JobState.running
    assert got_job.attempts == 1
    assert got_job.created_at == datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
    assert point.kind is RestorePointKind.backup


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        pytest.param({"name": "pulumi-capy", "version": "0.1.0"}, True, id="pulumi-capy"),
        pytest.param({"name": "something-else"}, False, id="other-server"),
        pytest.param(None, False, id="hosted-no-server-block"),
    ],
)
def test_get_identity_server_block(server: dict[str, Any] | None, expected: bool) -> None:
    answer: dict[str, Any] = {"organization": {"id": "org_1"}, "principal": PRINCIPAL}
    if server is not None:
        answer["server"] = server
    harness = make_client(scripted(reply(200, answer)))

    identity = harness.client.get_identity()

    assert identity.is_pulumi_capy_server is expected
    assert identity.principal.scopes == ["backups:read", "jobs:read"]
    assert identity.organization is not None
    assert identity.organization.id == "org_1"


@pytest.mark.parametrize(
    "target_kind",
    [
        pytest.param(None, id="left-at-default"),
        pytest.param(TargetKind.new_preview, id="explicit-new_preview"),
        pytest.param(TargetKind.preview, id="preview"),
    ],
)
def test_create_restore_always_sends_target_kind(target_kind: TargetKind | None) -> None:
    if target_kind is None:
        request = RestoreRequest(restore_time=datetime(2026, 11, 26, 5, tzinfo=UTC))
    elif target_kind is TargetKind.preview:
        request = RestoreRequest(
            restore_time=datetime(2026, 11, 26, 5, tzinfo=UTC),
            target_kind=target_kind,
            preview_id="pv_1",
        )
    else:
        request = RestoreRequest(
            restore_time=datetime(2026, 11, 26, 5, tzinfo=UTC), target_kind=target_kind
        )
    harness = make_client(scripted(reply(202, {"job": JOB})))

    harness.client.create_restore("prj_1", request)

    body = sent_body(harness.request)
    assert body["target_kind"] == (target_kind or TargetKind.new_preview).value
    assert body["restore_time"] == "2026-11-26T05:00:00Z"


# ---------------------------------------------------------------- path ids

# Every call that puts a caller's id in the path: (call with that id, path template).
PATH_ID_CALLS = [
    pytest.param(lambda c, i: c.list_restore_points(i), "/v1/projects/{}/restore-points", id="rp"),
    pytest.param(
        lambda c, i: c.delete_restore_point("prj_1", i),
        "/v1/projects/prj_1/restore-points/{}",
        id="delete-rp",
    ),
    pytest.param(
        lambda c, i: c.create_restore(i, RestoreRequest(backup_key="bk_1")),
        "/v1/projects/{}/restores",
        id="restore",
    ),
    pytest.param(lambda c, i: c.list_backups(i), "/v1/projects/{}/backups", id="backups"),
    pytest.param(
        lambda c, i: c.put_scheduled_backup(
            i, PutScheduledBackup(cron_hour=1, cron_minute=0, is_active=False)
        ),
        "/v1/projects/{}/scheduled-backups/default",
        id="schedule",
    ),
    pytest.param(lambda c, i: c.list_jobs(i), "/v1/projects/{}/jobs", id="jobs"),
    pytest.param(lambda c, i: c.get_job(i), "/v1/jobs/{}", id="job"),
    pytest.param(
        lambda c, i: c.list_preview_databases(i),
        "/v1/projects/{}/preview-databases",
        id="previews",
    ),
    pytest.param(
        lambda c, i: c.delete_preview_database(i), "/v1/preview-databases/{}", id="delete-preview"
    ),
    pytest.param(lambda c, i: c.get_project(i), "/v1/projects/{}", id="project"),
    pytest.param(lambda c, i: c.list_api_keys(i), "/v1/organizations/{}/api-keys", id="api-keys"),
    pytest.param(
        lambda c, i: c.delete_api_key("org_1", i),
        "/v1/organizations/org_1/api-keys/{}",
        id="delete-api-key",
    ),
]

PathIdCall = Callable[[CapyClient, str], object]


@pytest.mark.parametrize(
    ("raw_id", "encoded"),
    [
        ("a/b c", "a%2Fb%20c"),
        ("../../admin", "..%2F..%2Fadmin"),
        ("x?y=1#z", "x%3Fy%3D1%23z"),
        ("100%", "100%25"),
    ],
)
@pytest.mark.parametrize(("call", "template"), PATH_ID_CALLS)
def test_path_ids_are_percent_encoded(
    call: PathIdCall, template: str, raw_id: str, encoded: str
) -> None:
    harness = make_client(lambda request: reply(200, {"deleted": True}))

    with contextlib.suppress(ServerError):  # the catch-all answer fits no envelope
        call(harness.client, raw_id)

    assert sent_path(harness.request) == BASE_PATH + template.format(encoded)
    assert set(harness.request.url.params) <= {"limit"}


@pytest.mark.parametrize("raw_id", ["..", "."])
@pytest.mark.parametrize(("call", "template"), PATH_ID_CALLS)
def test_dot_segment_ids_cannot_escape_the_path(
    call: PathIdCall, template: str, raw_id: str
) -> None:
    # httpx removes dot segments: ``delete_restore_point("prj_1", "..")`` must never
    # become ``DELETE /v1/projects/prj_1``.
    harness = make_client(lambda request: reply(200, {"deleted": True}))

    with contextlib.suppress(CapyError):  # refusing the id before sending is fine too
        call(harness.client, raw_id)

    expected = (BASE_PATH + template).split("/")
    for request in harness.requests:
        sent = sent_path(request).split("/")
        assert len(sent) == len(expected), f"{request.method} {sent_path(request)}"
        for got, want in zip(sent, expected, strict=True):
            if want != "{}":
                assert got == want, f"{request.method} {sent_path(request)}"


@pytest.mark.parametrize(("call", "template"), PATH_ID_CALLS)
def test_empty_path_id_is_refused_before_sending(call: PathIdCall, template: str) -> None:
    harness = make_client(lambda request: reply(200, {}))

    with pytest.raises(CapyError, match="empty"):
        call(harness.client, "")

    assert harness.requests == []


# ---------------------------------------------------------------- 2. client settings and headers


def test_every_post_gets_its_own_idempotency_key() -> None:
    harness = make_client(lambda request: reply(201, {"restore_point": RESTORE_POINT}))

    create_restore_point(harness.client)
    create_restore_point(harness.client)

    keys = [request.headers["Idempotency-Key"] for request in harness.requests]
    assert len(set(keys)) == 2


def test_base_url_trailing_slash_is_ignored() -> None:
    harness = make_client(scripted(reply(200, {"projects": []})), base_url=BASE_URL + "/")

    harness.client.list_projects()

    assert str(harness.request.url) == f"{BASE_URL}/v1/projects"
    assert harness.client.base_url == BASE_URL


def test_base_url_and_key_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPYDB_API_URL", "http://localhost:8080/api/capydb")
    monkeypatch.setenv("CAPYDB_API_KEY", API_KEY)
    harness = make_client(scripted(reply(200, {"projects": []})), base_url=None, api_key=None)

    harness.client.list_projects()

    assert str(harness.request.url) == "http://localhost:8080/api/capydb/v1/projects"
    assert harness.request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPYDB_API_URL", "http://elsewhere.example")
    monkeypatch.setenv("CAPYDB_API_KEY", "capy_live_" + "e" * 40)
    harness = make_client(scripted(reply(200, {"projects": []})))

    harness.client.list_projects()

    assert str(harness.request.url) == f"{BASE_URL}/v1/projects"
    assert harness.request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_default_base_url_is_hosted_capydb() -> None:
    harness = make_client(scripted(reply(200, {"projects": []})), base_url=None)

    harness.client.list_projects()

    assert str(harness.request.url) == f"{DEFAULT_API_URL}/v1/projects"


def test_without_key_no_authorization_header() -> None:
    harness = make_client(scripted(reply(200, {"projects": []})), api_key=None)

    harness.client.list_projects()

    assert "Authorization" not in harness.request.headers


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(SecretStr(API_KEY), id="secretstr"),
        pytest.param(f"  {API_KEY}\n", id="surrounding-whitespace"),
    ],
)
def test_key_forms_are_accepted(key: str | SecretStr) -> None:
    harness = make_client(scripted(reply(200, {"projects": []})), api_key=key)

    harness.client.list_projects()

    assert harness.request.headers["Authorization"] == f"Bearer {API_KEY}"


def test_session_token_is_sent_as_bearer() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyXzEifQ.c2lnbmF0dXJl"  # {"alg":"HS256"}
    harness = make_client(scripted(reply(200, {"projects": []})), api_key=token)

    harness.client.list_projects()

    assert harness.request.headers["Authorization"] == f"Bearer {token}"


@pytest.mark.parametrize(
    "bad_url",
    ["ftp://capydb.example/api", "file:///etc/passwd", "capydb.example/api", "javascript:x"],
)
def test_base_url_must_be_http(bad_url: str) -> None:
    with pytest.raises(CapyError, match="https://"):
        CapyClient(bad_url, API_KEY, transport=httpx.MockTransport(refuse))


def test_client_is_a_backend_and_a_context_manager() -> None:
    harness = make_client(scripted(reply(200, {"projects": [PROJECT]})))

    assert isinstance(harness.client, Backend)
    with harness.client as client:
        assert client is harness.client
        assert client.list_projects()[0].name == "shop"
    assert client._http.is_closed


# ---------------------------------------------------------------- 3. errors


@pytest.mark.parametrize(
    ("status", "error_class", "requests_sent"),
    [
        (400, BadRequest, 1),
        (401, Unauthorized, 1),
        (403, Forbidden, 1),
        (404, NotFound, 1),
        (409, Conflict, 1),
        (422, BadRequest, 1),
        (429, RateLimited, 5),
        (500, ServerError, 1),
        (502, ServerError, 5),
        (503, ServerError, 5),
        (504, ServerError, 5),
    ],
)
@pytest.mark.parametrize(
    ("call", "method", "url"),
    [
        pytest.param(list_restore_points, "GET", RP_PATH, id="GET"),
        pytest.param(create_restore_point, "POST", RP_PATH, id="POST"),
    ],
)
def test_error_status_maps_to_error_class(
    call: Callable[[CapyClient], object],
    method: str,
    url: str,
    status: int,
    error_class: type[ApiError],
    requests_sent: int,
) -> None:
    harness = make_client(always(status, {"error": "label: must not be empty (server says)"}))

    with pytest.raises(error_class) as caught:
        call(harness.client)

    error = caught.value
    assert type(error) is error_class
    assert error.status == status
    assert error.method == method
    assert error.url == url
    assert f"{status} from {method} {url}" in str(error)
    assert "label: must not be empty (server says)" in str(error)
    assert error.detail == "label: must not be empty (server says)"
    assert len(harness.requests) == requests_sent
    assert len(harness.sleeps) == requests_sent - 1


def test_unauthorized_tells_how_to_set_the_key() -> None:
    harness = make_client(always(401, {"error": "invalid API key"}))

    with pytest.raises(Unauthorized) as caught:
        harness.client.list_projects()

    message = str(caught.value)
    assert "CAPYDB_API_KEY" in message
    assert "pulumi config set --secret capy:apiKey" in message
    assert "invalid API key" in message


@pytest.mark.parametrize(
    ("status", "text", "error_class", "expected_detail"),
    [
        pytest.param(500, "<html><h1>Internal error</h1></html>", ServerError, "Internal error"),
        pytest.param(404, "no route here", NotFound, "no route here"),
        pytest.param(400, '["a", "list"]', BadRequest, '["a", "list"]'),
        pytest.param(409, '{"message": "no error key"}', Conflict, "no error key"),
        pytest.param(500, "", ServerError, "The service failed."),
        pytest.param(403, "   \n", Forbidden, "may not make this call"),
    ],
)
def test_non_json_error_bodies_still_give_a_clear_error(
    status: int, text: str, error_class: type[ApiError], expected_detail: str
) -> None:
    harness = make_client(always_text(status, text))

    with pytest.raises(error_class) as caught:
        harness.client.list_projects()

    message = str(caught.value)
    assert f"{status} from GET {BASE_URL}/v1/projects" in message
    assert expected_detail in message


def test_long_non_json_error_body_is_cut() -> None:
    harness = make_client(always_text(500, "x" * 10_000))

    with pytest.raises(ServerError) as caught:
        harness.client.list_projects()

    assert len(caught.value.detail) == 300


def always_text(status: int, text: str) -> Handler:
    return lambda request: reply(status, text=text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not json at all", id="not-json"),
        pytest.param('["a", "list"]', id="json-list"),
        pytest.param("", id="empty"),
    ],
)
def test_success_answer_that_is_not_a_json_object_is_a_server_error(text: str) -> None:
    harness = make_client(always_text(200, text))

    with pytest.raises(ServerError, match=r"not a JSON object|not JSON") as caught:
        harness.client.list_projects()

    assert caught.value.url == f"{BASE_URL}/v1/projects"
    assert len(harness.requests) == 1


def _delete_backup(client: CapyClient) -> None:
    client.delete_backup("prj_1", "bkp_1")


def _delete_project(client: CapyClient) -> None:
    client.delete_project("prj_1")


def _force_delete_project(client: CapyClient) -> None:
    client.delete_project("prj_1", force=True)


DELETES = [_delete_backup, _delete_project, _force_delete_project]
HOSTED_ME = {"principal": {"auth_source": "api_key", "scopes": []}}
CAPY_SERVER_ME = HOSTED_ME | {"server": {"name": "pulumi-capy", "version": "0.1.0"}}


@pytest.mark.parametrize("call", DELETES)
def test_deletes_hosted_capydb_lacks_raise_without_sending_them(
    call: Callable[[CapyClient], object],
) -> None:
    harness = make_client(lambda request: reply(200, HOSTED_ME))

    with pytest.raises(NotSupported):
        call(harness.client)

    assert [(r.method, r.url.path) for r in harness.requests] == [("GET", BASE_PATH + "/v1/me")]


@pytest.mark.parametrize(
    ("call", "path", "query"),
    [
        (DELETES[0], "/v1/projects/prj_1/backups/bkp_1", ""),
        (DELETES[1], "/v1/projects/prj_1", ""),
        (DELETES[2], "/v1/projects/prj_1", "force=true"),
    ],
)
def test_deletes_go_to_a_self_hosted_capy_server(
    call: Callable[[CapyClient], object], path: str, query: str
) -> None:
    harness = make_client(
        lambda request: reply(200, CAPY_SERVER_ME if request.url.path.endswith("/me") else {})
    )

    call(harness.client)
    call(harness.client)  # the server is identified once per client

    sent = [(r.method, r.url.path, r.url.query.decode()) for r in harness.requests]
    assert sent == [
        ("GET", BASE_PATH + "/v1/me", ""),
        ("DELETE", BASE_PATH + path, query),
        ("DELETE", BASE_PATH + path, query),
    ]


# ---------------------------------------------------------------- 4. retries


@pytest.mark.smoke
def test_post_retried_after_503_503_200_reuses_the_same_idempotency_key() -> None:
    """Acceptance: a retried POST is the same call to the server (same Idempotency-Key)."""
    harness = make_client(
        scripted(
            reply(503, {"error": "upstream busy"}),
            reply(503, {"error": "upstream busy"}),
            reply(201, {"restore_point": RESTORE_POINT}),
        )
    )

    result = create_restore_point(harness.client)

    assert result == RestorePoint.model_validate(RESTORE_POINT)
    assert len(harness.requests) == 3
    keys = {request.headers["Idempotency-Key"] for request in harness.requests}
    assert len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4
    assert {request.content for request in harness.requests} == {harness.requests[0].content}
    assert harness.sleeps == DEFAULT_BACKOFF[:2]


@pytest.mark.parametrize(
    ("method", "call", "answer"),
    [
        pytest.param("GET", list_restore_points, {"restore_points": []}, id="GET"),
        pytest.param(
            "PUT",
            lambda c: c.put_scheduled_backup(
                "prj_1", PutScheduledBackup(cron_hour=5, cron_minute=0, is_active=True)
            ),
            {"scheduled_backup": SCHEDULE},
            id="PUT",
        ),
        pytest.param(
            "DELETE",
            lambda c: c.delete_restore_point("prj_1", "rp_1"),
            {"deleted": True},
            id="DELETE",
        ),
    ],
)
def test_idempotent_methods_are_retried_without_idempotency_key(
    method: str, call: Callable[[CapyClient], object], answer: dict[str, Any]
) -> None:
    harness = make_client(scripted(reply(502), reply(504), reply(200, answer)))

    call(harness.client)

    assert [request.method for request in harness.requests] == [method] * 3
    assert all("Idempotency-Key" not in request.headers for request in harness.requests)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_honoured_exactly(status: int) -> None:
    harness = make_client(
        scripted(reply(status, Retry_After="7"), reply(200, {"restore_points": []}))
    )

    assert harness.client.list_restore_points("prj_1") == []

    assert harness.sleeps == [7.0]
    assert len(harness.requests) == 2


def test_retry_after_as_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    harness = make_client(
        scripted(reply(429, Retry_After=when), reply(200, {"restore_points": []}))
    )

    harness.client.list_restore_points("prj_1")

    (wait,) = harness.sleeps
    assert 28.5 < wait <= 30.0


def test_retry_after_http_date_in_the_past_retries_at_once() -> None:
    harness = make_client(
        scripted(
            reply(503, Retry_After="Wed, 21 Oct 2015 07:28:00 GMT"),
            reply(200, {"restore_points": []}),
        )
    )

    harness.client.list_restore_points("prj_1")

    assert harness.sleeps == [0.0]


def test_unparseable_retry_after_falls_back_to_backoff() -> None:
    harness = make_client(
        scripted(reply(429, Retry_After="soon-ish"), reply(200, {"restore_points": []}))
    )

    harness.client.list_restore_points("prj_1")

    assert harness.sleeps == DEFAULT_BACKOFF[:1]


def test_rate_limited_after_retries_carries_retry_after() -> None:
    harness = make_client(always(429, {"error": "slow down"}, Retry_After="7"))

    with pytest.raises(RateLimited) as caught:
        harness.client.list_projects()

    assert caught.value.retry_after == 7.0
    assert harness.sleeps == [7.0] * 4
    assert len(harness.requests) == 5


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 500])
@pytest.mark.parametrize(
    "call",
    [pytest.param(list_restore_points, id="GET"), pytest.param(create_restore_point, id="POST")],
)
def test_client_errors_are_never_retried(status: int, call: Callable[[CapyClient], object]) -> None:
    harness = make_client(scripted(reply(status, {"error": "no"}, Retry_After="1"), reply(200, {})))

    with pytest.raises(ApiError):
        call(harness.client)

    assert len(harness.requests) == 1
    assert harness.sleeps == []


@pytest.mark.parametrize(
    "exception",
    [httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout, httpx.RemoteProtocolError],
)
def test_transport_errors_are_retried(exception: type[httpx.TransportError]) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise exception("boom", request=request)

    harness = make_client(scripted(fail, fail, reply(201, {"restore_point": RESTORE_POINT})))

    assert create_restore_point(harness.client) == RestorePoint.model_validate(RESTORE_POINT)
    assert len(harness.requests) == 3
    assert len({request.headers["Idempotency-Key"] for request in harness.requests}) == 1
    assert harness.sleeps == DEFAULT_BACKOFF[:2]


def test_connection_errors_exhausted_raise_unreachable() -> None:
    harness = make_client(refuse)

    with pytest.raises(Unreachable) as caught:
        harness.client.list_restore_points("prj_1")

    message = str(caught.value)
    assert f"GET {RP_PATH}" in message
    assert "ConnectError" in message
    assert "Connection refused" in message
    assert "CAPYDB_API_URL" in message
    assert len(harness.requests) == 5
    assert harness.sleeps == DEFAULT_BACKOFF


def test_small_deadline_gives_up_early() -> None:
    harness = make_client(always(503), retry=HttpRetryPolicy(deadline=2.0))

    with pytest.raises(ServerError):
        harness.client.list_projects()

    # 0.375 + 0.75 fit in 2 s; the third wait (1.5 s) would end at 2.625 s.
    assert harness.sleeps == [0.375, 0.75]
    assert len(harness.requests) == 3


def test_deadline_counts_time_spent_in_requests() -> None:
    clock = FakeClock()

    def slow_503(request: httpx.Request) -> httpx.Response:
        clock.advance(20.0)
        return reply(503)

    harness = make_client(slow_503, clock=clock)  # default deadline 60 s

    with pytest.raises(ServerError):
        harness.client.list_projects()

    # 20 + 0.375 + 20 + 0.75 + 20 = 61.125 s: past 60 s after the third request.
    assert len(harness.requests) == 3
    assert harness.sleeps == [0.375, 0.75]


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_beyond_deadline_gives_up_at_once(status: int) -> None:
    harness = make_client(
        scripted(reply(status, {"error": "come back later"}, Retry_After="120"), reply(200, {}))
    )

    with pytest.raises(ApiError, match="come back later") as caught:
        harness.client.list_projects()

    assert caught.value.status == status
    assert len(harness.requests) == 1
    assert harness.sleeps == []


def test_backoff_grows_exponentially_up_to_max_delay() -> None:
    harness = make_client(always(502), retry=HttpRetryPolicy(max_attempts=8, deadline=1000.0))

    with pytest.raises(ServerError):
        harness.client.list_projects()

    assert harness.sleeps == [0.375, 0.75, 1.5, 3.0, 6.0, 7.5, 7.5]
    assert len(harness.requests) == 8


@pytest.mark.parametrize(
    ("rng_value", "expected"),
    [(0.0, [0.25, 0.5, 1.0]), (0.5, [0.375, 0.75, 1.5]), (1.0, [0.5, 1.0, 2.0])],
)
def test_backoff_jitter_stays_between_half_and_full_delay(
    rng_value: float, expected: list[float]
) -> None:
    harness = make_client(always(503), retry=HttpRetryPolicy(max_attempts=4), rng=lambda: rng_value)

    with pytest.raises(ServerError):
        harness.client.list_projects()

    assert harness.sleeps == expected


@pytest.mark.parametrize("max_attempts", [1, 2, 3, 7])
def test_max_attempts_is_respected(max_attempts: int) -> None:
    harness = make_client(
        refuse, retry=HttpRetryPolicy(max_attempts=max_attempts, base_delay=0.1, deadline=1000.0)
    )

    with pytest.raises(Unreachable):
        create_restore_point(harness.client)

    assert len(harness.requests) == max_attempts
    assert len(harness.sleeps) == max_attempts - 1


# ---------------------------------------------------------------- 5. wait_for_job


def jobs_in_order(*states: dict[str, Any]) -> Handler:
    return scripted(*(reply(200, {"job": state}) for state in states))


def test_wait_for_job_returns_the_completed_job() -> None:
    harness = make_client(
        jobs_in_order(
            job("pending"), job("running", 1), job("completed", 1, result={"backup_id": "b"})
        )
    )

    done = harness.client.wait_for_job("job_1")

    assert done.state is JobState.completed
    assert done.result == {"backup_id": "b"}
    assert harness.sleeps == [0.5, 0.75]
    assert all(sent_path(r) == f"{BASE_PATH}/v1/jobs/job_1" for r in harness.requests)
    assert all(r.method == "GET" for r in harness.requests)


def test_wait_for_job_reports_each_state_or_attempt_change_once() -> None:
    harness = make_client(
        jobs_in_order(
            job("pending"),
            job("pending"),
            job("pending"),
            job("running", 1),
            job("running", 1),
            job("running", 2, retry_classification="transient"),
            job("running", 2),
            job("completed", 2),
        )
    )
    updates: list[Job] = []

    harness.client.wait_for_job("job_1", on_update=updates.append)

    assert [(str(u.state), u.attempts) for u in updates] == [
        ("pending", 0),
        ("running", 1),
        ("running", 2),
        ("completed", 2),
    ]
    assert len(harness.requests) == 8


def test_wait_for_job_poll_interval_starts_at_half_a_second_and_is_capped() -> None:
    harness = make_client(lambda request: reply(200, {"job": job("running", 1)}))

    with pytest.raises(JobTimeout):
        harness.client.wait_for_job("job_1", timeout=60.0)

    sleeps = harness.sleeps
    assert sleeps[0] == 0.5
    assert sleeps[:8] == [0.5 * 1.5**n for n in range(8)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(sleeps[:-1]))
    assert max(sleeps) == 10.0
    assert sleeps[8:11] == [10.0, 10.0, 10.0]
    assert sum(sleeps) == pytest.approx(60.0)
    assert len(harness.requests) == len(sleeps) + 1


def test_wait_for_job_failed_raises_job_failed_with_error_and_stderr_tail() -> None:
    stderr = "HEAD-OF-OUTPUT\n" + "x" * 5000 + "\npg_restore: error: could not read block 42"
    failed = job(
        "failed",
        3,
        error="restore failed: checksum mismatch",
        last_exit_code=1,
        last_stderr=stderr,
        retry_classification="permanent",
    )
    harness = make_client(jobs_in_order(job("running", 1), failed))

    with pytest.raises(JobFailed) as caught:
        harness.client.wait_for_job("job_1")

    message = str(caught.value)
    assert "job_1" in message
    assert "restore failed: checksum mismatch" in message
    assert "pg_restore: error: could not read block 42" in message
    assert "HEAD-OF-OUTPUT" not in message
    assert "exit code 1" in message
    assert caught.value.job.id == "job_1"
    assert caught.value.job.state is JobState.failed
    assert caught.value.job.last_stderr == stderr


def test_wait_for_job_failed_reports_update_before_raising() -> None:
    harness = make_client(jobs_in_order(job("failed", 1, error="bad backup")))
    updates: list[Job] = []

    with pytest.raises(JobFailed, match="bad backup"):
        harness.client.wait_for_job("job_1", on_update=updates.append)

    assert [u.state for u in updates] == [JobState.failed]
    assert harness.sleeps == []


@pytest.mark.parametrize("timeout", [0.0, 1.0, 30.0, 3600.0])
def test_wait_for_job_timeout_names_the_job_and_how_to_follow_it(timeout: float) -> None:
    harness = make_client(lambda request: reply(200, {"job": job("running", 1)}))

    with pytest.raises(JobTimeout) as caught:
        harness.client.wait_for_job("job_1", timeout=timeout)

    message = str(caught.value)
    assert "job_1" in message
    assert "capy jobs get --job-id job_1" in message
    assert "running" in message
    assert caught.value.job.id == "job_1"
    assert caught.value.timeout == timeout
    assert harness.clock.now - 1000.0 == pytest.approx(timeout)
    assert all(wait <= 10.0 for wait in harness.sleeps)


def test_wait_for_job_rides_out_transient_errors_while_polling() -> None:
    harness = make_client(
        scripted(
            reply(200, {"job": job("running", 1)}),
            reply(503),
            reply(200, {"job": job("completed", 1)}),
        )
    )

    done = harness.client.wait_for_job("job_1")

    assert done.state is JobState.completed
    assert harness.sleeps == [0.5, 0.375]  # one poll interval, one retry backoff


def test_wait_for_job_unknown_job_raises_not_found() -> None:
    harness = make_client(always(404, {"error": "job not found"}))

    with pytest.raises(NotFound, match="job not found"):
        harness.client.wait_for_job("job_missing")

    assert len(harness.requests) == 1


# ---------------------------------------------------------------- 6. secrets


def assert_no_secret(text: str) -> None:
    assert API_KEY not in text
    assert KEY_SECRET_PART not in text
    assert DATABASE_PASSWORD not in text


def test_repr_hides_the_key() -> None:
    harness = make_client(lambda request: reply(200, {}))

    assert_no_secret(repr(harness.client))
    assert_no_secret(str(harness.client))
    assert_no_secret(repr(harness.client._http.auth))
    assert "capydb.example" in repr(harness.client)


ERROR_SCENARIOS = [
    pytest.param(always(401, {"error": "invalid API key"}), Unauthorized, id="401"),
    pytest.param(always(403, {"error": "missing scope backups:write"}), Forbidden, id="403"),
    pytest.param(always(429, {"error": "slow down"}), RateLimited, id="429"),
    pytest.param(always(503, {"error": "busy"}), ServerError, id="503"),
    pytest.param(always_text(500, "<html>oops</html>"), ServerError, id="500-html"),
    pytest.param(refuse, Unreachable, id="unreachable"),
    pytest.param(always_text(200, "not json"), ServerError, id="bad-answer"),
]


@pytest.mark.parametrize(("handler", "error_class"), ERROR_SCENARIOS)
def test_errors_never_contain_the_key(handler: Handler, error_class: type[CapyError]) -> None:
    harness = make_client(handler)

    with pytest.raises(error_class) as caught:
        harness.client.create_project(
            CreateProject(name="shop", database_url=SecretStr(DATABASE_URL))
        )

    error = caught.value
    assert_no_secret(str(error))
    assert_no_secret(repr(error))
    assert_no_secret(repr(error.args))
    assert_no_secret(repr(vars(error)))


def test_logs_never_contain_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    harness = make_client(
        scripted(
            reply(503, {"error": "busy"}),
            refuse,
            reply(201, {"project": PROJECT, "job": JOB}),
            reply(429, {"error": "slow"}, Retry_After="2"),
            reply(201, {"api_key": API_KEY_OBJECT, "plaintext_api_key": PLAINTEXT_NEW_KEY}),
            reply(200, {"job": job("running", 1)}),
            reply(200, {"job": job("completed", 1)}),
            reply(401, {"error": "invalid API key"}),
        )
    )

    harness.client.create_project(CreateProject(name="shop", database_url=SecretStr(DATABASE_URL)))
    harness.client.create_api_key("org_1", CreateApiKey(name="ci", scopes=["jobs:read"]))
    harness.client.wait_for_job("job_1")
    with pytest.raises(Unauthorized):
        harness.client.get_identity()

    assert len(harness.requests) == 8
    assert any("retrying" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        text = record.getMessage()
        assert_no_secret(text)
        assert PLAINTEXT_NEW_KEY not in text
        assert_no_secret(repr(record.args))
    assert_no_secret(caplog.text)


@pytest.mark.parametrize(
    "bad_key",
    [
        "capy_live_short",
        "sk_live_" + "Q" * 40,
        "capy_live_" + "Q" * 20 + " spaces " + "Q" * 20,
        "Bearer capy_live_" + "Q" * 40,
        "eyJhbGciOiJIUzI1NiJ9.not-base64!.sig",
    ],
)
def test_malformed_key_raises_config_error_without_echoing_it(bad_key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CapyClient(BASE_URL, bad_key, transport=httpx.MockTransport(refuse))

    message = str(caught.value)
    assert bad_key not in message
    assert "Q" * 16 not in message
    assert "capy_live_" in message  # says what a key looks like


def test_malformed_key_from_environment_raises_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad_key = "capy_live_" + "Q" * 5
    monkeypatch.setenv("CAPYDB_API_KEY", bad_key)

    with pytest.raises(ConfigError) as caught:
        CapyClient(BASE_URL, transport=httpx.MockTransport(refuse))

    assert bad_key not in str(caught.value)


# ---------------------------------------------------------------- 7. unknown fields and values


def test_unknown_enum_values_stay_plain_strings() -> None:
    harness = make_client(
        scripted(
            reply(200, {"restore_points": [{**RESTORE_POINT, "kind": "snapshot"}]}),
            reply(200, {"job": job("paused", type="project.clone", retry_classification="maybe")}),
            reply(200, {"backups": [{**BACKUP, "verification_state": "quarantined"}]}),
            reply(200, {"preview_databases": [{**PREVIEW, "mode": "fork", "state": "sleeping"}]}),
            reply(200, {"projects": [{**PROJECT, "environment": "staging"}]}),
        )
    )

    (point,) = harness.client.list_restore_points("prj_1")
    odd_job = harness.client.get_job("job_1")
    (backup,) = harness.client.list_backups("prj_1")
    (preview,) = harness.client.list_preview_databases("prj_1")
    (project,) = harness.client.list_projects()

    values: list[object] = [
        point.kind,
        odd_job.state,
        odd_job.type,
        odd_job.retry_classification,
        backup.verification_state,
        preview.mode,
        preview.state,
        project.environment,
    ]
    assert values == [
        "snapshot",
        "paused",
        "project.clone",
        "maybe",
        "quarantined",
        "fork",
        "sleeping",
        "staging",
    ]
    assert all(type(value) is str for value in values)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_unknown_fields_are_ignored(endpoint: Endpoint) -> None:
    def decorate(value: Any) -> Any:
        if isinstance(value, dict):
            return {**{k: decorate(v) for k, v in value.items()}, "added_in_v9": {"x": [1]}}
        if isinstance(value, list):
            return [decorate(item) for item in value]
        return value

    harness = make_client(scripted(reply(200, decorate(endpoint.answer))))

    assert endpoint.call(harness.client) == endpoint.expected


def test_missing_optional_fields_take_defaults() -> None:
    harness = make_client(
        scripted(reply(200, {"job": {"id": "job_9", "type": "backup.verify", "state": "pending"}}))
    )

    minimal = harness.client.get_job("job_9")

    assert minimal.attempts == 0
    assert minimal.max_attempts == 3
    assert minimal.error is None
