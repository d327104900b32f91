"""Scratch space for throwaway dumps: private, removed after use, swept after a kill."""

from __future__ import annotations

import os
import subprocess
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
