"""``Engine``: the restore surface of the contract, run in this process.

It implements the ``Backend`` protocol with the same models and errors as the
HTTP client, so a caller cannot tell them apart. Everything lives in one
directory: ``engine.db`` (the metadata store), ``blobs/`` (backups),
``previews/`` (SQLite preview databases) and ``tmp/``. Several processes may
use one directory at once. With ``store_url`` (default: ``CAPY_STORE_URL``), a
``postgresql://`` URL, the metadata is in that PostgreSQL database instead, shared
by engines on several hosts; the directory keeps the rest, as this host's.

Calls that start work enqueue a job and return it ``pending``;
``wait_for_job`` runs pending work inline, so embedded mode needs no daemon.

``Engine`` is a facade: each noun's rules live in its own module (``projects``,
``backups``, ``restore_points``, ``restores``, ``previews``, ``keys``), as
functions over the ``Runtime``; the engine owns the runtime, the in-process
worker and the waiting for jobs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

from pulumi_capy.api.backend import DEFAULT_JOB_TIMEOUT, JobCallback
from pulumi_capy.api.errors import (
    ConfigError,
    Conflict,
    FieldError,
    InvalidInput,
    JobFailed,
    JobTimeout,
    NotFound,
)
from pulumi_capy.api.models import (
    ApiKey,
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
    Principal,
    Project,
    ProjectCreated,
    PutPitr,
    PutScheduledBackup,
    RestorePoint,
    RestoreRequest,
    ScheduledBackup,
    UpdateProject,
)
from pulumi_capy.api.validation import parse_request
from pulumi_capy.engine import backups, gc, keys, previews, projects, restore_points, restores
from pulumi_capy.engine.blobs import open_blob_store
from pulumi_capy.engine.clock import Clock, SystemClock
from pulumi_capy.engine.handlers import HANDLERS
from pulumi_capy.engine.pitr import archive, control
from pulumi_capy.engine.private import private_directory
from pulumi_capy.engine.queue import JobRetryPolicy, new_worker_id
from pulumi_capy.engine.runtime import DEFAULT_ORGANIZATION_ID, Hook, Runtime
from pulumi_capy.engine.stores.contract import Store, sqlite_dir_prefix
from pulumi_capy.engine.stores.sqlite import open_store
from pulumi_capy.engine.ticks import TickReport, run_tick
from pulumi_capy.engine.worker import Worker
from pulumi_capy.engine.workers import HEARTBEAT_INTERVAL, Heartbeat

__all__ = ["Engine"]

DEFAULT_LEASE_SECONDS = 60.0
POLL_START = 0.02
POLL_CAP = 0.5
MAX_JOBS_LISTED = 1000  # the most jobs one list_jobs answers
STREAMS_INTERVAL = 1.0  # seconds between a worker's looks for a project's log to stream
WAKE_SLICE = 0.1  # how long an idle worker waits for work at once (then looks at ``stop``)
STORE_URL_ENV = "CAPY_STORE_URL"


def _open_store(root: Path, store_url: str | None) -> Store:
    """The store of the engine directory ``root`` (made when missing), or the PostgreSQL
    store at ``store_url`` (the directory stays this host's scratch and blobs);
    ``ConfigError`` naming the path when ``root`` is not a directory or its ``engine.db``
    not a database, or naming the URL (never its password) when it cannot be opened."""
    if root.exists() and not root.is_dir():
        raise ConfigError(
            f"the engine directory {root} is a file, not a directory: give the directory "
            "where the engine keeps engine.db and blobs/ (made when missing)"
        )
    try:
        private_directory(root)
    except (FileExistsError, NotADirectoryError):  # a parent of root is a file
        raise ConfigError(
            f"cannot make the engine directory {root}: a part of that path is a file"
        ) from None
    if store_url:
        from pulumi_capy.engine.stores.postgres import is_postgres_url, open_postgres_store
        from pulumi_capy.engine.stores.postgres_base import redact

        if not is_postgres_url(store_url):
            raise ConfigError(
                f"{STORE_URL_ENV}={redact(store_url)} is not a postgresql:// URL: unset it to "
                "keep the metadata in the engine directory (SQLite)"
            )
        return open_postgres_store(store_url)
    return open_store(root / "engine.db")


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
        store_url: str | None = None,
        sqlite_dirs: Sequence[str | Path] | None = None,
    ) -> None:
        root = Path(directory).expanduser().resolve()
        if store_url is None:
            store_url = os.environ.get(STORE_URL_ENV, "").strip() or None
        store = _open_store(root, store_url)
        self.rt = Runtime(
            directory=root,
            store=store,
            blobs=open_blob_store(root),
            clock=clock or SystemClock(),
            retry=retry or JobRetryPolicy(),
            lease_seconds=lease_seconds,
            worker_id=worker_id or new_worker_id(),
            hooks=hooks or {},
            sqlite_dirs=(
                tuple(sqlite_dir_prefix(path) for path in sqlite_dirs)
                if sqlite_dirs is not None
                else None
            ),
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

    # ------------------------------------------------------------ projects

    def list_projects(self) -> list[Project]:
        return projects.list_projects(self.rt)

    def get_project(self, project_id: str) -> Project:
        return projects.get_project(self.rt, project_id)

    def create_project(self, request: CreateProject) -> ProjectCreated:
        return projects.create_project(self.rt, parse_request(CreateProject, request))

    def update_project(self, project_id: str, request: UpdateProject) -> Project:
        return projects.update_project(self.rt, project_id, parse_request(UpdateProject, request))

    def delete_project(self, project_id: str, *, force: bool = False) -> None:
        projects.delete_project(self.rt, project_id, force=force)

    # ------------------------------------------------------------ backups

    def list_backups(self, project_id: str) -> list[Backup]:
        return backups.list_backups(self.rt, project_id)

    def create_backup(self, project_id: str, request: CreateBackup | None = None) -> Job:
        request = parse_request(CreateBackup, request or CreateBackup())
        return self.get_job(backups.create_backup(self.rt, project_id, request.label))

    def get_backup(self, project_id: str, backup_id: str) -> BackupDetail:
        return backups.get_backup(self.rt, project_id, backup_id)

    def verify_backup(self, project_id: str, backup_id: str) -> Job:
        return self.get_job(backups.verify_backup(self.rt, project_id, backup_id))

    def delete_backup(self, project_id: str, backup_id: str) -> None:
        backups.delete_backup(self.rt, project_id, backup_id)

    def get_scheduled_backup(self, project_id: str) -> ScheduledBackup | None:
        return backups.get_schedule(self.rt, project_id)

    def put_scheduled_backup(self, project_id: str, request: PutScheduledBackup) -> ScheduledBackup:
        request = parse_request(PutScheduledBackup, request)
        return backups.put_schedule(self.rt, project_id, request)

    # ------------------------------------------------------------ restore points

    def list_restore_points(self, project_id: str) -> list[RestorePoint]:
        return restore_points.list_restore_points(self.rt, project_id)

    def create_restore_point(self, project_id: str, request: CreateRestorePoint) -> RestorePoint:
        request = parse_request(CreateRestorePoint, request)
        return restore_points.create_restore_point(self.rt, project_id, request)

    def delete_restore_point(self, project_id: str, restore_point_id: str) -> None:
        restore_points.delete_restore_point(self.rt, project_id, restore_point_id)

    # ------------------------------------------------------------ restores

    def create_restore(self, project_id: str, request: RestoreRequest) -> Job:
        request = parse_request(RestoreRequest, request)
        return self.get_job(restores.create_restore(self.rt, project_id, request))

    # ------------------------------------------------------------ previews

    def list_preview_databases(self, project_id: str) -> list[PreviewDatabase]:
        return previews.list_previews(self.rt, project_id)

    def create_preview_database(self, project_id: str, request: CreatePreview) -> PreviewCreated:
        request = parse_request(CreatePreview, request)
        job_id, preview = previews.create_preview(self.rt, project_id, request)
        return PreviewCreated(job=self.get_job(job_id), preview=preview)

    def get_preview_database(self, preview_id: str) -> PreviewDatabase:
        return previews.get_preview(self.rt, preview_id)

    def delete_preview_database(self, preview_id: str) -> Job:
        return self.get_job(previews.delete_preview(self.rt, preview_id))

    # ------------------------------------------------------------ point-in-time recovery

    def get_pitr(self, project_id: str) -> PitrStatus:
        return control.status(self.rt, projects.require(self.rt, project_id))

    def put_pitr(self, project_id: str, request: PutPitr) -> PitrChange:
        """Turn PITR on (its first base backup's job in the answer) or off."""
        request = parse_request(PutPitr, request)
        project = projects.require(self.rt, project_id)
        job = None
        if request.enabled:
            job_id = control.enable(self.rt, project, request)
            job = self.get_job(job_id) if job_id else None
        else:
            control.disable(self.rt, project)
        return PitrChange(pitr=control.status(self.rt, project), job=job)

    def wal_push(self, project_id: str, path: str | Path) -> None:
        """Archive one WAL file (``archive_command = 'capy wal-push --project ID %p'``)."""
        projects.require(self.rt, project_id)
        archive.check_pushable(self.rt, project_id)
        archive.store(self.rt, project_id, Path(path))
        archive.note_pushed(self.rt, project_id, Path(path))

    def wal_fetch(self, project_id: str, name: str, destination: str | Path) -> None:
        """Write archived WAL file ``name`` to ``destination`` (``restore_command``)."""
        projects.require(self.rt, project_id)
        archive.fetch(self.rt, project_id, name, Path(destination))

    # ------------------------------------------------------------ jobs

    def list_jobs(self, project_id: str, limit: int = 25) -> list[Job]:
        if not 1 <= limit <= MAX_JOBS_LISTED:
            raise InvalidInput([FieldError("limit", f"must be between 1 and {MAX_JOBS_LISTED}")])
        projects.require(self.rt, project_id)
        return [job.public() for job in self.rt.store.list_jobs(project_id, limit)]

    def get_job(self, job_id: str) -> Job:
        job = self.rt.store.get_job(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job.public()

    def cancel_job(self, job_id: str) -> Job:
        """Fail a pending job before any worker runs it (its failure hook runs: a new
        preview it would have made is marked failed, a verification it would have done
        leaves the backup failed, "cancelled"). A running or ended job is a ``Conflict``."""
        job = self.rt.store.get_job(job_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        if job.state == JobState.running:
            raise Conflict(
                f"job {job_id} is running; a running job is not stopped part way: wait for it"
            )
        if job.state != JobState.pending:
            raise Conflict(f"job {job_id} is {job.state} already: nothing to cancel")
        error = "cancelled by request before it ran"
        with self.rt.store.transaction() as tx:
            if not self.rt.store.cancel_pending_job(tx, job_id, error=error, now=self.rt.now()):
                raise Conflict(f"job {job_id} started meanwhile; wait for it")
            handler = HANDLERS.get(str(job.type))
            if handler is not None:
                handler.on_failed(self.rt, tx, job, error)
        return self.get_job(job_id)

    def wait_for_job(
        self,
        job_id: str,
        timeout: float = DEFAULT_JOB_TIMEOUT,
        on_update: JobCallback | None = None,
    ) -> Job:
        """Run pending work inline until the job ends; ``JobFailed`` / ``JobTimeout``."""
        deadline = self.rt.now() + timedelta(seconds=timeout)
        seen: tuple[str, int, JobProgress | None] | None = None

        def update(job: Job) -> None:
            nonlocal seen
            if on_update is not None and (str(job.state), job.attempts, job.progress) != seen:
                seen = (str(job.state), job.attempts, job.progress)
                on_update(job)

        # a job run inline below reports its progress as it goes
        self.rt.progress_listeners[job_id] = update
        try:
            return self._wait(job_id, deadline, timeout, update)
        finally:
            self.rt.progress_listeners.pop(job_id, None)

    def _wait(self, job_id: str, deadline: datetime, timeout: float, update: JobCallback) -> Job:
        interval = POLL_START
        while True:
            job = self.get_job(job_id)
            update(job)
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

    def collect_garbage(
        self, *, dry_run: bool = False, min_age: timedelta = gc.DEFAULT_MIN_AGE
    ) -> gc.GarbageReport:
        """[ours, not an API call] Remove the blobs no record refers to (``engine.gc``)."""
        return gc.collect_garbage(self.rt, dry_run=dry_run, min_age=min_age)

    def run_pending(self) -> int:
        """Run every job that is runnable now, inline; return how many ran."""
        count = 0
        while self.worker.run_once():
            count += 1
        return count

    def run_worker(
        self,
        stop: threading.Event,
        poll_interval: float = 1.0,
        tick_interval: float = 60.0,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        """The loop of a worker daemon: run jobs and ``tick`` until ``stop`` is set, and
        stream the log of every project with PITR on whose lease this worker takes. It is
        registered in the store meanwhile (``engine.workers``), heartbeating."""
        from pulumi_capy.engine.pitr.stream import StreamManager  # psycopg, workers only

        next_tick = self.rt.now()
        streams = StreamManager(self.rt)
        next_streams = 0.0
        heartbeat = Heartbeat(
            self.rt.store,
            self.rt.clock,
            self.rt.worker_id,
            self.rt.sqlite_dirs,
            heartbeat_interval,
        )
        try:
            with heartbeat:
                while not stop.is_set():
                    now = self.rt.now()
                    if now >= next_tick:
                        self.tick(now)
                        next_tick = now + timedelta(seconds=tick_interval)
                    if time.monotonic() >= next_streams:
                        streams.step()
                        next_streams = time.monotonic() + STREAMS_INTERVAL
                    if not self.worker.run_once():
                        self._idle(stop, min(poll_interval, STREAMS_INTERVAL))
        finally:
            streams.close()

    def _idle(self, stop: threading.Event, seconds: float) -> None:
        """Wait up to ``seconds`` for the store to say work may be claimable (PostgreSQL's
        NOTIFY wakes at once; SQLite's store only sleeps), looking at ``stop`` between."""
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.rt.store.wait_for_work(min(WAKE_SLICE, remaining)):
                return

    def tick(self, now: datetime | None = None) -> TickReport:
        """Time-driven work: due scheduled backups, retention, preview TTLs, lost leases,
        and the scratch files of workers that were killed (a long-running worker would
        otherwise keep a killed sibling's unpacked dumps until it restarts)."""
        self.rt.sweep_scratch()
        return run_tick(self.rt, self.worker, now or self.rt.now())

    # ------------------------------------------------------------ identity and keys

    def get_identity(self) -> Identity:
        return keys.identity(self.rt)

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
