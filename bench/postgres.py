"""Benchmark: the engine's PostgreSQL backup and restore against plain pg_dump/pg_restore.

Starts its own throwaway server (``tests/pg.py``: initdb into a temp dir, fsync
off), builds a ~1.3 GB database (``pgbench -i -s 70``, ~1 GB, plus a ~300 MB
text-heavy ``notes`` table), then in one run times:

- plain ``pg_dump -Fc`` (default gzip compression) of it into a file;
- plain ``pg_restore -j1`` of that file into a new database;
- the engine's ``project.backup`` job (``Engine.create_backup`` + ``wait_for_job``,
  embedded engine): ``pg_dump -Fd -Z0`` (directory format) in an exported
  snapshot with row counts, the directory streamed as a tar through zstd +
  SHA-256 into the blob;
- the engine's restore to a new preview (``create_restore`` with
  ``allow_unverified_backup``; only that job is run, so the backup's pending
  verification is not timed): the blob checked against its SHA-256, the schema
  restored (owners and grants kept), the largest table's two halves streamed from
  the blob's frames into two ``COPY … FROM STDIN`` at once (the other tables' files
  written meanwhile), then the rest with ``pg_restore -j2``, into a scratch
  database created from ``template0`` with the source's encoding and locale, given
  the source database's owner, settings and grants, and renamed into place.

It prints seconds, archive sizes and the ratios against the targets (engine backup
<= 0.6x ``pg_dump -Fc``, blob <= 1.0x its archive, engine restore <= 0.9x
``pg_restore -j1``), and where the engine's time goes (the job hooks mark the
end of pg_dump and of the restore before the rename).

With ``--formats`` it also times ``pg_restore -j2`` of the same database from a
custom-format archive written to a pipe and from pg_dump's directory format (why the
engine keeps the directory).

Run: ``.venv/bin/python bench/postgres.py [--scale 70] [--text-mb 300] [--dir DIR]
[--rounds N] [--formats]``
(about 5 minutes on 2 cores; needs PostgreSQL's server binaries and pgbench,
Debian's postgresql and postgresql-contrib).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg import sql

from pulumi_capy.api.models import CreateProject, RestoreRequest
from pulumi_capy.engine import Engine
from pulumi_capy.engine.stores.contract import JobRecord
from tests.pg import PostgresServer, bindir, running_server

DATABASE = "bench"
PROSE = (
    "the capybara is the largest living rodent native to south america it lives in "
    "savannas and dense forests near bodies of water in groups of ten to twenty restores "
    "are rehearsed every week a preview database is created from last night's backup the "
    "migration runs against it and the team compares row counts before anyone touches "
    "production invoices are reconciled at the end of each month a late payment triggers "
    "a reminder after fourteen days the warehouse ships orders twice a day except on "
    "public holidays customers may change their delivery address until the label is printed"
)
SYLLABLES = "ka ro mi su te na lo ve pri stra ble ment tion ing er al con dis pre ex un"


def vocabulary(size: int = 3000) -> list[str]:
    """Words for the notes: the prose's own, then made-up ones; used with a skew."""
    rng = random.Random(1)
    words = list(dict.fromkeys(PROSE.split()))
    syllables = SYLLABLES.split()
    while len(words) < size:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
        if word not in words:
            words.append(word)
    return words


