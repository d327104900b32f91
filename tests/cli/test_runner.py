"""``pulumi_capy.server.runner`` in this process: a stop lets the running job finish."""

from __future__ import annotations

import functools
import signal
import threading
import time
from pathlib import Path

import pytest

from pulumi_capy.api.models import CreateBackup, CreateProject
from pulumi_capy.engine import Engine
from pulumi_capy.engine.stores.contract import JobRecord
from pulumi_capy.server import runner
from tests.engine.conftest import make_app_db, sqlite_url


def test_stopping_workers_lets_the_running_job_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine_dir = tmp_path / "engine"
    app_db = make_app_db(tmp_path / "app.db")
    with Engine(engine_dir) as engine:
        project = engine.create_project(CreateProject(name="a", database_url=sqlite_url(app_db)))
        queued = engine.create_backup(project.project.id, CreateBackup())

    running = threading.Event()
    release = threading.Event()

    def hold(_: JobRecord) -> None:  # the backup is mid-way when the stop arrives
        running.set()
        assert release.wait(10)

    monkeypatch.setattr(
        runner, "Engine", functools.partial(Engine, hooks={"backup.after_dump": hold})
    )
    stop = threading.Event()
    workers = runner.start_workers(engine_dir, 1, stop, poll_interval=0.05)
    assert running.wait(10)
    stop.set()  # what SIGTERM does
    threading.Timer(0.3, release.set).start()
    runner.stop_workers(workers, stop)  # returns only once the job is done

    assert not any(worker.is_alive() for worker in workers)
    with Engine(engine_dir) as engine:
        job = engine.get_job(queued.id)
        assert job.state == "completed"
        assert job.result is not None
        verify = engine.get_job(str(job.result["verify_job_id"]))
        assert verify.state == "pending"  # not started after the stop: nothing half-done


def test_signals_set_stop_and_a_second_one_quits() -> None:
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    with runner.stop_on_signals(stop):
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()
        with pytest.raises(SystemExit) as exited:
            signal.raise_signal(signal.SIGTERM)
        assert exited.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == previous


def test_worker_threads_take_the_sqlite_directories_of_their_options(tmp_path: Path) -> None:
    engine_dir = tmp_path / "engine"
    app_db = make_app_db(tmp_path / "apps" / "app.db")
    with Engine(engine_dir) as engine:
        project = engine.create_project(CreateProject(name="a", database_url=sqlite_url(app_db)))
        engine.create_backup(project.project.id, CreateBackup())

    stop = threading.Event()
    options = runner.WorkerOptions(
        poll_interval=0.05, heartbeat_interval=0.05, sqlite_dirs=(str(tmp_path / "other"),)
    )
    workers = runner.start_workers(engine_dir, 2, stop, options=options)
    try:
        with Engine(engine_dir) as engine:
            deadline = time.monotonic() + 10
            while len(engine.rt.store.list_workers()) < 2:
                assert time.monotonic() < deadline, "the threads did not register"
                stop.wait(0.02)
            listed = engine.rt.store.list_workers()
            assert sorted(w.thread for w in listed) == ["capy-worker-1", "capy-worker-2"]
            assert {tuple(w.sqlite_dirs or ()) for w in listed} == {(f"{tmp_path}/other/",)}
    finally:
        runner.stop_workers(workers, stop)
    with Engine(engine_dir) as engine:
        assert all(w.stopped_at is not None for w in engine.rt.store.list_workers())
        # neither could open the project's file: its backup is still waiting for a worker
        (backup,) = engine.list_jobs(project.project.id)
        assert backup.state == "pending"
