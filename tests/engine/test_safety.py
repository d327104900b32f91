"""Nothing is ever lost: consistent backups under load, atomic overwrites, crash
recovery, damaged blobs that touch nothing, crash-safe blob writes.

Real files, real threads, a real process killed with SIGKILL; the wall clock
only where a real lease must expire (polled with deadlines).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pulumi_capy.api.errors import JobFailed
from pulumi_capy.api.models import (
    Backup,
    CreateProject,
    JobState,
    Project,
    RestoreRequest,
    TargetKind,
)
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.jobs import safety_label
from pulumi_capy.engine.service import Engine
from pulumi_capy.engine.stores.contract import JobRecord
from tests.engine.conftest import (
    change_app_db,
    make_app_db,
    sqlite_url,
    table_contents,
    take_backup,
)

# ---------------------------------------------------------------- helpers


def _new_project(engine: Engine, database: Path) -> Project:
    return engine.create_project(
        CreateProject(name="app", database_url=sqlite_url(database))
    ).project


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _overwrite(backup_key: str) -> RestoreRequest:
    return RestoreRequest(
        backup_key=backup_key, target_kind=TargetKind.project, confirm_project_overwrite=True
    )


def _checksum(db: sqlite3.Connection) -> str:
    """A digest of every user table, read in one read transaction."""
    digest = hashlib.sha256()
    db.execute("BEGIN")
    try:
        tables = [
            str(row[0])
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        for table in tables:
            digest.update(table.encode())
            for row in db.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):  # noqa: S608
                digest.update(repr(tuple(row)).encode())
    finally:
        db.execute("COMMIT")
    return digest.hexdigest()


def _file_checksum(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        return _checksum(db)


def _backup_contents(engine: Engine, backup: Backup, scratch: Path) -> dict[str, list[Any]]:
    """The tables of a backup, read from its blob."""
    record = engine.rt.store.get_backup(backup.id)
    assert record is not None
    copy = scratch / f"{backup.id}.db"
    engine.rt.blobs.get_file(backup.backup_key, record.sha256 or "", copy)
    try:
        return table_contents(copy)
    finally:
        copy.unlink()


def _wait_until(condition: Callable[[], object], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# ---------------------------------------------------------------- backups under load


class _Writer(threading.Thread):
    """Commits ``(n, n*n)`` and bumps a counter in one transaction, every ~2 ms."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="app-writer", daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.committed = 0
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            with contextlib.closing(
                sqlite3.connect(self.path, timeout=30, isolation_level=None)
            ) as db:
                while not self.stop.is_set():
                    n = self.committed
                    db.execute("BEGIN IMMEDIATE")
                    db.execute("INSERT INTO squares (n, sq) VALUES (?, ?)", (n, n * n))
                    db.execute("UPDATE counter SET value = value + 1 WHERE id = 1")
                    db.execute("COMMIT")
                    self.committed = n + 1
                    time.sleep(0.002)
        except BaseException as exc:
            self.errors.append(exc)


def _make_busy_db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("CREATE TABLE squares (n INTEGER PRIMARY KEY, sq INTEGER NOT NULL)")
        db.execute("CREATE TABLE counter (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER)")
        db.execute("INSERT INTO counter (id, value) VALUES (1, 0)")
        # some bulk, so that the copy is not instantaneous
        db.execute("CREATE TABLE ballast (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        db.executemany(
            "INSERT INTO ballast (id, data) VALUES (?, randomblob(1024))",
            [(i,) for i in range(3000)],
        )
    return path


