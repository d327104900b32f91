"""Ctrl-C during ``--wait``, and work queued in embedded mode (issue 16, items 6 and 7).

``capy backups create --wait`` runs as a real process on a real PostgreSQL database big
enough for its ``pg_dump`` to take seconds; the test sends it SIGINT, as Ctrl-C does.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from pulumi_capy.api.models import CreateProject, JobState, VerificationState
from pulumi_capy.engine import Engine
from tests.cli.conftest import Capy
from tests.cli.test_processes import eventually
from tests.pg import PostgresServer

STARTUP = 60.0  # seconds the dump may take to start
STOP = 20.0  # seconds the interrupted process may take to exit
ROWS = 1_500_000  # rows of ~150 bytes: pg_dump takes seconds, not milliseconds


def _children(pid: int) -> list[tuple[int, str]]:
    """The processes whose parent is ``pid``: (pid, command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append((int(entry.name), command))
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def big_database(debian_postgres: PostgresServer) -> str:
    name = f"capy_big_{secrets.token_hex(4)}"
    with psycopg.connect(debian_postgres.url(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = debian_postgres.url(name)
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("CREATE TABLE events (id bigint PRIMARY KEY, body text NOT NULL)")
        db.execute(
            "INSERT INTO events SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, %s) AS i",
            (ROWS,),
        )
    return url


def test_ctrl_c_during_wait_hands_the_job_back_stops_pg_dump_and_says_how_to_resume(
    tmp_path: Path, capy: Capy, big_database: str
) -> None:
    with Engine(capy.engine_dir) as engine:
        project = engine.create_project(
            CreateProject(name="big", database_url=big_database)
        ).project
    log = tmp_path / "capy.log"
    args = ["--engine-dir", str(capy.engine_dir), "backups", "create", "--project", project.id]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pulumi_capy.cli.main", *args, "--wait"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        dumps: list[int] = []

        def dumping() -> bool:
            assert process.poll() is None, log.read_text()
            dumps[:] = [pid for pid, command in _children(process.pid) if "pg_dump" in command]
            return bool(dumps)

        eventually(dumping, "pg_dump running under `capy backups create --wait`", log, STARTUP)
        with Engine(capy.engine_dir) as engine:
            (running,) = engine.list_jobs(project.id)
        assert running.state == JobState.running

        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = process.wait(STOP)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(STOP)
    output = log.read_text()
    assert code == 130, output
    assert "Aborted!" not in output
    assert "Traceback" not in output
    # the dump it started is stopped, not left to run on without anyone to read it
    assert not any(_alive(pid) for pid in dumps), output
    # the job is back in the queue, claimable now: no lease to wait for
    with Engine(capy.engine_dir) as engine:
        job = engine.get_job(running.id)
    assert (job.state, job.claimed_by, job.attempts) == (JobState.pending, None, 0), output
    assert job.error is None
    # the output names the job and the command that resumes it, which works as printed
    resume = f"capy --engine-dir {capy.engine_dir} jobs get --job-id {job.id} --wait"
    assert f"job {job.id}" in output
    assert resume in output, output
    resumed = capy.raw(*shlex.split(resume)[1:], "--json")
    assert resumed.exit_code == 0, (resumed.stdout, resumed.stderr)
    with Engine(capy.engine_dir) as engine:
        done = engine.get_job(job.id)
        assert done.state == JobState.completed
        (backup,) = engine.list_backups(project.id)
    assert backup.verification_state == VerificationState.verified
    assert re.search(r"interrupted: job job_\w+ \(project\.backup\) is pending", output), output


def _capy_process(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pulumi_capy.cli.main", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        )


def test_ctrl_c_during_wait_on_a_server_says_the_job_goes_on_there(
    tmp_path: Path, app_db: Path
) -> None:
    from pulumi_capy.server import create_app
    from tests.server.conftest import LiveServer, serve

    directory = tmp_path / "served"
    with Engine(directory) as engine, serve(create_app(directory)) as url:
        server = LiveServer(url=url, directory=directory, engine=engine)
        key, _ = server.mint()
        project = engine.create_project(
            CreateProject(name="app", database_url=f"sqlite:///{app_db}")
        ).project
        log = tmp_path / "capy.log"
        # the app alone runs no worker: the job stays pending while the command waits
        args = ["--api-url", url, "backups", "create", "--project", project.id, "--wait"]
        process = _capy_process(args, log, {"CAPYDB_API_KEY": key})
        try:
            eventually(lambda: "backup: job job_" in log.read_text(), "the wait", log, STARTUP)
            process.send_signal(signal.SIGINT)
            code = process.wait(STOP)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(STOP)
        output = log.read_text()
        (job,) = engine.list_jobs(project.id)
    assert code == 130, output
    assert "Aborted!" not in output
    assert key not in output
    assert job.state == JobState.pending  # untouched: the server's job is the server's
    assert f"interrupted: job {job.id} (project.backup) goes on at the server" in output
    assert f"capy --api-url {url} jobs get --job-id {job.id} --wait" in output, output


# ---------------------------------------------------------------- (7) queued work, embedded


def test_backups_create_without_wait_says_nothing_runs_it_without_a_worker(
    capy: Capy, project_id: str
) -> None:
    created = capy("backups", "create", "--project", project_id)
    (job,) = capy.json("jobs", "list", "--project", project_id)
    assert job["state"] == "pending"
    assert (
        f"queued as job {job['id']}, its verification after it; nothing runs it until a "
        f"worker does: run `capy worker --engine-dir {capy.engine_dir}`"
    ) in created.stderr
    assert "or add --wait to run it here" in created.stderr
    follow = f"capy --engine-dir {capy.engine_dir} jobs get --job-id {job['id']} --wait"
    assert follow in created.stderr
    # the command it names runs the backup here, and its verification, to a verified backup
    followed = capy(*shlex.split(follow)[1:])
    assert "verified" in followed.stdout
    (backup,) = capy.json("backups", "list", "--project", project_id)
    assert backup["verification_state"] == "verified"


def test_backups_schedule_set_says_a_worker_takes_the_backups(capy: Capy, project_id: str) -> None:
    saved = capy("backups", "schedule", "set", "--project", project_id, "--hour", "3",
                 "--minute", "30")  # fmt: skip
    assert (
        f"the scheduled backups (and their verifications) are taken by a running worker: "
        f"`capy worker --engine-dir {capy.engine_dir}`"
    ) in saved.stderr
    assert "with none running, nothing is taken at 03:30 UTC" in saved.stderr


def test_jobs_get_of_a_backup_whose_verification_waits_says_so(capy: Capy, project_id: str) -> None:
    capy("backups", "create", "--project", project_id)
    (job,) = capy.json("jobs", "list", "--project", project_id)
    with Engine(capy.engine_dir) as engine:
        assert engine.worker.run_once(only_id=job["id"])  # the backup alone, not its check
        verify_id = str(engine.get_job(job["id"]).result["verify_job_id"])  # type: ignore[index]
    shown = capy("jobs", "get", "--job-id", job["id"])
    assert (
        f"queued as job {verify_id}, the verification of backup job {job['id']}; nothing runs "
        "it until a worker does"
    ) in shown.stderr


def test_jobs_get_wait_of_a_backup_runs_its_verification_too(capy: Capy, project_id: str) -> None:
    capy("backups", "create", "--project", project_id)
    (job,) = capy.json("jobs", "list", "--project", project_id)
    followed = capy("jobs", "get", "--job-id", job["id"], "--wait")
    (backup,) = capy.json("backups", "list", "--project", project_id)
    assert backup["verification_state"] == "verified"
    assert f"backup {backup['backup_key']} verified" in followed.stdout


def test_backups_create_wait_ends_with_a_verified_backup(capy: Capy, project_id: str) -> None:
    created = capy("backups", "create", "--project", project_id, "--wait")
    (backup,) = capy.json("backups", "list", "--project", project_id)
    assert backup["verification_state"] == "verified"
    assert f"backup {backup['backup_key']} completed and verified" in created.stdout
    jobs = capy.json("jobs", "list", "--project", project_id)
    assert sorted((j["type"], j["state"]) for j in jobs) == [
        ("backup.verify", "completed"),
        ("project.backup", "completed"),
    ]


def test_a_restore_without_wait_says_nothing_runs_it_without_a_worker(
    capy: Capy, project_id: str
) -> None:
    capy("backups", "create", "--project", project_id, "--wait")
    (backup,) = capy.json("backups", "list", "--project", project_id)
    queued = capy("restore", "--project", project_id, "--backup-key", backup["backup_key"],
                  "--preview-name", "check")  # fmt: skip
    restore = next(
        job
        for job in capy.json("jobs", "list", "--project", project_id)
        if job["type"] == "project.restore"
    )
    assert restore["state"] == "pending"
    assert (
        f"queued as job {restore['id']}; nothing runs it until a worker does: run "
        f"`capy worker --engine-dir {capy.engine_dir}`"
    ) in queued.stderr
