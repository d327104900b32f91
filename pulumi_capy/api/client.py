"""``CapyClient``: the ``Backend`` protocol over CapyDB's REST API (httpx).

It talks to hosted CapyDB and to a self-hosted ``capy serve`` alike. Every
POST carries an ``Idempotency-Key`` (the same one on each retry of that call),
so every call may be retried: on connection errors, 429 and 502/503/504, with
exponential backoff and jitter, honouring ``Retry-After``, within a total
deadline. Other 4xx are never retried. The API key travels only in the
``Authorization`` header; it is not in any log line, repr or error.

Calls only a self-hosted ``capy serve`` has [ours] ask ``GET /v1/me`` once
whether the server is one: deleting backups and projects (``NotSupported`` on
hosted CapyDB) and PITR control. Hosted CapyDB has PITR always on and no
``/pitr`` endpoint: a 404 there for ``GET …/pitr`` of a project that exists is
read as ``PitrStatus(enabled=True, method=None, window unknown)`` with the notice
``HOSTED_PITR``; ``put_pitr`` sends nothing there (on: already, off: ``NotSupported``).
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Generator, Mapping
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from pulumi_capy._version import __version__
from pulumi_capy.api.backend import DEFAULT_JOB_TIMEOUT, JobCallback
from pulumi_capy.api.credentials import check_credential
from pulumi_capy.api.errors import (
    ApiError,
    CapyError,
    ConfigError,
    JobFailed,
    JobTimeout,
    NotFound,
    NotSupported,
    RateLimited,
    ServerError,
    Unreachable,
    error_for_status,
)
from pulumi_capy.api.models import (
    ApiKey,
    ApiRequest,
    Backup,
    BackupDetail,
    CreateApiKey,
    CreateBackup,
    CreatedApiKey,
    CreatePreview,
    CreateProject,
    CreateRestorePoint,
    Identity,
    Job,
    JobProgress,
    JobState,
    PitrChange,
    PitrStatus,
    PreviewCreated,
    PreviewDatabase,
    Project,
    ProjectCreated,
    PutPitr,
    PutScheduledBackup,
    RestorePoint,
    RestoreRequest,
    ScheduledBackup,
    UpdateProject,
)
from pulumi_capy.api.retry import RETRY_STATUSES, HttpRetryPolicy, parse_retry_after
from pulumi_capy.api.urls import DEFAULT_API_URL, normalize_api_url

__all__ = ["DEFAULT_API_URL", "HOSTED_PITR", "CapyClient", "normalize_api_url"]

USER_AGENT = f"pulumi-capy/{__version__}"

# Job polling: start fast, slow down to a cap.
POLL_START = 0.5
POLL_FACTOR = 1.5
POLL_CAP = 10.0

HOSTED_PITR = (
    "hosted CapyDB: PITR is always on (log shipped at least every 60 s, ~30-day window); "
    "its API does not report the window"
)

_IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


def _segment(value: str) -> str:
    """One path segment, quoted so that an id cannot change the path."""
    if value in ("", ".", ".."):
        # httpx (like every URL resolver) collapses dot segments: "v1/x/.." is "v1"
        raise CapyError(f"invalid id {value!r}: an id cannot be empty, '.' or '..'")
    return quote(value, safe="")


def _display_url(url: httpx.URL) -> str:
    """The URL for messages: no user info, no query."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


class _BearerAuth(httpx.Auth):
    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "_BearerAuth(token='**********')"


