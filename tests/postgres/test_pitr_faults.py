"""Point-in-time recovery when things go wrong: a killed streamer, two workers, a lost
segment, a killed restore, a dropped slot, retention, and the checks made before any
work starts. Real PostgreSQL, real ``capy worker`` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from pulumi_capy.api.errors import InvalidInput, JobFailed
from pulumi_capy.api.models import (
    CreateProject,
    CreateRestorePoint,
    PutPitr,
    PutScheduledBackup,
    RestoreRequest,
)
from pulumi_capy.engine import Engine
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.jobs import PermanentFailure
from pulumi_capy.engine.pitr import instance, server
from pulumi_capy.engine.pitr.lsn import segment_name
from pulumi_capy.engine.pitr.recovery import _check_space
from pulumi_capy.engine.stores.contract import BaseBackupRecord
from tests.blobfiles import local_blobs
from tests.postgres.conftest import PgNamespace
from tests.postgres.pitr_harness import PitrProject

TAKEOVER = 60.0  # seconds a second worker may take to take a dead one's lease (15 s) over


def _eventually(check: Callable[[], bool], what: str, limit: float = TAKEOVER) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"never: {what}")


@contextmanager
def _worker(directory: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``capy worker`` as a real process."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pulumi_capy.cli.main",
                "worker",
                "--engine-dir",
                str(directory),
                "--poll-interval",
                "0.05",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def _streamers(pitr: PitrProject) -> int:
    """How many walsenders stream this project's log now."""
    with psycopg.connect(pitr.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = %s",
            (f"capy_stream_{pitr.project_id}"[:63],),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _holder(pitr: PitrProject) -> str | None:
    streamer = pitr.engine.get_pitr(pitr.project_id).streamer
    return streamer.worker_id if streamer else None


def _instances(pitr: PitrProject) -> list[Path]:
    base = instance._base_directory(pitr.engine.rt.scratch_dir)
    return sorted(base.glob(f"{instance.PREFIX}*"))


def test_a_killed_streamer_loses_nothing_and_two_workers_never_stream_at_once(
    pitr: PitrProject, tmp_path: Path
) -> None:
    pitr.worker.halt()  # from here on, real `capy worker` processes stream
    directory = pitr.engine.directory
    with pitr.connect() as conn:
        pitr.commit(conn, "CREATE TABLE t (i int PRIMARY KEY)")
        with (
            _worker(directory, tmp_path / "one.log") as one,
            _worker(directory, tmp_path / "two.log") as two,
        ):
            by_pid = {one.pid: one, two.pid: two}
            _eventually(lambda: _holder(pitr) is not None, "a worker streams")
            overlaps = 0
            for i in range(100):
                pitr.commit(conn, "INSERT INTO t VALUES (%s)", (i,))
                overlaps += _streamers(pitr) > 1
            holder = _holder(pitr)
            assert holder is not None
            victim = by_pid[int(holder.split(":")[1])]
            victim.send_signal(signal.SIGKILL)
            victim.wait(30)
            # its pg_receivewal died with it: nothing streams until the lease lapses
            _eventually(lambda: _streamers(pitr) == 0, "the dead worker's stream ends", 10)
            for i in range(100, 200):
                pitr.commit(conn, "INSERT INTO t VALUES (%s)", (i,))
                overlaps += _streamers(pitr) > 1
            survivor = two if victim is one else one
            _eventually(
                lambda: (_holder(pitr) or "").split(":")[1:2] == [str(survivor.pid)],
                "the other worker takes the stream over",
            )
            last = pitr.commit(conn, "SELECT 1")
            pitr.wait_covered(last)
            job = pitr.restore(last)  # run by the survivor
            assert overlaps == 0
    assert pitr.rows(pitr.preview_url(job)) == list(range(200))


def _segments_between_base_backup_and_end(pitr: PitrProject) -> list[str]:
    store = pitr.engine.rt.store
    first = store.list_base_backups(pitr.project_id)[0]
    start = segment_name(first.timeline, first.start_lsn)
    return [
        segment.name
        for segment in store.list_wal_segments(pitr.project_id)
        if not segment.partial and len(segment.name) == 24 and segment.name > start
    ]


def test_a_missing_segment_fails_the_restore_naming_the_gap_and_touches_nothing(
    pitr: PitrProject,
) -> None:
    with pitr.connect() as conn:
        pitr.commit(conn, "CREATE TABLE t (i int PRIMARY KEY)")
        for i in range(4):
            pitr.commit(conn, "INSERT INTO t VALUES (%s)", (i,))
            conn.execute("SELECT pg_switch_wal()")
        moment = pitr.commit(conn, "SELECT 1")
        pitr.commit(conn, "INSERT INTO t VALUES (99)")
    pitr.wait_covered(moment)
    before = pitr.rows(pitr.url)
    lost = _segments_between_base_backup_and_end(pitr)[1]
    store, blobs = pitr.engine.rt.store, pitr.engine.rt.blobs
    record = store.get_wal_segment(pitr.project_id, lost)
    assert record is not None

    # its blob is gone: the recovery cannot read it
    local_blobs(blobs).path(record.blob_key).unlink()
    overwrite = {"target_kind": "project", "confirm_project_overwrite": True}
    job = pitr.restore(moment, **overwrite)
    assert job.state == "failed"
    assert job.retry_classification == "permanent"
    assert lost in (job.error or "")
    # catalogued no more: the restore is refused before it starts an instance
    store.delete_wal_segment(pitr.project_id, lost)
    job = pitr.restore(moment, **overwrite)
    assert job.state == "failed"
    assert f"misses segment {lost}" in (job.error or "")
    assert pitr.rows(pitr.url) == before, "the target is as it was"
    assert not pitr.engine.list_backups(pitr.project_id), "no safety backup was even needed"
    assert not _instances(pitr)


def test_a_worker_killed_mid_recovery_leaves_no_instance_behind(
    pitr: PitrProject, tmp_path: Path
) -> None:
    with pitr.connect() as conn:
        # enough log that replaying it takes a while
        pitr.commit(conn, "CREATE TABLE big (i int, pad text)")
        pitr.commit(
            conn, "INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 400000) g"
        )
        moment = pitr.commit(conn, "SELECT 1")
    pitr.wait_covered(moment)
    pitr.worker.halt()
    job = pitr.engine.create_restore(pitr.project_id, RestoreRequest(restore_time=moment))
    with _worker(pitr.engine.directory, tmp_path / "worker.log") as worker:

        def postmaster() -> int | None:
            for root in _instances(pitr):
                pid_file = root / "data" / "postmaster.pid"
                if pid_file.is_file() and pid_file.read_text().strip():
                    return int(pid_file.read_text().splitlines()[0])
            return None

        _eventually(lambda: postmaster() is not None, "the recovery instance runs")
        server_pid = postmaster()
        assert server_pid is not None
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)

        def gone() -> bool:
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                return True
            return False

        _eventually(gone, "the instance's server dies with its worker", 30)
    pitr.engine.tick()  # (any engine's sweep removes them: another test's may be first)
    assert not _instances(pitr)
    assert pitr.engine.get_job(job.id).state == "running", "its lease lapses later, as any job's"


