"""What every part of a running engine shares: its directory, store, blobs, clock, hooks."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pulumi_capy.api.models import Job, JobProgress, JobState, JobType
from pulumi_capy.engine.blobs import BlobStore
from pulumi_capy.engine.clock import Clock
from pulumi_capy.engine.pitr import instance
from pulumi_capy.engine.private import private_directory
from pulumi_capy.engine.queue import JobRetryPolicy, new_id
from pulumi_capy.engine.stores.contract import (
    JobRecord,
    NewJob,
    Store,
    Transaction,
    sqlite_dir_of,
)

__all__ = ["DEFAULT_ORGANIZATION_ID", "PROGRESS_INTERVAL", "Hook", "Meter", "Runtime"]

DEFAULT_ORGANIZATION_ID = "org_default"

# A test seam: called with the job at named points ("restore.before_commit", …).
Hook = Callable[[JobRecord], None]


def _me() -> str:
    import getpass

    return getpass.getuser()


# seconds between two writes of a step's bytes done: a few a second at most, never a chunk's
PROGRESS_INTERVAL = 0.5
JOB_SCRATCH_MIN_AGE = 60.0  # seconds: a verification's copy younger than this is kept


class Meter:
    """The bytes of one step of a job as they pass (``add``); written to the job when the
    step begins, then at most every ``progress_interval`` seconds, and at ``finish``."""

    def __init__(self, rt: Runtime, job: JobRecord, step: str, total: int | None) -> None:
        self.rt = rt
        self.job = job
        self.step = step
        self.total = total
        self.done = 0
        self._written = time.monotonic()
        self._write()

    def _write(self) -> None:
        self.rt.report_progress(self.job, self.step, bytes_done=self.done, bytes_total=self.total)

    def add(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if now - self._written >= self.rt.progress_interval:
            self._written = now
            self._write()

    def set(self, done: int) -> None:
        """The step's bytes done so far, when they are measured rather than counted."""
        self.add(done - self.done)

    def finish(self) -> None:
        self._written = time.monotonic()
        self._write()


@dataclass
class Runtime:
    directory: Path
    store: Store
    blobs: BlobStore
    clock: Clock
    retry: JobRetryPolicy
    lease_seconds: float
    worker_id: str
    hooks: Mapping[str, Hook] = field(default_factory=dict)
    # who waits in this process for a job's progress (``Engine.wait_for_job``), by job id
    progress_listeners: dict[str, Callable[[Job], None]] = field(default_factory=dict)
    # the least time between two store writes of a running step's bytes
    progress_interval: float = PROGRESS_INTERVAL
    # the directories of the SQLite files this worker may open (``sqlite_dir_prefix``
    # names): it claims no job of a SQLite file elsewhere; () none; None: all (one host)
    sqlite_dirs: tuple[str, ...] | None = None

    @property
    def previews_dir(self) -> Path:
        return self.directory / "previews"

    @property
    def scratch_dir(self) -> Path:
        path = self.directory / "tmp"
        return private_directory(path)

    def _sweep_job_scratch(self, base: Path) -> None:
        if not base.is_dir():
            return
        old = time.time() - JOB_SCRATCH_MIN_AGE
        for leftover in base.glob("job_*.verify*"):
            try:
                if leftover.lstat().st_mtime > old:
                    continue
            except FileNotFoundError:
                continue
            job = self.store.get_job(leftover.name.split(".", 1)[0])
            if job is not None and job.state == JobState.running:
                continue
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    @contextmanager
    def scratch_space(self) -> Iterator[Path]:
        """A private directory (mode 0700) under ``<engine dir>/tmp`` for a throwaway copy,
        removed afterwards; its name carries the pid so that ``sweep_scratch`` can remove
        what a killed process left. On disk, not in memory-backed /dev/shm, which is slower
        end to end (the README's Benchmarks section has the figures)."""
        private = Path(tempfile.mkdtemp(prefix=f"capy-{os.getpid()}-", dir=self.scratch_dir))
        try:
            yield private
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def sweep_scratch(self) -> None:
        """Remove scratch directories of processes that no longer run (killed workers), and
        stop and remove their point-in-time recovery instances; and the throwaway copies
        of verifications (``<job>.verify``, named after the job so that its next attempt
        finds them) whose job is no longer running, once a minute old: with several
        workers, the next attempt may have run on another host."""
        base = self.directory / "tmp"
        instance.sweep(base)
        self._sweep_job_scratch(base)
        if base.is_dir():
            for leftover in base.glob("capy-*-*"):
                pid = leftover.name.split("-")[1]
                if not pid.isdigit() or leftover.owner() != _me():
                    continue
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    shutil.rmtree(leftover, ignore_errors=True)
                except PermissionError:
                    continue

    def report_progress(
        self,
        job: JobRecord,
        step: str,
        *,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
    ) -> None:
        """Note the job's current step (and its bytes done / total, where known), for
        whoever follows it (here or elsewhere). One store write: see ``meter`` for a step
        whose bytes move."""
        now = self.clock.now()
        self.store.set_job_progress(
            job.fence,
            JobProgress(step=step, bytes_done=bytes_done, bytes_total=bytes_total, updated_at=now),
            now,
        )
        listener = self.progress_listeners.get(job.id)
        if listener is not None:
            fresh = self.store.get_job(job.id)
            if fresh is not None:
                listener(fresh.public())

    def meter(self, job: JobRecord, step: str, total: int | None) -> Meter:
        """Begin ``step`` of ``job`` (noted now, 0 bytes done of ``total``); the ``Meter``
        counts its bytes and writes them at most every ``progress_interval`` seconds."""
        return Meter(self, job, step, total)

    def hook(self, name: str, job: JobRecord) -> None:
        callback = self.hooks.get(name)
        if callback is not None:
            callback(job)

    def enqueue(
        self,
        tx: Transaction,
        job_type: JobType,
        *,
        project_id: str,
        payload: Mapping[str, Any],
        locked_resource: str | None,
        preview_database_id: str | None = None,
        delay: float = 0.0,
        job_id: str | None = None,
    ) -> str:
        """Insert a pending job inside the caller's transaction; return its id. A job of a
        SQLite project carries the directory of its file: only a worker that can open it
        claims it."""
        now = self.clock.now()
        project = self.store.get_project(project_id)
        sqlite_dir = None
        if project is not None and project.database_kind == "sqlite":
            from pulumi_capy.engine.drivers.sqlite import sqlite_path

            sqlite_dir = sqlite_dir_of(sqlite_path(project.database_url))
        job_id = job_id or new_id("job")
        self.store.enqueue(
            tx,
            NewJob(
                id=job_id,
                type=job_type,
                project_id=project_id,
                organization_id=DEFAULT_ORGANIZATION_ID,
                payload=dict(payload),
                locked_resource=locked_resource,
                max_attempts=self.retry.max_attempts,
                created_at=now,
                run_after=now + timedelta(seconds=delay),
                preview_database_id=preview_database_id,
                sqlite_dir=sqlite_dir,
            ),
        )
        return job_id

    def now(self) -> datetime:
        return self.clock.now()
