"""The job queue and the worker, against real SQLite store files.

Claims, locks, fencing, retries and deferrals run on a ``ManualClock`` (no
waiting); the concurrency tests use real threads and real processes on one
engine directory, with the wall clock.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from pulumi_capy.api.errors import JobFailed, JobTimeout
from pulumi_capy.api.models import (
    CreateProject,
    Job,
    JobState,
    Project,
    RestoreRequest,
    TargetKind,
)
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.queue import JobRetryPolicy, Lease, LeaseLost
from pulumi_capy.engine.service import Engine
from pulumi_capy.engine.stores.contract import JobOutput, JobRecord, NewJob
from tests.engine.conftest import (
    change_app_db,
    make_app_db,
    sqlite_url,
    table_contents,
    take_backup,
)

LEASE = 10.0


# ---------------------------------------------------------------- helpers


def _record(engine: Engine, job_id: str) -> JobRecord:
    record = engine.rt.store.get_job(job_id)
    assert record is not None
    return record


def _new_project(engine: Engine, database: Path, name: str = "app") -> Project:
    request = CreateProject(name=name, database_url=sqlite_url(database))
    return engine.create_project(request).project


# ---------------------------------------------------------------- fencing


def test_a_worker_whose_lease_was_rescued_cannot_write(
    engine_dir: Path, clock: ManualClock, app_db: Path
) -> None:
    with (
        Engine(engine_dir, clock=clock, lease_seconds=LEASE, worker_id="worker-a") as a,
        Engine(engine_dir, clock=clock, lease_seconds=LEASE, worker_id="worker-b") as b,
    ):
        project = _new_project(a, app_db)
        job_id = a.create_backup(project.id).id
        now = clock.now()
        claimed = a.rt.store.claim_job("worker-a", now, now + timedelta(seconds=LEASE))
        assert claimed is not None
        assert claimed.id == job_id
        old_fence = claimed.fence

        clock.advance(LEASE - 1)
        assert b.worker.rescue() == 0  # not expired yet
        clock.advance(2)
        assert b.worker.rescue() == 1
        rescued = _record(b, job_id)
        assert (rescued.state, rescued.claimed_by, rescued.attempts) == (JobState.pending, None, 1)
        assert rescued.retry_classification == "transient"
        assert "worker-a" in (rescued.error or "")

        now = clock.now()
        taken = b.rt.store.claim_job("worker-b", now, now + timedelta(seconds=LEASE))
        assert taken is not None
        assert (taken.id, taken.claimed_by, taken.attempts) == (job_id, "worker-b", 2)

        # worker A comes back: every write it tries is refused
        with a.rt.store.transaction() as tx:
            assert not a.rt.store.fail_job(
                tx,
                old_fence,
                error="stale write of worker-a",
                classification="permanent",
                output=JobOutput(exit_code=1, stdout=None, stderr=None),
                now=now,
                retry_at=None,
            )
        assert not a.rt.store.renew_lease(old_fence, now, now + timedelta(hours=1))
        with pytest.raises(LeaseLost):
            Lease(a.rt.store, clock, old_fence, LEASE).check()
        current = _record(a, job_id)
        assert (current.state, current.claimed_by, current.attempts) == (
            JobState.running,
            "worker-b",
            2,
        )
        assert current.error == rescued.error
        assert current.lease_expires_at == now + timedelta(seconds=LEASE)

        # B finishes the job; A still cannot touch it
        b.worker.execute(taken)
        with a.rt.store.transaction() as tx:
            assert not a.rt.store.fail_job(
                tx,
                old_fence,
                error="stale",
                classification="permanent",
                output=JobOutput(exit_code=1, stdout=None, stderr=None),
                now=now,
                retry_at=None,
            )
        done = b.get_job(job_id)
        assert (done.state, done.claimed_by, done.attempts, done.error) == (
            JobState.completed,
            "worker-b",
            2,
            None,
        )
        assert len(b.list_backups(project.id)) == 1


def test_a_worker_that_loses_its_lease_mid_job_records_nothing(
    engine_dir: Path, clock: ManualClock, app_db: Path
) -> None:
    taken: list[JobRecord] = []
    with Engine(engine_dir, clock=clock, lease_seconds=LEASE, worker_id="worker-b") as b:

        def steal(job: JobRecord) -> None:
            if taken:
                return
            clock.advance(LEASE + 1)  # worker A stalls past its lease
            assert b.worker.rescue() == 1
            now = clock.now()
            record = b.rt.store.claim_job("worker-b", now, now + timedelta(seconds=LEASE))
            assert record is not None
            taken.append(record)

        with Engine(
            engine_dir,
            clock=clock,
            lease_seconds=LEASE,
            worker_id="worker-a",
            hooks={"backup.after_dump": steal},
        ) as a:
            project = _new_project(a, app_db)
            job_id = a.create_backup(project.id).id
            assert a.worker.run_once(only_id=job_id)

            current = _record(a, job_id)
            assert (current.state, current.claimed_by, current.attempts) == (
                JobState.running,
                "worker-b",
                2,
            )
            assert current.result is None
            assert a.list_backups(project.id) == []

        b.worker.execute(taken[0])
        done = b.get_job(job_id)
        assert (done.state, done.claimed_by, done.attempts) == (JobState.completed, "worker-b", 2)
        assert len(b.list_backups(project.id)) == 1


def test_a_lost_lease_on_the_last_attempt_fails_the_job_and_its_preview(
    engine_dir: Path, clock: ManualClock, app_db: Path
) -> None:
    with Engine(
        engine_dir,
        clock=clock,
        lease_seconds=LEASE,
        retry=JobRetryPolicy(max_attempts=1),
        worker_id="worker-b",
    ) as engine:
        project = _new_project(engine, app_db)
        backup = take_backup(engine, project.id)
        restore = engine.create_restore(
            project.id,
            RestoreRequest(backup_key=backup.backup_key, target_kind=TargetKind.new_preview),
        )
        now = clock.now()
        claimed = engine.rt.store.claim_job("worker-a", now, now + timedelta(seconds=LEASE))
        assert claimed is not None
        assert claimed.id == restore.id

        clock.advance(LEASE + 1)  # worker A died holding the only attempt
        assert engine.worker.rescue() == 1
        failed = engine.get_job(restore.id)
        assert (failed.state, failed.attempts) == (JobState.failed, 1)
        assert failed.retry_classification == "transient"
        assert failed.completed_at == clock.now()
        assert "worker worker-a stopped renewing the lease of attempt 1" in (failed.error or "")
        assert not engine.worker.run_once()

        (preview,) = engine.list_preview_databases(project.id)
        assert preview.id == failed.preview_database_id
        assert preview.state == "failed"
        # regression: the preview must name the lost worker and attempt
        assert preview.last_error == failed.error


# ---------------------------------------------------------------- retries


def test_a_transient_failure_is_retried_after_a_backoff(
    engine_dir: Path, clock: ManualClock, app_db: Path
) -> None:
    calls: list[int] = []

    def flaky(job: JobRecord) -> None:
        calls.append(job.attempts)
        if len(calls) == 1:
            raise RuntimeError("object store hiccup")

    with Engine(
        engine_dir,
        clock=clock,
        retry=JobRetryPolicy(max_attempts=3, base_delay=2.0),
        hooks={"backup.after_dump": flaky},
    ) as engine:
        project = _new_project(engine, app_db)
        job_id = engine.create_backup(project.id).id
        failed_at = clock.now()
        assert engine.worker.run_once(only_id=job_id)

        record = _record(engine, job_id)
        assert (record.state, record.attempts, record.claimed_by) == (JobState.pending, 1, None)
        assert record.retry_classification == "transient"
        assert "object store hiccup" in (record.error or "")
        assert record.run_after == failed_at + timedelta(seconds=2)
        assert record.last_exit_code == 1
        assert "RuntimeError" in (record.last_stderr or "")
        assert engine.list_backups(project.id) == []

        assert not engine.worker.run_once(only_id=job_id)  # backing off
        clock.advance(2)
        assert engine.worker.run_once(only_id=job_id)
        done = engine.get_job(job_id)
        assert (done.state, done.attempts) == (JobState.completed, 2)
        assert (done.error, done.retry_classification) == (None, None)
        assert calls == [1, 2]
        assert len(engine.list_backups(project.id)) == 1
        assert list((engine.directory / "tmp").iterdir()) == []


def test_backoff_doubles_per_attempt_until_max_attempts(
    engine_dir: Path, clock: ManualClock, app_db: Path
) -> None:
    def broken(job: JobRecord) -> None:
        raise RuntimeError(f"still broken (attempt {job.attempts})")

    policy = JobRetryPolicy(max_attempts=5, base_delay=2.0, max_delay=5.0)
    with Engine(
        engine_dir, clock=clock, retry=policy, hooks={"backup.after_dump": broken}
    ) as engine:
        project = _new_project(engine, app_db)
        job_id = engine.create_backup(project.id).id
        delays: list[float] = []
        for attempt in range(1, 5):
            started = clock.now()
            assert engine.worker.run_once(only_id=job_id)
            record = _record(engine, job_id)
            assert (record.state, record.attempts) == (JobState.pending, attempt)
            assert record.retry_classification == "transient"
            assert record.run_after is not None
            delay = (record.run_after - started).total_seconds()
            delays.append(delay)
            clock.advance(delay - 0.001)
            assert not engine.worker.run_once(only_id=job_id)
            clock.advance(0.001)
        assert delays == [2.0, 4.0, 5.0, 5.0]  # doubling, capped at max_delay

        assert engine.worker.run_once(only_id=job_id)
        with pytest.raises(JobFailed) as failure:
            engine.wait_for_job(job_id, timeout=60)
        failed = failure.value.job
        assert (failed.state, failed.attempts, failed.max_attempts) == (JobState.failed, 5, 5)
        assert failed.retry_classification == "transient"
        assert "still broken (attempt 5)" in (failed.error or "")
        assert failed.completed_at == clock.now()
        assert engine.list_backups(project.id) == []


def test_a_permanent_failure_fails_at_the_first_attempt(
    engine: Engine, project: Project, app_db: Path
) -> None:
    job_id = engine.create_backup(project.id).id
    app_db.unlink()  # the project database is gone: no retry can help
    with pytest.raises(JobFailed) as failure:
        engine.wait_for_job(job_id, timeout=600)
    failed = failure.value.job
    assert (failed.state, failed.attempts) == (JobState.failed, 1)
    assert failed.retry_classification == "permanent"
    assert "missing" in (failed.error or "")
    assert failed.last_exit_code == 1
    assert engine.list_backups(project.id) == []


def test_deferring_does_not_use_an_attempt(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    backup_job = engine.create_backup(project.id)
    assert engine.worker.run_once(only_id=backup_job.id)
    done = engine.get_job(backup_job.id)
    assert done.result is not None
    verify_job_id = str(done.result["verify_job_id"])
    restore = engine.create_restore(
        project.id,
        RestoreRequest(backup_key=done.result["backup_key"], target_kind=TargetKind.new_preview),
    )

    # the backup is still being verified: the restore waits, more often than max_attempts
    for _ in range(restore.max_attempts + 2):
        assert engine.worker.run_once(only_id=restore.id)
        record = _record(engine, restore.id)
        assert (record.state, record.attempts, record.claimed_by) == (JobState.pending, 0, None)
        assert record.retry_classification is None
        assert "being verified" in (record.last_stdout or "")
        assert record.run_after == clock.now() + timedelta(seconds=1)
        assert not engine.worker.run_once(only_id=restore.id)
        clock.advance(1)
    assert engine.get_job(verify_job_id).state == JobState.pending

    finished = engine.wait_for_job(restore.id, timeout=60)
    assert (finished.state, finished.attempts) == (JobState.completed, 1)
    assert engine.get_job(verify_job_id).state == JobState.completed


# ---------------------------------------------------------------- wait_for_job


def test_wait_for_job_times_out_while_another_worker_holds_the_lock(
    engine: Engine, project: Project, clock: ManualClock
) -> None:
    start = clock.now()
    lock = f"project:{project.id}"
    with engine.rt.store.transaction() as tx:
        engine.rt.store.enqueue(
            tx,
            NewJob(
                id="job_holder",
                type="project.backup",
                project_id=project.id,
                organization_id="org_default",
                payload={},
                locked_resource=lock,
                max_attempts=3,
                created_at=start,
                run_after=start,
            ),
        )
    holding = engine.rt.store.claim_job(
        "elsewhere:1:abcdef", start, start + timedelta(hours=1), only_id="job_holder"
    )
    assert holding is not None
    job = engine.create_backup(project.id)
    assert job.locked_resource == lock

    seen: list[Job] = []
    with pytest.raises(JobTimeout) as timeout:
        engine.wait_for_job(job.id, timeout=30, on_update=seen.append)
    assert timeout.value.job.id == job.id
    assert (timeout.value.job.state, timeout.value.job.attempts) == (JobState.pending, 0)
    assert timeout.value.timeout == 30
    assert clock.now() >= start + timedelta(seconds=30)
    assert [(update.state, update.attempts) for update in seen] == [(JobState.pending, 0)]
    holder = _record(engine, "job_holder")
    assert (holder.state, holder.claimed_by) == (JobState.running, "elsewhere:1:abcdef")


def test_on_update_is_called_on_state_or_attempt_changes_only(
    engine_dir: Path, clock: ManualClock, app_db: Path
) -> None:
    failures = [RuntimeError("first attempt breaks")]

    def flaky(job: JobRecord) -> None:
        if failures:
            raise failures.pop()

    with Engine(
        engine_dir,
        clock=clock,
        retry=JobRetryPolicy(max_attempts=3, base_delay=4.0),
        hooks={"backup.after_dump": flaky},
    ) as engine:
        project = _new_project(engine, app_db)
        job = engine.create_backup(project.id)
        seen: list[Job] = []
        done = engine.wait_for_job(job.id, timeout=60, on_update=seen.append)
    assert (done.state, done.attempts) == (JobState.completed, 2)
    # several polls happened during the 4 s backoff; only the changes were reported: of
    # state and attempt, and of the running attempt's progress (its steps, as it runs)
    keys = [(str(u.state), u.attempts, u.progress) for u in seen]
    assert all(before != after for before, after in itertools.pairwise(keys))
    changes = [(update.state, update.attempts) for update in seen]
    assert [key for key, _ in itertools.groupby(changes)] == [
        (JobState.pending, 0),
        (JobState.running, 1),
        (JobState.pending, 1),
        (JobState.running, 2),
        (JobState.completed, 2),
    ]
    retried = next(update for update in seen if (update.state, update.attempts) == ("pending", 1))
    assert retried.retry_classification == "transient"


# ---------------------------------------------------------------- concurrency


def test_two_restores_to_one_target_never_run_at_once(tmp_path: Path) -> None:
    directory = tmp_path / "capy"
    app = make_app_db(tmp_path / "app" / "app.db")
    with Engine(directory) as setup:
        project = _new_project(setup, app)
        backup = take_backup(setup, project.id)
        backed_up = table_contents(app)
        change_app_db(app)
        request = RestoreRequest(
            backup_key=backup.backup_key,
            target_kind=TargetKind.project,
            confirm_project_overwrite=True,
        )
        job_ids = [setup.create_restore(project.id, request).id for _ in range(2)]

    guard = threading.Lock()
    inside: list[str] = []
    overlaps: list[tuple[str, ...]] = []
    intervals: list[tuple[float, float, str]] = []

    def hold(job: JobRecord) -> None:
        with guard:
            if inside:
                overlaps.append((*inside, job.id))
            inside.append(job.id)
        entered = time.monotonic()
        time.sleep(0.2)
        exited = time.monotonic()
        with guard:
            inside.remove(job.id)
            intervals.append((entered, exited, job.id))

    results: dict[str, Job] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(job_id: str, worker_id: str) -> None:
        try:
            with Engine(
                directory, hooks={"restore.before_commit": hold}, worker_id=worker_id
            ) as engine:
                barrier.wait(timeout=10)
                results[job_id] = engine.wait_for_job(job_id, timeout=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(job_id, f"thread-{n}"))
        for n, job_id in enumerate(job_ids)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    assert not overlaps, overlaps
    assert sorted(results) == sorted(job_ids)
    assert all(job.state == JobState.completed and job.attempts == 1 for job in results.values())
    assert sorted(job_id for _, _, job_id in intervals) == sorted(job_ids)
    (_, first_exit, _), (second_entry, _, _) = sorted(intervals)
    assert first_exit <= second_entry
    assert table_contents(app) == backed_up


WORKER_SCRIPT = textwrap.dedent(
    """
    import contextlib
    import sqlite3
    import sys
    import time
    from pathlib import Path

    from pulumi_capy.engine import Engine

    directory, worker_id, log_path, ready_path, go_path = sys.argv[1:6]


    def record(job):
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(job.id + "\\n")
        time.sleep(0.05)  # long enough for the other process to claim something


    def outstanding():
        with contextlib.closing(sqlite3.connect(Path(directory) / "engine.db")) as db:
            return db.execute(
                "SELECT count(*) FROM jobs WHERE state IN ('pending', 'running')"
            ).fetchone()[0]


    deadline = time.monotonic() + 60
    with Engine(directory, worker_id=worker_id, hooks={"backup.after_dump": record}) as engine:
        Path(ready_path).touch()
        while not Path(go_path).exists():
            if time.monotonic() > deadline:
                sys.exit("never told to go")
            time.sleep(0.01)
        while outstanding():
            if time.monotonic() > deadline:
                sys.exit("jobs still outstanding after 60 s")
            if engine.run_pending() == 0:
                time.sleep(0.02)
    """
)


def _wait_for_files(paths: list[Path], processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 30
    while not all(path.exists() for path in paths):
        for process in processes:
            assert process.poll() is None, f"worker exited early ({process.returncode})"
        assert time.monotonic() < deadline, "workers did not start within 30 s"
        time.sleep(0.02)


def test_two_processes_racing_run_pending_run_each_job_exactly_once(tmp_path: Path) -> None:
    directory = tmp_path / "capy"
    backup_jobs: list[str] = []
    with Engine(directory) as setup:
        for n in range(5):
            project = _new_project(setup, make_app_db(tmp_path / f"app{n}.db", rows=30), f"p{n}")
            backup_jobs += [setup.create_backup(project.id).id for _ in range(2)]
    assert len(backup_jobs) == 10

    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT, encoding="utf-8")
    go = tmp_path / "go"
    workers = ["proc-1", "proc-2"]
    logs = {worker: tmp_path / f"{worker}.log" for worker in workers}
    ready = {worker: tmp_path / f"{worker}.ready" for worker in workers}
    outputs = {worker: tmp_path / f"{worker}.out" for worker in workers}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for worker in workers:
            with outputs[worker].open("wb") as output:
                processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(script),
                            str(directory),
                            worker,
                            str(logs[worker]),
                            str(ready[worker]),
                            str(go),
                        ],
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                )
        _wait_for_files(list(ready.values()), processes)
        go.touch()
        for process in processes:
            process.wait(timeout=60)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for worker, process in zip(workers, processes, strict=True):
        assert process.returncode == 0, outputs[worker].read_text(encoding="utf-8")

    runs = Counter(
        line
        for worker in workers
        if logs[worker].exists()
        for line in logs[worker].read_text(encoding="utf-8").split()
    )
    assert runs == Counter(dict.fromkeys(backup_jobs, 1))

    with Engine(directory) as engine:
        claimed_by: set[str | None] = set()
        verify_jobs: list[str] = []
        for job_id in backup_jobs:
            job = engine.get_job(job_id)
            assert (job.state, job.attempts) == (JobState.completed, 1), job
            claimed_by.add(job.claimed_by)
            assert job.result is not None
            verify_jobs.append(str(job.result["verify_job_id"]))
        for job_id in verify_jobs:
            job = engine.get_job(job_id)
            assert (job.state, job.attempts) == (JobState.completed, 1), job
            claimed_by.add(job.claimed_by)
        assert claimed_by == set(workers)
        backups = [
            backup
            for project in engine.list_projects()
            for backup in engine.list_backups(project.id)
        ]
        assert len(backups) == 10
        assert {backup.verification_state for backup in backups} == {"verified"}


def test_ctrl_c_in_a_handler_hands_the_job_back_claimable_at_once(
    engine_dir: Path, clock: ManualClock, app_db: Path
) -> None:
    def interrupt(job: JobRecord) -> None:
        raise KeyboardInterrupt  # Ctrl-C while `capy ... --wait` runs the job inline

    with Engine(
        engine_dir,
        clock=clock,
        lease_seconds=LEASE,
        worker_id="worker-a",
        hooks={"backup.after_dump": interrupt},
    ) as a:
        project = _new_project(a, app_db)
        job_id = a.create_backup(project.id).id
        with pytest.raises(KeyboardInterrupt):
            a.wait_for_job(job_id, timeout=60)
        released = _record(a, job_id)
        assert (released.state, released.claimed_by, released.attempts) == (
            JobState.pending,
            None,
            0,
        )
        assert released.lease_expires_at is None
        assert released.last_stdout == (
            "handed back by worker-a: interrupted (Ctrl-C) before it ended"
        )
        assert a.list_backups(project.id) == []  # nothing half-written was kept

    # no lease to outwait: another worker runs it now, on the same clock
    with Engine(engine_dir, clock=clock, lease_seconds=LEASE, worker_id="worker-b") as b:
        done = b.wait_for_job(job_id, timeout=60)
        assert (done.state, done.claimed_by, done.attempts) == (JobState.completed, "worker-b", 1)
        assert len(b.list_backups(project.id)) == 1