class CapyClient:
    """The CapyDB API as a ``Backend``.

    ``base_url`` defaults to ``$CAPYDB_API_URL`` or hosted CapyDB; ``api_key``
    to ``$CAPYDB_API_KEY``. ``transport`` (e.g. ``httpx.MockTransport``),
    ``sleep``, ``clock`` and ``rng`` are for tests.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | SecretStr | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retry: HttpRetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        url_source = "base_url" if base_url else "CAPYDB_API_URL"
        url = normalize_api_url(base_url or os.environ.get("CAPYDB_API_URL") or DEFAULT_API_URL)
        if not url.startswith(("https://", "http://")):
            raise ConfigError(f"{url_source} must start with https:// or http://, got {url!r}")
        key_source = "api_key" if api_key is not None else "CAPYDB_API_KEY"
        key = api_key if api_key is not None else os.environ.get("CAPYDB_API_KEY")
        self._key = check_credential(key, source=key_source) if key else None
        self.base_url = url
        self._capy_server: bool | None = None
        self.retry = retry or HttpRetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._http = httpx.Client(
            base_url=url + "/",
            auth=_BearerAuth(self._key) if self._key else None,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def __repr__(self) -> str:
        key = "'capy_live_**********'" if self._key else "None"
        return f"CapyClient(base_url={self.base_url!r}, api_key={key})"

    def __enter__(self) -> CapyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ transport

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: ApiRequest | Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send one call (with retries) and return its JSON object."""
        headers: dict[str, str] = {}
        if method == "POST":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        json_body: Any = None
        if body is not None:
            json_body = body.to_wire() if isinstance(body, ApiRequest) else dict(body)
        retryable = method in _IDEMPOTENT_METHODS or "Idempotency-Key" in headers
        started = self._clock()
        failed = 0
        while True:
            try:
                response = self._http.request(
                    method, path.lstrip("/"), json=json_body, params=params, headers=headers
                )
            except httpx.TransportError as exc:
                url = _display_url(self._http.base_url.join(path.lstrip("/")))
                error: CapyError = Unreachable(
                    f"{method} {url}: {type(exc).__name__}: {exc}; check CAPYDB_API_URL "
                    "(or capy:apiUrl) and that the service is up"
                )
                retry_after = None
            else:
                log.debug("%s %s -> %s", method, _display_url(response.url), response.status_code)
                if response.status_code < HTTPStatus.BAD_REQUEST:
                    return self._json(response)
                error = self._error(response)
                if response.status_code not in RETRY_STATUSES:
                    raise error
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            failed += 1
            wait = (
                self.retry.next_delay(failed, self._clock() - started, retry_after, self._rng)
                if retryable
                else None
            )
            if wait is None:
                raise error
            log.debug("retrying %s %s in %.2fs after: %s", method, path, wait, error)
            self._sleep(wait)

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise ServerError(
                "the answer is not JSON",
                status_code=response.status_code,
                method=response.request.method,
                url=_display_url(response.url),
            ) from exc
        if not isinstance(data, dict):
            raise ServerError(
                "the answer is not a JSON object",
                status_code=response.status_code,
                method=response.request.method,
                url=_display_url(response.url),
            )
        return data

    def _error(self, response: httpx.Response) -> ApiError:
        message: str | None = None
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            message = data["error"]
        elif response.text.strip():
            message = response.text.strip()[:300]
        if message and self._key:  # a server or proxy that echoes the token must not leak it
            message = message.replace(self._key.get_secret_value(), "**********")
        if response.status_code == HTTPStatus.UNAUTHORIZED and self._key is None:
            message = f"{message or 'unauthorized'} (no API key was configured)"
        cls = error_for_status(response.status_code)
        kwargs: dict[str, Any] = {
            "status_code": response.status_code,
            "method": response.request.method,
            "url": _display_url(response.url),
        }
        if cls is RateLimited:
            return RateLimited(
                message,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                **kwargs,
            )
        return cls(message, **kwargs)

    @staticmethod
    def _field(data: Mapping[str, Any], name: str, model: type[ModelT]) -> ModelT:
        try:
            return model.model_validate(data[name])
        except (KeyError, ValidationError) as exc:
            raise ServerError(f"unexpected answer: no valid {name!r} object ({exc})") from exc

    @staticmethod
    def _list(data: Mapping[str, Any], name: str, model: type[ModelT]) -> list[ModelT]:
        try:
            return [model.model_validate(item) for item in data[name] or []]
        except (KeyError, TypeError, ValidationError) as exc:
            raise ServerError(f"unexpected answer: no valid {name!r} list ({exc})") from exc

    @staticmethod
    def _project_path(project_id: str, *rest: str) -> str:
        return "/".join(("v1/projects", _segment(project_id), *rest))

    # ------------------------------------------------------------ restore points

    def list_restore_points(self, project_id: str) -> list[RestorePoint]:
        data = self._request("GET", self._project_path(project_id, "restore-points"))
        return self._list(data, "restore_points", RestorePoint)

    def create_restore_point(self, project_id: str, request: CreateRestorePoint) -> RestorePoint:
        data = self._request("POST", self._project_path(project_id, "restore-points"), body=request)
        return self._field(data, "restore_point", RestorePoint)

    def delete_restore_point(self, project_id: str, restore_point_id: str) -> None:
        self._request(
            "DELETE",
            self._project_path(project_id, "restore-points", _segment(restore_point_id)),
        )

    # ------------------------------------------------------------ restores

    def create_restore(self, project_id: str, request: RestoreRequest) -> Job:
        data = self._request("POST", self._project_path(project_id, "restores"), body=request)
        return self._field(data, "job", Job)

    # ------------------------------------------------------------ backups

    def list_backups(self, project_id: str) -> list[Backup]:
        data = self._request("GET", self._project_path(project_id, "backups"))
        return self._list(data, "backups", Backup)

    def create_backup(self, project_id: str, request: CreateBackup | None = None) -> Job:
        data = self._request(
            "POST", self._project_path(project_id, "backups"), body=request or CreateBackup()
        )
        return self._field(data, "job", Job)

    def _is_capy_server(self) -> bool:
        """Whether the server is a self-hosted ``capy serve``, which can delete backups and
        projects and control PITR [ours]; hosted CapyDB's API cannot. Asked once per client."""
        if self._capy_server is None:
            self._capy_server = self.get_identity().is_pulumi_capy_server
        return self._capy_server

    def get_backup(self, project_id: str, backup_id: str) -> BackupDetail:
        if not self._is_capy_server():
            found = next((b for b in self.list_backups(project_id) if b.id == backup_id), None)
            if found is None:
                raise NotFound(f"backup {backup_id} not found in project {project_id}")
            return BackupDetail.model_validate(found.model_dump())
        data = self._request("GET", self._project_path(project_id, "backups", _segment(backup_id)))
        return self._field(data, "backup", BackupDetail)

    def verify_backup(self, project_id: str, backup_id: str) -> Job:
        if not self._is_capy_server():
            raise NotSupported(
                "verify_backup: CapyDB's API has no call to verify a backup again; it "
                "verifies each backup once, when it is taken"
            )
        path = self._project_path(project_id, "backups", _segment(backup_id), "verify")
        return self._field(self._request("POST", path), "job", Job)

    def delete_backup(self, project_id: str, backup_id: str) -> None:
        if not self._is_capy_server():
            raise NotSupported(
                "delete_backup: CapyDB's API has no call to delete a backup; backups leave "
                "through their schedule's retention_days"
            )
        self._request("DELETE", self._project_path(project_id, "backups", _segment(backup_id)))

    def get_scheduled_backup(self, project_id: str) -> ScheduledBackup | None:
        data = self._request("GET", self._project_path(project_id, "scheduled-backups"))
        schedules = self._list(data, "scheduled_backups", ScheduledBackup)
        return schedules[0] if schedules else None

    def put_scheduled_backup(self, project_id: str, request: PutScheduledBackup) -> ScheduledBackup:
        data = self._request(
            "PUT",
            self._project_path(project_id, "scheduled-backups", "default"),
            body=request,
        )
        return self._field(data, "scheduled_backup", ScheduledBackup)

    # ------------------------------------------------------------ point-in-time recovery

    def _hosted_pitr(self, project_id: str) -> PitrStatus:
        """Hosted CapyDB's PITR: always on, window unknown (after checking the project
        exists, so that an unknown project is still a ``NotFound``)."""
        self.get_project(project_id)
        return PitrStatus(enabled=True, method=None, notices=[HOSTED_PITR])

    def get_pitr(self, project_id: str) -> PitrStatus:
        try:
            data = self._request("GET", self._project_path(project_id, "pitr"))
        except NotFound:
            if self._is_capy_server():
                raise  # a capy serve has the endpoint: the project is unknown
            return self._hosted_pitr(project_id)
        return self._field(data, "pitr", PitrStatus)

    def put_pitr(self, project_id: str, request: PutPitr) -> PitrChange:
        if not self._is_capy_server():
            if not request.enabled:
                raise NotSupported(
                    "put_pitr: hosted CapyDB keeps point-in-time recovery on for every "
                    "project; it cannot be turned off"
                )
            return PitrChange(pitr=self._hosted_pitr(project_id), job=None)
        data = self._request("PUT", self._project_path(project_id, "pitr"), body=request)
        job = self._field(data, "job", Job) if data.get("job") else None
        return PitrChange(pitr=self._field(data, "pitr", PitrStatus), job=job)

    # ------------------------------------------------------------ jobs

    def list_jobs(self, project_id: str, limit: int = 25) -> list[Job]:
        data = self._request("GET", self._project_path(project_id, "jobs"), params={"limit": limit})
        return self._list(data, "jobs", Job)

    def get_job(self, job_id: str) -> Job:
        data = self._request("GET", f"v1/jobs/{_segment(job_id)}")
        return self._field(data, "job", Job)

    def cancel_job(self, job_id: str) -> Job:
        if not self._is_capy_server():
            raise NotSupported("cancel_job: CapyDB's API has no call to cancel a job")
        data = self._request("POST", f"v1/jobs/{_segment(job_id)}/cancel")
        return self._field(data, "job", Job)

    def wait_for_job(
        self,
        job_id: str,
        timeout: float = DEFAULT_JOB_TIMEOUT,
        on_update: JobCallback | None = None,
    ) -> Job:
        started = self._clock()
        interval = POLL_START
        seen: tuple[str, int, JobProgress | None] | None = None
        while True:
            job = self.get_job(job_id)
            if on_update is not None and (str(job.state), job.attempts, job.progress) != seen:
                seen = (str(job.state), job.attempts, job.progress)
                on_update(job)
            if job.state == JobState.completed:
                return job
            if job.state == JobState.failed:
                raise JobFailed(job)
            remaining = timeout - (self._clock() - started)
            if remaining <= 0:
                raise JobTimeout(job, timeout)
            self._sleep(min(interval, remaining))
            interval = min(POLL_CAP, interval * POLL_FACTOR)

    # ------------------------------------------------------------ previews

    def list_preview_databases(self, project_id: str) -> list[PreviewDatabase]:
        data = self._request("GET", self._project_path(project_id, "preview-databases"))
        return self._list(data, "preview_databases", PreviewDatabase)

    def create_preview_database(self, project_id: str, request: CreatePreview) -> PreviewCreated:
        data = self._request(
            "POST", self._project_path(project_id, "preview-databases"), body=request
        )
        return PreviewCreated(
            job=self._field(data, "job", Job),
            preview=self._field(data, "preview", PreviewDatabase),
        )

    def delete_preview_database(self, preview_id: str) -> Job:
        data = self._request("DELETE", f"v1/preview-databases/{_segment(preview_id)}")
        return self._field(data, "job", Job)

    # ------------------------------------------------------------ projects

    def list_projects(self) -> list[Project]:
        return self._list(self._request("GET", "v1/projects"), "projects", Project)

    def get_project(self, project_id: str) -> Project:
        data = self._request("GET", f"v1/projects/{_segment(project_id)}")
        return self._field(data, "project", Project)

    def create_project(self, request: CreateProject) -> ProjectCreated:
        data = self._request("POST", "v1/projects", body=request)
        job = self._field(data, "job", Job) if data.get("job") else None
        return ProjectCreated(project=self._field(data, "project", Project), job=job)

    def update_project(self, project_id: str, request: UpdateProject) -> Project:
        if not self._is_capy_server():
            raise NotSupported(
                "update_project: CapyDB's API has no database_url to change; hosted "
                "projects are managed with CapyDB's console or its Terraform provider"
            )
        data = self._request("PATCH", f"v1/projects/{_segment(project_id)}", body=request)
        return self._field(data, "project", Project)

    def delete_project(self, project_id: str, *, force: bool = False) -> None:
        if not self._is_capy_server():
            raise NotSupported(
                "delete_project: CapyDB's API has no call to delete a project here; "
                "manage hosted projects with CapyDB's console or its Terraform provider"
            )
        self._request(
            "DELETE",
            f"v1/projects/{_segment(project_id)}",
            params={"force": "true"} if force else None,
        )

    # ------------------------------------------------------------ identity and keys

    def get_identity(self) -> Identity:
        data = self._request("GET", "v1/me")
        try:
            return Identity.model_validate(data)
        except ValidationError as exc:
            raise ServerError(f"unexpected answer to GET /v1/me ({exc})") from exc

    def create_api_key(self, organization_id: str, request: CreateApiKey) -> CreatedApiKey:
        data = self._request(
            "POST", f"v1/organizations/{_segment(organization_id)}/api-keys", body=request
        )
        try:
            return CreatedApiKey.model_validate(data)
        except ValidationError as exc:
            raise ServerError(f"unexpected answer to an API key creation ({exc})") from exc

    def list_api_keys(self, organization_id: str) -> list[ApiKey]:
        data = self._request("GET", f"v1/organizations/{_segment(organization_id)}/api-keys")
        return self._list(data, "api_keys", ApiKey)

    def delete_api_key(self, organization_id: str, key_id: str) -> None:
        self._request(
            "DELETE",
            f"v1/organizations/{_segment(organization_id)}/api-keys/{_segment(key_id)}",
        )
