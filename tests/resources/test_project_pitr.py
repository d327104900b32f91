"""``Project(pitr=…)`` and the PITR inputs of ``RestorePoint`` and ``Restore``, through
the providers on a real engine (SQLite and a real PostgreSQL project). Against hosted
CapyDB they are in ``test_hosted.py``."""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pulumi_capy.api.models import PutPitr
from pulumi_capy.engine.pitr.server import slot_name
from pulumi_capy.engine.service import Engine
from pulumi_capy.resources import project as project_module
from pulumi_capy.resources._provider import CapyResourceError
from pulumi_capy.resources.project import ProjectProvider
from pulumi_capy.resources.restore import RestoreProvider
from pulumi_capy.resources.restore_point import RestorePointProvider
from tests.engine.conftest import sqlite_url
from tests.pg import PostgresServer
from tests.postgres.conftest import PgNamespace
from tests.resources.conftest import project_inputs, restore_inputs, restore_point_inputs
from tests.resources.test_providers import create, read, stored, update

WHEN = "2026-11-26T14:32:00Z"


# ---------------------------------------------------------------- check and diff


@pytest.mark.parametrize("value", ["yes", 1])
def test_check_refuses_a_pitr_that_is_not_a_boolean(value: Any) -> None:
    result = ProjectProvider().check({}, project_inputs("sqlite:////tmp/app.db", pitr=value))
    assert [(f.property, f.reason) for f in result.failures] == [
        ("pitr", "pitr: must be true or false")
    ]


@pytest.mark.parametrize(("old", "new"), [(None, True), (True, False), (False, True)])
def test_turning_pitr_on_or_off_is_an_update(old: bool | None, new: bool) -> None:
    olds = stored(project_inputs("sqlite:////tmp/app.db", pitr=old))
    result = ProjectProvider().diff(
        "prj_1", olds, project_inputs("sqlite:////tmp/app.db", pitr=new)
    )
    assert (result.changes, result.replaces, result.delete_before_replace) == (True, [], False)


def test_unchanged_pitr_is_no_change() -> None:
    inputs = project_inputs("sqlite:////tmp/app.db", pitr=True)
    result = ProjectProvider().diff("prj_1", stored(inputs), inputs)
    assert result.changes is False


# ---------------------------------------------------------------- a SQLite project


def test_create_with_pitr_on_a_sqlite_project_not_in_wal_mode_fails_and_leaves_nothing(
    engine: Engine, app_db: Path
) -> None:
    with pytest.raises(CapyResourceError) as raised:
        ProjectProvider().create(project_inputs(sqlite_url(app_db), pitr=True))
    message = str(raised.value)
    assert "turn point-in-time recovery on (it was removed again)" in message
    assert "database_url" in message
    assert "--set-wal" in message
    assert engine.list_projects() == []  # a second `pulumi up` can create it afresh
    assert journal_mode(app_db) == "delete"


def journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0])


def test_pitr_on_a_sqlite_project_in_wal_mode_is_turned_on_and_off(
    engine: Engine, app_db: Path
) -> None:
    with contextlib.closing(sqlite3.connect(app_db)) as db:
        db.execute("PRAGMA journal_mode = WAL")
    provider = ProjectProvider()
    inputs = project_inputs(sqlite_url(app_db), pitr=True)
    created = create(provider, inputs)  # no job to wait for: a worker's replicator starts it
    assert created.outs["pitr"] is True
    assert engine.get_pitr(created.id).enabled is True
    assert read(provider, created.id, stored(created.outs)).outs["pitr"] is True

    updated = update(provider, created.id, stored(created.outs), {**inputs, "pitr": False})
    assert updated["pitr"] is False
    assert engine.get_pitr(created.id).enabled is False


def test_pitr_off_on_a_sqlite_project_is_recorded_and_read(engine: Engine, app_db: Path) -> None:
    provider = ProjectProvider()
    inputs = project_inputs(sqlite_url(app_db))
    created = create(provider, inputs)
    assert (created.outs["pitr"], created.outs["pitr_window_start"]) == (None, None)
    assert read(provider, created.id, stored(created.outs)).outs["pitr"] is None  # unmanaged

    news = {**inputs, "pitr": False}
    updated = update(provider, created.id, stored(created.outs), news)

    assert updated["pitr"] is False
    assert read(provider, created.id, stored(updated)).outs["pitr"] is False
    assert engine.get_pitr(created.id).enabled is False


