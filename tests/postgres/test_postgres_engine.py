"""The engine on a real PostgreSQL: backups, verification, restores into previews and in
place, consistency under writes, a worker killed before the swap, and the failures a
user meets (a wrong password, a missing privilege, a missing pg_dump).

Real server (``tests/pg.py``), real ``pg_dump``/``pg_restore``, real processes;
nothing is mocked. Every database a test makes carries its ``pg`` prefix and is
dropped at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psycopg
import pytest
from psycopg import sql

from pulumi_capy.api.errors import InvalidInput, JobFailed, NotFound
from pulumi_capy.api.models import (
    Backup,
    CreateBackup,
    CreateProject,
    Job,
    JobState,
    PreviewDatabase,
    Project,
    RestoreRequest,
    TargetKind,
)
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.jobs import safety_label
from pulumi_capy.engine.queue import JobRetryPolicy
from pulumi_capy.engine.service import Engine
from pulumi_capy.engine.stores.contract import JobRecord
from pulumi_capy.resources.restore import RestoreProvider, preview_url
from tests.blobfiles import local_blobs
from tests.pg import PostgresServer
from tests.postgres.conftest import (
    TABLES,
    PgNamespace,
    checksums,
    connect,
    schema_of,
    sequences,
)

JOB_TIMEOUT = 120.0

# ---------------------------------------------------------------- helpers


def _backup(engine: Engine, project_id: str, label: str | None = None) -> tuple[Backup, Job, Job]:
    """Back up and verify; return the backup, its job and the verify job."""
    job = engine.wait_for_job(
        engine.create_backup(project_id, CreateBackup(label=label)).id, JOB_TIMEOUT
    )
    assert job.result is not None
    verify = engine.wait_for_job(str(job.result["verify_job_id"]), JOB_TIMEOUT)
    return _backup_by_key(engine, project_id, str(job.result["backup_key"])), job, verify


def _backup_by_key(engine: Engine, project_id: str, key: str) -> Backup:
    return next(backup for backup in engine.list_backups(project_id) if backup.backup_key == key)


def _new_preview(
    engine: Engine, project_id: str, backup_key: str, **request: Any
) -> tuple[Job, PreviewDatabase]:
    job = engine.wait_for_job(
        engine.create_restore(project_id, RestoreRequest(backup_key=backup_key, **request)).id,
        JOB_TIMEOUT,
    )
    assert job.preview_database_id
    return job, engine.get_preview_database(job.preview_database_id)


def _overwrite(backup_key: str) -> RestoreRequest:
    return RestoreRequest(
        backup_key=backup_key, target_kind=TargetKind.project, confirm_project_overwrite=True
    )


def _database(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _row(url: str, query: str) -> tuple[Any, ...]:
    with connect(url) as db:
        row = db.execute(query.encode()).fetchone()
    assert row is not None
    return tuple(row)


def _scalar(url: str, query: str) -> Any:
    return _row(url, query)[0]


def _change(url: str) -> None:
    """Change rows of several tables, a large object, and add a table."""
    with connect(url) as db, db.transaction():
        db.execute("DELETE FROM orders WHERE id % 3 = 0")
        db.execute("UPDATE customers SET name = name || ' (edited)' WHERE id % 2 = 0")
        db.execute(
            "INSERT INTO customers (email, name, password_digest) "
            "VALUES ('late@example.test', 'late', 'x')"
        )
        db.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
        db.execute("SELECT lo_unlink(content) FROM documents WHERE title = 'small'")
        db.execute("DELETE FROM documents WHERE title = 'small'")
        db.execute("CREATE TABLE audit (id serial PRIMARY KEY, event text)")
        db.execute("INSERT INTO audit (event) VALUES ('changed after the backup')")


def _wait_until(condition: Any, what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _secrets_absent(texts: list[str | None], secrets_: list[str]) -> None:
    for text in texts:
        for secret in secrets_:
            assert secret not in (text or ""), "a password leaked into a message"


# ---------------------------------------------------------------- round trip


def test_backup_verify_and_restore_to_a_new_preview_round_trip_everything(
    engine: Engine, project: Project, pg: PgNamespace, source_url: str
) -> None:
    expected = checksums(source_url)
    assert set(expected) == {*TABLES, "pg_largeobject"}
    assert all(count > 0 for count, _ in expected.values())
    expected_schema = schema_of(source_url)
    assert expected_schema["extensions"] == ["citext", "hstore"]
    expected_sequences = sequences(source_url)

    backup, job, verify = _backup(engine, project.id)
    assert (job.state, job.attempts, job.last_exit_code) == (JobState.completed, 1, 0)
    assert f"{len(TABLES)} tables" in (job.last_stdout or "")
    assert backup.verification_state == "verified"
    assert (verify.state, verify.last_exit_code) == (JobState.completed, 0)
    rows = sum(count for name, (count, _) in expected.items() if name != "pg_largeobject")
    assert f"counted {len(TABLES)} tables ({rows} rows)" in (verify.last_stdout or "")
    # the figures the verification compared: every table, as read at backup time
    details = engine.rt.blobs.read_manifest(backup.backup_key)["details"]
    assert details["row_counts"] == {table: expected[table][0] for table in TABLES}
    assert pg.leftovers() == []  # the throwaway database is gone

    restore, preview = _new_preview(engine, project.id, backup.backup_key, preview_name="review")
    assert restore.state == JobState.completed
    assert preview.state == "ready"
    assert preview.database_name
    assert preview.database_name != _database(source_url)
    assert pg.exists(preview.database_name)  # on the same server
    assert (preview.public_host, preview.direct_port, preview.role_name) == (
        pg.server.host,
        pg.server.port,
        pg.server.user,
    )
    assert preview.source_backup_key == backup.backup_key
    target = pg.server.url(preview.database_name)

    assert checksums(target) == expected  # every table and every large object
    assert schema_of(target) == expected_schema  # extensions, view, index, keys, sequences
    assert sequences(target) == expected_sequences
    for table, column in (("customers", "id"), ("orders", "id"), ("history", "id")):
        highest = _scalar(target, f"SELECT max({column}) FROM {table}")  # noqa: S608
        following = _scalar(target, f"SELECT nextval(pg_get_serial_sequence('{table}', 'id'))")
        assert following > highest, table
    assert _scalar(target, "SELECT nextval('invoice_number')") > _scalar(
        target, "SELECT max(invoice) FROM orders"
    )
    # the restored database works: identity inserts, citext, hstore, the view, large objects
    with connect(target) as db:
        db.execute(
            "INSERT INTO customers (email, name, password_digest) "
            "VALUES ('new@example.test', 'new', encode(sha256('x'), 'hex'))"
        )
        tagged = db.execute("SELECT attributes -> 'tag' FROM orders WHERE id = 5").fetchone()
        assert tagged == ("tag 1",)
        found = db.execute("SELECT count(*) FROM customers WHERE email = 'CUSTOMER7@example.test'")
        assert found.fetchone() == (1,)
        view = db.execute("SELECT sum(orders) FROM customer_totals").fetchone()
        assert view is not None
        assert view[0] == expected["public.orders"][0]
        big = db.execute("SELECT length(lo_get(content)) FROM documents WHERE title = 'big'")
        assert big.fetchone() == (300 * 1024,)
    assert checksums(source_url) == expected  # the source was only read

    # what the Pulumi Restore resource reports: a URL without the password
    outputs = RestoreProvider._preview_outputs(engine, project.id, restore)
    url = outputs["preview_database_url"]
    assert url == preview_url(preview)
    assert url == (
        f"postgresql://{pg.server.user}@{pg.server.host}:{pg.server.port}/{preview.database_name}"
    )
    assert pg.server.password not in url
    assert outputs["preview_database_name"] == preview.database_name
    with psycopg.connect(url, password=pg.server.password) as db:
        assert db.execute("SELECT current_database()").fetchone() == (preview.database_name,)


def test_a_verification_replaces_what_a_killed_attempt_unpacked(
    engine: Engine, project: Project
) -> None:
    """The verification unpacks the blob into a directory named after its job (so that
    a retry finds the throwaway database too): a killed attempt's directory is no
    obstacle to the next one."""
    job = engine.create_backup(project.id)
    assert engine.worker.run_once(only_id=job.id)
    done = engine.get_job(job.id)
    assert done.result is not None
    verify_id = str(done.result["verify_job_id"])
    leftover = engine.rt.scratch_dir / f"{verify_id}.verify"
    leftover.mkdir()
    (leftover / "toc.dat").write_bytes(b"half written by a killed attempt")
    verify = engine.wait_for_job(verify_id, JOB_TIMEOUT)
    assert verify.state == JobState.completed
    backup = _backup_by_key(engine, project.id, str(done.result["backup_key"]))
    assert backup.verification_state == "verified"
    assert not leftover.exists()


# ---------------------------------------------------------------- restore in place


def test_restore_to_the_project_swaps_in_the_backup_and_terminates_its_clients(
    engine: Engine, project: Project, pg: PgNamespace, source_url: str
) -> None:
    backup, _, _ = _backup(engine, project.id)
    backed_up = checksums(source_url)
    _change(source_url)
    changed = checksums(source_url)
    assert changed != backed_up
    assert "public.audit" in changed

    # an application holds connections: one idle in a transaction, one idle
    held = connect(source_url, autocommit=False)
    held.execute("SELECT count(*) FROM customers").fetchone()
    idle = connect(source_url)
    idle.execute("SELECT 1")
    try:
        job_id = engine.create_restore(project.id, _overwrite(backup.backup_key)).id
        ended: dict[str, Any] = {}

        def run() -> None:
            try:
                ended["job"] = engine.wait_for_job(job_id, JOB_TIMEOUT)
            except BaseException as exc:
                ended["error"] = exc

        worker = threading.Thread(target=run, name="restore", daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "the restore hangs on the application's connections"
        assert "error" not in ended, ended.get("error")
        done: Job = ended["job"]
        assert (done.state, done.attempts) == (JobState.completed, 1)

        # the application's connections were terminated, not waited for
        for connection in (held, idle):
            with pytest.raises(psycopg.OperationalError):
                connection.execute("SELECT count(*) FROM customers").fetchone()
    finally:
        held.close()
        idle.close()

    # a new connection sees the backup's data, everywhere
    assert checksums(source_url) == backed_up
    assert pg.allows_connections(_database(source_url))
    # the database set aside and the scratch database are gone
    assert pg.leftovers() == []
    assert pg.databases() == [_database(source_url)]

    # what was overwritten is in the job's safety backup
    safety = [b for b in engine.list_backups(project.id) if b.label == safety_label(job_id)]
    assert len(safety) == 1
    assert done.result is not None
    assert done.result["safety_backup_key"] == safety[0].backup_key
    _, kept = _new_preview(engine, project.id, safety[0].backup_key)
    assert kept.database_name
    assert checksums(pg.server.url(kept.database_name)) == changed


def test_a_project_restore_keeps_the_databases_owner_grants_and_settings(
    engine: Engine, project: Project, pg: PgNamespace, source_url: str
) -> None:
    """What the application's role may do survives a restore of its database."""
    name = _database(source_url)
    role, password = pg.create_role("webapp")
    with connect(source_url) as db:
        db.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(*map(sql.Identifier, (name, role)))
        )
        db.execute(
            sql.SQL("ALTER DATABASE {} SET statement_timeout = '42s'").format(sql.Identifier(name))
        )
        db.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
        # database-level grants: no one but the listed roles may connect
        db.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        reporter, _ = pg.create_role("reporter")
        db.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {} WITH GRANT OPTION").format(
                sql.Identifier(name), sql.Identifier(reporter)
            )
        )
    app_url = pg.url(name, user=role, password=password)

    def database_grants() -> set[tuple[Any, ...]]:
        with connect(source_url) as db:
            rows = db.execute(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, "
                "a.privilege_type, a.is_grantable "
                "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s",
                (name,),
            ).fetchall()
        return set(rows)

    grants = database_grants()
    assert (reporter, "CONNECT", True) in grants
    assert not any(grantee == "PUBLIC" for grantee, _, _ in grants)

    def what_the_app_sees() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        with connect(app_url) as db:
            seen["statement_timeout"] = db.execute("SHOW statement_timeout").fetchone()
            seen["owner"] = db.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
            ).fetchone()
            try:
                seen["customers"] = db.execute("SELECT count(*) FROM customers").fetchone()
            except psycopg.errors.InsufficientPrivilege as exc:
                seen["customers"] = str(exc).strip()
        return seen

    before = what_the_app_sees()
    assert before == {"statement_timeout": ("42s",), "owner": (role,), "customers": (200,)}

    backup, _, _ = _backup(engine, project.id)
    engine.wait_for_job(engine.create_restore(project.id, _overwrite(backup.backup_key)).id)
    # regression: the swapped-in database keeps the target's owner, its settings, its
    # tables' grants and its own grants
    assert what_the_app_sees() == before
    assert database_grants() == grants


