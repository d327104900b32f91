"""Point-in-time recovery of PostgreSQL, end to end on a real server (both installations):
the log streamed by a real worker into blobs, base backups, restores to moments between
commits through a throwaway recovery instance, gaps, and the instance's cleanup."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from pulumi_capy.api.errors import InvalidInput
from pulumi_capy.api.models import CreateRestorePoint, RestoreRequest, format_timestamp
from pulumi_capy.engine.pitr import instance
from tests.postgres.pitr_harness import PitrProject


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
    done = pitr.engine.wait_for_job(job.id, 300, lambda seen: steps.append(seen.progress or ""))
    assert any(step.startswith(("unpacking", "replaying", "extracting")) for step in steps)
    assert (done.progress or "").startswith("loading the state at")
    assert pitr.rows(pitr.preview_url(done)) == [1]
    preview = pitr.engine.get_preview_database(str(done.result["preview_database_id"]))  # type: ignore[index]
    assert preview.source_kind == "restore_point"
    assert preview.source_restore_time == point.pitr_time
