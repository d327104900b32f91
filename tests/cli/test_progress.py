"""``--wait`` shows a job's progress (issue 16): on a terminal a live line with the step,
a bar, bytes done of the total, the elapsed time and the rate; in a log a line per step.

The terminal is a real one: ``capy`` runs in a subprocess on a pseudo-terminal (``pty``).
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pulumi_capy.api.models import CreateProject
from pulumi_capy.engine import Engine
from tests.cli.conftest import Capy
from tests.engine.conftest import make_app_db, sqlite_url

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
TIMEOUT = 60.0


def _big_app_db(path: Path) -> Path:
    make_app_db(path)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE payload (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        db.executemany(
            "INSERT INTO payload (data) VALUES (?)", [(os.urandom(64 * 1024),) for _ in range(64)]
        )
    return path


@pytest.fixture
def big_project(tmp_path: Path) -> tuple[Path, str]:
    engine_dir = tmp_path / "engine"
    app_db = _big_app_db(tmp_path / "app" / "app.db")
    with Engine(engine_dir) as engine:
        project = engine.create_project(CreateProject(name="app", database_url=sqlite_url(app_db)))
    return engine_dir, project.project.id


def _on_a_terminal(args: list[str]) -> tuple[int, str]:
    """``capy *args`` on a pseudo-terminal: its exit code and what it showed, as text."""
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "LINES": "40", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "pulumi_capy.cli.main", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    shown = bytearray()
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # the terminal closed: the process is done
                    break
                if not data:
                    break
                shown += data
            elif process.poll() is not None:
                break
        code = process.wait(timeout=TIMEOUT)
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return code, ANSI.sub("", shown.decode(errors="replace"))


def test_wait_on_a_terminal_shows_the_step_bar_bytes_elapsed_and_rate(
    big_project: tuple[Path, str],
) -> None:
    engine_dir, project_id = big_project
    code, shown = _on_a_terminal(
        ["--engine-dir", str(engine_dir), "backups", "create", "--project", project_id, "--wait"]
    )
    assert code == 0, shown
    frames = [frame.strip() for frame in re.split(r"[\r\n]", shown) if frame.strip()]
    compressing = [frame for frame in frames if "; compressing: " in frame]
    assert compressing, shown
    last = compressing[-1]
    # e.g. "backup: job job_… (project.backup): running, attempt 1/3; compressing: 4.1 MiB
    #       of 4.1 MiB (100%) [####################] [0:00, 120.3 MiB/s]"
    assert re.search(
        r"compressing: [\d.]+ MiB of [\d.]+ MiB \(100%\) \[#{20}\] \[0:\d\d, [\d.]+ [KMG]?i?B/s\]",
        last,
    ), last
    assert any("; dumping: " in frame for frame in frames), shown
    assert any("verifying" in frame for frame in frames), shown  # --wait waits for it too


def test_wait_in_a_log_prints_a_line_per_step_not_per_byte_count(
    capy: Capy, big_project: tuple[Path, str]
) -> None:
    engine_dir, project_id = big_project
    capy.engine_dir = engine_dir
    result = capy("backups", "create", "--project", project_id, "--wait")
    lines = result.stderr.splitlines()
    steps = [line.split("; ", 1)[1] for line in lines if "; " in line]
    # each step once, as it began (0 bytes), whatever the count of writes of its bytes
    assert [step.split(":")[0] for step in steps[:2]] == ["dumping", "compressing"], lines
    assert steps[1].startswith("compressing: 0 B of "), lines
    assert sum("; compressing: " in line for line in lines) == 1, lines
    assert "\r" not in result.stderr
