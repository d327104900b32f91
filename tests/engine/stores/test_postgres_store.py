"""The PostgreSQL store beyond the shared contract: claims from several processes, the
lock index across handles, NOTIFY waking a waiting worker, the secret key it requires and
the password of its URL kept out of every message; and an engine run on it end to end."""

from __future__ import annotations

import contextlib
import multiprocessing
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet

from pulumi_capy.api.errors import ConfigError
from pulumi_capy.api.models import CreateProject, JobState, RestoreRequest
from pulumi_capy.engine.service import Engine
from pulumi_capy.engine.stores.contract import JobOutput
from pulumi_capy.engine.stores.postgres import PostgresStore, open_postgres_store
from tests.engine.conftest import make_app_db, sqlite_url, table_contents, take_backup
from tests.engine.stores.conftest import (
    drop_database,
    enqueue,
    fresh_database,
    later,
    new_job,
    project_record,
)
from tests.pg import PostgresServer

KEY = Fernet.generate_key().decode()
ENVIRON = {"CAPY_SECRET_KEY": KEY}
LEASE = 60.0
NO_OUTPUT = JobOutput(exit_code=0, stdout=None, stderr=None)


@pytest.fixture
def url(debian_postgres: PostgresServer) -> Iterator[str]:
    made = fresh_database(debian_postgres)
    yield made
    drop_database(debian_postgres, made)


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    with contextlib.closing(PostgresStore(url, environ=ENVIRON)) as opened:
        yield opened


def _claim_all(url: str, key: str, worker: str, ready: Any, start: Any, out: Any) -> None:
    """One process's claims until the queue is empty (run in a child process), from the
    moment every process is ready: none takes the whole queue before the others start."""
    now = datetime.now(UTC)
    mine: list[str] = []
    with contextlib.closing(PostgresStore(url, environ={"CAPY_SECRET_KEY": key})) as store:
        ready.put(worker)
        start.wait()
        idle = 0
        while idle < 3:  # a None may only mean the rest are held by others' claims
            job = store.claim_job(worker, now, now + timedelta(seconds=LEASE))
            if job is None:
                idle += 1
                time.sleep(0.05)
                continue
            idle = 0
            mine.append(job.id)
    out.put((worker, mine))


def test_claimers_in_four_processes_take_500_jobs_each_exactly_once(
    store: PostgresStore, url: str
) -> None:
    now = datetime.now(UTC) - timedelta(seconds=1)
    ids = [f"job_{n:03d}" for n in range(500)]
    enqueue(store, *(new_job(job_id, now, lock=None) for job_id in ids))
    context = multiprocessing.get_context("spawn")
    ready, out, start = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(target=_claim_all, args=(url, KEY, f"worker-{n}", ready, start, out))
        for n in range(4)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=60)
        start.set()
        claimed = dict(out.get(timeout=120) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=30)
    taken = [job_id for mine in claimed.values() for job_id in mine]
    assert Counter(taken).most_common(1)[0][1] == 1
    assert sorted(taken) == ids
    assert sum(1 for mine in claimed.values() if mine) >= 2  # they really shared the work
    for worker, mine in claimed.items():
        for job_id in mine[:5]:
            record = store.get_job(job_id)
            assert record is not None
            assert (record.state, record.claimed_by) == (JobState.running, worker)


def test_one_running_job_holds_a_lock_across_handles(store: PostgresStore, url: str) -> None:
    now = datetime.now(UTC)
    enqueue(
        store,
        new_job("job_a", now, lock="project:prj_1"),
        new_job("job_b", now, lock="project:prj_1"),
    )
    with contextlib.closing(PostgresStore(url, environ=ENVIRON)) as other:
        first = store.claim_job("worker-a", now, later(now, LEASE))
        assert first is not None
        assert first.id == "job_a"
        assert other.claim_job("worker-b", now, later(now, LEASE)) is None
        assert other.claim_job("worker-b", now, later(now, LEASE), only_id="job_b") is None
        # the partial unique index, not only the claim's NOT EXISTS, refuses a second holder
        with (
            psycopg.connect(url) as raw,
            pytest.raises(psycopg.errors.UniqueViolation, match="jobs_running_lock"),
        ):
            raw.execute("UPDATE jobs SET state = 'running' WHERE id = 'job_b'")
        with store.transaction() as tx:
            assert store.complete_job(
                tx, first.fence, result={}, output=NO_OUTPUT, now=later(now, 1)
            )
        second = other.claim_job("worker-b", later(now, 1), later(now, LEASE))
        assert second is not None
        assert second.id == "job_b"


def test_notify_wakes_a_waiting_worker_within_a_second(store: PostgresStore, url: str) -> None:
    assert store.wait_for_work(0.0)  # the first call listens and says "look now"
    assert not store.wait_for_work(0.05)  # nothing queued since
    woken: list[float] = []

    def wait() -> None:
        started = time.monotonic()
        if store.wait_for_work(10.0):
            woken.append(time.monotonic() - started)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    with contextlib.closing(PostgresStore(url, environ=ENVIRON)) as other:
        enqueued_at = time.monotonic()
        enqueue(other, new_job("job_1", datetime.now(UTC), lock=None))
        waiter.join(timeout=10)
        latency = time.monotonic() - enqueued_at
    assert woken, "wait_for_work was not woken by the enqueue"
    assert latency < 1.0