TITLES = ["invoice", "reminder", "shipment", "migration", "restore", "note", "ticket"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def env_for(server: PostgresServer, database: str) -> dict[str, str]:
    return {
        **os.environ,
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": server.user,
        "PGPASSWORD": server.password,
        "PGDATABASE": database,
    }


def tool(name: str) -> str:
    binaries = bindir()
    if binaries is not None and (binaries / name).exists():
        return str(binaries / name)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found (Debian: apt-get install postgresql-contrib)")
    return found


def run(command: list[str], server: PostgresServer, database: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, env=env_for(server, database), check=True)
    return time.perf_counter() - start


def admin(server: PostgresServer, database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(server.url(database), autocommit=True)


def size_of(server: PostgresServer, database: str) -> int:
    with admin(server) as db:
        row = db.execute("SELECT pg_database_size(%s)", (database,)).fetchone()
    assert row is not None
    return int(row[0])


def checkpoint(server: PostgresServer) -> None:
    with admin(server) as db:
        db.execute("CHECKPOINT")


def build(server: PostgresServer, scale: int, text_mb: int) -> None:
    with admin(server) as db:
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    log(f"pgbench -i -s {scale} (~{scale * 15} MB)")
    seconds = run([tool("pgbench"), "-i", "-q", "-s", str(scale)], server, DATABASE)
    log(f"  pgbench tables built in {seconds:.1f} s")
    log(f"notes: a text-heavy table of ~{text_mb} MB")
    start = time.perf_counter()
    batch = 100_000
    words = vocabulary()
    with admin(server, DATABASE) as db:
        db.execute(
            "CREATE TABLE notes (id bigint PRIMARY KEY, account integer NOT NULL, "
            "title text NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL)"
        )
        first = 1
        while True:
            db.execute(
                """
                INSERT INTO notes (id, account, title, body, created_at)
                SELECT g, (g * 7919) %% 7000000 + 1,
                       (%(titles)s::text[])[1 + g %% 7] || ' #' || g,
                       (SELECT string_agg(v.words[1 + floor(%(n)s * random() ^ 2.5)::int], ' '
                                          ORDER BY i)  -- i: the aggregate is the subquery's
                        FROM generate_series(1, 30 + g %% 70) AS i)
                         || '. ref ' || md5(g::text),
                       timestamptz '2025-01-01' + g * interval '37 seconds'
                FROM (SELECT %(words)s::text[] AS words) AS v,
                     generate_series(%(first)s::bigint, %(last)s::bigint) AS g
                """,
                {
                    "titles": TITLES,
                    "words": words,
                    "n": len(words),
                    "first": first,
                    "last": first + batch - 1,
                },
            )
            first += batch
            row = db.execute("SELECT pg_total_relation_size('notes')").fetchone()
            assert row is not None
            if int(row[0]) >= text_mb * 1_000_000:
                break
        db.execute("VACUUM ANALYZE notes")
    log(f"  notes: {first - 1} rows in {time.perf_counter() - start:.1f} s")
    checkpoint(server)
    log(f"database {DATABASE}: {size_of(server, DATABASE) / 1e6:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=70, help="pgbench scale (default 70)")
    parser.add_argument("--text-mb", type=int, default=300, help="size of the notes table")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each (best kept)")
    parser.add_argument("--dir", type=Path, default=None, help="where archives and blobs go")
    parser.add_argument(
        "--formats",
        action="store_true",
        help="also time pg_restore -j2 from a custom-format archive against pg_dump's directory",
    )
    args = parser.parse_args()
    os.environ.pop("CAPY_DIR", None)
    workdir = Path(tempfile.mkdtemp(prefix="capy-bench-pg-", dir=args.dir))
    try:
        log("starting a throwaway PostgreSQL server")
        with running_server() as server:
            build(server, args.scale, args.text_mb)
            database_bytes = size_of(server, DATABASE)
            samples = measure(server, workdir, args.rounds)
            formats = compare_formats(server, workdir, args.rounds) if args.formats else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(database_bytes, samples)
    if formats is not None:
        custom, directory = formats
        print(
            f"pg_restore -j2 from pg_dump -Fd -Z0 {directory:.1f} s, from a streamed "
            f"pg_dump -Fc -Z0 {custom:.1f} s: {directory / custom:.2f}x (best of {args.rounds})"
        )


def compare_formats(server: PostgresServer, workdir: Path, rounds: int) -> tuple[float, float]:
    """Why the engine keeps pg_dump's directory format: ``pg_restore -j2`` of the same
    database from a custom-format archive written to a pipe (no data offsets: each worker
    skips through the data blocks before its own) and from the directory (each table's
    data in its own file), alternating. Returns the best seconds of each."""
    archive, directory = workdir / "streamed.pgdump", workdir / "directory"
    with archive.open("wb") as sink:
        subprocess.run(
            [tool("pg_dump"), "-Fc", "-Z0"], env=env_for(server, DATABASE), stdout=sink, check=True
        )
    run([tool("pg_dump"), "-Fd", "-Z0", "-f", str(directory)], server, DATABASE)
    best = {"custom": float("inf"), "directory": float("inf")}
    for number in range(1, rounds + 1):
        for name, source in (("custom", archive), ("directory", directory)):
            with admin(server) as db:
                db.execute("CREATE DATABASE formats")
            checkpoint(server)
            seconds = run(
                [tool("pg_restore"), "--no-owner", "-j2", "-d", "formats", str(source)],
                server,
                "formats",
            )
            log(f"  formats round {number}: pg_restore -j2 from the {name}: {seconds:.1f} s")
            best[name] = min(best[name], seconds)
            with admin(server) as db:
                db.execute("DROP DATABASE formats")
            checkpoint(server)
    return best["custom"], best["directory"]


def measure(server: PostgresServer, workdir: Path, rounds: int) -> list[dict[str, float]]:
    """Each round times all four, in the same order (this machine drifts)."""
    marks: dict[str, float] = {}

    def mark(name: str) -> Any:
        def hook(job: JobRecord) -> None:
            marks[name] = time.perf_counter()

        return hook

    hooks = {
        "backup.after_dump": mark("after_dump"),
        "restore.before_commit": mark("before_commit"),
    }
    samples: list[dict[str, float]] = []
    with Engine(workdir / "engine", hooks=hooks) as engine:
        project = engine.create_project(
            CreateProject(name="bench", database_url=server.url(DATABASE))
        ).project
        for number in range(1, rounds + 1):
            log(f"round {number} of {rounds}")
            figures: dict[str, float] = {}

            # plain pg_dump -Fc, default (gzip) compression
            archive = workdir / "plain.dump"
            log("  plain pg_dump -Fc")
            figures["pg_dump"] = run([tool("pg_dump"), "-Fc", "-f", str(archive)], server, DATABASE)
            figures["pg_dump_bytes"] = archive.stat().st_size
            log(f"    {figures['pg_dump']:.1f} s, {figures['pg_dump_bytes'] / 1e6:.0f} MB")

            # plain pg_restore -j1 of that archive into a new database
            with admin(server) as db:
                db.execute("CREATE DATABASE plain_restore")
            checkpoint(server)
            log("  plain pg_restore -j1")
            figures["pg_restore"] = run(
                [tool("pg_restore"), "-j1", "-d", "plain_restore", str(archive)],
                server,
                "plain_restore",
            )
            log(f"    {figures['pg_restore']:.1f} s")
            archive.unlink()
            with admin(server) as db:
                db.execute("DROP DATABASE plain_restore")
            checkpoint(server)

            log("  engine backup (project.backup job)")
            start = time.perf_counter()
            backup = engine.create_backup(project.id)
            # only this job: wait_for_job alone would first run older pending verifications
            assert engine.worker.run_once(only_id=backup.id)
            job = engine.wait_for_job(backup.id, timeout=3600)
            figures["engine_backup"] = time.perf_counter() - start
            figures["engine_backup_dump"] = marks["after_dump"] - start
            assert job.result is not None
            key = str(job.result["backup_key"])
            record = engine.rt.store.get_backup_by_key(project.id, key)
            assert record is not None
            figures["blob_bytes"] = engine.rt.blobs.objects.size(key) or 0
            figures["dump_bytes"] = record.size_bytes or 0
            log(
                f"    {figures['engine_backup']:.1f} s (pg_dump -Fd -Z0, packed into the blob "
                f"{figures['engine_backup_dump']:.1f} s), blob "
                f"{figures['blob_bytes'] / 1e6:.0f} MB from a "
                f"{figures['dump_bytes'] / 1e6:.0f} MB archive"
            )
            checkpoint(server)

            log("  engine restore to a new preview (project.restore job)")
            request = RestoreRequest(backup_key=key, allow_unverified_backup=True)
            start = time.perf_counter()
            restore = engine.create_restore(project.id, request)
            # only this job, as above: the backups' verifications stay pending, untimed
            assert engine.worker.run_once(only_id=restore.id)
            done = engine.wait_for_job(restore.id, timeout=3600)
            figures["engine_restore"] = time.perf_counter() - start
            figures["engine_restore_to_commit"] = marks["before_commit"] - start
            assert done.state == "completed", done.error
            log(
                f"    {figures['engine_restore']:.1f} s (until the rename: "
                f"{figures['engine_restore_to_commit']:.1f} s)"
            )

            assert done.preview_database_id
            dropping = engine.delete_preview_database(done.preview_database_id)
            assert engine.worker.run_once(only_id=dropping.id)
            checkpoint(server)
            samples.append(figures)
    return samples


def report(database_bytes: int, samples: list[dict[str, float]]) -> None:
    def ratios(figures: dict[str, float]) -> tuple[float, float, float]:
        return (
            figures["engine_backup"] / figures["pg_dump"],
            figures["blob_bytes"] / figures["pg_dump_bytes"],
            figures["engine_restore"] / figures["pg_restore"],
        )

    print()
    for number, figures in enumerate(samples, 1):
        backup, size, restore = ratios(figures)
        print(
            f"round {number}: pg_dump -Fc {figures['pg_dump']:.1f} s, pg_restore -j1 "
            f"{figures['pg_restore']:.1f} s, engine backup {figures['engine_backup']:.1f} s, "
            f"engine restore {figures['engine_restore']:.1f} s; ratios {backup:.2f} / "
            f"{size:.2f} / {restore:.2f}"
        )
    # the best round of every measurement, with the figures measured along with it
    groups = {
        "pg_dump": ["pg_dump_bytes"],
        "pg_restore": [],
        "engine_backup": ["engine_backup_dump", "blob_bytes", "dump_bytes"],
        "engine_restore": ["engine_restore_to_commit"],
    }
    best: dict[str, float] = {}
    for name, along in groups.items():
        fastest = min(samples, key=lambda figures: figures[name])
        best.update({key: fastest[key] for key in (name, *along)})
    backup_ratio, size_ratio, restore_ratio = ratios(best)

    def verdict(ratio: float, target: float) -> str:
        return "ok" if ratio <= target else "MISSED"

    rows = [
        ("database", f"{database_bytes / 1e6:.0f} MB"),
        ("pg_dump -Fc (gzip)", f"{best['pg_dump']:.1f} s, {best['pg_dump_bytes'] / 1e6:.0f} MB"),
        ("pg_restore -j1", f"{best['pg_restore']:.1f} s"),
        (
            "engine backup",
            f"{best['engine_backup']:.1f} s (counts + pg_dump -Fd -Z0, packed through zstd "
            f"+ sha256 into the blob {best['engine_backup_dump']:.1f} s, then bookkeeping)",
        ),
        (
            "engine blob",
            f"{best['blob_bytes'] / 1e6:.0f} MB (pg_dump -Fd -Z0: "
            f"{best['dump_bytes'] / 1e6:.0f} MB)",
        ),
        (
            "engine restore",
            f"{best['engine_restore']:.1f} s (until the rename "
            f"{best['engine_restore_to_commit']:.1f} s: checked blob, schema, the largest "
            "table in two streamed halves, the rest with pg_restore -j2)",
        ),
        (
            "backup / pg_dump -Fc",
            f"{backup_ratio:.2f}x (target <= 0.6: {verdict(backup_ratio, 0.6)})",
        ),
        (
            "blob / pg_dump -Fc size",
            f"{size_ratio:.2f}x (target <= 1.0: {verdict(size_ratio, 1.0)})",
        ),
        (
            "restore / pg_restore -j1",
            f"{restore_ratio:.2f}x (target <= 0.9: {verdict(restore_ratio, 0.9)})",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\nbest of {len(samples)} round(s):")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