# ---------------------------------------------------------------- consistency under writes


class _Bank(threading.Thread):
    """pgbench-style transactions: each inserts into ``history`` and moves a balance by
    the same delta, so ``sum(balance) = sum(delta)`` holds in every committed state."""

    def __init__(self, url: str) -> None:
        super().__init__(name="bank", daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            with connect(self.url, autocommit=False) as db:
                while not self.stop.is_set():
                    account, delta = rng.randint(1, 50), rng.randint(-500, 500)
                    with db.transaction():
                        db.execute(
                            "INSERT INTO history (account_id, delta) VALUES (%s, %s)",
                            (account, delta),
                        )
                        db.execute(
                            "UPDATE accounts SET balance = balance + %s WHERE id = %s",
                            (delta, account),
                        )
                    self.commits += 1
        except BaseException as exc:
            self.error = exc


INVARIANT = (
    "SELECT (SELECT sum(balance) FROM accounts) = (SELECT sum(delta) FROM history), "
    "(SELECT count(*) FROM history), (SELECT max(id) FROM history)"
)


def test_a_backup_taken_under_pgbench_style_writes_is_consistent(
    engine_dir: Path, clock: ManualClock, pg: PgNamespace, source_url: str
) -> None:
    seeded = int(_scalar(source_url, "SELECT count(*) FROM history"))
    bank = _Bank(source_url)
    at_dump_end: list[int] = []

    def after_dump(job: JobRecord) -> None:
        at_dump_end.append(bank.commits)

    with Engine(engine_dir, clock=clock, hooks={"backup.after_dump": after_dump}) as engine:
        project = engine.create_project(CreateProject(name="bank", database_url=source_url))
        bank.start()
        try:
            _wait_until(lambda: bank.commits >= 50 or bank.error, "the first transactions")
            backup, job, verify = _backup(engine, project.project.id)
        finally:
            bank.stop.set()
            bank.join(30)
        assert bank.error is None, bank.error
        assert job.state == JobState.completed
        # the counts read in the backup's snapshot equal the restored ones
        assert backup.verification_state == "verified", backup.verification_error
        assert verify.state == JobState.completed

        snapshot = engine.rt.blobs.read_manifest(backup.backup_key)["details"]["row_counts"]
        in_snapshot = int(snapshot["public.history"]) - seeded
        assert in_snapshot >= 50
        # transactions committed while pg_dump ran, after its snapshot
        assert len(at_dump_end) == 1
        assert at_dump_end[0] > in_snapshot, (at_dump_end, in_snapshot)

        _, preview = _new_preview(engine, project.project.id, backup.backup_key)
        assert preview.database_name
        restored = pg.server.url(preview.database_name)
        holds, count, highest = _row(restored, INVARIANT)
        assert holds is True
        assert count == seeded + in_snapshot
        assert highest == count  # one writer: a consistent snapshot holds a prefix of history
        source_holds = _row(source_url, INVARIANT)
        assert source_holds[0] is True
        assert source_holds[1] == seeded + bank.commits


# ---------------------------------------------------------------- a worker killed mid-restore

HANGING_WORKER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    from pulumi_capy.engine import Engine

    directory, job_id, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])


    def hang(job):
        marker.touch()
        while True:
            time.sleep(60)


    with Engine(directory, lease_seconds=1.0, hooks={"restore.before_commit": hang}) as engine:
        engine.wait_for_job(job_id, timeout=120)
    """
)


def test_a_restore_killed_before_the_swap_leaves_the_target_and_is_finished_by_another_worker(
    engine_dir: Path, pg: PgNamespace, source_url: str, tmp_path: Path
) -> None:
    name = _database(source_url)
    with Engine(engine_dir) as setup:
        project = setup.create_project(CreateProject(name="app", database_url=source_url)).project
        backup, _, _ = _backup(setup, project.id)
        backed_up = checksums(source_url)
        _change(source_url)
        changed = checksums(source_url)
        job_id = setup.create_restore(project.id, _overwrite(backup.backup_key)).id

    script = tmp_path / "hanging_worker.py"
    script.write_text(HANGING_WORKER, encoding="utf-8")
    marker = tmp_path / "inside-before-commit"
    output = tmp_path / "hanging_worker.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(script), str(engine_dir), job_id, str(marker)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert process.poll() is None, output.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, "the worker never reached before_commit"
            time.sleep(0.02)
        # pg_restore has filled the scratch database; the swap is next
        scratch = pg.leftovers()
        assert len(scratch) == 1
        assert scratch[0].startswith(f"{name}__capy_new_")
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # the killed worker's unpacked dump sits in the engine's scratch space, under its pid
    stranded_files = list((engine_dir / "tmp").glob(f"capy-{process.pid}-*"))
    assert stranded_files
    assert list(stranded_files[0].rglob("toc.dat"))

    # killed right before the swap: the project database is untouched and open
    assert checksums(source_url) == changed
    assert pg.allows_connections(name)

    with Engine(engine_dir, lease_seconds=1.0) as engine:
        stranded = engine.get_job(job_id)
        assert (stranded.state, stranded.attempts) == (JobState.running, 1)
        done = engine.wait_for_job(job_id, timeout=60)
        assert (done.state, done.attempts) == (JobState.completed, 2)
        assert checksums(source_url) == backed_up
        assert pg.allows_connections(name)
        labels = [b.label for b in engine.list_backups(project.id)]
        assert labels.count(safety_label(job_id)) == 2  # one per attempt

    # regression: a killed attempt's scratch database is dropped by the next attempt
    assert pg.leftovers() == [], "the killed attempt's scratch database leaked"
    # and its files are swept when an engine opens the directory again
    assert not any(path.exists() for path in stranded_files)


PAUSING_WORKER = textwrap.dedent(
    """
    import sys
    import time
    from pathlib import Path

    from pulumi_capy.engine import Engine

    directory, job_id, marker, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])


    def pause(job):
        marker.touch()
        while not go.exists():
            time.sleep(0.01)


    with Engine(directory, lease_seconds=1.0, hooks={"restore.before_commit": pause}) as engine:
        engine.wait_for_job(job_id, timeout=120)
    """
)


def test_a_swap_that_cannot_complete_leaves_the_target_whole_and_a_retry_finishes(
    engine_dir: Path, pg: PgNamespace, source_url: str
) -> None:
    """Both renames of the swap commit together, so no moment exists in which the
    project's name has no database. Here someone is connected to the scratch database:
    the swap fails as a whole (transient), the target keeps its name, its data and its
    connections, and the next attempt finishes."""
    name = _database(source_url)
    blockers: list[psycopg.Connection] = []

    def occupy_the_scratch(job: JobRecord) -> None:
        if not blockers:
            (scratch,) = [db for db in pg.leftovers() if "__capy_new_" in db]
            blockers.append(connect(pg.server.url(scratch)))

    with Engine(
        engine_dir,
        hooks={"restore.before_commit": occupy_the_scratch},
        retry=JobRetryPolicy(base_delay=0.05),
    ) as engine:
        project = engine.create_project(CreateProject(name="app", database_url=source_url)).project
        backup, _, _ = _backup(engine, project.id)
        backed_up = checksums(source_url)
        _change(source_url)
        changed = checksums(source_url)
        job_id = engine.create_restore(project.id, _overwrite(backup.backup_key)).id
        try:
            assert engine.worker.run_once(only_id=job_id)
            first = engine.get_job(job_id)
            assert (first.state, first.retry_classification) == (JobState.pending, "transient")
            assert "being accessed by other users" in (first.error or "")
            assert pg.exists(name)
            assert checksums(source_url) == changed  # untouched, and it takes connections
        finally:
            for blocker in blockers:
                blocker.close()
        done = engine.wait_for_job(job_id, timeout=60)
    assert (done.state, done.attempts) == (JobState.completed, 2)
    assert checksums(source_url) == backed_up
    assert pg.leftovers() == []


# ---------------------------------------------------------------- failures users meet


def test_a_wrong_password_fails_permanently_and_is_never_echoed(
    engine: Engine, project: Project, pg: PgNamespace, source_url: str
) -> None:
    wrong = "Wr0ng%40pass%2Fword"  # percent-encoded '@' and '/'
    bad_url = pg.server.url(_database(source_url), password=wrong)
    hidden = [wrong, unquote(wrong), pg.server.password]

    with contextlib.closing(sqlite3.connect(engine.directory / "engine.db")) as db, db:
        db.execute("UPDATE projects SET database_url = ? WHERE id = ?", (bad_url, project.id))
    with pytest.raises(JobFailed) as failed:
        engine.wait_for_job(engine.create_backup(project.id).id, JOB_TIMEOUT)
    job = failed.value.job
    assert (job.state, job.attempts, job.retry_classification) == (
        JobState.failed,
        1,
        "permanent",
    )
    assert "password authentication failed" in (job.error or "")
    _secrets_absent([job.error, job.last_stdout, job.last_stderr, str(failed.value)], hidden)
    assert engine.list_backups(project.id) == []

    with pytest.raises(InvalidInput) as rejected:
        engine.create_project(CreateProject(name="bad", database_url=bad_url))
    assert rejected.value.fields == ["database_url"]
    assert "password authentication failed" in str(rejected.value)
    _secrets_absent([str(rejected.value)], hidden)


def test_a_role_without_createdb_backs_up_but_a_new_preview_fails_naming_the_privilege(
    engine: Engine, pg: PgNamespace
) -> None:
    role, password = pg.create_role("owner", "LOGIN NOCREATEDB")
    pg.create_database("owned", owner=role)
    url = pg.url(pg.name("owned"), user=role, password=password)
    with connect(url) as db:
        db.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
        db.execute("INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 20) g")
    project = engine.create_project(CreateProject(name="owned", database_url=url)).project

    job = engine.wait_for_job(engine.create_backup(project.id).id, JOB_TIMEOUT)
    assert job.state == JobState.completed
    assert job.result is not None
    # verification restores into a throwaway database: that needs CREATEDB too
    with pytest.raises(JobFailed) as unverified:
        engine.wait_for_job(str(job.result["verify_job_id"]), JOB_TIMEOUT)
    assert unverified.value.job.retry_classification == "permanent"
    assert "CREATEDB" in (unverified.value.job.error or "")

    request = RestoreRequest(backup_key=job.result["backup_key"], allow_unverified_backup=True)
    with pytest.raises(JobFailed) as failed:
        engine.wait_for_job(engine.create_restore(project.id, request).id, JOB_TIMEOUT)
    restore = failed.value.job
    assert (restore.attempts, restore.retry_classification) == (1, "permanent")
    error = restore.error or ""
    assert "permission denied to create database" in error
    assert "CREATEDB" in error
    _secrets_absent([error, restore.last_stderr, str(failed.value)], [password])
    assert restore.preview_database_id
    preview = engine.get_preview_database(restore.preview_database_id)
    assert preview.state == "failed"
    assert "CREATEDB" in (preview.last_error or "")
    assert pg.databases() == [pg.name("owned")]


def test_previews_are_dropped_when_their_ttl_expires_and_when_deleted(
    engine: Engine, project: Project, clock: ManualClock, pg: PgNamespace
) -> None:
    backup, _, _ = _backup(engine, project.id)
    _, expiring = _new_preview(engine, project.id, backup.backup_key, ttl_hours=1)
    _, deleted = _new_preview(engine, project.id, backup.backup_key, ttl_hours=48)
    assert expiring.database_name
    assert deleted.database_name
    assert pg.exists(expiring.database_name)
    assert pg.exists(deleted.database_name)

    clock.advance(hours=2)
    report = engine.tick()
    assert report.deleted_previews == [expiring.id]
    assert engine.run_pending() == 1
    assert not pg.exists(expiring.database_name)
    with pytest.raises(NotFound):
        engine.get_preview_database(expiring.id)
    assert pg.exists(deleted.database_name)

    job = engine.wait_for_job(engine.delete_preview_database(deleted.id).id, JOB_TIMEOUT)
    assert job.state == JobState.completed
    assert not pg.exists(deleted.database_name)
    with pytest.raises(NotFound):
        engine.get_preview_database(deleted.id)
    assert pg.databases() == [pg.name("app")]


NO_PG_DUMP_WORKER = textwrap.dedent(
    """
    import sys

    from pulumi_capy.api.errors import JobFailed
    from pulumi_capy.engine import Engine

    with Engine(sys.argv[1]) as engine:
        try:
            engine.wait_for_job(sys.argv[2], timeout=60)
        except JobFailed as exc:
            print(exc)
    """
)
DEBIAN_BINARIES = Path("/usr/lib/postgresql")


def test_a_missing_pg_dump_fails_the_backup_permanently_naming_the_package(
    engine_dir: Path,
    source_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sh, unshare, mount = shutil.which("sh"), shutil.which("unshare"), shutil.which("mount")
    with Engine(engine_dir) as engine:
        project = engine.create_project(CreateProject(name="app", database_url=source_url))
        job_id = engine.create_backup(project.project.id).id

    script = tmp_path / "worker.py"
    script.write_text(NO_PG_DUMP_WORKER, encoding="utf-8")
    command = [sys.executable, str(script), str(engine_dir), job_id]
    if DEBIAN_BINARIES.is_dir():
        # the driver also looks in Debian's /usr/lib/postgresql/*/bin: hide it from the
        # worker (only) under an empty tmpfs, in a private mount namespace
        # CI runs as root on machines with util-linux, where this works (it passed there):
        # under CI=true a missing piece fails, so the skip is only ever a developer's laptop
        give_up = pytest.fail if os.environ.get("CI") else pytest.skip
        if os.geteuid() != 0 or not (sh and unshare and mount):
            give_up("hiding /usr/lib/postgresql needs root, unshare and mount")
        probe = subprocess.run([unshare, "--mount", sh, "-c", "true"], capture_output=True)
        if probe.returncode != 0:
            give_up(f"no mount namespace here: {probe.stderr.decode().strip()}")
        command = [
            unshare,
            "--mount",
            "--propagation",
            "private",
            sh,
            "-c",
            f'{mount} -t tmpfs tmpfs "$1" && shift && exec "$@"',
            "sh",
            str(DEBIAN_BINARIES),
            *command,
        ]
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no pg_dump, no pg_config
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    with Engine(engine_dir) as engine:
        job = engine.get_job(job_id)
    assert (job.state, job.attempts, job.retry_classification) == (
        JobState.failed,
        1,
        "permanent",
    )
    error = job.error or ""
    assert "pg_dump" in error
    assert "postgresql-client" in error
    assert postgres_server.password not in error


# ---------------------------------------------------------------- the dump is streamed


def test_a_pg_dump_that_fails_mid_backup_leaves_no_blob_behind(
    engine: Engine, pg: PgNamespace
) -> None:
    """pg_dump streams into the blob; when it exits non-zero after its snapshot (here: a
    sequence its role may not read), what it streamed is thrown away, .tmp included."""
    role, password = pg.create_role("dumper")
    admin_url = pg.create_database("dumped", owner=role)
    url = pg.url(pg.name("dumped"), user=role, password=password)
    with connect(url) as db:
        db.execute("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        db.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g")
    with connect(admin_url) as db:  # the superuser's, unreadable to the dumper
        db.execute("CREATE SEQUENCE secret_seq")
    project = engine.create_project(CreateProject(name="dumped", database_url=url)).project

    with pytest.raises(JobFailed) as failed:
        engine.wait_for_job(engine.create_backup(project.id).id, JOB_TIMEOUT)
    job = failed.value.job
    assert job.state == JobState.failed
    assert job.last_exit_code not in (None, 0)
    stderr = job.last_stderr or ""
    assert "secret_seq" in stderr
    # pg_dump 15 says so; 18 that the user "may lack SELECT privilege"
    assert "permission denied" in stderr or "lack SELECT privilege" in stderr
    assert engine.list_backups(project.id) == []
    leftovers = list(engine.rt.blobs.objects.list(""))
    assert leftovers == []


def test_a_reader_that_gives_up_leaves_no_dump_behind(
    pg: PgNamespace, source_url: str, tmp_path: Path
) -> None:
    from pulumi_capy.engine.drivers.postgres import PostgresDriver

    read: list[bytes] = []

    def consume(stream: Any) -> None:
        read.append(stream.read(1024))
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        PostgresDriver().dump_streamed(source_url, consume, tmp_path)
    # a tar of pg_dump's directory, its table of contents first
    assert read[0][:7] == b"toc.dat"
    assert read[0][257:262] == b"ustar"
    assert list(tmp_path.iterdir()) == []  # the dump's directory is gone


def test_a_backup_in_the_custom_archive_format_still_verifies_and_restores(
    pg: PgNamespace, source_url: str, tmp_path: Path
) -> None:
    """Backups taken before the directory format hold ``pg_dump -Fc -Z0`` archives."""
    from pulumi_capy.engine.blobs import LocalBlobStore
    from pulumi_capy.engine.drivers.postgres import PostgresDriver
    from pulumi_capy.engine.drivers.postgres.libpq import env as libpq_env

    driver = PostgresDriver()
    expected = checksums(source_url)
    archive = tmp_path / "old.pgdump"
    subprocess.run(
        [pg.server.tool("pg_dump"), "-Fc", "-Z0", "-f", str(archive)],
        env=libpq_env(source_url),
        check=True,
    )
    store = LocalBlobStore(tmp_path / "blobs")
    info = store.put_file("old.pgdump.zst", archive, {"format": "pg_dump-custom"})

    def materialize(path: Path) -> None:
        store.read(info.key, info.sha256, lambda stream: driver.unpack(stream, path))

    unpacked = tmp_path / "unpacked"
    materialize(unpacked)
    assert unpacked.is_file()
    assert unpacked.read_bytes() == archive.read_bytes()
    counts = {table: expected[table][0] for table in TABLES}
    assert "counted" in driver.check(unpacked, source_url, {"row_counts": counts}).summary

    target = pg.server.url(pg.name("from_old"))
    driver.restore_new(materialize, target, before_commit=lambda: None)
    assert checksums(target) == expected


# ---------------------------------------------------------------- the largest table in halves


def _grow_history_with_a_trigger(url: str) -> None:
    """Make ``history`` the largest table (~0.5 MB), counted by a trigger: a restore that
    fired it on restored rows would change ``history_count``."""
    with connect(url) as db:
        db.execute("CREATE TABLE history_count (n bigint NOT NULL)")
        db.execute("INSERT INTO history_count VALUES (0)")
        db.execute(
            "CREATE FUNCTION count_history() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN UPDATE history_count SET n = n + 1; RETURN NEW; END $$"
        )
        db.execute(
            "INSERT INTO history (account_id, delta) "
            "SELECT g % 50 + 1, 0 FROM generate_series(1, 25000) AS g"
        )
        db.execute(
            "CREATE TRIGGER history_counted AFTER INSERT ON history "
            "FOR EACH ROW EXECUTE FUNCTION count_history()"
        )
        db.execute("INSERT INTO history (account_id, delta) VALUES (1, 0)")  # counted once
        db.execute("CREATE INDEX history_delta_idx ON history (delta)")
        db.execute("COMMENT ON TABLE history IS 'every change of a balance'")


@pytest.fixture
def halved(source_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``source_url`` with ``history`` grown (and counted by a trigger) past a lowered
    ``split_over``: its restores load ``history`` in two halves."""
    from pulumi_capy.engine.drivers.postgres import PostgresDriver

    _grow_history_with_a_trigger(source_url)
    monkeypatch.setattr(PostgresDriver, "split_over", 64 << 10)
    return source_url


