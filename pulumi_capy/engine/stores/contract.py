"""What the engine asks of its metadata store: named operations over plain values.

A store keeps organizations, projects, backups, restore points, schedules,
previews, API keys and the job queue. Several processes may use one store at
once. Writes that must happen together run in one ``transaction()``: callers
get an opaque ``Transaction`` and pass it to the operations that take one,
never touching what is behind it. Operations without a transaction argument
commit on their own.

The queue's rules are part of the contract: claiming a job is atomic and
refuses a job whose ``locked_resource`` a running job holds; every write to a
claimed job is fenced by its ``Fence`` (a worker whose lease was taken over
changes nothing). The shared suite in ``tests/engine/stores`` checks every
implementation against these rules.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from pulumi_capy.api.models import (
    Backup,
    Job,
    JobProgress,
    JobState,
    PreviewDatabase,
    Project,
    RestorePoint,
    ScheduledBackup,
)

__all__ = [
    "PREVIEW_CONNECTION_FIELDS",
    "BackupRecord",
    "BaseBackupRecord",
    "Fence",
    "JobOutput",
    "JobRecord",
    "NewJob",
    "PitrGeneration",
    "PitrRecord",
    "PreviewSource",
    "ProjectRecord",
    "Store",
    "Transaction",
    "WalSegmentRecord",
    "WorkerRecord",
    "sqlite_dir_of",
    "sqlite_dir_prefix",
]

# the PreviewDatabase fields that say how to reach it (a driver's ``connection_fields``)
PREVIEW_CONNECTION_FIELDS = frozenset(
    {"database_name", "role_name", "public_host", "direct_port", "pooled_port", "ssl_mode"}
)


class ProjectRecord(Project):
    database_url: str

    def __repr__(self) -> str:  # the URL may carry a password
        return f"ProjectRecord(id={self.id!r}, name={self.name!r}, kind={self.database_kind!r})"

    __str__ = __repr__

    def public(self) -> Project:
        return Project.model_validate(self.model_dump(exclude={"database_url"}))


class BackupRecord(Backup):
    sha256: str | None = None
    blob_bytes: int | None = None
    format: str | None = None
    created_by_job_id: str | None = None

    def public(self) -> Backup:
        return Backup.model_validate(self.model_dump())


class JobRecord(Job):
    payload: dict[str, Any] = {}
    run_after: datetime | None = None
    lease_expires_at: datetime | None = None
    # the directory of its project's SQLite file ("/srv/app/"); None: any worker may claim it
    sqlite_dir: str | None = None

    def public(self) -> Job:
        return Job.model_validate(self.model_dump(exclude={"payload", "sqlite_dir"}))

    @property
    def fence(self) -> Fence:
        return Fence(self.id, self.claimed_by or "", self.attempts)


class PitrGeneration(BaseModel):
    """[SQLite] A stretch of a project's log shipped without a break: a snapshot starts
    it; a break in continuity that cannot be proven away (the replicator restarted, the
    log was reset behind its back) ends it and starts the next."""

    number: int
    started_at: datetime
    reason: str  # why it started
    ended_at: datetime | None = None  # the last moment it covers; None while current
    end_position: int | None = None  # how far it was shipped, once ended


class PitrRecord(BaseModel):
    """A project's point-in-time recovery: whether it is on, who streams its log (a lease,
    like a job's), how far the log is kept in blobs, and what needs attention."""

    project_id: str
    enabled: bool
    method: str  # PitrMethod
    slot_name: str | None = None
    streamer_id: str | None = None  # the worker holding the streaming lease
    heartbeat_at: datetime | None = None
    lease_expires_at: datetime | None = None
    # the log is durable in blobs up to this LSN (bytes from the start of the log) …
    streamed_lsn: int | None = None
    # … which holds every commit made at or before this time (the server's clock)
    covered_at: datetime | None = None
    # base backups starting before this LSN cannot reach the present: a gap lies between
    floor_lsn: int = 0
    notices: list[str] = []
    enabled_at: datetime | None = None
    updated_at: datetime | None = None
    # [SQLite] the log's generations, oldest first (positions are generation << 40 | frame)
    generations: list[PitrGeneration] = []


