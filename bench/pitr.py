"""Benchmark: point-in-time recovery of PostgreSQL (streamed log, base backups, restore to a
moment) against a plain backup restore and against pgBackRest, all in one run.

Starts its own throwaway server (``tests/pg.py``: initdb into a temp dir, fsync off),
restarted at once with ``archive_mode = on`` and pgBackRest's ``archive-push`` as its
``archive_command`` (a stanza of its own, repository in a temp dir, ``compress-type=zst``
like our blobs, ``process-max=2``), builds a database with ``pgbench -i -s SCALE``
(~15 MB per scale unit: 70 gives ~1 GB), turns PITR on for a project of an embedded
engine whose log a worker thread streams (``Engine.run_worker``, as ``capy worker``
runs it), and measures:

1. RPO with streaming: ``--commits`` commits, one every 100-200 ms, while ``pgbench -R 50``
   writes in the background; for each, the delay from the commit returning to the first
   moment ``Engine.get_pitr(...).window_end`` (what ``capy pitr status`` reads), polled
   every 10 ms, is at or past the commit's server time. p50/p95/max, target p95 <= 1 s.
   (The ``archive`` method, ``capy wal-push`` with ``archive_timeout = 60``, is not
   measured here.)
2. The streaming's cost on a writer: ``pgbench -T TPS_SECONDS -c 2 -j 2`` with the
   streamer stopped (the worker halted: the slot stays, nothing reads it, which costs the
   writer nothing more than PITR off) and streaming (the worker caught up first), in ABBA
   order for ``--tps-rounds`` rounds; ratio of the means, target >= 0.95x. pgBackRest's
   ``archive_command`` runs in both.
3. Base backups, then writes, a mark, more writes, restores to the mark: pgBackRest's full
   backup (time, repository size) and a fresh engine base backup (time, blob size); then
   ``pgbench`` for ``--before`` seconds (the log a restore replays), the mark (the server's
   clock right after counting ``pgbench_history``), an engine backup of the database
   (``project.backup``, for the plain restore), ``pgbench`` for ``--back`` seconds (the
   mark is then that far back; the issue asks for 5 minutes); then, timed:

   - the engine's restore to the mark into a new preview (``restore_time``), run by the
     worker thread, with the time of each step (``Job.progress`` polled every 50 ms:
     checks, unpacking the base backup and starting the instance, replaying, extracting
     with pg_dump, loading);
   - the engine's restore of the backup into a new preview (``create_restore`` with
     ``allow_unverified_backup``, run alone as ``bench/postgres.py`` does); ratio
     PITR / plain, target <= 2x;
   - pgBackRest's restore of the whole cluster to the mark (``--type=time``, into a new
     data directory), then that instance started until it is promoted.

   Every restore is checked: ``pgbench_history`` holds exactly the rows counted at the
   mark.

Prints every figure, its target and ratio. The streamer keeps streaming during the
restores (the previews' loads are log written on the same server), as it would.

Run: ``.venv/bin/python bench/pitr.py`` (quick: scale 10, ~3 minutes) or, for the figures
of the issue (a ~1.1 GB database, the mark 5 minutes back), ``.venv/bin/python
bench/pitr.py --scale 70 --commits 100 --tps-seconds 30 --tps-rounds 2 --before 60 --back
300`` (~11 minutes on 2 cores). Needs PostgreSQL's server binaries, pgbench and pgBackRest
(Debian: postgresql, postgresql-contrib, pgbackrest); as root, the servers and pgBackRest
run as the ``postgres`` user.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from psycopg import sql

from pulumi_capy.api.models import CreateProject, Job, PutPitr, RestoreRequest
from pulumi_capy.engine import Engine
from pulumi_capy.engine.pitr.control import enqueue_base_backup
from pulumi_capy.engine.stores.contract import JobRecord
from tests.pg import PostgresServer, running_server

DATABASE = "bench"
STANZA = "bench"
SERVER_USER = "postgres"  # tests/pg.py runs the server as this user when we are root
PHASES = ("unpacking", "replaying", "extracting", "loading")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *command] if os.geteuid() == 0 else command


def give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        for item in [path, *path.rglob("*")]:
            shutil.chown(item, SERVER_USER, SERVER_USER)


def env_for(server: PostgresServer, database: str) -> dict[str, str]:
    return {
        **os.environ,
        "PGHOST": server.host,
        "PGPORT": str(server.port),
        "PGUSER": server.user,
        "PGPASSWORD": server.password,
        "PGDATABASE": database,
    }


def admin(server: PostgresServer, database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(server.url(database), autocommit=True)


def one(conn: psycopg.Connection, query: str) -> object:
    row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return row[0]


def setting(server: PostgresServer, name: str) -> str:
    with admin(server) as db:
        return str(one(db, f"SHOW {name}"))


def checkpoint(server: PostgresServer) -> None:
    with admin(server) as db:
        db.execute("CHECKPOINT")


def server_now(server: PostgresServer) -> datetime:
    with admin(server) as db:
        moment = one(db, "SELECT clock_timestamp()")
    assert isinstance(moment, datetime)
    return moment


def history_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(str(one(conn, "SELECT count(*) FROM pgbench_history")))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def pgbench(server: PostgresServer, *options: str) -> list[str]:
    return [server.tool("pgbench"), *options, DATABASE]


def pgbench_tps(server: PostgresServer, seconds: int) -> float:
    """``pgbench -T seconds -c 2 -j 2``'s tps (without the connections' setup)."""
    done = subprocess.run(
        pgbench(server, "-n", "-T", str(seconds), "-c", "2", "-j", "2"),
        env=env_for(server, DATABASE),
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"tps = ([\d.]+) \(without initial connection time\)", done.stdout)
    assert found, done.stdout
    return float(found.group(1))


def pgbench_for(server: PostgresServer, seconds: int) -> None:
    subprocess.run(
        pgbench(server, "-n", "-T", str(seconds), "-c", "2", "-j", "2"),
        env=env_for(server, DATABASE),
        capture_output=True,
        check=True,
    )


# ---------------------------------------------------------------- pgBackRest


@dataclass
class PgBackRest:
    """pgBackRest with a stanza for the benchmark's server, run as the server's user."""

    base: Path  # owned by the server's user: repository, logs, locks, config
    server: PostgresServer
    data: Path
    sockets: str

    @property
    def config(self) -> Path:
        return self.base / "pgbackrest.conf"

    def write_config(self, compress: str) -> None:
        for name in ("repo", "log", "lock", "spool"):
            (self.base / name).mkdir()
        self.config.write_text(
            "[global]\n"
            f"repo1-path={self.base / 'repo'}\n"
            f"log-path={self.base / 'log'}\n"
            f"lock-path={self.base / 'lock'}\n"
            f"spool-path={self.base / 'spool'}\n"
            "log-level-console=warn\n"
            "log-level-file=info\n"
            f"compress-type={compress}\n"
            "process-max=2\n"
            "start-fast=y\n"
            f"[{STANZA}]\n"
            f"pg1-path={self.data}\n"
            f"pg1-port={self.server.port}\n"
            f"pg1-socket-path={self.sockets}\n"
            f"pg1-user={self.server.user}\n"
        )
        self.base.chmod(0o755)
        give_to_server_user(self.base)

    def command(self, *arguments: str) -> list[str]:
        binary = shutil.which("pgbackrest")
        if binary is None:
            raise SystemExit("pgbackrest not found (Debian: apt-get install pgbackrest)")
        return as_server_user([binary, f"--config={self.config}", f"--stanza={STANZA}", *arguments])

    def run(self, *arguments: str) -> float:
        start = time.perf_counter()
        done = subprocess.run(self.command(*arguments), capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"pgbackrest {arguments[-1]} failed: {done.stderr or done.stdout}")
        return time.perf_counter() - start

    def archive_command(self) -> str:
        return (
            f"{shutil.which('pgbackrest')} --config={self.config} --stanza={STANZA} archive-push %p"
        )

    def last_backup(self) -> dict[str, int]:
        done = subprocess.run(
            self.command("--output=json", "info"), capture_output=True, text=True, check=True
        )
        backup = json.loads(done.stdout)[0]["backup"][-1]["info"]
        return {"size": int(backup["size"]), "repository": int(backup["repository"]["size"])}


def configure_archiving(server: PostgresServer, rest: PgBackRest) -> None:
    """``archive_mode`` needs a restart: ``pg_ctl restart`` reuses the start's options."""
    with admin(server) as db:
        db.execute("ALTER SYSTEM SET archive_mode = on")
        db.execute(
            sql.SQL("ALTER SYSTEM SET archive_command = {}").format(
                sql.Literal(rest.archive_command())
            )
        )
    subprocess.run(
        as_server_user(
            [
                server.tool("pg_ctl"),
                "-D",
                str(rest.data),
                "-l",
                str(rest.data.parent / "server.log"),
                "-w",
                "-t",
                "60",
                "-m",
                "fast",
                "restart",
            ]
        ),
        check=True,
        capture_output=True,
    )
    assert setting(server, "archive_mode") == "on"
    rest.run("stanza-create")


