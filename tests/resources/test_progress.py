"""``pulumi up`` prints a job's steps (issue 16): the providers' ``report_job`` lines."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from pathlib import Path

import pytest

from pulumi_capy.api.models import Job, JobProgress, Project
from pulumi_capy.resources._provider import report_job
from pulumi_capy.resources.backup import BackupProvider
from tests.resources.conftest import backup_inputs


def _job(state: str, progress: JobProgress | None) -> Job:
    return Job(id="job_1", type="project.backup", state=state, attempts=1, progress=progress)


def test_a_line_per_step_and_byte_counts_only_now_and_then(
    capsys: pytest.CaptureFixture[str],
) -> None:
    on_update = report_job("backup")
    on_update(_job("pending", None))
    for done in (0, 1 << 20, 2 << 20):  # moments apart: one line for the step
        on_update(
            _job("running", JobProgress(step="compressing", bytes_done=done, bytes_total=4 << 20))
        )
    on_update(_job("running", JobProgress(step="verifying: checking the throwaway copy")))
    on_update(_job("completed", JobProgress(step="verifying: checking the throwaway copy")))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(")", 1)[1] for line in lines] == [
        "",
        ": compressing: 0 B of 4.0 MiB (0%)",
        ": verifying: checking the throwaway copy",
        "",
    ]
    assert all(line.startswith("capy: backup: job job_1 ") for line in lines)


def test_a_backup_resource_prints_the_steps_of_its_job(
    project: Project, app_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.closing(sqlite3.connect(app_db)) as db, db:
        db.execute("CREATE TABLE payload (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        db.executemany(
            "INSERT INTO payload (data) VALUES (?)", [(os.urandom(64 * 1024),) for _ in range(32)]
        )
    BackupProvider().create(backup_inputs(project.id))
    err = capsys.readouterr().err
    for step in ("dumping", "compressing", "verifying: decompressing"):
        assert re.search(
            rf" running \(attempt 1/3, \d+s\): {step}: 0 B of [\d.]+ MiB \(0%\)\n", err
        )
    assert ": verifying: checking the throwaway copy\n" in err, err
