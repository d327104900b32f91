"""``Engine``: the restore surface of the contract, run in this process.

It implements the ``Backend`` protocol with the same models and errors as the
HTTP client, so a caller cannot tell them apart. Everything lives in one
directory: ``engine.db`` (the metadata store), ``blobs/`` (backups),
``previews/`` (SQLite preview databases) and ``tmp/``. Several processes may
use one directory at once.

Calls that start work enqueue a job and return it ``pending``;
``wait_for_job`` runs pending work inline, so embedded mode needs no daemon.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pulumi_capy._version import __version__
from pulumi_capy.api.backend import DEFAULT_JOB_TIMEOUT, JobCallback
from pulumi_capy.api.errors import (
    Conflict,
    FieldError,
    Forbidden,
    InvalidInput,
    JobFailed,
    JobTimeout,
    NotFound,
)
from pulumi_capy.api.models import (
    SCOPES,
    ApiKey,
    Backup,
    CreateApiKey,
    CreateBackup,
    CreatedApiKey,
    CreatePreview,
    CreateProject,
    CreateRestorePoint,
    Identity,
    Job,
    JobState,
    Organization,
    PreviewCreated,
    PreviewDatabase,
    Principal,
    Project,
    ProjectCreated,
    PutScheduledBackup,
    RestorePoint,
    RestorePointKind,
    RestoreRequest,
    ScheduledBackup,
    ServerInfo,
    TargetKind,
)
from pulumi_capy.api.validation import parse_request
from pulumi_capy.engine import keys
from pulumi_capy.engine.blobs import LocalBlobStore
from pulumi_capy.engine.clock import Clock, SystemClock
from pulumi_capy.engine.drivers import driver_for
from pulumi_capy.engine.previews import enqueue_preview_delete
from pulumi_capy.engine.queue import JobRetryPolicy, new_id, new_worker_id
from pulumi_capy.engine.runtime import DEFAULT_ORGANIZATION_ID, Hook, Runtime
from pulumi_capy.engine.stores.contract import BackupRecord, ProjectRecord
from pulumi_capy.engine.stores.sqlite import SqliteStore
from pulumi_capy.engine.ticks import TickReport, run_tick
from pulumi_capy.engine.worker import Worker

__all__ = ["Engine"]

DEFAULT_LEASE_SECONDS = 60.0
PREVIEW_TTL_HOURS = 24
POLL_START = 0.02
POLL_CAP = 0.5


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput([FieldError(field, message)])


class Engine:
    """The restore engine over one directory; a ``Backend``."""

    def __init__(
        self,
        directory: str | Path,
        *,
        clock: Clock | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retry: JobRetryPolicy | None = None,
        hooks: dict[str, Hook] | None = None,
        worker_id: str | None = None,
    ) -> None:
        root = Path(directory).expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(root / "engine.db")
        self.rt = Runtime(
            directory=root,
            store=store,
            blobs=LocalBlobStore(root / "blobs"),
            clock=clock or SystemClock(),
            retry=retry or JobRetryPolicy(),
            lease_seconds=lease_seconds,
            worker_id=worker_id or new_worker_id(),
            hooks=hooks or {},
        )
        store.ensure_organization(DEFAULT_ORGANIZATION_ID, "default", self.rt.now())
        self.rt.sweep_scratch()
        self.worker = Worker(self.rt)

    @property
    def directory(self) -> Path:
        return self.rt.directory

    def __repr__(self) -> str:
        return f"Engine({str(self.rt.directory)!r})"

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.rt.store.close()

    # ------------------------------------------------------------ lookups

    def _project(self, project_id: str) -> ProjectRecord:
        project = self.rt.store.get_project(project_id)
        if project is None:
            raise NotFound(f"project {project_id} not found")
        return project

    def _backup_by_key(self, project_id: str, key: str, field: str) -> BackupRecord:
        backup = self.rt.store.get_backup_by_key(project_id, key)
        if backup is None:
            raise _invalid(field, f"no backup {key!r} in project {project_id}")
        if backup.state == "expired":
            raise _invalid(field, f"backup {key!r} expired; pick a newer backup")
        return backup

    # ------------------------------------------------------------ projects

    def list_projects(self) -> list[Project]:
        return [project.public() for project in self.rt.store.list_projects()]

    def get_project(self, project_id: str) -> Project:
        return self._project(project_id).public()

    def create_project(self, request: CreateProject) -> ProjectCreated:
        request = parse_request(CreateProject, request)
        if request.database_url is None:
            raise _invalid(
                "database_url", "required by the engine: the database this project protects"
            )
        url = request.database_url.get_secret_value()
        driver = driver_for(url)
        info = driver.inspect(url)
        now = self.rt.now()
        project = self.rt.store.insert_project(
            ProjectRecord(
                id=new_id("prj"),
                organization_id=DEFAULT_ORGANIZATION_ID,
                name=request.name,
                environment=request.environment.value,
                database_url=info.url,
                database_kind=info.kind,
                database_name=info.database_name,
                state="active",
                created_at=now,
                updated_at=now,
            )
        )
        return ProjectCreated(project=project.public(), job=None)

    def delete_project(self, project_id: str, *, force: bool = False) -> None:
        project = self._project(project_id)
        backups = self.rt.store.list_backups(project_id, state="completed")
        if backups and not force:
            raise Conflict(
                f"project {project.name} ({project_id}) still has {len(backups)} backup(s); "
                "set force_destroy (force=True) to delete them with the project"
            )
        busy = self.rt.store.busy_jobs(project_id)
        if busy:
            raise Conflict(
                f"project {project_id} has {len(busy)} job(s) pending or running "
                f"({', '.join(job.id for job in busy[:5])}); wait for them, then delete"
            )
        driver = driver_for(project.database_url)
        for preview in self.rt.store.list_previews(project_id):
            driver.drop(
                driver.preview_url(
                    project.database_url, preview.id, self.rt.previews_dir / project_id
                )
            )
        for backup in self.rt.store.list_backups(project_id):
            self.rt.blobs.delete(backup.backup_key)
        self.rt.store.delete_project(project_id)

    # ------------------------------------------------------------ backups

    def list_backups(self, project_id: str) -> list[Backup]:
        self._project(project_id)
        return [backup.public() for backup in self.rt.store.list_backups(project_id)]

    def create_backup(self, project_id: str, request: CreateBackup | None = None) -> Job:
        request = parse_request(CreateBackup, request or CreateBackup())
        self._project(project_id)
        return self._enqueue_backup(project_id, request.label)

    def _enqueue_backup(self, project_id: str, label: str | None) -> Job:
        with self.rt.store.transaction() as tx:
            job_id = self.rt.enqueue(
                tx,
                "project.backup",
                project_id=project_id,
                payload={"backup_id": new_id("bkp"), "label": label},
                locked_resource=f"project:{project_id}",
            )
        return self.get_job(job_id)

    def delete_backup(self, project_id: str, backup_id: str) -> None:
        self._project(project_id)
        backup = self.rt.store.get_backup(backup_id)
        if backup is None or backup.project_id != project_id:
            raise NotFound(f"backup {backup_id} not found in project {project_id}")
        pinned = [
            point
            for point in self.rt.store.list_restore_points(project_id, backup_id=backup_id)
            if point.state == "active"
        ]
        if pinned:
            names = ", ".join(f"{point.id} ({point.label})" for point in pinned)
            raise Conflict(
                f"backup {backup.backup_key} is pinned by restore point(s) {names}; "
                "delete them first"
            )
        users = self.rt.store.jobs_using_backup(backup_id, backup.backup_key)
        if users:
            raise Conflict(
                f"backup {backup.backup_key} is in use by job(s) {', '.join(users)}; "
                "wait for them, then delete"
            )
        self.rt.store.delete_backup(backup_id)
        self.rt.blobs.delete(backup.backup_key)

    def get_scheduled_backup(self, project_id: str) -> ScheduledBackup | None:
        self._project(project_id)
        return self.rt.store.get_schedule(project_id)

    def put_scheduled_backup(self, project_id: str, request: PutScheduledBackup) -> ScheduledBackup:
        request = parse_request(PutScheduledBackup, request)
        self._project(project_id)
        existing = self.rt.store.get_schedule(project_id)
        now = self.rt.now()
        return self.rt.store.put_schedule(
            ScheduledBackup(
                id=existing.id if existing else new_id("sch"),
                project_id=project_id,
                organization_id=DEFAULT_ORGANIZATION_ID,
                cron_hour=request.cron_hour,
                cron_minute=request.cron_minute,
                is_active=request.is_active,
                label=request.label,
                retention_days=request.retention_days,
                created_at=existing.created_at if existing else now,
                updated_at=now,
            )
        )

    # ------------------------------------------------------------ restore points

    def list_restore_points(self, project_id: str) -> list[RestorePoint]:
        self._project(project_id)
        return self.rt.store.list_restore_points(project_id)

    def create_restore_point(self, project_id: str, request: CreateRestorePoint) -> RestorePoint:
        request = parse_request(CreateRestorePoint, request)
        self._project(project_id)
        if request.kind is RestorePointKind.pitr:
            raise _invalid(
                "kind",
                f"point-in-time recovery (kind 'pitr') is not available for project "
                f"{project_id}: the engine has no transaction-log archive yet; pin a backup "
                "with kind 'backup'",
            )
        backup = self._backup_by_key(project_id, request.backup_key or "", "backup_key")
        now = self.rt.now()
        return self.rt.store.insert_restore_point(
            RestorePoint(
                id=new_id("rp"),
                project_id=project_id,
                organization_id=DEFAULT_ORGANIZATION_ID,
                label=request.label,
                note=request.note,
                kind=request.kind.value,
                backup_id=backup.id,
                backup_key=backup.backup_key,
                state="active",
                created_by_actor_id="embedded",
                created_by_actor_kind="engine",
                created_at=now,
                updated_at=now,
            )
        )

    def delete_restore_point(self, project_id: str, restore_point_id: str) -> None:
        self._project(project_id)
        if self.rt.store.get_restore_point(project_id, restore_point_id) is None:
            raise NotFound(f"restore point {restore_point_id} not found in project {project_id}")
        self.rt.store.delete_restore_point(restore_point_id)

    # ------------------------------------------------------------ restores

    def create_restore(self, project_id: str, request: RestoreRequest) -> Job:
        request = parse_request(RestoreRequest, request)
        project = self._project(project_id)
        backup = self._restore_source(project_id, request)
        if backup.verification_state == "failed" and not request.allow_unverified_backup:
            field = "restore_point_id" if request.restore_point_id else "backup_key"
            raise _invalid(
                field,
                f"backup {backup.backup_key} failed verification "
                f"({backup.verification_error or 'no detail'}); set allow_unverified_backup "
                "to restore it anyway",
            )
        payload: dict[str, Any] = {
            "request": request.to_wire(),
            "backup_id": backup.id,
            "source_kind": request.source_kind,
        }
        now = self.rt.now()
        job_id = new_id("job")
        preview_id: str | None = None
        with self.rt.store.transaction() as tx:
            if request.target_kind is TargetKind.project:
                if not request.confirm_project_overwrite:
                    raise Forbidden(
                        f"target_kind 'project' overwrites the database of project "
                        f"{project.name}; set confirm_project_overwrite to true to allow it"
                    )
                lock = f"project:{project_id}"
            elif request.target_kind is TargetKind.preview:
                preview_id = request.preview_id
                preview = self.rt.store.get_preview(preview_id or "")
                if preview is None or preview.state == "deleted":
                    raise _invalid("preview_id", f"no preview database {preview_id}")
                if preview.project_id != project_id:
                    raise _invalid(
                        "preview_id",
                        f"preview {preview_id} belongs to another project, not {project_id}",
                    )
                lock = f"preview:{preview_id}"
            else:
                preview_id = new_id("prv")
                ttl = request.ttl_hours or PREVIEW_TTL_HOURS
                self.rt.store.insert_preview(
                    tx,
                    PreviewDatabase(
                        id=preview_id,
                        project_id=project_id,
                        name=request.preview_name or f"{project.name}-{preview_id[4:12]}",
                        mode="restore",
                        state="creating",
                        source_kind=request.source_kind,
                        source_database=project.database_name,
                        source_backup_key=backup.backup_key,
                        ttl_expires_at=now + timedelta(hours=ttl),
                        created_at=now,
                        updated_at=now,
                    ),
                )
                lock = f"preview:{preview_id}"
            self.rt.enqueue(
                tx,
                "project.restore",
                project_id=project_id,
                payload=payload,
                locked_resource=lock,
                preview_database_id=preview_id,
                job_id=job_id,
            )
        return self.get_job(job_id)

    def _restore_source(self, project_id: str, request: RestoreRequest) -> BackupRecord:
        if request.restore_time is not None:
            raise _invalid(
                "restore_time",
                f"point-in-time recovery is not available for project {project_id}; "
                "restore from a backup_key or a restore_point_id",
            )
        if request.restore_point_id is not None:
            point = self.rt.store.get_restore_point(project_id, request.restore_point_id)
            if point is None:
                raise _invalid(
                    "restore_point_id",
                    f"no restore point {request.restore_point_id} in project {project_id}",
                )
            if point.state != "active":
                raise _invalid(
                    "restore_point_id",
                    f"restore point {point.id} ({point.label}) is {point.state}",
                )
            return self._backup_by_key(project_id, point.backup_key or "", "restore_point_id")
        return self._backup_by_key(project_id, request.backup_key or "", "backup_key")

    # ------------------------------------------------------------ previews

    def list_preview_databases(self, project_id: str) -> list[PreviewDatabase]:
        self._project(project_id)
        return self.rt.store.list_previews(project_id)

    def create_preview_database(self, project_id: str, request: CreatePreview) -> PreviewCreated:
        request = parse_request(CreatePreview, request)
        self._project(project_id)
        now = self.rt.now()
        preview_id = new_id("prv")
        with self.rt.store.transaction() as tx:
            self.rt.store.insert_preview(
                tx,
                PreviewDatabase(
                    id=preview_id,
                    project_id=project_id,
                    name=request.name,
                    mode=request.mode.value,
                    state="creating",
                    source_kind=request.mode.value,
                    ttl_expires_at=now + timedelta(hours=request.ttl_hours),
                    created_at=now,
                    updated_at=now,
                ),
            )
            job_id = self.rt.enqueue(
                tx,
                "preview.create",
                project_id=project_id,
                payload={"mode": request.mode.value, "request": {"target_kind": "new_preview"}},
                locked_resource=f"preview:{preview_id}",
                preview_database_id=preview_id,
            )
        preview = self.rt.store.get_preview(preview_id)
        assert preview is not None
        return PreviewCreated(job=self.get_job(job_id), preview=preview)

    def get_preview_database(self, preview_id: str) -> PreviewDatabase:
        preview = self.rt.store.get_preview(preview_id)
        if preview is None or preview.state == "deleted":
            raise NotFound(f"preview database {preview_id} not found")
        return preview

    def delete_preview_database(self, preview_id: str) -> Job:
        preview = self.get_preview_database(preview_id)
        with self.rt.store.transaction() as tx:
            job_id = enqueue_preview_delete(self.rt, tx, preview)
        return self.get_job(job_id)

    # ------------------------------------------------------------ jobs

    def list_jobs(self, project_id: str, limit: int = 25) -> list[Job]:
        if not 1 <= limit <= 1000:
            raise _invalid("limit", "must be between 1 and 1000")
        self._project(project_id)
        return [job.public() for job in self.rt.store.list_jobs(project_id, limit)]

    def get_job(self, job_id: str) -> Job:
        job = self.rt.store.get_job(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job.public()

    def wait_for_job(
        self,
        job_id: str,
        timeout: float = DEFAULT_JOB_TIMEOUT,
        on_update: JobCallback | None = None,
    ) -> Job:
        """Run pending work inline until the job ends; ``JobFailed`` / ``JobTimeout``."""
        deadline = self.rt.now() + timedelta(seconds=timeout)
        seen: tuple[str, int] | None = None
        interval = POLL_START
        while True:
            job = self.get_job(job_id)
            if on_update is not None and (str(job.state), job.attempts) != seen:
                seen = (str(job.state), job.attempts)
                on_update(job)
            if job.state == JobState.completed:
                return job
            if job.state == JobState.failed:
                raise JobFailed(job)
            if self.rt.now() >= deadline:
                raise JobTimeout(job, timeout)
            if self.worker.run_once():
                interval = POLL_START
                continue
            # nothing runnable here: the job waits for a lock, a backoff or another worker
            remaining = (deadline - self.rt.now()).total_seconds()
            self.rt.clock.sleep(max(0.0, min(interval, remaining)))
            interval = min(POLL_CAP, interval * 2)

    def run_pending(self) -> int:
        """Run every job that is runnable now, inline; return how many ran."""
        count = 0
        while self.worker.run_once():
            count += 1
        return count

    def run_worker(
        self, stop: threading.Event, poll_interval: float = 1.0, tick_interval: float = 60.0
    ) -> None:
        """The loop of a worker daemon: run jobs and ``tick`` until ``stop`` is set."""
        next_tick = self.rt.now()
        while not stop.is_set():
            now = self.rt.now()
            if now >= next_tick:
                self.tick(now)
                next_tick = now + timedelta(seconds=tick_interval)
            if not self.worker.run_once():
                stop.wait(poll_interval)

    def tick(self, now: datetime | None = None) -> TickReport:
        """Time-driven work: due scheduled backups, retention, preview TTLs, lost leases,
        and the scratch files of workers that were killed (a long-running worker would
        otherwise keep a killed sibling's unpacked dumps until it restarts)."""
        self.rt.sweep_scratch()
        return run_tick(self.rt, self.worker, now or self.rt.now())

    # ------------------------------------------------------------ identity and keys

    def get_identity(self) -> Identity:
        organization = self.rt.store.get_organization(DEFAULT_ORGANIZATION_ID) or {}
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

    def create_api_key(self, organization_id: str, request: CreateApiKey) -> CreatedApiKey:
        """Mint a key; its plaintext is in the answer and nowhere else, ever."""
        return keys.create_key(self.rt, organization_id, parse_request(CreateApiKey, request))

    def list_api_keys(self, organization_id: str) -> list[ApiKey]:
        return keys.list_keys(self.rt, organization_id)

    def delete_api_key(self, organization_id: str, key_id: str) -> None:
        """Revoke the key: it stops working at once and stays listed as revoked."""
        keys.revoke_key(self.rt, organization_id, key_id)

    def authenticate(self, token: str) -> Principal | None:
        """The principal a ``capy_live_`` key stands for, or ``None``."""
        return keys.authenticate(self.rt, token)
