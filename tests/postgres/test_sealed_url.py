"""A PostgreSQL project's password stays out of ``engine.db`` (issue 16, files at rest),
and the engine, reopened, still reaches the database with it: real server, real engine."""

from __future__ import annotations

from pathlib import Path

from pulumi_capy.api.models import CreateBackup, CreateProject, JobState
from pulumi_capy.engine.service import Engine
from tests.postgres.conftest import PgNamespace, connect


def _store_bytes(directory: Path) -> dict[str, bytes]:
    return {
        path.name: path.read_bytes()
        for path in directory.glob("engine.db*")  # the store, its -wal and -shm
    }


def test_the_password_is_not_in_engine_db_and_the_reopened_engine_connects(
    pg: PgNamespace, tmp_path: Path
) -> None:
    url = pg.create_database("app")
    password = pg.server.password
    assert password in url
    with connect(url) as db:
        db.execute("CREATE TABLE notes (id integer PRIMARY KEY, body text)")
        db.execute("INSERT INTO notes VALUES (1, 'kept')")
    directory = tmp_path / ".capy"
    with Engine(directory) as engine:
        project = engine.create_project(CreateProject(name="app", database_url=url)).project
        files = _store_bytes(directory)
        assert {"engine.db", "engine.db-wal"} <= set(files)
        for name, data in files.items():
            assert password.encode() not in data, name

    with Engine(directory) as engine:  # the URL now comes sealed from the store
        job = engine.wait_for_job(engine.create_backup(project.id, CreateBackup()).id)
        assert job.state == JobState.completed, job.error
        engine.run_pending()  # the verification restores it into a scratch database
        backups = engine.list_backups(project.id)
        assert [backup.verification_state for backup in backups] == ["verified"]
        for name, data in _store_bytes(directory).items():
            assert password.encode() not in data, name