def test_a_slot_dropped_behind_our_back_is_a_reported_gap_and_a_new_window(
    pitr: PitrProject,
) -> None:
    with pitr.connect() as conn:
        pitr.commit(conn, "CREATE TABLE t (i int)")
        before_gap = pitr.commit(conn, "INSERT INTO t VALUES (1)")
        pitr.wait_covered(before_gap)
        slot = server.slot_name(pitr.project_id)
        server.drop_slot_when_free(pitr.url, slot)
        pitr.commit(conn, "INSERT INTO t VALUES (2)")
        _eventually(
            lambda: any("gap" in n for n in pitr.engine.get_pitr(pitr.project_id).notices),
            "the gap is reported",
        )
        _eventually(
            lambda: (pitr.engine.get_pitr(pitr.project_id).window_start or before_gap) > before_gap,
            "a new base backup opens a new window, after the gap",
        )
        after = pitr.commit(conn, "SELECT 1")
    pitr.wait_covered(after)
    with pytest.raises(InvalidInput, match="outside the PITR window"):
        pitr.engine.create_restore(pitr.project_id, RestoreRequest(restore_time=before_gap))
    assert pitr.rows(pitr.preview_url(pitr.restore(after))) == [1, 2]


def test_retention_expires_base_backups_the_log_before_them_and_pitr_points(
    pitr: PitrProject,
) -> None:
    with pitr.connect() as conn:
        pitr.commit(conn, "CREATE TABLE t (i int)")
        conn.execute("SELECT pg_switch_wal()")
        early = pitr.commit(conn, "INSERT INTO t VALUES (1)")
        pitr.wait_covered(early)
        point = pitr.engine.create_restore_point(
            pitr.project_id, CreateRestorePoint(label="early", kind="pitr", pitr_time=early)
        )
        conn.execute("SELECT pg_switch_wal()")
        pitr.base_backup()
        late = pitr.commit(conn, "INSERT INTO t VALUES (2)")
    pitr.wait_covered(late)
    store = pitr.engine.rt.store
    first, second = store.list_base_backups(pitr.project_id)
    pitr.engine.put_scheduled_backup(
        pitr.project_id,
        PutScheduledBackup(cron_hour=0, cron_minute=0, is_active=False, retention_days=1),
    )
    old_segments = {s.name for s in store.list_wal_segments(pitr.project_id)}

    clock = ManualClock(first.ended_at + timedelta(days=1, hours=1))
    with Engine(pitr.engine.directory, clock=clock) as later:
        report = later.tick()
        assert report.expired_base_backups == [first.id], "the newest one is always kept"
        assert report.expired_restore_points == 1
        status = pitr.engine.get_pitr(pitr.project_id)
        assert status.window_start == second.ended_at
        assert pitr.engine.list_restore_points(pitr.project_id)[0].state == "expired"
        expire = pitr.engine.list_jobs(pitr.project_id, 5)[0]
        assert expire.type == "pitr.expire"
        assert later.wait_for_job(expire.id).state == "completed"  # queued on its clock
    assert not pitr.engine.rt.blobs.exists(first.blob_key)
    assert pitr.engine.rt.blobs.exists(second.blob_key)
    kept = {s.name for s in store.list_wal_segments(pitr.project_id)}
    needed = segment_name(second.timeline, second.start_lsn)
    assert kept < old_segments
    assert all(name >= needed for name in kept if len(name) == 24)
    with pytest.raises(InvalidInput, match="expired"):
        pitr.engine.create_restore(pitr.project_id, RestoreRequest(restore_point_id=point.id))
    assert pitr.rows(pitr.preview_url(pitr.restore(late))) == [1, 2]

    # turned off, its archive stays until retention, then goes whole
    pitr.worker.halt()
    pitr.engine.put_pitr(pitr.project_id, PutPitr(enabled=False))
    assert store.list_wal_segments(pitr.project_id)
    with Engine(pitr.engine.directory, clock=ManualClock(late + timedelta(days=2))) as later:
        report = later.tick()
        assert report.expired_base_backups == [second.id]
        expire = pitr.engine.list_jobs(pitr.project_id, 5)[0]
        assert later.wait_for_job(expire.id).state == "completed"
    assert not store.list_wal_segments(pitr.project_id)
    assert not pitr.engine.rt.blobs.exists(second.blob_key)


