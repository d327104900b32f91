"""``acc_helper.py`` does what the Go acceptance tests rely on, run as they run it
(``CAPY_TF_HELPER`` of ``helper_env``) against the session's ``capy serve``: its
databases are real and a project over them backs up, an expired backup is seen expired
through the API at once, a corrupted blob fails a restore with a checksum mismatch, and
its errors exit 1 with one line that holds no database URL."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulumi_capy.api.client import CapyClient
from pulumi_capy.api.errors import JobFailed
from pulumi_capy.api.models import (
    Backup,
    CreateBackup,
    CreateProject,
    CreateRestorePoint,
    RestoreRequest,
)
from tests.pg import PostgresServer
from tests.terraform.conftest import CapyServe, Environment

JOB_TIMEOUT = 120.0


class Secret(str):
    """A string whose repr hides it: a failure's traceback prints each frame's arguments."""

    def __repr__(self) -> str:
        return "Secret('***')"


def helper(env: Environment, *arguments: str, code: int = 0) -> str:
    """Runs the helper as the Go tests do; its stdout, stripped."""
    done = subprocess.run(
        [*json.loads(env["CAPY_TF_HELPER"]), *arguments],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != code:  # stdout may be a database URL: only stderr is shown
        pytest.fail(
            f"acc_helper {arguments[0]} exited {done.returncode}, not {code}:\n{done.stderr}"
        )
    return done.stdout.strip()


def failure(env: Environment, *arguments: str) -> str:
    """The one line the helper prints on stderr when it exits 1."""
    done = subprocess.run(
        [*json.loads(env["CAPY_TF_HELPER"]), *arguments],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, ""), done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"acc_helper {arguments[0]}: ")
    return lines[0]


@pytest.fixture
def client(capy_serve: CapyServe) -> Iterator[CapyClient]:
    api = CapyClient(base_url=capy_serve.url, api_key=capy_serve.key)
    yield api
    api.close()


def backed_up(client: CapyClient, database_url: str) -> tuple[str, Backup]:
    """A project over ``database_url`` with one verified backup: its id and the backup."""
    name = f"helper-{uuid.uuid4().hex[:8]}"
    project = client.create_project(CreateProject(name=name, database_url=database_url))
    project_id = project.project.id
    job = client.wait_for_job(client.create_backup(project_id, CreateBackup()).id, JOB_TIMEOUT)
    assert job.result is not None
    client.wait_for_job(str(job.result["verify_job_id"]), JOB_TIMEOUT)
    backup = next(
        b for b in client.list_backups(project_id) if b.backup_key == job.result["backup_key"]
    )
    assert backup.verification_state == "verified", backup
    return project_id, backup


def test_a_sqlite_database_backs_up_and_expires_out_of_band(
    helper_env: Environment, client: CapyClient
) -> None:
    target = Path(helper_env["CAPY_TF_WORKDIR"]) / "helper" / "expire.db"
    assert helper(helper_env, "sqlite-db", str(target), "7") == str(target)
    assert helper(helper_env, "rows", str(target), "customers") == "7"
    assert helper(helper_env, "rows", f"sqlite:///{target}", "customers") == "7"
    project_id, backup = backed_up(client, f"sqlite:///{target}")
    point = client.create_restore_point(
        project_id, CreateRestorePoint(label="pinned", backup_key=backup.backup_key)
    )
    assert point.state == "active"

    assert helper(helper_env, "expire-backup", backup.id) == backup.id

    # the running server answers from the store the helper wrote to
    (seen,) = [p for p in client.list_restore_points(project_id) if p.id == point.id]
    assert seen.state == "expired"
    assert "already expired" in failure(helper_env, "expire-backup", backup.id)


def test_a_corrupted_blob_fails_a_restore_with_a_checksum_mismatch(
    helper_env: Environment, client: CapyClient
) -> None:
    target = Path(helper_env["CAPY_TF_WORKDIR"]) / "helper" / "corrupt.db"
    helper(helper_env, "sqlite-db", str(target), "5")
    project_id, backup = backed_up(client, f"sqlite:///{target}")

    blob = Path(helper(helper_env, "corrupt-blob", backup.backup_key))
    assert blob.is_relative_to(Path(helper_env["CAPY_TF_ENGINE_DIR"]))

    job = client.create_restore(project_id, RestoreRequest(backup_key=backup.backup_key))
    with pytest.raises(JobFailed) as failed:
        client.wait_for_job(job.id, JOB_TIMEOUT)
    assert "checksum mismatch" in (failed.value.job.error or "")


def test_a_postgres_database_is_real_and_its_url_a_working_secret(
    helper_env: Environment, client: CapyClient, debian_postgres: PostgresServer
) -> None:
    name = f"helper_{uuid.uuid4().hex[:8]}"
    url = Secret(helper(helper_env, "pg-db", name))
    if url != debian_postgres.url(name):  # not an assert: its text would show the password
        pytest.fail("pg-db printed another URL than the superuser's of the new database")
    # the URL stays out of every assert: pytest would print the call that took it
    counted = helper(helper_env, "rows", url, "customers")
    assert counted == "20"
    counted = helper(helper_env, "rows", url, "public.customers")
    assert counted == "20"
    backed_up(client, url)

    again = failure(helper_env, "pg-db", name)
    assert "already exists" in again
    if debian_postgres.password in again:
        pytest.fail("the helper's error holds the PostgreSQL password")


def test_bad_input_exits_1_with_one_line(helper_env: Environment) -> None:
    workdir = Path(helper_env["CAPY_TF_WORKDIR"])
    assert "no backup bkp_missing" in failure(helper_env, "expire-backup", "bkp_missing")
    assert "no blob for backup key" in failure(helper_env, "corrupt-blob", "no/such/key")
    assert "invalid backup key" in failure(helper_env, "corrupt-blob", "../escape")
    assert "no SQLite database" in failure(helper_env, "rows", str(workdir / "none.db"), "t")
    assert "database name" in failure(helper_env, "pg-db", "Bad-Name")
    assert "table name" in failure(helper_env, "rows", str(workdir / "none.db"), "t; drop")
    unreachable = "postgresql://capy:not-the-password@127.0.0.1:1/nothing"
    refused = failure(helper_env, "rows", unreachable, "customers")
    assert "not-the-password" not in refused
    without = Environment({k: v for k, v in helper_env.items() if k != "CAPY_TF_ENGINE_DIR"})
    assert "CAPY_TF_ENGINE_DIR is not set" in failure(without, "expire-backup", "bkp_x")
