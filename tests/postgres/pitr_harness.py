"""A PostgreSQL project with point-in-time recovery on, streamed by a real worker.

``pitr`` gives each test a database of its own on the session's server (both
installations), an engine directory, the project, PITR turned on and a worker thread
(``Engine.run_worker``, as ``capy worker`` runs it) streaming its log; at the end PITR is
turned off (its replication slot dropped: a slot left behind would make the shared
server keep its log for ever) and the databases dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, LiteralString

import psycopg
import pytest

from pulumi_capy.api.models import CreateProject, Job, PutPitr, RestoreRequest
from pulumi_capy.engine import Engine
from pulumi_capy.engine.pitr.control import enqueue_base_backup

if TYPE_CHECKING:
    from tests.postgres.conftest import PgNamespace

WINDOW_TIMEOUT = 60.0


@dataclass
class WorkerThread:
    directory: Path
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    engine: Engine | None = None

    def start(self) -> None:
        self.stop.clear()
        self.engine = Engine(self.directory)
        self.thread = threading.Thread(
            target=self.engine.run_worker,
            args=(self.stop,),
            kwargs={"poll_interval": 0.05, "tick_interval": 3600.0},
            daemon=True,
        )
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=60)
            assert not self.thread.is_alive()
        if self.engine is not None:
            self.engine.close()
        self.thread = self.engine = None


@dataclass
class PitrProject:
    engine: Engine
    url: str
    project_id: str
    worker: WorkerThread
    pg: PgNamespace

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True)

    def commit(
        self, conn: psycopg.Connection, statement: LiteralString, params: tuple[object, ...] = ()
    ) -> datetime:
        """Run ``statement`` (committed) and return the server's clock right after."""
        conn.execute(statement, params)
        row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    def wait_covered(self, moment: datetime, timeout: float = WINDOW_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            end = self.engine.get_pitr(self.project_id).window_end
            if end is not None and end >= moment:
                return
            time.sleep(0.05)
        raise AssertionError(f"the window never reached {moment}: {self.status()}")

    def status(self) -> str:
        return repr(self.engine.get_pitr(self.project_id))

    def base_backup(self) -> None:
        job_id = enqueue_base_backup(self.engine.rt, self.project_id)
        self.wait(job_id)

    def wait(self, job_id: str, timeout: float = 300.0) -> Job:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.engine.get_job(job_id)
            if job.is_terminal:
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not end: {self.engine.get_job(job_id)}")

    def restore(self, moment: datetime, **options: object) -> Job:
        """A restore to ``moment`` run by the worker; the ended job."""
        job = self.engine.create_restore(
            self.project_id, RestoreRequest.model_validate({"restore_time": moment, **options})
        )
        return self.wait(job.id)

    def preview_url(self, job: Job) -> str:
        assert job.state == "completed", job
        preview = self.engine.get_preview_database(str(job.result["preview_database_id"]))  # type: ignore[index]
        return self.pg.server.url(str(preview.database_name))

    def rows(self, url: str, query: str = "SELECT i FROM t ORDER BY i") -> list[int]:
        with psycopg.connect(url, autocommit=True) as conn:
            return [int(row[0]) for row in conn.execute(query.encode())]


def open_window(engine: Engine, project_id: str, timeout: float = WINDOW_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.get_pitr(project_id).window_start is not None:
            return
        time.sleep(0.1)
    raise AssertionError(f"the PITR window did not open: {engine.get_pitr(project_id)}")


@pytest.fixture
def pitr(pg: PgNamespace, tmp_path: Path) -> Iterator[PitrProject]:
    """(A fixture: ``tests/postgres/conftest.py`` imports it.)"""
    url = pg.create_database("app")
    directory = tmp_path / ".capy"
    worker = WorkerThread(directory)
    with Engine(directory) as engine:
        project = engine.create_project(CreateProject(name="app", database_url=url)).project
        engine.put_pitr(project.id, PutPitr(enabled=True))
        worker.start()
        try:
            open_window(engine, project.id)
            yield PitrProject(engine, url, project.id, worker, pg)
        finally:
            worker.halt()
            engine.put_pitr(project.id, PutPitr(enabled=False))