def test_a_role_without_replication_is_refused_naming_the_privilege(
    pg: PgNamespace, tmp_path: Path
) -> None:
    url = pg.create_database("app")
    role, password = pg.create_role("plain")
    with Engine(tmp_path / ".capy") as engine:
        database = url.rsplit("/", 1)[1]
        project = engine.create_project(
            CreateProject(name="app", database_url=pg.url(database, user=role, password=password))
        ).project
        with pytest.raises(InvalidInput) as refused:
            engine.put_pitr(project.id, PutPitr(enabled=True))
        assert refused.value.errors[0].field == "database_url"
        assert f"ALTER ROLE {role} REPLICATION" in str(refused.value)
        assert password not in str(refused.value)
        assert not engine.get_pitr(project.id).enabled
    with psycopg.connect(pg.server.url(), autocommit=True) as admin:
        slots = admin.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
            (server.slot_name(project.id),),
        ).fetchone()
    assert slots == (0,), "nothing was created"


def test_binaries_of_another_major_are_named_with_the_package_to_install() -> None:
    with pytest.raises(DriverFailure) as missing:
        server.exact_binary("postgres", 99)
    text = str(missing.value)
    assert "PostgreSQL 99" in text
    assert "postgresql-99" in text
    assert "found:" in text
    assert missing.value.permanent