class WalSegmentRecord(BaseModel):
    """One file of a project's log archive: a segment (``partial`` while it is the one
    being written, replaced as it grows) or a timeline history file."""

    project_id: str
    name: str  # 000000010000000000000003, 00000002.history
    blob_key: str
    sha256: str
    size_bytes: int
    blob_bytes: int
    partial: bool = False
    created_at: datetime


class BaseBackupRecord(BaseModel):
    """A base backup of a project's cluster (``pg_basebackup``), the start of a PITR."""

    id: str
    project_id: str
    blob_key: str
    sha256: str
    size_bytes: int
    blob_bytes: int
    timeline: int
    start_lsn: int
    stop_lsn: int
    ended_at: datetime  # the server's clock once it ended: the earliest time it restores to
    server_major: int
    superuser: str  # who the recovery instance connects as
    state: str = "completed"  # or expired
    created_by_job_id: str | None = None
    created_at: datetime


class WorkerRecord(BaseModel):
    """A worker loop (one thread of a ``capy worker`` or ``capy serve``) as it registered
    itself: alive while it heartbeats, ``stopped_at`` once it ended on its own."""

    id: str  # its worker id, the ``claimed_by`` of the jobs it claims
    host: str
    pid: int
    thread: str
    # the directories of the SQLite files it may open ("/srv/app/"); None: all of them
    sqlite_dirs: list[str] | None = None
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None = None


def sqlite_dir_of(path: str | Path) -> str:
    """The directory of a SQLite file as jobs and workers name it: absolute, with a
    trailing ``/`` (so that ``/a/`` is no prefix of ``/ab/``)."""
    return os.path.join(os.path.abspath(os.path.dirname(path)), "")


def sqlite_dir_prefix(directory: str | Path) -> str:
    """A directory a worker declares, named like ``sqlite_dir_of`` names a file's."""
    return os.path.join(os.path.abspath(directory), "")


@dataclass(frozen=True)
class Fence:
    """Who may still write a claimed job: its id, the worker, the attempt."""

    job_id: str
    worker_id: str
    attempt: int


@dataclass(frozen=True)
class NewJob:
    """A job to queue, ``pending`` until ``run_after``."""

    id: str
    type: str
    project_id: str
    organization_id: str
    payload: Mapping[str, Any]
    locked_resource: str | None
    max_attempts: int
    created_at: datetime
    run_after: datetime
    preview_database_id: str | None = None
    # the directory of the project's SQLite file (``sqlite_dir_of``); None: not SQLite
    sqlite_dir: str | None = None


@dataclass(frozen=True)
class JobOutput:
    """What an attempt printed, as kept on the job (already cut to size)."""

    exit_code: int | None
    stdout: str | None
    stderr: str | None


@dataclass(frozen=True)
class PreviewSource:
    """What a restored preview was restored from."""

    kind: str | None
    database: str | None
    backup_key: str | None
    restore_time: datetime | None = None


class Transaction(Protocol):
    """An open write transaction of one store: all of its writes commit, or none.

    Opaque: pass it to that store's operations, nothing else."""


