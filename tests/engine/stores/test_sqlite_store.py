"""What only the SQLite store promises: its file, WAL mode, migrations and the partial
unique index behind the queue's locks."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.stores.contract import JobOutput
from pulumi_capy.engine.stores.sqlite import SqliteStore
from pulumi_capy.engine.stores.sqlite_migrations import MIGRATIONS
from tests.engine.stores.conftest import enqueue, later, new_job

LEASE = 10.0


def test_a_fresh_store_records_every_migration_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    with contextlib.closing(SqliteStore(path)) as store:
        assert store.schema_version == len(MIGRATIONS)
        store.ensure_organization("org_kept", "kept", datetime.now().astimezone())

    with contextlib.closing(sqlite3.connect(path)) as db:
        recorded = db.execute(
            "SELECT version, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()
        assert [version for version, _ in recorded] == list(range(1, len(MIGRATIONS) + 1))
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    # reopening applies nothing again: same rows, same times, data kept
    with contextlib.closing(SqliteStore(path)) as store:
        assert store.schema_version == len(MIGRATIONS)
        assert store.get_organization("org_kept") is not None
    with contextlib.closing(sqlite3.connect(path)) as db:
        again = db.execute(
            "SELECT version, applied_at FROM schema_migrations ORDER BY version"
        ).fetchall()
        assert again == recorded
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_the_partial_unique_index_refuses_two_running_holders_of_one_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "engine.db"
    now = ManualClock().now()
    until = later(now, LEASE)
    with contextlib.closing(SqliteStore(path)) as store:
        enqueue(store, new_job("job_done", now, lock="project:p1"))
        done = store.claim_job("worker-a", now, until)
        assert done is not None
        with store.transaction() as tx:
            output = JobOutput(exit_code=0, stdout=None, stderr=None)
            assert store.complete_job(tx, done.fence, result={}, output=output, now=now)
        enqueue(
            store,
            new_job("job_running", later(now, 1), lock="project:p1"),
            new_job("job_waiting", later(now, 2), lock="project:p1"),
        )
        running = store.claim_job("worker-a", later(now, 2), until)
        assert running is not None
        assert running.id == "job_running"
    with contextlib.closing(sqlite3.connect(path)) as db:
        columns = (
            "id, type, state, max_attempts, created_at, updated_at, run_after, locked_resource"
        )
        with pytest.raises(sqlite3.IntegrityError):
            db.execute(
                f"INSERT INTO jobs ({columns}) "  # noqa: S608 - fixed text
                "VALUES ('job_other', 'project.backup', 'running', 3, 'x', 'x', 'x', 'project:p1')"
            )
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("UPDATE jobs SET state = 'running' WHERE id = 'job_waiting'")
        db.rollback()
        # another lock, or no lock, is fine
        db.execute(
            f"INSERT INTO jobs ({columns}) "  # noqa: S608 - fixed text
            "VALUES ('job_free', 'project.backup', 'running', 3, 'x', 'x', 'x', NULL)"
        )
        db.execute(
            f"INSERT INTO jobs ({columns}) "  # noqa: S608 - fixed text
            "VALUES ('job_p2', 'project.backup', 'running', 3, 'x', 'x', 'x', 'project:p2')"
        )
        db.commit()


def test_the_data_version_moves_with_a_commit_of_another_process(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    with contextlib.closing(SqliteStore(path)) as store:
        before = store.data_version()
        assert store.data_version() == before
        with contextlib.closing(sqlite3.connect(path)) as writer, writer:
            writer.execute("INSERT INTO organizations VALUES ('org_x', 'x', 'x')")
        assert store.data_version() != before


def test_a_transaction_of_another_store_is_refused(tmp_path: Path) -> None:
    with (
        contextlib.closing(SqliteStore(tmp_path / "one.db")) as one,
        contextlib.closing(SqliteStore(tmp_path / "two.db")) as two,
    ):
        now = ManualClock().now()
        with pytest.raises(TypeError, match="not a transaction of this store"):
            one.enqueue(object(), new_job("job_1", now, lock=None))
        with two.transaction() as tx:
            with pytest.raises(TypeError, match="not a transaction of this store"):
                one.enqueue(tx, new_job("job_1", now, lock=None))
            two.enqueue(tx, new_job("job_2", now, lock=None))
        assert one.get_job("job_1") is None
        assert two.get_job("job_1") is None
        assert two.get_job("job_2") is not None