def pgbackrest_restore(rest: PgBackRest, mark: datetime, expected_rows: int) -> dict[str, float]:
    """The whole cluster restored to ``mark`` into a new data directory, started on a
    free port and waited for until promoted; checked, stopped, removed."""
    target = rest.base / "restored"
    target.mkdir(mode=0o700)
    sockets = rest.base / "restored-sockets"
    sockets.mkdir()
    give_to_server_user(target)
    give_to_server_user(sockets)
    figures: dict[str, float] = {}
    start = time.perf_counter()
    figures["restore"] = rest.run(
        f"--pg1-path={target}",
        "--type=time",
        f"--target={mark.isoformat(sep=' ')}",
        "--target-action=promote",
        "--archive-mode=off",
        "restore",
    )
    port = free_port()
    options = (
        f"-p {port} -k {sockets} -c listen_addresses='' -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    started = time.perf_counter()
    try:
        subprocess.run(
            as_server_user(
                [
                    rest.server.tool("pg_ctl"),
                    "-D",
                    str(target),
                    "-o",
                    options,
                    "-l",
                    str(rest.base / "restored.log"),
                    "-w",
                    "-t",
                    "600",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )
        url = f"postgresql://{rest.server.user}@/{DATABASE}?host={sockets}&port={port}"
        deadline = time.monotonic() + 600
        while True:
            try:
                with psycopg.connect(url) as conn:
                    if not one(conn, "SELECT pg_is_in_recovery()"):
                        break
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the cluster restored by pgBackRest was never promoted")
            time.sleep(0.05)
        figures["start_to_promoted"] = time.perf_counter() - started
        figures["total"] = time.perf_counter() - start
        rows = history_rows(url)
        if rows != expected_rows:
            raise SystemExit(f"pgBackRest's restore holds {rows} history rows, not {expected_rows}")
    finally:
        subprocess.run(
            as_server_user(
                [rest.server.tool("pg_ctl"), "-D", str(target), "-m", "immediate", "stop"]
            ),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(target, ignore_errors=True)
    return figures


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------- the engine


@dataclass
class Worker:
    """A worker thread over the engine's directory (``capy worker``): runs jobs, streams."""

    directory: Path
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    engine: Engine | None = None
    # when the last restore's load ended (the ``restore.before_commit`` hook: before the
    # rename into place and the job's commit)
    loaded_at: float | None = None

    def start(self) -> None:
        self.stop.clear()
        self.engine = Engine(self.directory, hooks={"restore.before_commit": self.loaded})
        self.thread = threading.Thread(
            target=self.engine.run_worker,
            args=(self.stop,),
            kwargs={"poll_interval": 0.05, "tick_interval": 86400.0},
            daemon=True,
        )
        self.thread.start()

    def loaded(self, job: JobRecord) -> None:
        self.loaded_at = time.perf_counter()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=120)
            assert not self.thread.is_alive(), "the worker thread did not stop"
        if self.engine is not None:
            self.engine.close()
        self.thread = self.engine = None


def wait_until(what: str, condition: Callable[[], bool], timeout: float, every: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


def covered(engine: Engine, project_id: str, moment: datetime) -> bool:
    end = engine.get_pitr(project_id).window_end
    return end is not None and end >= moment


def wait_covered(engine: Engine, project_id: str, moment: datetime) -> None:
    wait_until(
        f"the archive to cover {moment}", lambda: covered(engine, project_id, moment), 600, 0.05
    )


@dataclass
class Timeline:
    """A job watched every ``every`` seconds: when each step began, and how it ended."""

    job: Job
    created: float
    steps: list[tuple[float, str]] = field(default_factory=list)  # (perf_counter, progress)
    running_at: float | None = None
    ended: float = 0.0
    dirty_at_load: float | None = None  # MB of dirty page cache when the load began


def watch(engine: Engine, job_id: str, created: float, every: float = 0.05) -> Timeline:
    timeline = Timeline(engine.get_job(job_id), created)
    deadline = time.monotonic() + 3600
    while True:
        job = engine.get_job(job_id)
        now = time.perf_counter()
        if job.state == "running" and timeline.running_at is None:
            timeline.running_at = now
        step = job.progress.step if job.progress else None
        if step and (not timeline.steps or timeline.steps[-1][1] != step):
            timeline.steps.append((now, step))
            if step.startswith("loading"):
                timeline.dirty_at_load = dirty_megabytes()
        if job.is_terminal:
            timeline.job, timeline.ended = job, now
            return timeline
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not end: {job}")
        time.sleep(every)


def dirty_megabytes() -> float:
    """The kernel's dirty and under-writeback page cache (``/proc/meminfo``), in MB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return sum(int(fields[name].split()[0]) for name in ("Dirty", "Writeback")) / 1000


def phase_seconds(timeline: Timeline, loaded_at: float | None) -> dict[str, float]:
    """Seconds in each step: queued (until claimed), checks (until the first step),
    then each of ``PHASES`` from the first progress line naming it to the next one's,
    the load split at ``loaded_at`` (then: the rename into place, the job's commit)."""
    starts: list[tuple[str, float]] = [("queued", timeline.created)]
    if loaded_at is not None and timeline.created < loaded_at < timeline.ended:
        starts.append(("rename+commit", loaded_at))
    if timeline.running_at is not None:
        starts.append(("checks", timeline.running_at))
    for at, step in timeline.steps:
        phase = next((name for name in PHASES if step.startswith(name)), None)
        if phase is not None and phase not in dict(starts):
            starts.append((phase, at))
    starts.sort(key=lambda item: item[1])
    bounds = [at for _, at in starts[1:]] + [timeline.ended]
    return {name: end - at for (name, at), end in zip(starts, bounds, strict=True)}


def drop_preview(engine: Engine, job: Job, *, run_here: bool) -> None:
    assert job.result is not None
    dropping = engine.delete_preview_database(str(job.result["preview_database_id"]))
    if run_here:
        assert engine.worker.run_once(only_id=dropping.id)
    else:
        watch(engine, dropping.id, time.perf_counter())


def preview_url(engine: Engine, server: PostgresServer, job: Job) -> str:
    if job.state != "completed" or job.result is None:
        raise SystemExit(f"restore job {job.id} ended {job.state}: {job.error}")
    preview = engine.get_preview_database(str(job.result["preview_database_id"]))
    return server.url(str(preview.database_name))


# ---------------------------------------------------------------- measurements


def measure_rpo(
    engine: Engine, project_id: str, server: PostgresServer, commits: int
) -> tuple[list[float], float]:
    """Delays (seconds) from each commit returning to ``window_end`` reaching its server
    time, polled every 10 ms, with ``pgbench -R 50`` writing meanwhile; and the mean
    seconds one ``get_pitr`` took."""
    with admin(server, DATABASE) as db:
        db.execute("CREATE TABLE IF NOT EXISTS rpo_probe (i int, at timestamptz)")
    background = subprocess.Popen(
        pgbench(server, "-n", "-R", "50", "-c", "1", "-T", str(commits + 120)),
        env=env_for(server, DATABASE),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    made: list[tuple[datetime, float]] = []  # (server time after the commit, returned at)
    lock = threading.Lock()
    failure: list[BaseException] = []

    def commit() -> None:
        rng = random.Random(7)
        try:
            with admin(server, DATABASE) as conn:
                for i in range(commits):
                    time.sleep(rng.uniform(0.1, 0.2))
                    conn.execute("INSERT INTO rpo_probe VALUES (%s, clock_timestamp())", (i,))
                    returned = time.perf_counter()
                    at = one(conn, "SELECT clock_timestamp()")
                    assert isinstance(at, datetime)
                    with lock:
                        made.append((at, returned))
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    committer = threading.Thread(target=commit, daemon=True)
    delays: list[float] = []
    polls: list[float] = []
    next_index = 0
    try:
        time.sleep(2)  # the background writer running
        committer.start()
        deadline = time.monotonic() + commits * 0.2 + 60
        while len(delays) < commits:
            if failure:
                raise failure[0]
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(delays)} of {commits} commits became restorable")
            asked = time.perf_counter()
            end = engine.get_pitr(project_id).window_end
            now = time.perf_counter()
            polls.append(now - asked)
            with lock:
                pending = made[next_index:]
            for at, returned in pending:
                if end is None or end < at:
                    break
                delays.append(now - returned)
                next_index += 1
            time.sleep(0.01)
    finally:
        committer.join(timeout=60)
        background.terminate()
        background.wait()
    return delays, sum(polls) / len(polls)


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process (every thread: the worker's streamer and
    job loop) and by the ``pg_receivewal`` it runs."""
    times = os.times()
    tick = os.sysconf("SC_CLK_TCK")
    received = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name_end = text.rindex(")")
        fields = text[name_end + 2 :].split()
        name = text[text.index("(") + 1 : name_end]
        if name == "pg_receivewal" and int(fields[1]) == os.getpid():
            received += (int(fields[11]) + int(fields[12])) / tick
    return times.user + times.system, received


@dataclass
class Tps:
    """pgbench tps by streaming state, and the share of a core the worker used meanwhile
    (this process, ``pg_receivewal``)."""

    tps: dict[str, list[float]] = field(default_factory=lambda: {"off": [], "on": []})
    cpu: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {"off": [], "on": []})


def measure_tps(
    server: PostgresServer,
    worker: Worker,
    engine: Engine,
    project_id: str,
    seconds: int,
    rounds: int,
) -> Tps:
    """pgbench tps with the streamer stopped and streaming, ABBA order."""
    measured = Tps()
    order: list[str] = []
    for number in range(rounds):
        order += ["off", "on"] if number % 2 == 0 else ["on", "off"]
    for state in order:
        if state == "off" and worker.thread is not None:
            worker.halt()
        if state == "on":
            if worker.thread is None:
                worker.start()
            wait_covered(engine, project_id, server_now(server))
        checkpoint(server)
        start, (own, received) = time.perf_counter(), cpu_seconds()
        value = pgbench_tps(server, seconds)
        elapsed, (own_after, received_after) = time.perf_counter() - start, cpu_seconds()
        share = ((own_after - own) / elapsed, (received_after - received) / elapsed)
        log(
            f"  pgbench -T {seconds} -c 2 -j 2, streaming {state}: {value:.0f} tps; the "
            f"worker used {share[0]:.0%} of a core, pg_receivewal {share[1]:.0%}"
        )
        measured.tps[state].append(value)
        measured.cpu[state].append(share)
    if worker.thread is None:
        worker.start()
    return measured


def timed_base_backup(engine: Engine, project_id: str) -> tuple[float, int, int]:
    """A fresh engine base backup run by the worker: seconds, source and blob bytes."""
    start = time.perf_counter()
    job_id = enqueue_base_backup(engine.rt, project_id)
    timeline = watch(engine, job_id, start)
    if timeline.job.state != "completed" or timeline.job.result is None:
        raise SystemExit(f"the base backup failed: {timeline.job.error}")
    backup_id = str(timeline.job.result["base_backup_id"])
    record = next(
        item for item in engine.rt.store.list_base_backups(project_id) if item.id == backup_id
    )
    return timeline.ended - start, record.size_bytes, record.blob_bytes


@dataclass
class Results:
    database_bytes: int = 0
    first_window_seconds: float = 0.0
    rpo: list[float] = field(default_factory=list)
    poll_seconds: float = 0.0
    tps: Tps = field(default_factory=Tps)
    figures: dict[str, float] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    replay_line: str = ""
    rows_at_mark: int = 0


def restores(
    server: PostgresServer,
    engine: Engine,
    worker: Worker,
    project_id: str,
    rest: PgBackRest,
    workdir: Path,
    args: argparse.Namespace,
    results: Results,
) -> None:
    figures = results.figures
    log("pgBackRest full backup")
    figures["pgbackrest_backup"] = rest.run("--type=full", "backup")
    info = rest.last_backup()
    figures["pgbackrest_backup_size"] = info["size"]
    figures["pgbackrest_repository"] = info["repository"]
    log(
        f"  {figures['pgbackrest_backup']:.1f} s, {info['size'] / 1e6:.0f} MB of cluster, "
        f"repository {info['repository'] / 1e6:.0f} MB"
    )
    checkpoint(server)
    log("engine base backup (pitr.base_backup, pg_basebackup tar through zstd into a blob)")
    seconds, source, blob = timed_base_backup(engine, project_id)
    figures.update(base_backup=seconds, base_backup_source=source, base_backup_blob=blob)
    log(f"  {seconds:.1f} s, {source / 1e6:.0f} MB of cluster, blob {blob / 1e6:.0f} MB")

    log(f"pgbench -c 2 -j 2 for {args.before} s before the mark (the log a restore replays)")
    pgbench_for(server, args.before)
    with admin(server, DATABASE) as db:
        results.rows_at_mark = int(str(one(db, "SELECT count(*) FROM pgbench_history")))
        mark = one(db, "SELECT clock_timestamp()")
    assert isinstance(mark, datetime)
    log(f"the mark: {mark.isoformat()} ({results.rows_at_mark} pgbench_history rows)")

    plain_loaded: list[float] = []

    def loaded(job: JobRecord) -> None:
        plain_loaded.append(time.perf_counter())

    with Engine(workdir / "plain", hooks={"restore.before_commit": loaded}) as plain:
        plain_project = plain.create_project(
            CreateProject(name="bench", database_url=server.url(DATABASE))
        ).project
        log("engine backup of the database (project.backup), for the plain restore")
        start = time.perf_counter()
        backup = plain.create_backup(plain_project.id)
        assert plain.worker.run_once(only_id=backup.id)
        backed_up = plain.wait_for_job(backup.id, timeout=3600)
        figures["plain_backup"] = time.perf_counter() - start
        assert backed_up.result is not None, backed_up.error
        key = str(backed_up.result["backup_key"])
        log(f"  {figures['plain_backup']:.1f} s")

        log(f"pgbench -c 2 -j 2 for {args.back} s after the mark")
        pgbench_for(server, args.back)
        # untimed: both archives reach past the mark (pgbackrest check switches the log
        # and waits for it to be archived)
        wait_covered(engine, project_id, server_now(server))
        rest.run("check")
        checkpoint(server)
        figures["back"] = (server_now(server) - mark).total_seconds()

        log(f"engine restore to the mark ({figures['back']:.0f} s back) into a new preview")
        start = time.perf_counter()
        job = engine.create_restore(project_id, RestoreRequest(restore_time=mark))
        timeline = watch(engine, job.id, start)
        figures["pitr_restore"] = timeline.ended - start
        results.phases = phase_seconds(timeline, worker.loaded_at)
        figures["pitr_dirty_at_load"] = timeline.dirty_at_load or 0.0
        results.replay_line = next(
            (step for _, step in reversed(timeline.steps) if step.startswith("replaying")), ""
        )
        rows = history_rows(preview_url(engine, server, timeline.job))
        if rows != results.rows_at_mark:
            raise SystemExit(f"the PITR restore holds {rows} rows, not {results.rows_at_mark}")
        log(
            f"  {figures['pitr_restore']:.1f} s: "
            + ", ".join(f"{name} {value:.1f} s" for name, value in results.phases.items())
        )
        drop_preview(engine, timeline.job, run_here=False)
        checkpoint(server)

        log("engine restore of the backup into a new preview (project.restore)")
        figures["plain_dirty_at_start"] = dirty_megabytes()
        start = time.perf_counter()
        request = RestoreRequest(backup_key=key, allow_unverified_backup=True)
        restore = plain.create_restore(plain_project.id, request)
        assert plain.worker.run_once(only_id=restore.id)
        done = plain.wait_for_job(restore.id, timeout=3600)
        figures["plain_restore"] = time.perf_counter() - start
        figures["plain_restore_to_commit"] = plain_loaded[-1] - start
        rows = history_rows(preview_url(plain, server, done))
        if rows != results.rows_at_mark:
            raise SystemExit(f"the backup restore holds {rows} rows, not {results.rows_at_mark}")
        log(f"  {figures['plain_restore']:.1f} s")
        drop_preview(plain, done, run_here=True)
        checkpoint(server)

    log("pgBackRest restore of the cluster to the mark, started until promoted")
    rest_figures = pgbackrest_restore(rest, mark, results.rows_at_mark)
    figures.update({f"pgbackrest_{name}": value for name, value in rest_figures.items()})
    log(
        f"  {rest_figures['total']:.1f} s (restore {rest_figures['restore']:.1f} s, started "
        f"and replayed until promoted {rest_figures['start_to_promoted']:.1f} s)"
    )


def build(server: PostgresServer, scale: int) -> int:
    with admin(server) as db:
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    log(f"pgbench -i -s {scale} (~{scale * 15} MB)")
    subprocess.run(
        pgbench(server, "-i", "-q", "-s", str(scale)),
        env=env_for(server, DATABASE),
        capture_output=True,
        check=True,
    )
    checkpoint(server)
    with admin(server) as db:
        size = int(str(one(db, f"SELECT pg_database_size('{DATABASE}')")))
    log(f"database {DATABASE}: {size / 1e6:.0f} MB")
    return size


def run(server: PostgresServer, workdir: Path, args: argparse.Namespace) -> Results:
    results = Results()
    data = Path(setting(server, "data_directory"))
    sockets = setting(server, "unix_socket_directories")
    rest = PgBackRest(
        Path(tempfile.mkdtemp(prefix="pgbackrest-", dir=workdir)), server, data, sockets
    )
    rest.write_config(args.pgbackrest_compress)
    log("archive_mode = on with pgBackRest's archive-push; restart; stanza-create")
    configure_archiving(server, rest)
    results.database_bytes = build(server, args.scale)

    directory = workdir / "engine"
    worker = Worker(directory)
    with Engine(directory) as engine:
        project = engine.create_project(
            CreateProject(name="bench", database_url=server.url(DATABASE))
        ).project
        log("PITR on: the slot, the first base backup, streaming")
        start = time.perf_counter()
        engine.put_pitr(project.id, PutPitr(enabled=True))
        worker.start()
        try:
            wait_until(
                "the PITR window to open",
                lambda: engine.get_pitr(project.id).window_start is not None,
                900,
                0.1,
            )
            results.first_window_seconds = time.perf_counter() - start
            log(f"  window open after {results.first_window_seconds:.1f} s")

            log(f"streaming's cost: pgbench tps, {args.tps_rounds} round(s) ABBA")
            results.tps = measure_tps(
                server, worker, engine, project.id, args.tps_seconds, args.tps_rounds
            )

            log(f"RPO: {args.commits} commits every 100-200 ms, pgbench -R 50 meanwhile")
            results.rpo, results.poll_seconds = measure_rpo(
                engine, project.id, server, args.commits
            )
            log(
                f"  p50 {percentile(results.rpo, 0.5):.3f} s, p95 "
                f"{percentile(results.rpo, 0.95):.3f} s, max {max(results.rpo):.3f} s"
            )

            restores(server, engine, worker, project.id, rest, workdir, args, results)
            jobs = engine.list_jobs(project.id, 100)
            log("engine jobs of the run: " + ", ".join(f"{j.type} {j.state}" for j in jobs))
        finally:
            worker.halt()
            engine.put_pitr(project.id, PutPitr(enabled=False))
    return results


def report(args: argparse.Namespace, results: Results) -> None:
    figures = results.figures

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    p50, p95 = percentile(results.rpo, 0.5), percentile(results.rpo, 0.95)
    off, on = results.tps.tps["off"], results.tps.tps["on"]
    cpu = results.tps.cpu["on"]
    own_cpu = sum(share[0] for share in cpu) / len(cpu)
    received_cpu = sum(share[1] for share in cpu) / len(cpu)
    tps_ratio = (sum(on) / len(on)) / (sum(off) / len(off))
    restore_ratio = figures["pitr_restore"] / figures["plain_restore"]
    rest_ratio = figures["pitr_restore"] / figures["pgbackrest_total"]
    backup_ratio = figures["base_backup"] / figures["pgbackrest_backup"]
    phases = ", ".join(f"{name} {value:.1f} s" for name, value in results.phases.items())
    rows = [
        ("database", f"{results.database_bytes / 1e6:.0f} MB (pgbench -i -s {args.scale})", ""),
        (
            f"RPO, streaming ({len(results.rpo)} commits)",
            f"p50 {p50:.3f} s, p95 {p95:.3f} s, max {max(results.rpo):.3f} s "
            f"(one get_pitr {results.poll_seconds * 1000:.1f} ms)",
            f"p95 <= 1 s: {verdict(p95 <= 1.0)}",
        ),
        ("RPO, archive method", "not measured", ""),
        (
            f"pgbench tps, {args.tps_seconds} s -c 2",
            "streamer stopped "
            + " / ".join(f"{value:.0f}" for value in off)
            + ", streaming "
            + " / ".join(f"{value:.0f}" for value in on),
            f"{tps_ratio:.3f}x (>= 0.95: {verdict(tps_ratio >= 0.95)})",
        ),
        (
            "  CPU while streaming",
            f"the worker {own_cpu:.0%} of a core, pg_receivewal {received_cpu:.0%} (stopped: "
            f"{sum(share[0] for share in results.tps.cpu['off']) / len(off):.0%})",
            "",
        ),
        ("first window open (PITR on)", f"{results.first_window_seconds:.1f} s", ""),
        (
            "engine base backup",
            f"{figures['base_backup']:.1f} s, blob {figures['base_backup_blob'] / 1e6:.0f} MB "
            f"of {figures['base_backup_source'] / 1e6:.0f} MB",
            f"{backup_ratio:.2f}x pgBackRest's time",
        ),
        (
            "pgBackRest full backup",
            f"{figures['pgbackrest_backup']:.1f} s, repository "
            f"{figures['pgbackrest_repository'] / 1e6:.0f} MB of "
            f"{figures['pgbackrest_backup_size'] / 1e6:.0f} MB ({args.pgbackrest_compress}, "
            "process-max 2)",
            "",
        ),
        ("engine backup (project.backup)", f"{figures['plain_backup']:.1f} s", ""),
        (
            "restore to the mark",
            f"{figures['back']:.0f} s back, {args.before} s of pgbench log before it, "
            f"{results.rows_at_mark} history rows (every restore checked)",
            "",
        ),
        (
            "engine PITR restore (one database)",
            f"{figures['pitr_restore']:.1f} s: {phases}",
            f"{restore_ratio:.2f}x plain (<= 2: {verdict(restore_ratio <= 2.0)})",
        ),
        ("  last replay step", results.replay_line, ""),
        (
            "engine backup restore (plain)",
            f"{figures['plain_restore']:.1f} s (until the rename "
            f"{figures['plain_restore_to_commit']:.1f} s)",
            "",
        ),
        (
            "  dirty page cache",
            f"{figures['pitr_dirty_at_load']:.0f} MB when the PITR load began, "
            f"{figures['plain_dirty_at_start']:.0f} MB when the plain restore began",
            "",
        ),
        (
            "pgBackRest restore (whole cluster)",
            f"{figures['pgbackrest_total']:.1f} s: restore {figures['pgbackrest_restore']:.1f} s, "
            f"started and replayed until promoted {figures['pgbackrest_start_to_promoted']:.1f} s",
            f"engine PITR {rest_ratio:.2f}x this",
        ),
    ]
    width = max(len(name) for name, _, _ in rows)
    value_width = min(90, max(len(value) for _, value, _ in rows))
    print()
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<{value_width}}  {target}".rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale (70: ~1 GB)")
    parser.add_argument("--commits", type=int, default=60, help="commits timed for the RPO")
    parser.add_argument("--tps-seconds", type=int, default=10, help="each pgbench tps run")
    parser.add_argument("--tps-rounds", type=int, default=1, help="ABBA rounds of tps runs")
    parser.add_argument("--before", type=int, default=15, help="pgbench seconds before the mark")
    parser.add_argument("--back", type=int, default=30, help="pgbench seconds after the mark")
    parser.add_argument("--pgbackrest-compress", default="zst", help="compress-type (zst)")
    parser.add_argument("--dir", type=Path, default=None, help="where the work files go")
    args = parser.parse_args()
    if args.commits < 50:
        parser.error("--commits: at least 50")
    os.environ.pop("CAPY_DIR", None)
    workdir = Path(tempfile.mkdtemp(prefix="capy-bench-pitr-", dir=args.dir))
    workdir.chmod(0o755)  # pgBackRest's directory inside is the server user's
    try:
        log("starting a throwaway PostgreSQL server")
        with running_server() as server:
            results = run(server, workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, results)


if __name__ == "__main__":
    main()
