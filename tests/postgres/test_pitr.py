"""Point-in-time recovery of PostgreSQL, end to end on a real server (both installations):
the log streamed by a real worker into blobs, base backups, restores to moments between
commits through a throwaway recovery instance, gaps, and the instance's cleanup."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from pulumi_capy.api.errors import InvalidInput, NotFound
from pulumi_capy.api.models import (
    CreateProject,
    CreateRestorePoint,
    PutPitr,
    RestoreRequest,
    format_timestamp,
)
from pulumi_capy.engine import Engine
from pulumi_capy.engine.pitr import instance, server
from pulumi_capy.engine.pitr.archive import WalMismatch
from pulumi_capy.engine.pitr.lsn import segment_name
from tests.postgres.conftest import PgNamespace
from tests.postgres.pitr_harness import PitrProject, WorkerThread, open_window


def _instances(pitr: PitrProject) -> list[Path]:
    base = instance._base_directory(pitr.engine.rt.scratch_dir)
    return sorted(base.glob(f"{instance.PREFIX}*"))


def test_restores_to_moments_between_commits_hold_exactly_what_was_committed(
    pitr: PitrProject,
) -> None:
    marks: list[datetime] = []
    with pitr.connect() as conn:
        before_table = pitr.commit(conn, "SELECT 1")
        pitr.commit(conn, "CREATE TABLE t (i int PRIMARY KEY, at timestamptz)")
        for i in range(6):
            marks.append(pitr.commit(conn, "INSERT INTO t VALUES (%s, clock_timestamp())", (i,)))
            if i % 2:
                conn.execute("SELECT pg_switch_wal()")  # several segments
            if i == 3:
                pitr.base_backup()  # a second base backup, in the middle
        conn.execute("SELECT pg_switch_wal()")
        last = pitr.commit(conn, "SELECT 1")
    pitr.wait_covered(last)

    for i in (0, 2, 5):
        job = pitr.restore(marks[i])
        assert pitr.rows(pitr.preview_url(job)) == list(range(i + 1)), job
    # before the table existed (but inside the window): the database without it
    job = pitr.restore(before_table)
    with psycopg.connect(pitr.preview_url(job)) as conn:
        assert conn.execute("SELECT to_regclass('public.t')").fetchone() == (None,)
    assert not _instances(pitr), "the recovery instances are removed"


def test_a_restore_while_the_source_keeps_writing(pitr: PitrProject) -> None:
    stop = threading.Event()
    spans: list[tuple[int, datetime, datetime]] = []  # (i, before its insert, after commit)

    def write() -> None:
        with pitr.connect() as conn:
            conn.execute("CREATE TABLE t (i int PRIMARY KEY)")
            i = 0
            while not stop.is_set():
                before = pitr.commit(conn, "SELECT 1")
                after = pitr.commit(conn, "INSERT INTO t VALUES (%s)", (i,))
                spans.append((i, before, after))
                i += 1
                time.sleep(0.005)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        while len(spans) < 200:
            time.sleep(0.05)
        moment = spans[120][2] + (spans[121][1] - spans[120][2]) / 2
        pitr.wait_covered(moment)
        job = pitr.restore(moment)  # the writer goes on meanwhile
    finally:
        stop.set()
        writer.join()
    restored = set(pitr.rows(pitr.preview_url(job)))
    assert {i for i, _, after in spans if after <= moment} <= restored
    assert not {i for i, before, _ in spans if before > moment} & restored
    assert restored == set(range(len(restored))), "a prefix of the writes, no hole"


def test_the_window_refuses_moments_outside_it_naming_it(pitr: PitrProject) -> None:
    status = pitr.engine.get_pitr(pitr.project_id)
    assert status.window_start is not None
    assert status.window_end is not None
    project = pitr.engine.get_project(pitr.project_id)
    assert project.pitr_window_start == status.window_start
    for moment in (
        status.window_start - timedelta(seconds=1),
        datetime.now().astimezone() + timedelta(hours=1),
    ):
        with pytest.raises(InvalidInput) as refused:
            pitr.engine.create_restore(pitr.project_id, RestoreRequest(restore_time=moment))
        assert refused.value.errors[0].field == "restore_time"
        assert format_timestamp(status.window_start) in str(refused.value)
        with pytest.raises(InvalidInput) as refused_point:
            pitr.engine.create_restore_point(
                pitr.project_id, CreateRestorePoint(label="x", kind="pitr", pitr_time=moment)
            )
        assert refused_point.value.errors[0].field == "pitr_time"
    assert pitr.engine.list_jobs(pitr.project_id, 100)[0].type == "pitr.base_backup", "no job"


def test_a_pitr_restore_point_restores_its_moment(pitr: PitrProject) -> None:
    with pitr.connect() as conn:
        pitr.commit(conn, "CREATE TABLE t (i int)")
        pitr.commit(conn, "INSERT INTO t VALUES (1)")
        pitr.wait_covered(pitr.commit(conn, "SELECT 1"))
        point = pitr.engine.create_restore_point(
            pitr.project_id, CreateRestorePoint(label="before-2", kind="pitr")
        )
        assert point.kind == "pitr"
        assert point.pitr_time is not None
        pitr.commit(conn, "INSERT INTO t VALUES (2)")
        pitr.wait_covered(pitr.commit(conn, "SELECT 1"))
    job = pitr.engine.create_restore(pitr.project_id, RestoreRequest(restore_point_id=point.id))
    steps: list[str] = []
    done = pitr.engine.wait_for_job(
        job.id,
        300,
        lambda seen: steps.append(seen.progress.step if seen.progress else ""),
    )
    assert any(step.startswith(("unpacking", "replaying", "extracting")) for step in steps)
    assert done.progress is not None
    assert done.progress.step.startswith("loading the state at")
    assert pitr.rows(pitr.preview_url(done)) == [1]
    preview = pitr.engine.get_preview_database(str(done.result["preview_database_id"]))  # type: ignore[index]
    assert preview.source_kind == "restore_point"
    assert preview.source_restore_time == point.pitr_time


def test_the_archive_method_restores_from_segments_pushed_as_archive_command_does(
    pg: PgNamespace, tmp_path: Path
) -> None:
    """Method ``archive``: no slot, no streamer; the server's ``archive_command`` pushes each
    completed segment (here the test does what ``capy wal-push %p`` does, with the
    server's own files), and the window ends where the pushed log does."""
    url = pg.create_database("app")
    keeper = pg.name("keep")  # the server keeps its log until archived, as archive_mode does
    with Engine(tmp_path / ".capy") as engine, psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (keeper,))
        project = engine.create_project(CreateProject(name="app", database_url=url)).project
        change = engine.put_pitr(project.id, PutPitr(enabled=True, method="archive"))
        assert change.job is not None
        engine.wait_for_job(change.job.id, 300)
        assert not _slots(pg, project.id), "the archive method holds no slot"
        conn.execute("CREATE TABLE t (i int)")
        marks = []
        for i in range(3):
            conn.execute("INSERT INTO t VALUES (%s)", (i,))
            row = conn.execute("SELECT clock_timestamp()").fetchone()
            assert row is not None
            marks.append(row[0])
        time.sleep(0.05)  # a file's modification time is coarser than the commits' clock
        conn.execute("SELECT pg_switch_wal()")
        # right after a switch, pg_walfile_name names the segment the switch completed
        current = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        data = conn.execute("SELECT current_setting('data_directory')").fetchone()
        assert current is not None
        assert data is not None
        first = engine.rt.store.list_base_backups(project.id)[0]
        start = segment_name(first.timeline, first.start_lsn)
        wal = Path(str(data[0])) / "pg_wal"
        pushed = sorted(
            path
            for path in wal.iterdir()
            if len(path.name) == 24 and start <= path.name <= str(current[0])
        )
        for path in pushed:
            engine.wal_push(project.id, path)
            engine.wal_push(project.id, path)  # archive_command retried: the same bytes pass
        other = tmp_path / "other" / pushed[0].name  # another server's segment of that name
        other.parent.mkdir()
        other.write_bytes(b"\0" * pushed[0].stat().st_size)
        with pytest.raises(WalMismatch, match=pushed[0].name):
            engine.wal_push(project.id, other)
        status = engine.get_pitr(project.id)
        assert status.method == "archive"
        assert status.streamer is None
        assert status.window_end is not None
        assert status.window_end >= marks[-1]
        job = engine.create_restore(project.id, RestoreRequest(restore_time=marks[1]))
        done = engine.wait_for_job(job.id, 300)
        preview = engine.get_preview_database(str(done.result["preview_database_id"]))  # type: ignore[index]
        with psycopg.connect(pg.server.url(str(preview.database_name))) as restored:
            assert [r[0] for r in restored.execute("SELECT i FROM t ORDER BY i")] == [0, 1]
        engine.put_pitr(project.id, PutPitr(enabled=False))
        conn.execute("SELECT pg_drop_replication_slot(%s)", (keeper,))


