"""Benchmark: past one machine, in one run (issue 17's figures).

1. Job claims per second with 1, 2 and 4 worker processes on the PostgreSQL store and
   on SQLite, no job claimed twice (``bench/scale_claims.py``; target >= 800/s with 4
   on PostgreSQL).
2. Backup and restore throughput with the blobs on the S3 server against the raw client
   moving the same bytes (``bench/s3_blobs.py``; target >= 0.8x).
3. End to end: backups per minute of several PostgreSQL projects (each backup with its
   verification, which restores it into a throwaway database) by 1 and by 3 ``capy
   worker`` processes on one PostgreSQL store and one bucket.

Starts its own PostgreSQL (``tests/pg.py``) and S3 server (``tests/s3.py``). On two
cores a third worker cannot add a third core: the end-to-end figure says what
PostgreSQL's pg_dump, zstd and the restores leave to share.

    .venv/bin/python bench/scale.py [--jobs 4000] [--size-mb 256] [--projects 6]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import s3_blobs
import scale_claims

from pulumi_capy.api.models import CreateBackup, CreateProject, JobState
from pulumi_capy.engine import Engine
from tests.engine.stores.conftest import fresh_database
from tests.pg import PostgresServer, running_server
from tests.s3 import running_s3_server

CAPY = Path(sys.executable).parent / "capy"


def claims(server: PostgresServer, jobs: int, scratch: Path) -> None:
    print("\n== 1. claims per second", flush=True)
    rows = []
    for processes in scale_claims.PROCESSES:
        rows.append(
            ("postgresql", processes, *scale_claims.run(fresh_database(server), processes, jobs))
        )
    for processes in scale_claims.PROCESSES:
        path = scratch / f"claims-{processes}.db"
        rows.append(("sqlite", processes, *scale_claims.run(str(path), processes, jobs)))
    print(f"{jobs} jobs per run, claims only (Store.claim_job)")
    print(f"{'store':<12}{'processes':>10}{'claims/s':>12}{'duplicates':>12}")
    for store, processes, rate, duplicates in rows:
        print(f"{store:<12}{processes:>10}{rate:>12.0f}{duplicates:>12}")


def _app_database(server: PostgresServer, name: str, rows: int) -> str:
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    url = server.url(name)
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(
            "CREATE TABLE orders AS SELECT n AS id, md5(n::text) AS token, n %% 97 AS customer, "
            "repeat('x', 40 + n %% 60) AS note FROM generate_series(1, %s) AS n",
            (rows,),
        )
        db.execute("ALTER TABLE orders ADD PRIMARY KEY (id)")
        db.execute("CREATE INDEX orders_customer ON orders (customer)")
    return url


def end_to_end(
    server: PostgresServer, environ: dict[str, str], scratch: Path, projects: int, rows: int
) -> None:
    print("\n== 3. backups per minute, end to end", flush=True)
    apps = [_app_database(server, f"scale_app_{n}", rows) for n in range(projects)]
    print(f"{projects} PostgreSQL projects of {rows} rows each, 2 backups each per run")
    print(f"{'workers':>8}{'backups':>9}{'seconds':>9}{'backups/min':>13}")
    for workers in (1, 3):
        store_url = fresh_database(server)
        env = {
            **os.environ,
            **environ,
            "CAPY_BLOB_URL": f"{environ['CAPY_BLOB_URL']}/e2e-{workers}",
            "CAPY_STORE_URL": store_url,
            "CAPY_SECRET_KEY": Fernet.generate_key().decode(),
        }
        os.environ.update(env)
        with Engine(scratch / f"client-{workers}") as engine:
            ids = [
                engine.create_project(CreateProject(name=f"app{n}", database_url=url)).project.id
                for n, url in enumerate(apps)
            ]
            processes = [
                subprocess.Popen(
                    [
                        str(CAPY),
                        "worker",
                        "--concurrency",
                        "1",
                        "--poll-interval",
                        "0.2",
                        "--engine-dir",
                        str(scratch / f"worker-{workers}-{n}"),
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for n in range(workers)
            ]
            time.sleep(2)  # the workers are up and idle
            began = time.monotonic()
            for _ in range(2):
                for project in ids:
                    engine.create_backup(project, CreateBackup())
            while True:
                jobs = [job for project in ids for job in engine.list_jobs(project, 100)]
                if all(job.state in (JobState.completed, JobState.failed) for job in jobs):
                    break
                time.sleep(0.2)
            seconds = time.monotonic() - began
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(60)
            failed = [job.error for job in jobs if job.state != JobState.completed]
            if failed:
                raise SystemExit(f"jobs failed: {failed}")
            backups = sum(1 for job in jobs if job.type == "project.backup")
            print(f"{workers:>8}{backups:>9}{seconds:>9.1f}{backups / seconds * 60:>13.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4000, help="claims: jobs per run")
    parser.add_argument("--size-mb", type=int, default=256, help="S3: the database's size")
    parser.add_argument("--rounds", type=int, default=2, help="S3: ABBA rounds")
    parser.add_argument("--projects", type=int, default=6, help="end to end: projects")
    parser.add_argument("--rows", type=int, default=400_000, help="end to end: rows each")
    parser.add_argument("--skip", action="append", default=[], choices=["claims", "s3", "e2e"])
    args = parser.parse_args()
    with (
        running_server() as server,
        running_s3_server(bucket=s3_blobs.BUCKET) as s3,
        tempfile.TemporaryDirectory() as directory,
    ):
        scratch = Path(directory)
        environ = s3.env(s3_blobs.BUCKET)
        if "claims" not in args.skip:
            claims(server, args.jobs, scratch)
        if "s3" not in args.skip:
            print("\n== 2. blobs on S3 against the raw client", flush=True)
            s3_blobs.measure(scratch, args.size_mb, args.rounds, environ)
        if "e2e" not in args.skip:
            end_to_end(server, environ, scratch, args.projects, args.rows)


if __name__ == "__main__":
    main()
