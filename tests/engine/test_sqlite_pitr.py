"""Point-in-time recovery of SQLite, against real files and real processes: an application
process commits a row holding its own clock every few milliseconds while a worker's
replicator ships the log; restores to moments hold exactly the rows committed by then.

What "exactly" can mean: the replicator reads the log every few milliseconds and labels
each transaction with the end of the read that found it, never earlier than its commit.
So a restore to T holds no row committed after T (each row's ``before``, taken right
before its commit, is at most T), every row committed up to a read that ended by T, and
nothing missing in the middle (the ids are 1..n). A row committed in the last moments
before T may be left out (``RESOLUTION``, generous for a loaded 2-core machine).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pulumi_capy.api.errors import InvalidInput, JobFailed
from pulumi_capy.api.models import (
    CreateProject,
    Job,
    PutPitr,
    PutScheduledBackup,
    RestoreRequest,
)
from pulumi_capy.engine import Engine
from pulumi_capy.engine.pitr import archive, sqlite_replicate
from pulumi_capy.engine.pitr.control import enqueue_base_backup
from pulumi_capy.engine.pitr.sqlite_replicate import parse_segment_name, sequence_of
from tests.blobfiles import local_blobs

WRITER = Path(__file__).with_name("sqlite_writer.py")
# seconds: a row committed this long before T is always in a restore to T (measured: rows
# left out were committed at most ~13 ms before T, with the log read every 5 ms)
RESOLUTION = 0.15
CAPY = Path(sys.executable).with_name("capy")


@dataclass
class WorkerThread:
    """``Engine.run_worker`` (what ``capy worker`` runs) in a thread of the test."""

    directory: Path
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.stop.clear()
        engine = Engine(self.directory)
        self.thread = threading.Thread(
            target=engine.run_worker,
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
        self.thread = None


@dataclass
class Writer:
    """The application: ``sqlite_writer.py`` in a process of its own."""

    process: subprocess.Popen[bytes]
    out: Path

    def finish(self, *, now: bool = False) -> dict[str, object]:
        """Its commits, once it ends (``now``: stop it first)."""
        if now and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        errors = self.out.with_suffix(".err")
        assert self.process.wait(timeout=120) == 0, errors.read_text(errors="replace")[-3000:]
        data: dict[str, object] = json.loads(self.out.read_text())
        return data


@dataclass
class App:
    tmp: Path
    db: Path
    engine: Engine
    project_id: str
    worker: WorkerThread
    writers: int = 0

    def write(self, *extra: str) -> Writer:
        self.writers += 1
        out = self.tmp / f"writer-{self.writers}.json"
        with out.with_suffix(".err").open("wb") as errors:
            process = subprocess.Popen(
                [sys.executable, str(WRITER), str(self.db), str(out), *extra], stderr=errors
            )
        return Writer(process, out)

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def window_open(self) -> None:
        self.wait(
            "the PITR window to open",
            lambda: self.engine.get_pitr(self.project_id).window_start is not None,
        )

    def covered(self, moment: float) -> None:
        """Wait until the window reaches ``moment`` (time.time())."""

        def reached() -> bool:
            end = self.engine.get_pitr(self.project_id).window_end
            return end is not None and end.timestamp() >= moment

        self.wait("the window to reach the moment", reached)

    def restore(self, moment: float, **request: object) -> Job:
        job = self.engine.create_restore(
            self.project_id,
            RestoreRequest.model_validate(
                {"restore_time": datetime.fromtimestamp(moment, UTC), **request}
            ),
        )
        try:
            return self.engine.wait_for_job(job.id, timeout=120)
        except JobFailed as failed:
            return failed.job

    def rows_at(self, moment: float) -> list[tuple[int, float]]:
        done = self.restore(moment)
        assert done.state == "completed", (done.error, done.last_stderr)
        preview = self.engine.get_preview_database(done.preview_database_id or "")
        return read_rows(Path(preview.database_name or ""))


def read_rows(path: Path) -> list[tuple[int, float]]:
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return [(int(i), float(b)) for i, b in db.execute("SELECT id, before FROM ticks")]
    finally:
        db.close()


def check_prefix(rows: list[tuple[int, float]], commits: list[list[float]], moment: float) -> int:
    """The rows are exactly those committed at or before ``moment``, as module doc says;
    how many."""
    ids = [row[0] for row in rows]
    assert ids == list(range(1, len(ids) + 1)), "a row is missing in the middle"
    late = [row for row in rows if row[1] > moment]
    assert not late, f"{len(late)} row(s) committed after the moment were restored"
    must = [int(c[0]) for c in commits if c[2] <= moment - RESOLUTION]
    if must:
        assert len(ids) >= max(must), (
            f"rows committed {RESOLUTION} s before the moment are missing: restored "
            f"{len(ids)}, expected at least {max(must)}"
        )
    return len(ids)


def commits_of(finished: dict[str, object]) -> list[list[float]]:
    commits = finished["commits"]
    assert isinstance(commits, list)
    return commits


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    db = tmp_path / "app.db"
    setup = sqlite3.connect(db, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE ticks (id INTEGER PRIMARY KEY, before REAL NOT NULL, pad BLOB)")
    setup.close()
    engine = Engine(tmp_path / "engine")
    project = engine.create_project(
        CreateProject(name="app", database_url=f"sqlite:///{db}")
    ).project
    worker = WorkerThread(tmp_path / "engine")
    app = App(tmp_path, db, engine, project.id, worker)
    try:
        yield app
    finally:
        worker.halt()
        engine.close()


def test_restores_to_twenty_moments_of_a_minute_of_commits_hold_exactly_those_rows(
    app: App,
) -> None:
    app.engine.put_pitr(app.project_id, PutPitr(enabled=True))
    app.worker.start()
    app.window_open()
    opened = time.time()
    writer = app.write("--seconds", "60", "--every", "3")
    finished = writer.finish()
    commits = commits_of(finished)
    assert len(commits) > 5000
    app.covered(commits[-1][2] + 0.5)

    status = app.engine.get_pitr(app.project_id)
    assert [g.number for g in status.generations] == [1]  # continuity held the whole minute
    random.seed(15)
    moments = sorted(random.uniform(opened, commits[-1][2] + 0.5) for _ in range(20))
    counts = [check_prefix(app.rows_at(moment), commits, moment) for moment in moments]
    assert counts == sorted(counts)
    assert counts[-1] == len(commits)  # the last moment is after the last commit


def test_a_replicator_killed_and_restarted_starts_a_new_generation_and_loses_nothing(
    app: App,
) -> None:
    app.engine.put_pitr(app.project_id, PutPitr(enabled=True))
    log = (app.tmp / "worker.log").open("wb")
    command = [str(CAPY), "worker", "--engine-dir", str(app.tmp / "engine")]
    first = subprocess.Popen([*command, "--poll-interval", "0.05"], stdout=log, stderr=log)
    try:
        app.window_open()
        writer = app.write("--every", "3")
        time.sleep(3)
        first.send_signal(signal.SIGKILL)  # mid-stream: its lease lapses in 15 s
        first.wait(timeout=30)
        killed = time.time()
        time.sleep(1)
        second = subprocess.Popen([*command, "--poll-interval", "0.05"], stdout=log, stderr=log)
        try:

            def second_generation_open() -> bool:
                generations = app.engine.get_pitr(app.project_id).generations
                return len(generations) == 2 and generations[1].restorable_from is not None

            app.wait("the second generation's snapshot", second_generation_open, timeout=90)
            time.sleep(2)
            commits = commits_of(writer.finish(now=True))
            app.covered(commits[-1][2] + 0.5)
            app.worker.start()  # restores run in this process; the replicator stays in `second`
            status = app.engine.get_pitr(app.project_id)
            one, two = status.generations
            assert not one.current
            assert two.current
            assert "replicator started" in two.reason
            assert one.restorable_to is not None
            assert two.restorable_from is not None
            assert one.restorable_to <= datetime.fromtimestamp(killed, UTC)
            assert status.window_start == one.restorable_from

            # before the kill: generation 1; after the restart: generation 2, all there
            assert one.restorable_from is not None
            for moment in (one.restorable_to.timestamp() - 1.0, one.restorable_to.timestamp()):
                check_prefix(app.rows_at(moment), commits, moment)
            after = two.restorable_from.timestamp()
            lost_while_down = [c for c in commits if killed <= c[2] <= after - RESOLUTION]
            assert lost_while_down  # the writer wrote while nothing shipped its log
            for moment in (after, after + 1.0, commits[-1][2] + 0.5):
                check_prefix(app.rows_at(moment), commits, moment)
            assert len(app.rows_at(commits[-1][2] + 0.5)) == len(commits)

            # the hole between them is refused, naming both generations
            if two.restorable_from > one.restorable_to:
                middle = (one.restorable_to.timestamp() + after) / 2
                with pytest.raises(InvalidInput, match="between generation 1"):
                    app.restore(middle)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        log.close()


@pytest.mark.parametrize(
    "application",
    [
        pytest.param(["--autocheckpoint", "0"], id="none-but-the-engines"),
        pytest.param(["--autocheckpoint", "10"], id="wal_autocheckpoint-10-pages"),
        pytest.param(["--autocheckpoint", "0", "--truncate-every", "0.05"], id="own-truncate"),
    ],
)
def test_checkpoints_of_the_application_cannot_make_it_lose_or_invent_a_row(
    app: App, application: list[str]
) -> None:
    app.engine.put_pitr(app.project_id, PutPitr(enabled=True))
    app.worker.start()
    app.window_open()
    opened = time.time()
    writer = app.write("--seconds", "15", "--every", "2", *application)
    finished = writer.finish()
    commits = commits_of(finished)
    app.covered(commits[-1][2] + 0.5)
    if "--truncate-every" in application:
        truncated = finished["truncated"]
        assert isinstance(truncated, dict)
        assert truncated["done"] > 0  # the application did reset its log, and more than once
    # reset, not grown without end: 15 s of commits are ~15000 frames (60 MB) if never
    # reset; reset about once a second, it holds a few seconds' worth at most
    assert os.path.getsize(f"{app.db}-wal") < 5000 * (4096 + 24)

    random.seed(7)
    moments = sorted(random.uniform(opened, commits[-1][2] + 0.5) for _ in range(6))
    for moment in [*moments, commits[-1][2] + 0.5]:
        check_prefix(app.rows_at(moment), commits, moment)
    assert len(app.rows_at(commits[-1][2] + 0.5)) == len(commits)
    assert [g.number for g in app.engine.get_pitr(app.project_id).generations] == [1]


def test_a_shipment_that_hangs_never_holds_up_the_applications_own_truncate_or_its_writes(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An application's RESTART/TRUNCATE checkpoint waits, holding SQLite's write lock,
    until no reader uses the log: the replicator's polls must go on taking fresh readers
    while a shipment waits on its blob store (it stalled the application's writes for
    as long as the shipment took, when one thread did both)."""
    app.engine.put_pitr(app.project_id, PutPitr(enabled=True))
    app.worker.start()
    app.window_open()
    hanging = threading.Event()
    release = threading.Event()
    keep_stream = archive.keep_stream

    def slow_blob_store(*args: Any, **kwargs: Any) -> Any:
        hanging.set()
        assert release.wait(120)
        return keep_stream(*args, **kwargs)

    monkeypatch.setattr(archive, "keep_stream", slow_blob_store)
    db = sqlite3.connect(app.db, isolation_level=None, timeout=10)
    try:
        db.execute("INSERT INTO ticks (before) VALUES (?)", (time.time(),))
        assert hanging.wait(30), "no shipment started"
        for _ in range(3):
            db.execute("INSERT INTO ticks (before) VALUES (?)", (time.time(),))
            busy, log_frames, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            assert busy == 0, "the application's TRUNCATE checkpoint waited 10 s in vain"
            assert log_frames == 0
        assert os.path.getsize(f"{app.db}-wal") == 0
        # a moment before the hanging shipment is catalogued: its segment and the next
        # one (what the polls read meanwhile) hold every row committed by then
        moment = time.time()
        end = app.engine.get_pitr(app.project_id).window_end
        assert end is not None
        assert end.timestamp() < moment
    finally:
        release.set()
        db.close()
    app.covered(moment)
    rows = app.rows_at(moment)
    assert [row[0] for row in rows] == [1, 2, 3, 4]  # read before each reset: all shipped
    assert [g.number for g in app.engine.get_pitr(app.project_id).generations] == [1]


