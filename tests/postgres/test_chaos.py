"""Chaos: three worker processes on one PostgreSQL store and one S3 bucket, one of them
SIGKILLed at random every few seconds (and started again), while 200 backup and restore
jobs run across several projects.

Every job ends completed, each completion recorded exactly once; no two jobs holding
one lock ever overlap (each job records its own start and completion, a killed one's
span ending when its process died); no committed blob is unreferenced and gc drops
what killed uploads left; no scratch file is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from pulumi_capy.api.models import CreateBackup, CreateProject, JobState, RestoreRequest
from pulumi_capy.engine import Engine, gc, runtime
from pulumi_capy.engine.queue import JobRetryPolicy
from tests.engine.stores.conftest import drop_database, fresh_database
from tests.pg import PostgresServer

REPO = Path(__file__).resolve().parents[2]
PROJECTS = 4
BACKUPS = 30  # per project (each also makes a verification job)
RESTORES = 20  # per project, to new previews
WORKERS = 3
KILL_EVERY = (0.5, 1.5)  # seconds between kills
DEADLINE = 420.0


def _app(path: Path, seed: int) -> Path:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body BLOB)")
        db.executemany(
            "INSERT INTO events (body) VALUES (randomblob(?))", [(2000 + seed,)] * 4000
        )  # ~8 MB: a job takes a fraction of a second, so kills land inside jobs
    return path


@pytest.fixture
def environment(
    debian_postgres: PostgresServer, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    url = fresh_database(debian_postgres)
    env = {**s3_env, "CAPY_STORE_URL": url, "CAPY_SECRET_KEY": Fernet.generate_key().decode()}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        yield env
    finally:
        drop_database(debian_postgres, url)


class Workers:
    def __init__(self, base: Path, log: Path) -> None:
        self.base = base
        self.log = log
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.killed: dict[int, float] = {}  # pid: when it was killed

    def start(self, number: int) -> None:
        directory = self.base / f"worker-{number}"
        command = [sys.executable, "-m", "tests.chaos_worker", str(directory), str(self.log), "2"]
        output = open(self.base / f"worker-{number}.out", "ab")  # noqa: SIM115
        self.processes[number] = subprocess.Popen(
            command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT
        )
        output.close()

    def kill(self, number: int) -> None:
        process = self.processes[number]
        process.kill()
        process.wait()
        self.killed[process.pid] = time.time()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_jobs_survive_workers_killed_at_random(
    environment: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(1717)
    log = tmp_path / "jobs.log"
    workers = Workers(tmp_path, log)
    with Engine(tmp_path / "client", retry=JobRetryPolicy(max_attempts=10)) as engine:
        projects = [
            engine.create_project(
                CreateProject(
                    name=f"app{n}", database_url=f"sqlite:///{_app(tmp_path / f'app{n}.db', n)}"
                )
            ).project.id
            for n in range(PROJECTS)
        ]
        backups = [
            engine.create_backup(project, CreateBackup(label=f"b{n}")).id
            for n in range(BACKUPS)
            for project in projects
        ]
        for number in range(WORKERS):
            workers.start(number)
        restores: list[str] = []
        deadline = time.monotonic() + DEADLINE
        next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
        try:
            while time.monotonic() < deadline:
                jobs = [job for project in projects for job in engine.list_jobs(project, 1000)]
                for project in projects:  # restores of what is backed up, as it comes
                    ready = [b for b in engine.list_backups(project) if b.state == "completed"]
                    if ready and len(restores) < RESTORES * PROJECTS:
                        request = RestoreRequest(backup_key=rng.choice(ready).backup_key)
                        restores.append(engine.create_restore(project, request).id)
                final = [job for job in jobs if job.state in (JobState.completed, JobState.failed)]
                if len(restores) == RESTORES * PROJECTS and len(final) == len(jobs):
                    break
                if time.monotonic() >= next_kill:
                    victim = rng.randrange(WORKERS)
                    workers.kill(victim)
                    time.sleep(0.3)
                    workers.start(victim)  # the same engine directory: its scratch is swept
                    next_kill = time.monotonic() + rng.uniform(*KILL_EVERY)
                time.sleep(0.2)
        finally:
            workers.stop()

        jobs = [job for project in projects for job in engine.list_jobs(project, 1000)]
        assert len(backups) + len(restores) == (BACKUPS + RESTORES) * PROJECTS
        assert len(jobs) >= 200
        failed = [f"{job.id} {job.type}: {job.error}" for job in jobs if job.state != "completed"]
        assert failed == []
        assert len(workers.killed) >= 8, "the chaos did not happen"

        records = [json.loads(line) for line in log.read_text().splitlines()]

        def claim(record: dict[str, object]) -> tuple[object, ...]:
            return (record["job"], record["claimed_at"], record["pid"])

        over = {claim(r) for r in records if r["event"] == "end"}
        cut = {r["pid"] for r in records if r["event"] == "start" and claim(r) not in over}
        assert cut <= set(workers.killed)  # only a killed process leaves a job unended
        assert len(cut) >= 3, "too few kills landed inside a job"
        completions: dict[str, int] = defaultdict(int)
        for record in records:
            if record["event"] == "done":
                completions[record["job"]] += 1
        assert [job.id for job in jobs if completions[job.id] > 1] == []  # never twice
        # a job's completion is committed, then recorded: a worker killed in between leaves
        # the job completed (the store says so above) with no record, and only then
        killed_after = {
            job.id
            for job in jobs
            if completions[job.id] == 0
            and any(r["job"] == job.id and r["pid"] in workers.killed for r in records)
        }
        assert {job.id for job in jobs if completions[job.id] == 0} == killed_after

        # the spans of each lock's holders, a killed holder's ending when it died
        ends = {claim(r): r["t"] for r in records if r["event"] == "end"}
        spans: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        for record in records:
            if record["event"] != "start" or record["lock"] is None:
                continue
            end = ends.get(claim(record))
            if end is None:  # its work never ended: its process was killed
                end = workers.killed.get(record["pid"], float("inf"))
            spans[record["lock"]].append((record["t"], end, record["job"]))
        for lock, held in spans.items():
            latest, holder = float("-inf"), ""
            for start, end, job in sorted(held):
                assert start >= latest, f"{lock}: {holder} still held it when {job} started"
                if end > latest:
                    latest, holder = end, job

        # blobs: every committed object is a referenced blob or its manifest; gc drops
        # the uploads killed workers left unfinished, and then finds nothing
        report = gc.collect_garbage(engine.rt, dry_run=True, min_age=timedelta(days=-3650))
        unreferenced = [g.path for g in report.garbage if not g.found.upload]
        assert unreferenced == []
        gc.collect_garbage(engine.rt, dry_run=False, min_age=timedelta(days=-3650))
        assert list(engine.rt.blobs.objects.unfinished("projects/")) == []

    # what killed workers left in their scratch space goes at a worker's next sweep (its
    # start, each tick); verifications' copies once their job no longer runs anywhere
    monkeypatch.setattr(runtime, "JOB_SCRATCH_MIN_AGE", 0.0)
    for number in range(WORKERS):
        with Engine(tmp_path / f"worker-{number}"):
            pass
        scratch = tmp_path / f"worker-{number}" / "tmp"
        assert not scratch.exists() or not any(scratch.iterdir()), list(scratch.iterdir())
    assert os.environ["CAPY_STORE_URL"]  # the workers ran on PostgreSQL, not engine.db
    assert not (tmp_path / "worker-0" / "engine.db").exists()
