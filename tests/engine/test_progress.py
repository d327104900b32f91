"""A job's progress (issue 16): its steps and bytes done / total, written as it runs.

Real backups, verifications and restores of a SQLite database of a few MB (more than
one read of the blob store's chunks), followed through ``wait_for_job``'s updates.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pulumi_capy.api.models import (
    CreateBackup,
    CreateProject,
    Job,
    JobProgress,
    JobState,
    Project,
    RestoreRequest,
    TargetKind,
    format_bytes,
)
from pulumi_capy.engine.blobs import CHUNK
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.queue import JobRetryPolicy
from pulumi_capy.engine.service import Engine
from pulumi_capy.engine.stores.contract import Fence, JobRecord
from tests.engine.conftest import sqlite_url


def _fill(path: Path, mib: int) -> None:
    """``mib`` MiB of rows that compress poorly, in the application database."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE payload (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        db.executemany(
            "INSERT INTO payload (data) VALUES (?)",
            [(os.urandom(64 * 1024),) for _ in range(mib * 16)],
        )


@pytest.fixture
def big_db(app_db: Path) -> Path:
    _fill(app_db, 4)
    return app_db


def _follow(engine: Engine, job_id: str) -> tuple[Job, list[JobProgress]]:
    seen: list[JobProgress] = []

    def update(job: Job) -> None:
        if job.progress is not None and (not seen or seen[-1] != job.progress):
            seen.append(job.progress)

    done = engine.wait_for_job(job_id, 60, update)
    return done, seen


def _steps(seen: list[JobProgress]) -> list[str]:
    steps: list[str] = []
    for progress in seen:
        if not steps or steps[-1] != progress.step:
            steps.append(progress.step)
    return steps


def _of(seen: list[JobProgress], step: str) -> list[JobProgress]:
    return [progress for progress in seen if progress.step == step]


def _reaches_total(updates: list[JobProgress], *, moving: bool = True) -> int:
    """The step's bytes start at 0, never go back, and end at its total; returns it."""
    assert updates, "the step was never reported"
    total = updates[-1].bytes_total
    assert total is not None
    assert total > CHUNK  # more than one read: there is something to report in between
    assert updates[0].bytes_done == 0
    done = [progress.bytes_done or 0 for progress in updates]
    assert done == sorted(done)
    assert updates[-1].bytes_done == total
    assert {progress.bytes_total for progress in updates} == {total}
    if moving:  # a tiny throttle interval: the bytes were written between start and end
        assert any(0 < value < total for value in done), done
    return total


def test_a_backup_reports_dumping_and_compressing_then_verifying(
    engine: Engine, project: Project, big_db: Path
) -> None:
    engine.rt.progress_interval = 0.0
    size = big_db.stat().st_size

    job, seen = _follow(engine, engine.create_backup(project.id, CreateBackup()).id)
    assert _steps(seen) == ["dumping", "compressing"]
    dumping = _of(seen, "dumping")
    # the copy is made in one call: its bytes are known when it is done
    assert dumping[0].bytes_done == 0
    assert dumping[0].bytes_total == size
    assert dumping[-1].bytes_done == size
    assert _reaches_total(_of(seen, "compressing")) == size
    assert all(isinstance(progress.updated_at, datetime) for progress in seen)
    assert job.progress is not None
    assert job.progress.describe() == (
        f"compressing: {format_bytes(size)} of {format_bytes(size)} (100%)"
    )

    assert job.result is not None
    verify, verified = _follow(engine, str(job.result["verify_job_id"]))
    assert _steps(verified) == [
        "verifying: decompressing",
        "verifying: checking the throwaway copy",
    ]
    assert _reaches_total(_of(verified, "verifying: decompressing")) == size
    # the engine's record, as GET /v1/jobs/{id} answers it
    stored = engine.get_job(verify.id).progress
    assert stored is not None
    assert stored.step == "verifying: checking the throwaway copy"


def test_a_restore_over_the_project_reports_safety_backup_loading_and_swap(
    engine: Engine, project: Project, big_db: Path
) -> None:
    engine.rt.progress_interval = 0.0
    backup_job, _ = _follow(engine, engine.create_backup(project.id, CreateBackup()).id)
    engine.run_pending()  # the verification
    assert backup_job.result is not None
    size = big_db.stat().st_size

    job = engine.create_restore(
        project.id,
        RestoreRequest(
            backup_key=str(backup_job.result["backup_key"]),
            target_kind=TargetKind.project,
            confirm_project_overwrite=True,
        ),
    )
    _, seen = _follow(engine, job.id)
    assert _steps(seen) == [
        "loading",
        "loading: decompressing the backup",
        "loading into the target",
        "safety backup: dumping",
        "safety backup: compressing",
        "swapping in the restored database",
    ]
    assert _reaches_total(_of(seen, "loading: decompressing the backup")) == size
    assert _reaches_total(_of(seen, "safety backup: compressing")) == size


def test_a_restore_into_a_new_preview_reports_loading(
    engine: Engine, project: Project, big_db: Path
) -> None:
    engine.rt.progress_interval = 0.0
    backup_job, _ = _follow(engine, engine.create_backup(project.id, CreateBackup()).id)
    engine.run_pending()
    assert backup_job.result is not None

    job = engine.create_restore(
        project.id, RestoreRequest(backup_key=str(backup_job.result["backup_key"]))
    )
    done, seen = _follow(engine, job.id)
    assert _steps(seen) == [
        "loading",
        "loading: decompressing the backup",
        "loading into the target",
    ]
    _reaches_total(_of(seen, "loading: decompressing the backup"))
    assert done.progress is not None
    assert done.progress.step == "loading into the target"


def test_the_bytes_are_written_a_few_times_a_second_not_per_chunk(
    engine: Engine, project: Project, big_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default interval a step of a few MB (done in well under its half second)
    is written twice: when it begins and when it ends."""
    writes: list[JobProgress] = []
    store = engine.rt.store
    write = store.set_job_progress

    def counting(fence: Fence, progress: JobProgress, now: datetime) -> bool:
        writes.append(progress)
        return write(fence, progress, now)

    monkeypatch.setattr(store, "set_job_progress", counting)
    engine.rt.progress_interval = 3600.0
    _follow(engine, engine.create_backup(project.id, CreateBackup()).id)
    assert [(p.step, p.bytes_done == p.bytes_total) for p in writes] == [
        ("dumping", False),
        ("dumping", True),
        ("compressing", False),
        ("compressing", True),
    ]


def test_a_new_attempt_starts_without_the_last_attempts_step(
    engine_dir: Path, clock: ManualClock, app_db: Path
) -> None:
    def flaky(job: JobRecord) -> None:
        if job.attempts == 1:
            raise RuntimeError("object store hiccup")

    with Engine(
        engine_dir,
        clock=clock,
        retry=JobRetryPolicy(max_attempts=3, base_delay=2.0),
        hooks={"backup.after_dump": flaky},
    ) as engine:
        project = engine.create_project(
            CreateProject(name="app", database_url=sqlite_url(app_db))
        ).project
        job_id = engine.create_backup(project.id, CreateBackup()).id
        assert engine.worker.run_once(only_id=job_id)
        failed = engine.get_job(job_id)
        assert failed.state == JobState.pending
        assert failed.progress is not None
        assert failed.progress.step == "dumping"  # where the attempt was when it failed

        clock.advance(2)
        now = clock.now()
        claimed = engine.rt.store.claim_job("w2", now, now + timedelta(seconds=30), job_id)
        assert claimed is not None
        assert (claimed.attempts, claimed.progress) == (2, None)
