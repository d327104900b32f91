"""PITR control, the same over every ``Backend``: a real PostgreSQL project (the test
server's superuser has REPLICATION) turned on and off, and PITR restores refused while it
is off. A full point-in-time restore is tested with the engine's PITR core."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import BadRequest, NotFound
from pulumi_capy.api.models import (
    CreateProject,
    CreateRestorePoint,
    JobType,
    PitrMethod,
    PutPitr,
    RestorePointKind,
    RestoreRequest,
)
from pulumi_capy.engine.pitr.server import slot_name
from tests.pg import PostgresServer
from tests.postgres.conftest import PgNamespace

MOMENT = datetime(2026, 11, 26, 14, 32, tzinfo=UTC)


@pytest.fixture
def pg_url(debian_postgres: PostgresServer) -> Iterator[str]:
    namespace = PgNamespace(debian_postgres, f"t{secrets.token_hex(4)}")
    try:
        yield namespace.create_database("app")
    finally:
        namespace.drop_all()


def slots(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [str(row[0]) for row in conn.execute("SELECT slot_name FROM pg_replication_slots")]


def test_pitr_on_and_off_for_a_postgresql_project(backend: Backend, pg_url: str) -> None:
    project = backend.create_project(CreateProject(name="pg-app", database_url=pg_url)).project
    assert (project.pitr_window_start, project.pitr_window_end) == (None, None)
    off = backend.get_pitr(project.id)
    assert (off.enabled, off.window_start, off.window_end, off.streamer) == (
        False,
        None,
        None,
        None,
    )

    # while it is off, PITR restores are refused before any job, naming the field
    with pytest.raises(BadRequest) as restore:
        backend.create_restore(project.id, RestoreRequest(restore_time=MOMENT))
    assert restore.value.detail.startswith("restore_time: ")
    assert "point-in-time recovery" in restore.value.detail
    assert "capy pitr enable" in restore.value.detail
    with pytest.raises(BadRequest) as point:
        backend.create_restore_point(
            project.id,
            CreateRestorePoint(label="bad-deploy", kind=RestorePointKind.pitr, pitr_time=MOMENT),
        )
    assert point.value.detail.split(":")[0] in {"kind", "pitr_time"}
    assert "point-in-time recovery" in point.value.detail
    assert "capy pitr enable" in point.value.detail
    assert backend.list_jobs(project.id) == []
    assert backend.list_restore_points(project.id) == []

    change = backend.put_pitr(project.id, PutPitr(enabled=True))
    try:
        assert change.job is not None
        assert change.job.type == JobType.pitr_base_backup
        assert change.job.project_id == project.id
        assert (change.pitr.enabled, change.pitr.method) == (True, PitrMethod.stream)
        assert slot_name(project.id) in slots(pg_url)
        status = backend.get_pitr(project.id)
        assert (status.enabled, status.method) == (True, PitrMethod.stream)

        again = backend.put_pitr(project.id, PutPitr(enabled=True))
        assert again.job is None  # on already: no second base backup
        with pytest.raises(BadRequest) as other_method:
            backend.put_pitr(project.id, PutPitr(enabled=True, method=PitrMethod.archive))
        assert other_method.value.detail.startswith("method: ")
    finally:
        turned_off = backend.put_pitr(project.id, PutPitr(enabled=False))
    assert turned_off.job is None
    assert turned_off.pitr.enabled is False
    assert backend.get_pitr(project.id).enabled is False
    assert slot_name(project.id) not in slots(pg_url)


def test_pitr_errors_are_the_same(backend: Backend, app_db_url: str) -> None:
    with pytest.raises(NotFound) as unknown:
        backend.get_pitr("prj_nonexistent")
    assert "prj_nonexistent" in str(unknown.value)
    with pytest.raises(NotFound):
        backend.put_pitr("prj_nonexistent", PutPitr(enabled=True))

    project = backend.create_project(CreateProject(name="shop", database_url=app_db_url)).project
    with pytest.raises(BadRequest) as not_wal:  # a SQLite database in rollback-journal mode
        backend.put_pitr(project.id, PutPitr(enabled=True))
    assert not_wal.value.detail.startswith("database_url: ")
    assert "--set-wal" in not_wal.value.detail
    with pytest.raises(BadRequest) as archive:
        backend.put_pitr(project.id, PutPitr(enabled=True, method=PitrMethod.archive))
    assert archive.value.detail.startswith("method: ")
    assert backend.get_pitr(project.id).enabled is False
    assert backend.put_pitr(project.id, PutPitr(enabled=False)).pitr.enabled is False
    assert backend.list_jobs(project.id) == []