class Store(Protocol):
    """The metadata store of one engine. Thread-safe."""

    # ------------------------------------------------------------ lifecycle

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[Transaction]:
        """One write transaction: all or nothing; reads in it see its writes."""
        ...

    @property
    def schema_version(self) -> int:
        """The number of the last migration applied."""
        ...

    def data_version(self) -> int:
        """A number that changes whenever anyone (this process or another) commits."""
        ...

    def wait_for_work(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a commit that may have made a job claimable;
        True when woken by one (a store that cannot tell sleeps and returns False)."""
        ...

    # ------------------------------------------------------------ organizations and keys

    def ensure_organization(self, organization_id: str, name: str, now: datetime) -> None: ...

    def get_organization(self, organization_id: str) -> dict[str, Any] | None: ...

    def insert_api_key(self, key: Mapping[str, Any]) -> None:
        """Keep a new key: the fields of ``ApiKey`` and its ``key_hash``."""
        ...

    def list_api_keys(self, organization_id: str) -> list[dict[str, Any]]: ...

    def get_api_key(self, key_id: str) -> dict[str, Any] | None: ...

    def find_api_key(self, key_hash: str) -> dict[str, Any] | None: ...

    def revoke_api_key(self, key_id: str, now: datetime) -> bool:
        """False when it was revoked already."""
        ...

    def touch_api_key(self, key_id: str, now: datetime) -> None: ...

    # ------------------------------------------------------------ projects

    def insert_project(self, project: ProjectRecord) -> ProjectRecord:
        """``Conflict`` when the organization has a project of that name. The store keeps
        ``database_url`` sealed (``engine.secret_keys``), never its plaintext; the
        projects it returns carry it opened."""
        ...

    def get_project(self, project_id: str) -> ProjectRecord | None: ...

    def list_projects(self) -> list[ProjectRecord]: ...

    def delete_project(self, project_id: str) -> None:
        """Remove the project and every row that belongs to it."""
        ...

    def update_project_database(
        self, project_id: str, database_url: str, database_name: str, now: datetime
    ) -> None:
        """Point the project at ``database_url`` (kept sealed, as on insert)."""
        ...

    # ------------------------------------------------------------ backups

    def record_backup(self, tx: Transaction, backup: BackupRecord) -> None: ...

    def mark_backup_verified(self, tx: Transaction, backup_id: str, now: datetime) -> None: ...

    def mark_backup_verification_failed(
        self, tx: Transaction, backup_id: str, error: str
    ) -> None: ...

    def get_backup(self, backup_id: str) -> BackupRecord | None: ...

    def get_backup_by_key(self, project_id: str, backup_key: str) -> BackupRecord | None: ...

    def list_backups(self, project_id: str, *, state: str | None = None) -> list[BackupRecord]:
        """Oldest first."""
        ...

    def expire_backup(self, backup_id: str, now: datetime) -> bool:
        """Mark a backup and the restore points pinned to it expired; False if it was already."""
        ...

    def delete_backup(self, backup_id: str) -> None: ...

    def jobs_using_backup(self, backup_id: str, backup_key: str) -> list[str]:
        """The pending or running jobs that read the backup."""
        ...

    # ------------------------------------------------------------ restore points

    def insert_restore_point(self, point: RestorePoint) -> RestorePoint: ...

    def get_restore_point(self, project_id: str, restore_point_id: str) -> RestorePoint | None: ...

    def list_restore_points(
        self, project_id: str, *, backup_id: str | None = None
    ) -> list[RestorePoint]: ...

    def delete_restore_point(self, restore_point_id: str) -> bool:
        """Delete it unless a pending or running restore uses it (``Conflict``)."""
        ...

    # ------------------------------------------------------------ scheduled backups

    def get_schedule(self, project_id: str) -> ScheduledBackup | None: ...

    def put_schedule(self, schedule: ScheduledBackup) -> ScheduledBackup:
        """Create the project's schedule or replace it (keeping its id and creation time)."""
        ...

    def active_schedules(self) -> list[ScheduledBackup]: ...

    def retention_schedules(self) -> list[ScheduledBackup]: ...

    def record_schedule_run(
        self,
        tx: Transaction,
        schedule_id: str,
        expected_last_run: datetime | None,
        job_id: str,
        now: datetime,
    ) -> bool:
        """Record a run; False when another process recorded one since ``expected_last_run``."""
        ...

    # ------------------------------------------------------------ previews

    def insert_preview(self, tx: Transaction, preview: PreviewDatabase) -> None:
        """``Conflict`` when a live preview of the project has that name."""
        ...

    def get_preview(self, preview_id: str) -> PreviewDatabase | None: ...

    def list_previews(self, project_id: str) -> list[PreviewDatabase]:
        """The project's previews that are not deleted, oldest first."""
        ...

    def previews_past_ttl(self, now: datetime) -> list[PreviewDatabase]: ...

    def mark_preview_ready(
        self,
        tx: Transaction,
        preview_id: str,
        connection: Mapping[str, Any],
        now: datetime,
        source: PreviewSource | None = None,
    ) -> None:
        """Ready, reachable as ``connection`` (``PREVIEW_CONNECTION_FIELDS``), no error."""
        ...

    def mark_preview_failed(
        self, tx: Transaction, preview_id: str, error: str, now: datetime
    ) -> None: ...

    def mark_preview_deleting(self, tx: Transaction, preview_id: str, now: datetime) -> None: ...

    def mark_preview_deleted(self, tx: Transaction, preview_id: str, now: datetime) -> None: ...

    def outstanding_preview_deletion(self, preview_id: str) -> str | None:
        """The id of a pending or running job deleting the preview, if any."""
        ...

    # ------------------------------------------------------------ jobs

    def enqueue(self, tx: Transaction, job: NewJob) -> None: ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def list_jobs(self, project_id: str, limit: int) -> list[JobRecord]:
        """The project's newest ``limit`` jobs, newest first."""
        ...

    def busy_jobs(self, project_id: str) -> list[JobRecord]:
        """Every pending or running job of the project, newest first."""
        ...

    def verification_outstanding(self, backup_id: str) -> bool:
        """Whether a pending or running job verifies the backup."""
        ...

    def cancel_pending_job(
        self, tx: Transaction, job_id: str, *, error: str, now: datetime
    ) -> bool:
        """Fail the job if it is still pending (no worker holds it); whether it was."""
        ...

    def outstanding_verification(self, backup_id: str) -> str | None:
        """The id of a pending or running job that verifies the backup, if any."""
        ...

    def claim_job(
        self,
        worker_id: str,
        now: datetime,
        lease_until: datetime,
        only_id: str | None = None,
        *,
        sqlite_dirs: Sequence[str] | None = None,
    ) -> JobRecord | None:
        """Claim the oldest runnable job (or ``only_id``) whose lock no running job holds.

        ``sqlite_dirs`` (``sqlite_dir_prefix`` names) limits the claim to jobs of SQLite
        files under one of them (and jobs of no SQLite file); ``[]``: none of a SQLite
        file; None: any. The match is on whole path components, case-sensitive; ``only_id``
        ignores it (the caller runs its own job)."""
        ...

    def running_jobs(self) -> list[JobRecord]:
        """Every running job, oldest claim first (``claimed_by`` says whose)."""
        ...

    def set_job_progress(self, fence: Fence, progress: JobProgress, now: datetime) -> bool:
        """Note the running attempt's current step; False when the lease was taken over."""
        ...

    def renew_lease(self, fence: Fence, now: datetime, lease_until: datetime) -> bool:
        """False when the lease was taken over."""
        ...

    def complete_job(
        self,
        tx: Transaction,
        fence: Fence,
        *,
        result: Mapping[str, Any],
        output: JobOutput,
        now: datetime,
    ) -> bool:
        """The job completed; False (nothing written) when the lease was taken over."""
        ...

    def fail_job(
        self,
        tx: Transaction,
        fence: Fence,
        *,
        error: str,
        classification: str,
        output: JobOutput,
        now: datetime,
        retry_at: datetime | None,
    ) -> bool:
        """The attempt failed: ``pending`` again from ``retry_at``, or ``failed`` for good
        when ``retry_at`` is None; False (nothing written) when the lease was taken over."""
        ...

    def defer_job(self, fence: Fence, *, run_after: datetime, note: str, now: datetime) -> bool:
        """Back to ``pending`` until ``run_after``, the attempt not counted; False when the
        lease was taken over."""
        ...

    def release_job(self, fence: Fence, *, note: str, now: datetime) -> bool:
        """Hand the job back: ``pending`` and claimable at once, the attempt not counted
        (its worker was stopped, e.g. Ctrl-C, not failed); False when the lease was taken
        over."""
        ...

    def rescue_expired_leases(self, now: datetime, error: str) -> list[tuple[JobRecord, JobState]]:
        """Return each running job whose lease expired to ``pending`` (or ``failed`` when it
        has no attempts left); ``error`` is formatted with ``worker`` and ``attempt``.
        Returns the jobs and their new states."""
        ...

    # ------------------------------------------------------------ point-in-time recovery

    def get_pitr(self, project_id: str) -> PitrRecord | None: ...

    def put_pitr(self, record: PitrRecord) -> None:
        """Create or replace the project's PITR row."""
        ...

    def update_pitr(self, project_id: str, fields: Mapping[str, Any]) -> None: ...

    def enabled_pitr(self) -> list[PitrRecord]:
        """Every project with PITR on."""
        ...

    def pitr_records(self) -> list[PitrRecord]:
        """Every project that has had PITR on (its archive stays until retention)."""
        ...

    def claim_streamer(
        self, project_id: str, worker_id: str, now: datetime, lease_until: datetime
    ) -> bool:
        """Take (or renew) the lease on streaming the project's log: True when nobody else
        holds an unexpired one and PITR is on."""
        ...

    def release_streamer(self, project_id: str, worker_id: str) -> None: ...

    def record_streamed(
        self, project_id: str, worker_id: str, streamed_lsn: int, covered_at: datetime
    ) -> bool:
        """Move the durable end of the log forward; False (nothing written) when the
        worker no longer holds the lease."""
        ...

    def put_wal_segment(self, segment: WalSegmentRecord) -> WalSegmentRecord | None:
        """Record a log file, replacing a partial one of that name; returns what was
        recorded before under that name (None if nothing). ``NotFound`` when the project
        has no PITR row (deleted meanwhile): nothing is recorded."""
        ...

    def get_wal_segment(self, project_id: str, name: str) -> WalSegmentRecord | None: ...

    def list_wal_segments(self, project_id: str, *, prefix: str = "") -> list[WalSegmentRecord]:
        """In name order (log order within a timeline); only names starting with ``prefix``
        when given (a segment's pieces)."""
        ...

    def delete_wal_segment(self, project_id: str, name: str) -> None: ...

    def insert_base_backup(self, tx: Transaction, backup: BaseBackupRecord) -> None: ...

    def list_base_backups(
        self, project_id: str, *, state: str | None = "completed"
    ) -> list[BaseBackupRecord]:
        """Oldest first."""
        ...

    def expire_base_backup(self, backup_id: str) -> bool:
        """False when it was expired already."""
        ...

    def expire_pitr_restore_points(self, project_id: str, before: datetime, now: datetime) -> int:
        """Mark the project's active ``pitr`` restore points pinned before ``before``
        expired; how many."""
        ...

    # ------------------------------------------------------------ workers

    def record_worker(self, worker: WorkerRecord) -> None:
        """Register a worker that starts (replacing a record of that id)."""
        ...

    def heartbeat_worker(self, worker_id: str, now: datetime) -> bool:
        """The worker is alive at ``now``; False when it has no record (forgotten)."""
        ...

    def stop_worker(self, worker_id: str, now: datetime) -> None:
        """The worker ended on its own at ``now`` (its last heartbeat too)."""
        ...

    def list_workers(self, *, include_stopped: bool = True) -> list[WorkerRecord]:
        """The registered workers, oldest start first."""
        ...

    def forget_workers(self, before: datetime) -> int:
        """Drop the workers not heard of since ``before`` (stopped, or silent: killed or
        lost with their machine); how many."""
        ...
