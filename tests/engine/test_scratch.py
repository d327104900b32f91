"""Scratch space for throwaway dumps: private, removed after use, swept after a kill."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from pulumi_capy.engine import Engine


def test_scratch_space_is_private_under_the_engine_dir_and_removed(tmp_path: Path) -> None:
    with Engine(tmp_path / "engine") as engine:
        with engine.rt.scratch_space() as where:
            assert where.parent == engine.directory / "tmp"
            assert where.name.startswith(f"capy-{os.getpid()}-")
            assert (where.stat().st_mode & 0o777) == 0o700
            (where / "dump").write_bytes(b"x")
        assert not where.exists()


def test_opening_an_engine_sweeps_what_killed_processes_left(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    engine_tmp = tmp_path / "engine" / "tmp"
    engine_tmp.mkdir(parents=True)
    dead = engine_tmp / f"capy-{gone.pid}-left"
    dead.mkdir()
    (dead / "dump").write_bytes(b"x" * 1024)
    alive = engine_tmp / f"capy-{os.getpid()}-mine"
    alive.mkdir()

    Engine(tmp_path / "engine").close()

    assert not dead.exists()
    assert alive.exists()


def test_a_tick_sweeps_what_a_worker_killed_since_the_engine_opened_left(tmp_path: Path) -> None:
    with Engine(tmp_path / "engine") as engine:
        gone = subprocess.Popen(["true"])
        gone.wait()
        dead = engine.rt.scratch_dir / f"capy-{gone.pid}-left"
        dead.mkdir()
        (dead / "restore").mkdir()
        (dead / "restore" / "toc.dat").write_bytes(b"x" * 1024)
        with engine.rt.scratch_space() as mine:
            engine.tick()
            assert not dead.exists()
            assert mine.exists()  # a live process's scratch stays


def test_a_verifications_copy_goes_once_its_job_runs_nowhere_and_is_a_minute_old(
    tmp_path: Path,
) -> None:
    """A verification's throwaway copy is named after its job so that the next attempt finds
    it; with several workers that attempt may run on another host, so the sweep removes a
    copy whose job is not running (and which is a minute old: one being written is not)."""
    from pulumi_capy.api.models import CreateBackup, CreateProject
    from tests.engine.conftest import make_app_db, sqlite_url

    app = make_app_db(tmp_path / "app.db")
    with Engine(tmp_path / "engine") as engine:
        project = engine.create_project(
            CreateProject(name="app", database_url=sqlite_url(app))
        ).project
        done = engine.wait_for_job(engine.create_backup(project.id, CreateBackup()).id)
        assert done.result is not None
        verify_id = str(done.result["verify_job_id"])  # pending: no worker runs it yet
        scratch = engine.directory / "tmp"
        hour_ago = time.time() - 3600
        stale = scratch / f"{done.id}.verify"  # its job completed
        waiting = scratch / f"{verify_id}.verify-wal"
        young = scratch / "job_0123456789abcdef.verify"
        for path in (stale, waiting, young):
            path.write_bytes(b"copy")
        for path in (stale, waiting):
            os.utime(path, (hour_ago, hour_ago))
        claimed = engine.rt.store.claim_job(
            "another-host", engine.rt.now(), engine.rt.now(), only_id=verify_id
        )
        assert claimed is not None  # running elsewhere: its copy stays

        engine.tick()
        assert not stale.exists()
        assert waiting.exists()
        assert young.exists()