def test_the_largest_table_loads_in_two_halves_and_every_restore_is_whole(
    engine: Engine,
    project: Project,
    pg: PgNamespace,
    halved: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over ``split_over`` the largest table's rows are loaded by two ``COPY … FROM
    STDIN`` at once, between the schema and the rest: the verification, a new preview
    and a restore in place all end with every row, key, index, sequence, large object,
    comment and trigger, and no trigger fired on a restored row."""
    from pulumi_capy.engine.drivers.postgres import loading

    source_url = halved
    splits: list[str] = []  # where each restore's halves came from: "blob" or "file"
    restore_split = loading.restore_split

    def spy(load: loading.Load, halves: Any) -> Any:
        dump = load.dump
        side = dump / ".capy-side"
        # nothing of the largest table is on disk when it streams from the blob
        splits.append("file" if side.is_dir() and list(side.glob("*.dat")) else "blob")
        assert not [path for path in dump.iterdir() if not path.is_file() and not path.is_dir()]
        return restore_split(load, halves)

    monkeypatch.setattr(loading, "restore_split", spy)
    expected = checksums(source_url)
    expected_schema = schema_of(source_url)
    assert _scalar(source_url, "SELECT n FROM history_count") == 1

    backup, _, verify = _backup(engine, project.id)
    assert verify.state == JobState.completed
    assert backup.verification_state == "verified"
    assert splits == ["file"]  # the verification unpacks the blob
    assert "frames" in engine.rt.blobs.read_manifest(backup.backup_key)

    _, preview = _new_preview(engine, project.id, backup.backup_key)
    assert splits == ["file", "blob"]  # a restore streams the halves from the blob's frames
    assert preview.database_name
    target = pg.server.url(preview.database_name)
    assert checksums(target) == expected  # history_count still 1: no trigger fired
    assert schema_of(target) == expected_schema
    assert _scalar(target, "SELECT obj_description('history'::regclass)") == (
        "every change of a balance"
    )
    with connect(target) as db:  # the trigger is there and works
        db.execute("INSERT INTO history (account_id, delta) VALUES (2, 0)")
        assert db.execute("SELECT n FROM history_count").fetchone() == (2,)

    _change(source_url)
    done = engine.wait_for_job(
        engine.create_restore(project.id, _overwrite(backup.backup_key)).id, JOB_TIMEOUT
    )
    assert done.state == JobState.completed, done.error
    assert splits[2:] == ["blob"] or splits[2:] == ["file", "blob"]  # (a safety backup's check)
    assert checksums(source_url) == expected
    assert schema_of(source_url) == expected_schema
    assert pg.leftovers() == []


def test_a_half_that_fails_to_load_fails_the_restore_and_leaves_nothing(
    pg: PgNamespace, halved: str, tmp_path: Path
) -> None:
    from pulumi_capy.engine.drivers import DriverFailure
    from pulumi_capy.engine.drivers.postgres import PostgresDriver

    source_url = halved
    driver = PostgresDriver()
    unpacked = tmp_path / "unpacked"

    def dump_and_unpack(stream: Any) -> None:
        driver.unpack(stream, unpacked)

    driver.dump_streamed(source_url, dump_and_unpack, tmp_path)
    (half,) = (unpacked / ".capy-side").glob("*.dat")
    half.write_bytes(b"not\ta row of history\n" + half.read_bytes())

    def materialize(path: Path) -> None:
        shutil.copytree(unpacked, path)

    target = pg.server.url(pg.name("halves"))
    with pytest.raises(DriverFailure) as failed:
        driver.restore_new(materialize, target, before_commit=lambda: None)
    assert failed.value.permanent
    assert "the largest table, in two halves" in str(failed.value)
    assert "invalid input syntax" in (failed.value.outcome.stderr if failed.value.outcome else "")
    assert not pg.exists(pg.name("halves"))
    assert pg.leftovers() == []


def _failed_restore(engine: Engine, project_id: str, backup_key: str) -> Job:
    with pytest.raises(JobFailed) as failed:
        engine.wait_for_job(
            engine.create_restore(project_id, RestoreRequest(backup_key=backup_key)).id,
            JOB_TIMEOUT,
        )
    job = failed.value.job
    assert (job.state, job.attempts, job.retry_classification) == (
        JobState.failed,
        1,
        "permanent",
    )
    return job


def test_a_damaged_blob_or_manifest_fails_a_streamed_restore_before_it_loads_anything(
    engine: Engine, project: Project, pg: PgNamespace, halved: str
) -> None:
    """The halves stream from the blob only after the whole blob matched its checksum;
    a manifest whose layout names a path outside the dump is refused."""
    source_url = halved
    backup, _, _ = _backup(engine, project.id)
    blob = local_blobs(engine).path(backup.backup_key)
    manifest_path = local_blobs(engine).manifest_path(backup.backup_key)
    good_blob, good_manifest = blob.read_bytes(), manifest_path.read_text()
    before = pg.databases()

    damaged = bytearray(good_blob)
    damaged[-100] ^= 0x01  # in the last frame: the halves' frames decompress fine
    blob.write_bytes(bytes(damaged))
    job = _failed_restore(engine, project.id, backup.backup_key)
    assert "checksum mismatch" in (job.error or "")
    assert pg.databases() == before

    blob.write_bytes(good_blob)
    manifest = json.loads(good_manifest)
    layout = manifest["details"]["tar"]
    layout["members"][-1][0] = "../escaped.dat"
    manifest_path.write_text(json.dumps(manifest))
    job = _failed_restore(engine, project.id, backup.backup_key)
    assert "layout is damaged" in (job.error or "")
    assert pg.databases() == before
    assert not list(engine.rt.scratch_dir.rglob("escaped.dat"))
    assert not (engine.rt.scratch_dir.parent / "escaped.dat").exists()

    manifest_path.write_text(good_manifest)  # and whole again, it restores
    _, preview = _new_preview(engine, project.id, backup.backup_key)
    assert preview.database_name
    assert checksums(pg.server.url(preview.database_name)) == checksums(source_url)


@pytest.mark.parametrize("chunk", [1, 7, 64, 65, 1 << 20])
def test_the_halves_copy_stream_drops_only_the_dumps_end_marker(
    pg: PgNamespace, chunk: int
) -> None:
    """pg_dump's data file ends with a ``\\.`` line; the engine's COPY sends every row
    and not that line, wherever the writes cut it (a value ``\\.`` is ``\\\\.``)."""
    from pulumi_capy.engine.drivers.postgres.loading import CopyIn

    url = pg.create_database("copy")
    rows = [f"{n}\tvalue {n}\n".encode() for n in range(200)] + [b"200\t\\\\.\n", b"201\t.\n"]
    data = b"".join(rows) + b"\\.\n\n\n"
    with connect(url) as db:
        db.execute("CREATE TABLE t (id integer PRIMARY KEY, body text)")
        sent: list[bytes] = []
        with db.cursor() as cursor, cursor.copy("COPY t (id, body) FROM STDIN") as copy:

            class Recording:
                def write(self, buffer: bytes) -> None:
                    sent.append(bytes(buffer))
                    copy.write(buffer)

            stream = CopyIn(Recording())  # type: ignore[arg-type]
            for start in range(0, len(data), chunk):
                stream.write(data[start : start + chunk])
            stream.close()
        # exactly the rows: a server that took "\." as a row would fail on it
        assert b"".join(sent) == b"".join(rows)
        assert db.execute("SELECT count(*) FROM t").fetchone() == (202,)
        assert db.execute("SELECT body FROM t WHERE id >= 200 ORDER BY id").fetchall() == [
            ("\\.",),
            (".",),
        ]


def test_a_failed_restore_names_the_first_real_cause_not_the_end_of_a_statement(
    engine: Engine,
    project: Project,
    pg: PgNamespace,
    source_url: str,
    request: pytest.FixtureRequest,
) -> None:
    """A C function whose library is gone at restore time: pg_restore's last line is
    the end of the ``CREATE FUNCTION``; the job's error is the ``ERROR:`` line and the
    statement it ran."""
    # where the server (another user) can read it, unlike pytest's tmp_path
    shared = Path(tempfile.mkdtemp(prefix="capy-lib-"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o755)
    library = shared / "capy_gone.so"
    pkglibdir = pg.server.bindir.parent / "lib"  # Debian's and the PyPI wheel's layout
    shutil.copy(pkglibdir / "citext.so", library)
    library.chmod(0o755)
    with connect(source_url) as db:
        db.execute(
            sql.SQL(
                "CREATE FUNCTION gone_cmp(text, text) RETURNS integer LANGUAGE c IMMUTABLE "
                "STRICT AS {}, 'citext_cmp'"
            ).format(sql.Literal(str(library)))
        )
    backup, _, _ = _backup(engine, project.id)
    library.unlink()

    job = _failed_restore(engine, project.id, backup.backup_key)
    error = job.error or ""
    assert "ERROR:" in error
    assert f'could not access file "{library}"' in error
    assert "CREATE FUNCTION public.gone_cmp" in error
    assert not error.rstrip().endswith("'citext_cmp';")  # not just the statement's end
    assert (job.last_stderr or "").rstrip().endswith("'citext_cmp';")  # as pg_restore said
    assert pg.leftovers() == []


def test_an_engine_role_that_is_no_superuser_gives_objects_back_to_roles_it_may_become(
    engine: Engine, pg: PgNamespace
) -> None:
    """A non-superuser engine role that owns the database and is a member of the owner
    of its tables restores them with their owner and grants; an owner it may not become
    is refused before anything is done, naming the GRANT that would allow it."""
    role, password = pg.create_role("engine", "LOGIN CREATEDB")
    alice, _ = pg.create_role("alice", "NOLOGIN")
    bob, _ = pg.create_role("bob", "NOLOGIN")
    admin_url = pg.create_database("shop", owner=role)
    url = pg.url(pg.name("shop"), user=role, password=password)
    ident = sql.Identifier
    with connect(admin_url) as db:
        db.execute(sql.SQL("GRANT {} TO {}").format(ident(alice), ident(role)))
        # alice's schema, alice's table: PostgreSQL lets a member of alice give both back
        db.execute(sql.SQL("CREATE SCHEMA books AUTHORIZATION {}").format(ident(alice)))
        db.execute("CREATE TABLE books.ledger (id integer PRIMARY KEY, amount numeric NOT NULL)")
        db.execute("INSERT INTO books.ledger SELECT g, g * 1.5 FROM generate_series(1, 300) g")
        db.execute(sql.SQL("ALTER TABLE books.ledger OWNER TO {}").format(ident(alice)))
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA books TO {}").format(ident(bob)))
        db.execute(sql.SQL("GRANT SELECT ON books.ledger TO {}").format(ident(bob)))
    project = engine.create_project(CreateProject(name="shop", database_url=url)).project
    backup, _, verify = _backup(engine, project.id)
    assert verify.state == JobState.completed

    _, preview = _new_preview(engine, project.id, backup.backup_key)
    assert preview.database_name
    target = pg.server.url(preview.database_name)
    owner = "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'ledger'"
    assert _row(target, owner) == (alice,)
    granted = f"SELECT has_table_privilege('{bob}', 'books.ledger', 'SELECT')"
    assert _row(target, granted) == (True,)
    assert _row(target, "SELECT count(*) FROM books.ledger") == (300,)

    with connect(admin_url) as db:
        db.execute("CREATE TABLE audit (id integer PRIMARY KEY)")
        db.execute(sql.SQL("ALTER TABLE audit OWNER TO {}").format(ident(bob)))
        # the engine may read it (so back it up), not become its owner
        db.execute(sql.SQL("GRANT SELECT ON audit TO {}").format(ident(role)))
    job = engine.wait_for_job(engine.create_backup(project.id).id, JOB_TIMEOUT)
    assert job.result is not None
    key = str(job.result["backup_key"])
    databases = pg.databases()
    with pytest.raises(JobFailed) as failed:
        engine.wait_for_job(
            engine.create_restore(
                project.id, RestoreRequest(backup_key=key, allow_unverified_backup=True)
            ).id,
            JOB_TIMEOUT,
        )
    refused = failed.value.job
    assert (refused.attempts, refused.retry_classification) == (1, "permanent")
    assert f"GRANT {bob} TO {role}" in (refused.error or "")
    assert pg.databases() == databases
    _secrets_absent([refused.error, refused.last_stderr], [password])


def test_passwords_in_failed_statements_and_urls_are_masked() -> None:
    from pulumi_capy.engine.drivers.postgres.failures import mask

    url = "postgresql://engine:p%40ss@db.internal:5432/shop"
    text = (
        "ERROR:  could not connect: CREATE USER MAPPING FOR app SERVER remote "
        "OPTIONS (user 'app', password 'hunter''2'); CONNECTION 'host=h password=s3cret' "
        "p@ss p%40ss; FATAL:  password authentication failed for user"
    )
    masked = mask(text, url)
    for secret in ("hunter", "s3cret", "p@ss", "p%40ss"):
        assert secret not in masked
    assert "password authentication failed for user" in masked  # not a password: kept
    assert "OPTIONS (user 'app', password '***')" in masked


def test_a_new_preview_is_made_in_the_sources_tablespace(
    engine: Engine, pg: PgNamespace, request: pytest.FixtureRequest
) -> None:
    location = Path(tempfile.mkdtemp(prefix="capy-space-"))
    request.addfinalizer(lambda: shutil.rmtree(location, ignore_errors=True))
    if os.geteuid() == 0:
        shutil.chown(location, "postgres")  # the server's user owns a tablespace's directory
    space = pg.name("space")
    with pg.admin() as admin:
        admin.execute(
            sql.SQL("CREATE TABLESPACE {} LOCATION {}").format(
                sql.Identifier(space), sql.Literal(str(location))
            )
        )
    try:
        url = pg.create_database("spaced")
        with pg.admin() as admin:
            admin.execute(
                sql.SQL("ALTER DATABASE {} SET TABLESPACE {}").format(
                    sql.Identifier(pg.name("spaced")), sql.Identifier(space)
                )
            )
        with connect(url) as db:
            db.execute("CREATE TABLE t AS SELECT generate_series(1, 100) AS n")
        project = engine.create_project(CreateProject(name="spaced", database_url=url)).project
        backup, _, _ = _backup(engine, project.id)
        _, preview = _new_preview(engine, project.id, backup.backup_key)
        assert preview.database_name
        where = (
            "SELECT t.spcname FROM pg_database d JOIN pg_tablespace t "
            "ON t.oid = d.dattablespace WHERE d.datname = current_database()"
        )
        assert _row(pg.server.url(preview.database_name), where) == (space,)
        assert _row(pg.server.url(preview.database_name), "SELECT count(*) FROM t") == (100,)
    finally:
        pg.drop_all()
        with pg.admin() as admin:
            admin.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(space)))
