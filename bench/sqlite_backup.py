"""Benchmark: the engine's SQLite backup and restore against the raw tools, in one run.

Builds a ~500 MB SQLite database (mixed integer, short-string and prose
columns, so compression behaves as on application data), then times:

- raw: the online backup API copying the database to a file (``pages=-1``);
- cp: a plain file copy;
- engine backup: the ``project.backup`` job (copy + zstd + SHA-256 + fsync);
- verification: the ``backup.verify`` job (decompress, check sha, quick_check);
- restore to a new preview: the ``project.restore`` job.

Every figure is printed with its ratio to the raw copy measured in the same run
(these machines are noisy), and the blob's size with its ratio to the
database's. Each timed step starts after ``os.sync()``, so that no step pays
for the write-back of the files an earlier step left dirty.

Run: ``.venv/bin/python bench/sqlite_backup.py [--size-mb 500]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pulumi_capy.api.models import CreateBackup, CreateProject, Job, RestoreRequest
from pulumi_capy.engine import Engine

PROSE = (
    "the quick brown capybara restores the database before the migration runs and "
    "every row returns to the state it had when the restore point was pinned "
)


def build_database(path: Path, size_mb: int) -> None:
    rows_per_batch = 200_000
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, sku TEXT, "
            "quantity INTEGER, price_cents INTEGER, token TEXT, note TEXT)"
        )
        db.execute("CREATE INDEX orders_customer ON orders (customer)")
        start = 0
        while path.stat().st_size < size_mb * 1_000_000:
            db.execute(
                """
                WITH RECURSIVE n(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM n WHERE x < ?2)
                INSERT INTO orders (id, customer, sku, quantity, price_cents, token, note)
                SELECT x, 'customer-' || (x * 7919 % 50000), printf('SKU-%06d', x % 4099),
                       x % 17 + 1, abs(random()) % 100000, hex(randomblob(6)),
                       substr(?3, abs(random()) % 120 + 1, 60 + abs(random()) % 80)
                FROM n
                """,
                (start + 1, start + rows_per_batch, PROSE * 3),
            )
            db.commit()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            start += rows_per_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (on real disk)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="capy-bench-", dir=args.dir))
    try:
        database = work / "app.db"
        print(f"building a ~{args.size_mb} MB database in {work} ...", flush=True)
        build_database(database, args.size_mb)
        size = database.stat().st_size

        def raw_copy() -> None:
            target = work / "raw.db"
            target.unlink(missing_ok=True)
            with sqlite3.connect(database) as source, sqlite3.connect(target) as copy:
                source.backup(copy, pages=-1)

        def plain_cp() -> None:
            shutil.copyfile(database, work / "cp.db")

        engine = Engine(work / "engine")
        project = engine.create_project(
            CreateProject(name="bench", database_url=f"sqlite:///{database}")
        ).project
        samples: dict[str, list[float]] = {}

        def clock(name: str, action: Callable[[], object]) -> None:
            os.sync()  # every step starts with no dirty pages of the steps before it
            begin = time.perf_counter()
            action()
            samples.setdefault(name, []).append(time.perf_counter() - begin)

        def wait(name: str, job_id: str) -> Job:
            os.sync()
            begin = time.perf_counter()
            job = engine.wait_for_job(job_id)
            samples.setdefault(name, []).append(time.perf_counter() - begin)
            return job

        key = ""
        for _ in range(args.repeat):
            clock("raw", raw_copy)
            clock("cp", plain_cp)
            job = engine.create_backup(project.id, CreateBackup(label="bench"))
            result = wait("backup", job.id).result or {}
            key = str(result["backup_key"])
            wait("verify", str(result["verify_job_id"]))
            restore = engine.create_restore(project.id, RestoreRequest(backup_key=key))
            wait("restore", restore.id)
        raw, cp, backup, verify, restore_seconds = (
            statistics.median(samples[name])
            for name in ("raw", "cp", "backup", "verify", "restore")
        )
        blob = (engine.directory / "blobs" / key).stat().st_size
        engine.close()

        print(f"\ndatabase {size / 1e6:.0f} MB; median of {args.repeat} runs each\n")
        print(f"{'step':34} {'seconds':>8} {'x raw backup':>13}")
        for name, seconds, target in (
            ("raw online-backup copy", raw, None),
            ("plain cp", cp, None),
            ("engine backup (copy+zstd+sha+fsync)", backup, 1.5),
            ("verification (restore+quick_check)", verify, None),
            ("restore to new preview", restore_seconds, 1.5),
        ):
            goal = f"  (target <= {target}x)" if target else ""
            print(f"{name:34} {seconds:8.2f} {seconds / raw:12.2f}x{goal}")
        print(f"\nblob {blob / 1e6:.0f} MB = {blob / size:.2f}x the database (target <= 0.5x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