def test_a_worker_on_postgres_picks_a_new_job_up_at_once(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPY_SECRET_KEY", KEY)
    with Engine(tmp_path / "worker", store_url=url) as worker_engine:
        stop = threading.Event()
        runner = threading.Thread(
            target=worker_engine.run_worker, args=(stop,), kwargs={"poll_interval": 30.0}
        )
        runner.start()
        try:
            time.sleep(1.5)  # the worker has looked, found nothing and waits
            with Engine(tmp_path / "api", store_url=url) as api:
                app_db = make_app_db(tmp_path / "app.db", rows=5)
                created = api.create_project(
                    CreateProject(name="app", database_url=sqlite_url(app_db))
                )
                queued = time.monotonic()
                job = api.create_backup(created.project.id)
                while api.get_job(job.id).state == JobState.pending:
                    assert time.monotonic() - queued < 5.0, "the worker slept through the NOTIFY"
                    time.sleep(0.01)
                picked_up = time.monotonic() - queued
        finally:
            stop.set()
            runner.join(timeout=30)
    assert picked_up < 1.0


def test_the_store_requires_capy_secret_key(url: str, debian_postgres: PostgresServer) -> None:
    with pytest.raises(ConfigError) as caught:
        PostgresStore(url, environ={})
    message = str(caught.value)
    assert "CAPY_SECRET_KEY" in message
    assert "\n" not in message
    assert debian_postgres.password not in message


def test_a_wrong_password_is_an_error_without_the_password(
    url: str, debian_postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "Wr0ng-s3cret-passw0rd"
    bad_url = url.replace(f":{debian_postgres.password}@", f":{wrong}@")
    with pytest.raises(ConfigError) as caught:
        PostgresStore(bad_url, environ=ENVIRON)
    assert "password authentication failed" in str(caught.value)
    for secret in (wrong, debian_postgres.password):
        assert secret not in str(caught.value)
        assert secret not in repr(caught.value)
    assert caught.value.__cause__ is None
    # through the engine, as CAPY_STORE_URL selects it
    monkeypatch.setenv("CAPY_SECRET_KEY", KEY)
    monkeypatch.setenv("CAPY_STORE_URL", bad_url)
    with pytest.raises(ConfigError) as through_engine:
        Engine(tmp_path / ".capy")
    assert wrong not in str(through_engine.value)
    assert ":***@" in str(through_engine.value)
    assert not any(wrong.encode() in path.read_bytes() for path in _files(tmp_path))


def _files(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]


def test_the_password_stays_out_of_reprs_and_the_engine_directory(
    url: str, debian_postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPY_SECRET_KEY", KEY)
    with Engine(tmp_path / ".capy", store_url=url) as engine:
        assert debian_postgres.password not in repr(engine.rt.store)
        assert ":***@" in repr(engine.rt.store)
        app_db = make_app_db(tmp_path / "app.db", rows=5)
        engine.create_project(CreateProject(name="app", database_url=sqlite_url(app_db)))
    secret = debian_postgres.password.encode()
    assert not any(secret in path.read_bytes() for path in _files(tmp_path / ".capy"))


def test_a_store_migrated_by_a_newer_capy_is_refused(
    store: PostgresStore, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPY_SECRET_KEY", KEY)
    with store.transaction() as tx:
        store._raw(tx).execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (999, now())"
        )
    with pytest.raises(ConfigError, match="newer capy"):
        open_postgres_store(url)


def test_projects_urls_are_sealed_in_the_database(store: PostgresStore, url: str) -> None:
    now = datetime.now(UTC)
    record = project_record("prj_1", "shop", now).model_copy(
        update={"database_url": "postgresql://app:hunter2@db.internal/app"}
    )
    assert store.insert_project(record).database_url == record.database_url
    with psycopg.connect(url) as raw:
        kept = raw.execute("SELECT database_url FROM projects").fetchone()
    assert kept is not None
    assert "hunter2" not in kept[0]


def test_an_engine_on_postgres_backs_up_and_restores_to_a_preview(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAPY_SECRET_KEY", KEY)
    monkeypatch.setenv("CAPY_STORE_URL", url)
    app_db = make_app_db(tmp_path / "app" / "app.db")
    at_backup = table_contents(app_db)
    with Engine(tmp_path / ".capy") as engine:
        assert type(engine.rt.store).__name__ == "PostgresStore"
        project = engine.create_project(
            CreateProject(name="app", database_url=sqlite_url(app_db))
        ).project
        backup = take_backup(engine, project.id)
        assert backup.verification_state == "verified"
        with contextlib.closing(sqlite3.connect(app_db)) as db, db:
            db.execute("DELETE FROM orders")
        job = engine.wait_for_job(
            engine.create_restore(project.id, RestoreRequest(backup_key=backup.backup_key)).id
        )
        assert job.state == JobState.completed
        assert job.preview_database_id is not None
        preview = next(
            p for p in engine.list_preview_databases(project.id) if p.id == job.preview_database_id
        )
        assert preview.database_name is not None
        assert table_contents(Path(preview.database_name)) == at_backup
    assert not (tmp_path / ".capy" / "engine.db").exists()  # the metadata is in PostgreSQL
    with Engine(tmp_path / "elsewhere") as other_host:  # another host sees it all
        assert [p.name for p in other_host.list_projects()] == ["app"]
        assert [b.backup_key for b in other_host.list_backups(project.id)] == [backup.backup_key]