# ---------------------------------------------------------------- a PostgreSQL project


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


def test_pitr_is_turned_on_and_off_by_update_and_read_back(engine: Engine, pg_url: str) -> None:
    provider = ProjectProvider()
    inputs = project_inputs(pg_url)
    created = create(provider, inputs)
    project_id = created.id
    # on already (its first base backup queued): the update waits for no job
    assert engine.put_pitr(project_id, PutPitr(enabled=True)).job is not None
    try:
        on = update(provider, project_id, stored(created.outs), {**inputs, "pitr": True})
        assert on["pitr"] is True
        assert (on["pitr_window_start"], on["pitr_window_end"]) == (None, None)  # not open yet
        assert read(provider, project_id, stored(on)).outs["pitr"] is True

        off = update(provider, project_id, stored(on), {**inputs, "pitr": False})
        assert off["pitr"] is False
        assert engine.get_pitr(project_id).enabled is False
        assert slot_name(project_id) not in slots(pg_url)

        # turned on behind Pulumi's back: a refresh shows it, and the next up turns it off
        engine.put_pitr(project_id, PutPitr(enabled=True))
        drifted = read(provider, project_id, stored(off)).outs
        assert drifted["pitr"] is True
        diff = provider.diff(project_id, stored(drifted), {**inputs, "pitr": False})
        assert (diff.changes, diff.replaces) == (True, [])
        update(provider, project_id, stored(drifted), {**inputs, "pitr": False})
        assert engine.get_pitr(project_id).enabled is False
    finally:
        engine.put_pitr(project_id, PutPitr(enabled=False))
    assert slot_name(project_id) not in slots(pg_url)


# ---------------------------------------------------------------- RestorePoint and Restore


def test_embedded_pitr_inputs_reach_the_engine(engine: Engine, app_db: Path) -> None:
    project = create(ProjectProvider(), project_inputs(sqlite_url(app_db)))
    with pytest.raises(CapyResourceError, match="point-in-time recovery"):
        RestorePointProvider().create(restore_point_inputs(project.id, kind="pitr", pitr_time=WHEN))
    with pytest.raises(CapyResourceError, match=r"restore_time.*point-in-time recovery"):
        RestoreProvider().create(restore_inputs(project.id, restore_time=WHEN))
    assert engine.list_restore_points(project.id) == []
    assert engine.list_jobs(project.id) == []


def test_an_update_whose_base_backup_does_not_end_leaves_pitr_off(
    engine: Engine, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = ProjectProvider()
    inputs = project_inputs(pg_url)
    created = create(provider, inputs)
    monkeypatch.setattr(project_module, "BASE_BACKUP_TIMEOUT", 0.0)  # it cannot end in time

    with pytest.raises(CapyResourceError) as raised:
        provider.update(created.id, stored(created.outs), {**inputs, "pitr": True})

    assert "update project shop: turn point-in-time recovery on" in str(raised.value)
    assert "pitr.base_backup" in str(raised.value)
    assert engine.get_pitr(created.id).enabled is False  # as it was before the update
    assert slot_name(created.id) not in slots(pg_url)


def test_create_with_pitr_waits_for_the_first_base_backup(engine: Engine, pg_url: str) -> None:
    provider = ProjectProvider()
    inputs = project_inputs(pg_url, pitr=True)

    created = create(provider, inputs)

    try:
        assert created.outs["pitr"] is True
        (job,) = engine.list_jobs(created.id)
        assert (job.type, job.state) == ("pitr.base_backup", "completed")
        assert engine.get_pitr(created.id).enabled is True
        assert read(provider, created.id, stored(created.outs)).outs["pitr"] is True
        off = update(provider, created.id, stored(created.outs), {**inputs, "pitr": False})
        assert off["pitr"] is False
    finally:
        engine.put_pitr(created.id, PutPitr(enabled=False))
    assert slot_name(created.id) not in slots(pg_url)
