"""The worker: it classifies failures by one root (an ``EngineFailure`` says whether it is
permanent; anything else is transient and keeps its traceback) and finds a handler for
every job type."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from pulumi_capy.api.errors import CapyError
from pulumi_capy.api.models import CreateProject, JobState, JobType
from pulumi_capy.engine import Engine
from pulumi_capy.engine.blobs import BlobMissing, ChecksumMismatch
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.drivers import DriverFailure, Outcome
from pulumi_capy.engine.jobs import PermanentFailure
from pulumi_capy.engine.stores.contract import ProjectRecord, WorkerRecord
from pulumi_capy.engine.tarstream import TarDamaged
from pulumi_capy.engine.worker import Worker
from pulumi_capy.engine.workers import Heartbeat
from tests.engine.conftest import make_app_db, sqlite_url


@pytest.mark.parametrize(
    "failure", [PermanentFailure("p"), ChecksumMismatch("c"), BlobMissing("b")]
)
def test_engine_failures_are_permanent_with_their_message(failure: Exception) -> None:
    permanent, outcome = Worker._classify(failure)
    assert permanent
    assert outcome == Outcome(str(failure), 1, stderr=str(failure))


@pytest.mark.parametrize("permanent", [True, False])
def test_a_driver_failure_keeps_its_permanence_and_outcome(permanent: bool) -> None:
    reported = Outcome("pg_dump failed", 2, stderr="connection refused")
    assert Worker._classify(DriverFailure("dump", permanent=permanent, outcome=reported)) == (
        permanent,
        reported,
    )
    assert Worker._classify(DriverFailure("dump", permanent=permanent)) == (
        permanent,
        Outcome("dump", 1, stderr="dump"),
    )


@pytest.mark.parametrize("failure", [TarDamaged("short"), CapyError("odd"), RuntimeError("bug")])
def test_anything_else_is_transient_with_its_traceback(failure: Exception) -> None:
    permanent, outcome = Worker._classify(failure)
    assert not permanent
    assert outcome.summary == str(failure)
    assert type(failure).__name__ in outcome.stderr


def test_job_types_and_states_keep_their_stored_values() -> None:
    """The enums are the stored values and the API's JSON: they must never change."""
    from pulumi_capy.engine.handlers import HANDLERS

    assert [state.value for state in JobState] == ["pending", "running", "completed", "failed"]
    assert [kind.value for kind in JobType] == [
        "project.backup",
        "project.restore",
        "backup.verify",
        "preview.create",
        "preview.delete",
        "backup.expire",
        "pitr.base_backup",
        "pitr.expire",
    ]
    assert set(HANDLERS) == set(JobType)
    assert all(HANDLERS.get(str(kind)) is HANDLERS[kind] for kind in JobType)


# ---------------------------------------------------------------- many workers


def test_a_sqlite_projects_job_is_run_only_by_a_worker_that_declares_its_directory(
    tmp_path: Path, engine_dir: Path, clock: ManualClock
) -> None:
    app_db = make_app_db(tmp_path / "apps" / "shop" / "app.db")
    with Engine(engine_dir, clock=clock) as engine:
        project = engine.create_project(
            CreateProject(name="shop", database_url=sqlite_url(app_db))
        ).project
        job = engine.create_backup(project.id)
        record = engine.rt.store.get_job(job.id)
        assert record is not None
        assert record.sqlite_dir == f"{tmp_path}/apps/shop/"

    # "shop" is no prefix of "shopping", nor "/apps/sho" of "/apps/shop"
    elsewhere = [tmp_path / "apps" / "shopping", tmp_path / "apps" / "sho", tmp_path / "other"]
    with Engine(engine_dir, clock=clock, sqlite_dirs=elsewhere) as other:
        assert other.run_pending() == 0
    with Engine(engine_dir, clock=clock, sqlite_dirs=[]) as none:
        assert none.run_pending() == 0
    with Engine(engine_dir, clock=clock, sqlite_dirs=[tmp_path / "apps"]) as host:
        assert host.run_pending() >= 1  # the backup, then its verification
        assert host.get_job(job.id).state == JobState.completed


def test_a_worker_loop_registers_heartbeats_and_stops(engine_dir: Path, tmp_path: Path) -> None:
    stop = threading.Event()
    with Engine(engine_dir, sqlite_dirs=[tmp_path]) as engine:
        loop = threading.Thread(
            target=engine.run_worker,
            args=(stop,),
            kwargs={"poll_interval": 0.05, "heartbeat_interval": 0.05},
            name="test-worker",
        )
        loop.start()
        try:
            deadline = time.monotonic() + 10
            while True:
                listed = engine.rt.store.list_workers()
                if listed and listed[0].heartbeat_at > listed[0].started_at:
                    break
                assert time.monotonic() < deadline, "no heartbeat"
                stop.wait(0.02)
        finally:
            stop.set()
            loop.join()
        (registered,) = engine.rt.store.list_workers()
    assert registered.id == engine.rt.worker_id
    assert (registered.host, registered.pid) == (socket.gethostname(), os.getpid())
    assert registered.thread == "test-worker"
    assert registered.sqlite_dirs == [f"{tmp_path}/"]
    assert registered.stopped_at is not None


def test_the_tick_forgets_workers_not_heard_of_for_a_day(
    engine: Engine, clock: ManualClock
) -> None:
    now = clock.now()
    for worker_id, heard in (("w-old", now - timedelta(days=2)), ("w-new", now)):
        engine.rt.store.record_worker(
            WorkerRecord(
                id=worker_id, host="h", pid=1, thread="t", started_at=heard, heartbeat_at=heard
            )
        )
    assert engine.tick(now).forgotten_workers == 1
    assert [w.id for w in engine.rt.store.list_workers()] == ["w-new"]


def test_a_job_of_a_postgresql_project_carries_no_sqlite_directory(engine: Engine) -> None:
    now = engine.rt.now()
    engine.rt.store.insert_project(
        ProjectRecord(
            id="prj_pg",
            organization_id="org_default",
            name="pg",
            environment="production",
            database_url="postgresql://app@db.example/app",
            database_kind="postgresql",
            database_name="app",
            state="active",
            created_at=now,
            updated_at=now,
        )
    )
    with engine.rt.store.transaction() as tx:
        job_id = engine.rt.enqueue(
            tx, JobType.project_backup, project_id="prj_pg", payload={}, locked_resource=None
        )
    job = engine.rt.store.get_job(job_id)
    assert job is not None
    assert job.sqlite_dir is None


def test_a_forgotten_worker_registers_again_at_its_next_heartbeat(
    engine: Engine, clock: ManualClock
) -> None:
    store = engine.rt.store
    with Heartbeat(store, clock, "w-back", ("/srv/apps/",), interval=0.02):
        assert store.forget_workers(clock.now() + timedelta(days=1)) == 1
        deadline = time.monotonic() + 10
        while not store.list_workers():
            assert time.monotonic() < deadline, "not registered again"
            time.sleep(0.02)
        (again,) = store.list_workers()
        assert (again.id, again.sqlite_dirs, again.stopped_at) == ("w-back", ["/srv/apps/"], None)
    (stopped,) = store.list_workers()
    assert stopped.stopped_at is not None