def test_a_backup_taken_while_a_writer_commits_is_a_consistent_snapshot(
    tmp_path: Path,
) -> None:
    app = _make_busy_db(tmp_path / "app" / "busy.db")
    writer = _Writer(app)
    with Engine(tmp_path / "capy") as engine:
        project = _new_project(engine, app)
        writer.start()
        try:
            _wait_until(lambda: writer.committed >= 20 or writer.errors, "the writer to start")
            before = writer.committed
            backup_job = engine.wait_for_job(engine.create_backup(project.id).id, timeout=30)
            during = writer.committed - before
            after_backup = writer.committed
            _wait_until(
                lambda: writer.committed >= after_backup + 5 or writer.errors,
                "more writes after the backup",
            )
        finally:
            writer.stop.set()
            writer.join(timeout=10)
        assert not writer.errors, writer.errors
        assert during > 0, "the writer was blocked while the backup ran"
        assert backup_job.result is not None
        key = str(backup_job.result["backup_key"])

        restore = engine.create_restore(
            project.id, RestoreRequest(backup_key=key, target_kind=TargetKind.new_preview)
        )
        engine.wait_for_job(restore.id, timeout=30)  # runs the verification first
        backup = next(item for item in engine.list_backups(project.id) if item.backup_key == key)
        assert backup.verification_state == "verified"
        (preview,) = engine.list_preview_databases(project.id)
        assert preview.state == "ready"
        assert preview.database_name is not None
        copy = Path(preview.database_name)

    with contextlib.closing(sqlite3.connect(copy)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        rows, highest, wrong = db.execute(
            "SELECT count(*), max(n), sum(sq <> n * n) FROM squares"
        ).fetchone()
        (counter,) = db.execute("SELECT value FROM counter WHERE id = 1").fetchone()
        (ballast,) = db.execute("SELECT count(*) FROM ballast").fetchone()
    assert counter == rows  # the counter and the rows come from one moment
    assert highest == rows - 1  # no gap: every committed transaction or none of it
    assert wrong == 0
    assert ballast == 3000
    assert 20 <= rows < writer.committed  # a moment during the run, not the end
    with contextlib.closing(sqlite3.connect(app)) as db:
        assert db.execute("SELECT value FROM counter").fetchone()[0] == writer.committed


# ---------------------------------------------------------------- overwrite under a reader


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_an_open_reader_sees_the_old_or_the_new_database_never_a_mix(
    tmp_path: Path, journal_mode: str
) -> None:
    app = make_app_db(tmp_path / "app" / "app.db", rows=400)
    with contextlib.closing(sqlite3.connect(app)) as db:
        db.execute(f"PRAGMA journal_mode = {journal_mode}")
    stop = threading.Event()
    reads: list[str] = []
    errors: list[BaseException] = []

    def read_continuously() -> None:
        try:
            with contextlib.closing(
                sqlite3.connect(app, timeout=30, isolation_level=None, check_same_thread=False)
            ) as db:
                while not stop.is_set():
                    reads.append(_checksum(db))
                reads.append(_checksum(db))  # after the restore finished
        except BaseException as exc:
            errors.append(exc)

    with Engine(tmp_path / "capy") as engine:
        project = _new_project(engine, app)
        backup = take_backup(engine, project.id)
        new_state, new_sum = table_contents(app), _file_checksum(app)
        change_app_db(app)
        old_state, old_sum = table_contents(app), _file_checksum(app)
        assert old_sum != new_sum

        reader = threading.Thread(target=read_continuously, name="reader")
        reader.start()
        try:
            _wait_until(lambda: len(reads) >= 3 or errors, "the reader to start")
            job = engine.wait_for_job(
                engine.create_restore(project.id, _overwrite(backup.backup_key)).id, timeout=30
            )
            count_at_end = len(reads)
            _wait_until(lambda: len(reads) >= count_at_end + 3 or errors, "reads after")
        finally:
            stop.set()
            reader.join(timeout=30)
        assert not errors, errors
        assert job.state == JobState.completed
        assert job.result is not None

        unexpected = {digest for digest in reads if digest not in (old_sum, new_sum)}
        assert not unexpected, f"{len(unexpected)} read(s) saw neither state"
        assert reads[0] == old_sum
        assert reads[-1] == new_sum
        # once the new state was seen, the old one never came back
        first_new = reads.index(new_sum)
        assert set(reads[first_new:]) == {new_sum}
        assert table_contents(app) == new_state

        # the safety backup holds the state that was overwritten
        safety_key = str(job.result["safety_backup_key"])
        safety = next(b for b in engine.list_backups(project.id) if b.backup_key == safety_key)
        assert safety.label == safety_label(job.id)
        record = engine.rt.store.get_backup(safety.id)
        assert record is not None
        copy = tmp_path / "safety.db"
        engine.rt.blobs.get_file(safety_key, record.sha256 or "", copy)
        assert table_contents(copy) == old_state


def test_a_restore_retried_after_a_failure_keeps_what_it_overwrites(
    engine_dir: Path, clock: ManualClock, app_db: Path, tmp_path: Path
) -> None:
    failures = [RuntimeError("the first attempt breaks before its commit")]

    def flaky(job: JobRecord) -> None:
        if failures:
            raise failures.pop()

    with Engine(engine_dir, clock=clock, hooks={"restore.before_commit": flaky}) as engine:
        project = _new_project(engine, app_db)
        backup = take_backup(engine, project.id)
        backed_up = table_contents(app_db)
        change_app_db(app_db)
        job = engine.create_restore(project.id, _overwrite(backup.backup_key))
        assert engine.worker.run_once(only_id=job.id)
        first = engine.get_job(job.id)
        assert (first.state, first.attempts) == (JobState.pending, 1)
        assert first.retry_classification == "transient"

        # the application writes on while the restore backs off
        with contextlib.closing(sqlite3.connect(app_db)) as db, db:
            db.execute(
                "INSERT INTO customers (name, email) "
                "VALUES ('written between attempts', 'between@example.test')"
            )
        overwritten = table_contents(app_db)

        done = engine.wait_for_job(job.id, timeout=600)
        assert (done.state, done.attempts) == (JobState.completed, 2)
        assert table_contents(app_db) == backed_up
        kept = [_backup_contents(engine, b, tmp_path) for b in engine.list_backups(project.id)]
    # regression: every attempt takes its own safety backup, so rows
    # written between attempts are never lost
    assert overwritten in kept, "the state overwritten by attempt 2 is in no backup"


# ---------------------------------------------------------------- SIGKILL mid-restore

HANGING_WORKER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    from pulumi_capy.engine import Engine

    directory, job_id, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])


    def hang(job):
        marker.touch()
        while True:
            time.sleep(60)


    with Engine(directory, lease_seconds=1.0, hooks={"restore.before_commit": hang}) as engine:
        engine.wait_for_job(job_id, timeout=120)
    """
)


def test_a_restore_killed_before_its_commit_is_finished_by_another_worker(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "capy"
    app = make_app_db(tmp_path / "app" / "app.db")
    with Engine(directory) as setup:
        project = _new_project(setup, app)
        backup = take_backup(setup, project.id)
        backed_up = table_contents(app)
        change_app_db(app)
        old_state = table_contents(app)
        job_id = setup.create_restore(project.id, _overwrite(backup.backup_key)).id

    script = tmp_path / "hanging_worker.py"
    script.write_text(HANGING_WORKER, encoding="utf-8")
    marker = tmp_path / "inside-before-commit"
    output = tmp_path / "hanging_worker.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(script), str(directory), job_id, str(marker)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert process.poll() is None, output.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the worker never reached before_commit"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    # killed right before the commit: the target is untouched
    assert table_contents(app) == old_state

    with Engine(directory, lease_seconds=1.0) as engine:
        stranded = engine.get_job(job_id)
        assert (stranded.state, stranded.attempts) == (JobState.running, 1)
        assert f":{process.pid}:" in (stranded.claimed_by or "")

        done = engine.wait_for_job(job_id, timeout=30)
        assert (done.state, done.attempts) == (JobState.completed, 2)
        assert done.claimed_by == engine.rt.worker_id
        assert table_contents(app) == backed_up

        # the state the killed attempt was about to overwrite is in a safety backup
        safety = [b for b in engine.list_backups(project.id) if b.label == safety_label(job_id)]
        assert safety
        assert done.result is not None
        assert done.result["safety_backup_key"] in {b.backup_key for b in safety}
        assert old_state in [_backup_contents(engine, b, tmp_path) for b in safety]
    assert not any(path.name.endswith(".restoring") for path in app.parent.iterdir())


# ---------------------------------------------------------------- damaged blobs


def _flip_middle_byte(engine: Engine, backup: Backup) -> None:
    blob = engine.directory / "blobs" / backup.backup_key
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def test_a_damaged_blob_fails_a_project_restore_and_touches_nothing(
    engine: Engine, project: Project, app_db: Path
) -> None:
    backup = take_backup(engine, project.id)
    assert backup.verification_state == "verified"
    change_app_db(app_db)
    before = _file_sha256(app_db)
    _flip_middle_byte(engine, backup)

    job = engine.create_restore(project.id, _overwrite(backup.backup_key))
    with pytest.raises(JobFailed) as failure:
        engine.wait_for_job(job.id, timeout=600)
    failed = failure.value.job
    assert (failed.state, failed.attempts) == (JobState.failed, 1)
    assert failed.retry_classification == "permanent"
    assert "checksum" in (failed.error or "").lower()
    assert _file_sha256(app_db) == before
    assert [b.id for b in engine.list_backups(project.id)] == [backup.id]  # no safety backup
    assert not any(path.name.endswith(".restoring") for path in app_db.parent.iterdir())


def test_a_damaged_blob_fails_a_new_preview_and_creates_no_file(
    engine: Engine, project: Project
) -> None:
    backup = take_backup(engine, project.id)
    _flip_middle_byte(engine, backup)

    job = engine.create_restore(
        project.id,
        RestoreRequest(backup_key=backup.backup_key, target_kind=TargetKind.new_preview),
    )
    with pytest.raises(JobFailed) as failure:
        engine.wait_for_job(job.id, timeout=600)
    failed = failure.value.job
    assert (failed.state, failed.attempts) == (JobState.failed, 1)
    assert failed.retry_classification == "permanent"
    assert "checksum" in (failed.error or "").lower()

    previews = engine.directory / "previews"
    assert [path for path in previews.rglob("*") if path.is_file()] == []
    (preview,) = engine.list_preview_databases(project.id)
    assert preview.id == failed.preview_database_id
    assert preview.state == "failed"
    assert "checksum" in (preview.last_error or "").lower()


@pytest.mark.parametrize("damage", ["first byte", "last byte", "truncated"])
def test_a_blob_damaged_anywhere_is_reported_as_a_checksum_mismatch(
    engine: Engine, project: Project, app_db: Path, damage: str
) -> None:
    backup = take_backup(engine, project.id)
    change_app_db(app_db)
    before = _file_sha256(app_db)
    blob = engine.directory / "blobs" / backup.backup_key
    data = bytearray(blob.read_bytes())
    if damage == "truncated":
        del data[len(data) - len(data) // 4 :]
    else:
        data[0 if damage == "first byte" else -1] ^= 0xFF
    blob.write_bytes(bytes(data))

    job = engine.create_restore(project.id, _overwrite(backup.backup_key))
    with pytest.raises(JobFailed) as failure:
        engine.wait_for_job(job.id, timeout=600)
    failed = failure.value.job
    assert (failed.state, failed.attempts) == (JobState.failed, 1)
    assert failed.retry_classification == "permanent"
    assert _file_sha256(app_db) == before
    assert [b.id for b in engine.list_backups(project.id)] == [backup.id]
    # regression: damage that breaks the zstd frame is still reported
    # as a checksum mismatch
    assert "checksum" in (failed.error or "").lower(), failed.error


# ---------------------------------------------------------------- blob writes


def test_blob_writes_leave_no_temporary_files_and_a_matching_manifest(
    engine: Engine, project: Project
) -> None:
    backup = take_backup(engine, project.id)
    record = engine.rt.store.get_backup(backup.id)
    assert record is not None
    assert record.sha256

    blobs = engine.directory / "blobs"
    blob = blobs / backup.backup_key
    assert blob.is_file()
    assert list(blobs.rglob("*.tmp")) == []
    assert list((engine.directory / "tmp").iterdir()) == []

    manifest_path = blob.with_name(blob.name + ".manifest.json")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["sha256"] == record.sha256 == _file_sha256(blob)
    assert manifest["key"] == backup.backup_key
    assert manifest["blob_bytes"] == record.blob_bytes == blob.stat().st_size
    assert manifest["source_bytes"] == record.size_bytes
    assert manifest["backup_id"] == backup.id
    assert manifest["format"] == record.format
    assert sorted(path.name for path in blob.parent.iterdir()) == sorted(
        [blob.name, manifest_path.name]
    )