def test_a_poll_read_while_a_slow_shipment_is_catalogued_is_in_the_next_segment_not_later(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll takes its moment, reads, and adds what it read to the next shipment. If
    a shipment taking the buffer could come between its moment and its adding (after a
    slow shipment before it was catalogued), its transactions, labelled before that
    catalogued segment, would land two segments on, where a restore to a moment before
    the cataloguing no longer looks (``sqlite_recovery._choose``)."""
    app.engine.put_pitr(app.project_id, PutPitr(enabled=True))
    app.worker.start()
    app.window_open()
    slow = threading.Event()  # a shipment hangs until ``release``
    release = threading.Event()
    shipped = threading.Event()  # a shipment after the slow one was handed its buffer
    read = threading.Event()  # the poll that read the trap's row has read it
    keep_stream = archive.keep_stream

    def blob_store(*args: Any, **kwargs: Any) -> Any:
        if release.is_set():
            shipped.set()
        else:
            slow.set()
            assert release.wait(60)
        return keep_stream(*args, **kwargs)

    monkeypatch.setattr(archive, "keep_stream", blob_store)
    original_read = sqlite_replicate.Replicator._read
    trap = threading.Event()

    def reading(self: sqlite_replicate.Replicator, published: Any) -> Any:
        found = original_read(self, published)
        if trap.is_set() and found is not None and found.transactions:
            trap.clear()
            read.set()
            shipped.wait(3)  # the next shipment takes the buffer now, if it can
        return found

    monkeypatch.setattr(sqlite_replicate.Replicator, "_read", reading)
    db = sqlite3.connect(app.db, isolation_level=None, timeout=10)
    try:
        db.execute("INSERT INTO ticks (before) VALUES (?)", (time.time(),))  # 1: slow
        assert slow.wait(30)
        db.execute("INSERT INTO ticks (before) VALUES (?)", (time.time(),))  # 2: the next
        time.sleep(0.2)  # read by a poll
        trap.set()
        db.execute("INSERT INTO ticks (before) VALUES (?)", (time.time(),))  # 3: the trap
        assert read.wait(30)
        moment = time.time()  # after row 3's poll took its moment, before 1 is catalogued
    finally:
        release.set()
        db.close()
    app.covered(moment)
    assert [row[0] for row in app.rows_at(moment)] == [1, 2, 3]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_flipped_byte_in_a_segment_fails_the_restore_for_good_and_touches_no_target(
    app: App,
) -> None:
    app.engine.put_pitr(app.project_id, PutPitr(enabled=True))
    app.worker.start()
    app.window_open()
    commits = commits_of(app.write("--seconds", "2", "--every", "5").finish())
    app.covered(commits[-1][2] + 0.5)
    store = app.engine.rt.store
    segments = store.list_wal_segments(app.project_id, prefix="sqlite.")
    assert segments
    blob = local_blobs(app.engine).path(segments[-1].blob_key)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))

    app.worker.halt()  # nothing writes the project file while its digest is compared
    before = _digest(app.db)
    app.worker.start()
    for request in ({}, {"target_kind": "project", "confirm_project_overwrite": True}):
        done = app.restore(commits[-1][2] + 0.5, **request)
        assert done.state == "failed"
        assert done.retry_classification == "permanent"
        assert done.attempts == 1
        assert segments[-1].name in (done.error or "")
    assert _digest(app.db) == before
    previews = app.engine.list_preview_databases(app.project_id)
    assert all(p.state == "failed" for p in previews)
    assert not any(Path(p.database_name or "").exists() for p in previews if p.database_name)


def test_retention_expires_old_snapshots_and_the_log_only_they_needed(app: App) -> None:
    app.engine.put_pitr(app.project_id, PutPitr(enabled=True))
    app.worker.start()
    app.window_open()
    first = commits_of(app.write("--seconds", "1", "--every", "5").finish())
    with app.engine.rt.store.transaction() as tx:  # a second snapshot, as the schedule takes
        job_id = enqueue_base_backup(app.engine.rt, app.project_id, tx)
    assert app.engine.wait_for_job(job_id, timeout=60).state == "completed"
    second = commits_of(app.write("--seconds", "1", "--every", "5").finish())
    app.covered(second[-1][2] + 0.5)
    store = app.engine.rt.store
    old, new = store.list_base_backups(app.project_id)
    segments = store.list_wal_segments(app.project_id, prefix="sqlite.")
    assert app.engine.get_pitr(app.project_id).window_start == old.ended_at

    app.engine.put_scheduled_backup(
        app.project_id,
        PutScheduledBackup(cron_hour=0, cron_minute=0, is_active=False, retention_days=1),
    )
    report = app.engine.tick(datetime.now(UTC) + timedelta(days=2))
    assert report.expired_base_backups == [old.id]
    app.wait(
        "the pitr.expire job",
        lambda: not any(j.type == "pitr.expire" for j in store.busy_jobs(app.project_id)),
    )
    assert not app.engine.rt.blobs.exists(old.blob_key)
    kept = store.list_wal_segments(app.project_id, prefix="sqlite.")
    start = sequence_of(new.start_lsn)

    def end(name: str) -> int:
        parsed = parse_segment_name(name)
        assert parsed is not None
        return parsed[2]

    before = {s.name for s in segments}
    # what the kept snapshot replays stays (and what was shipped since); the rest is gone
    assert [s.name for s in kept if s.name in before] == [
        s.name for s in segments if end(s.name) > start
    ]
    assert len(kept) < len(segments)
    assert app.engine.get_pitr(app.project_id).window_start == new.ended_at
    with pytest.raises(InvalidInput, match="outside the PITR window"):
        app.restore(first[-1][2])
    total = len(first) + len(second)
    check_prefix(app.rows_at(second[-1][2] + 0.5), [*first, *second], second[-1][2] + 0.5)
    assert len(app.rows_at(second[-1][2] + 0.5)) == total


def test_turning_it_on_for_a_file_it_cannot_read_names_database_url_and_changes_nothing(
    app: App,
) -> None:
    holder = sqlite3.connect(app.db, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")  # held: not even its journal mode can be read
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="database_url: cannot read the journal mode"):
        app.engine.put_pitr(app.project_id, PutPitr(enabled=True, set_wal=True))
    assert time.monotonic() - started < 10
    holder.execute("ROLLBACK")
    assert holder.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    holder.close()
    app.db.write_bytes(b"not a database" * 100)
    with pytest.raises(InvalidInput, match="database_url: cannot read the journal mode"):
        app.engine.put_pitr(app.project_id, PutPitr(enabled=True))
    assert not app.engine.get_pitr(app.project_id).enabled