def _slots(pg: PgNamespace, project_id: str) -> list[str]:
    with psycopg.connect(pg.server.url(), autocommit=True) as admin:
        return [
            str(row[0])
            for row in admin.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s",
                (server.slot_name(project_id),),
            )
        ]


def test_wal_push_needs_pitr_on_with_method_archive(tmp_path: Path) -> None:
    with Engine(tmp_path / ".capy") as engine:
        app = tmp_path / "app.db"
        with sqlite3.connect(app) as db:
            db.execute("CREATE TABLE t (i int)")
        db.close()
        project = engine.create_project(CreateProject(name="a", database_url=f"sqlite:///{app}"))
        segment = tmp_path / "000000010000000000000007"
        segment.write_bytes(b"wal" * 1000)
        with pytest.raises(InvalidInput, match="--method archive"):
            engine.wal_push(project.project.id, segment)
        with pytest.raises(NotFound):
            engine.wal_fetch(project.project.id, segment.name, tmp_path / "fetched")


def test_a_role_with_replication_but_not_superuser_streams_and_restores(
    pg: PgNamespace, tmp_path: Path
) -> None:
    """What PITR asks of the server is a role with REPLICATION: no superuser, no
    pg_read_all_stats (it learns how far its stream got from its own slots)."""
    role, password = pg.create_role("owner", "LOGIN REPLICATION CREATEDB")
    pg.create_database("app", owner=role)
    url = pg.url(pg.name("app"), user=role, password=password)
    directory = tmp_path / ".capy"
    worker = WorkerThread(directory)
    with Engine(directory) as engine:
        project = engine.create_project(CreateProject(name="app", database_url=url)).project
        engine.put_pitr(project.id, PutPitr(enabled=True))
        worker.start()
        try:
            open_window(engine, project.id)
            harness = PitrProject(engine, url, project.id, worker, pg)
            with harness.connect() as conn:
                harness.commit(conn, "CREATE TABLE t (i int)")
                moment = harness.commit(conn, "INSERT INTO t VALUES (1)")
                harness.commit(conn, "INSERT INTO t VALUES (2)")
            harness.wait_covered(moment)
            job = harness.restore(moment)
            assert harness.rows(harness.preview_url(job)) == [1]
        finally:
            worker.halt()
            engine.put_pitr(project.id, PutPitr(enabled=False))
    with psycopg.connect(pg.server.url(), autocommit=True) as admin:
        left = admin.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE starts_with(slot_name::text, %s)",
            (server.slot_name(project.id),),
        ).fetchall()
    assert left == [], "no slot of the project is left behind"