def test_a_disk_too_small_for_the_base_backup_is_refused_before_unpacking(
    tmp_path: Path,
) -> None:
    huge = BaseBackupRecord(
        id="base_x",
        project_id="prj_x",
        blob_key="k",
        sha256="0" * 64,
        size_bytes=2**60,
        blob_bytes=1,
        timeline=1,
        start_lsn=0,
        stop_lsn=0,
        ended_at=ManualClock().now(),
        server_major=15,
        superuser="postgres",
        created_at=ManualClock().now(),
    )
    with pytest.raises(PermanentFailure, match="not enough disk space"):
        _check_space(tmp_path, huge, [])


def test_a_slot_the_server_invalidated_is_a_reported_gap(pitr: PitrProject) -> None:
    """``max_slot_wal_keep_size`` bounds what a dead streamer makes the server keep; past
    it, the server invalidates the slot, and the next streamer says so."""
    pitr.worker.halt()
    with psycopg.connect(pitr.pg.server.url(), autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        admin.execute("SELECT pg_reload_conf()")
        try:
            with pitr.connect() as conn:
                conn.execute("CREATE TABLE t (i int)")
                for _ in range(3):
                    conn.execute("INSERT INTO t SELECT generate_series(1, 1000)")
                    conn.execute("SELECT pg_switch_wal()")
            admin.execute("CHECKPOINT")
            row = admin.execute(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s",
                (server.slot_name(pitr.project_id),),
            ).fetchone()
            assert row == ("lost",)
        finally:
            admin.execute("ALTER SYSTEM RESET max_slot_wal_keep_size")
            admin.execute("SELECT pg_reload_conf()")
    pitr.worker.start()
    _eventually(
        lambda: any("invalidated" in n for n in pitr.engine.get_pitr(pitr.project_id).notices),
        "the invalidated slot is reported as a gap",
    )
    _eventually(
        lambda: pitr.engine.get_pitr(pitr.project_id).window_start is not None,
        "a new base backup opens a new window",
    )
    with pitr.connect() as conn:
        after = pitr.commit(conn, "INSERT INTO t VALUES (-1)")
    pitr.wait_covered(after)
    assert -1 in pitr.rows(pitr.preview_url(pitr.restore(after)))


def test_a_lost_piece_of_the_partial_segment_fails_naming_it(pitr: PitrProject) -> None:
    """The segment being written is archived piece by piece as it grows; losing one is a
    gap too, never a restore that quietly stops short of its moment."""
    with pitr.connect() as conn:
        pitr.commit(conn, "CREATE TABLE t (i int)")
        for i in range(5):
            moment = pitr.commit(conn, "INSERT INTO t VALUES (%s)", (i,))
            time.sleep(0.3)  # a cycle apiece: a piece apiece
    pitr.wait_covered(moment)
    store = pitr.engine.rt.store
    pieces = [s for s in store.list_wal_segments(pitr.project_id) if len(s.name) > 24]
    assert len(pieces) >= 2, pieces
    store.delete_wal_segment(pitr.project_id, pieces[-1].name)
    pitr.worker.halt()  # nothing archives the piece again
    job = pitr.engine.create_restore(pitr.project_id, RestoreRequest(restore_time=moment))
    with pytest.raises(JobFailed) as failed:
        pitr.engine.wait_for_job(job.id, 300)  # run here
    assert f"misses part of segment {pieces[-1].name[:24]}" in (failed.value.job.error or "")
