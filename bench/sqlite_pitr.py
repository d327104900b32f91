"""Benchmark: point-in-time recovery of SQLite (the WAL shipped into blobs) against a plain
backup restore and against Litestream, all in one run.

Builds a ~``--size-mb`` MB database (``bench/sqlite_backup.py``'s orders table) with a
``commits`` table, and gives each side its own copy of it (two replicators on one file
would fight over its checkpoints). On each side a writer process (``multiprocessing``,
spawned) commits one row per transaction, holding ``time.time()`` taken right before the
commit, in WAL mode with ``synchronous = NORMAL`` and the default ``wal_autocheckpoint``
(1000 pages); it notes for every commit its row id, that stamp, and when the commit
returned (``time.time()`` and ``time.monotonic()``, a system-wide clock on Linux), and
hands the notes over in a file when it ends. Both sides get the same writes, in the same
order, with the same parameters:

- **Ours**: an embedded engine (its directory in the run's temporary directory), a SQLite
  project on the copy, PITR on (``Engine.put_pitr``), and a worker thread running
  ``Engine.run_worker`` as ``capy worker`` does; its replicator ships the WAL (whole
  transactions) into blobs about every 0.25 s.
- **Litestream** (``scripts/install-litestream`` builds it into ``.tools/bin``):
  ``litestream replicate`` with a config naming the copy and a ``file://`` replica in the
  temporary directory, every setting at its default: the database's WAL is read every
  ``monitor-interval`` (1 s) into local LTX files, which the replica uploads at most every
  ``sync-interval`` (1 s; it also wakes when a new LTX file is ready), checkpoints every
  ``checkpoint-interval`` (1 min) or past ``min-checkpoint-page-count`` (1000 pages),
  L1 compaction every 30 s, L0 files kept 5 min.

Measured, on each side (and first, how long after turning the replicator on the first
restorable state came: ours, ``window_start`` set; Litestream, a first L0 file in the
replica):

1. The recovery point's delay (RPO): the writer commits every ~5 ms for ``--rpo-seconds``
   (>= 200 commits). A commit counts as restorable from the first moment after it returned
   at which:

   - ours: ``Engine.get_pitr(...).window_end`` (what ``capy pitr status`` shows), polled
     every 10 ms, is at or past the moment the commit *returned* (not the stamp taken
     before it: a window ending between the two need not hold it);
   - Litestream: the replica holds an L0 LTX file that contains the commit. The replica's
     ``ltx/0`` directory is listed every 10 ms and each new file's first sighting noted
     (the file replica writes ``*.tmp``, fsyncs and renames, so a listed file is whole).
     Which commits a file holds is found afterwards, untimed: ``litestream restore -txid
     <the file's max TXID>`` of every file seen, and the restored ``max(id)``. An LTX
     file's header time cannot stand in for this: Litestream reads the WAL first and takes
     the time after, so a commit returning between the two is not in the file.

   p50/p95/max of the delays; target for ours p95 <= 1 s.
2. The replicator's cost on the writer: commits per second of the writer running flat
   out (no pacing: a paced writer keeps its pace whatever the replicator costs) for
   ``--rate-seconds``, with the replicator stopped and running, in ABBA order for
   ``--rate-rounds`` rounds (2: stopped, running, running, stopped). Stopped means: ours,
   the worker thread halted (PITR stays on, nothing reads the WAL); Litestream, its process
   ended (SIGTERM). Before each running measurement the replicator catches up with a
   marker commit. Ratio of the means, target for ours >= 0.9x; the CPU the replicator used
   meanwhile (ours: this process, i.e. the worker thread; Litestream: its process).
3. Restore to a moment T: the writer commits every ~5 ms for ``--before`` + ``--after``
   seconds; T is the midpoint between the return of the commit in the middle and the
   stamp of the next one, so exactly the commits up to that one are at or before T. Once
   the replica has all the writes, timed, each after ``os.sync()``:

   - ours: the restore to T into a new preview (``RestoreRequest(restore_time=T)``), run
     by the worker thread; and a plain restore of the same database for comparison: an
     engine backup (``project.backup``, another engine directory, as
     ``bench/sqlite_backup.py`` does) taken after the writes, then its restore into a new
     preview (the restore only is timed). Ratio PITR / plain, target <= 1.5x;
   - Litestream: ``litestream restore -timestamp T -o NEW REPLICA_URL`` (its default
     ``-integrity-check none``).

   Every restored database is checked: the ``commits`` rows are the contiguous prefix
   1..n of what the writers committed, none stamped after T, and how many of the commits
   that returned at or before T are missing is reported (Litestream's ``-timestamp`` goes
   by the time its LTX files were made, so the last second or so before T can be missing);
   the big table's ``max(id)`` is the source's.

Prints every figure, its target, and ours next to Litestream's; ``--only ours`` or ``--only
litestream`` runs one half alone.

Run: ``.venv/bin/python bench/sqlite_pitr.py`` (a 500 MB database) or ``--quick`` (50 MB,
shorter phases); ``--only ours|litestream``; ``--dir`` for the work files (on real disk).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlite_backup import build_database

from pulumi_capy.api.errors import CapyError
from pulumi_capy.api.models import CreateProject, Job, PutPitr, RestoreRequest
from pulumi_capy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
NOTE = "writer row"  # short: the flat-out runs commit a million rows or more
PACE = 0.005  # seconds between the paced writer's commits
POLL = 0.01  # seconds between looks at the window's end or the replica's directory
STATES = ("stopped", "running")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def wait_until(what: str, condition: Callable[[], bool], timeout: float, every: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(every)


# ---------------------------------------------------------------- the writer


@dataclass(frozen=True)
class Commit:
    """One committed row: its id, the stamp it holds, and when its commit returned."""

    id: int
    stamp: float  # time.time() right before the transaction
    returned: float  # time.time() when COMMIT returned
    returned_at: float  # time.monotonic() then (system-wide: comparable across processes)


def connect_writer(database: Path) -> sqlite3.Connection:
    db = sqlite3.connect(database, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def commit_one(db: sqlite3.Connection) -> Commit:
    stamp = time.time()
    db.execute("BEGIN IMMEDIATE")
    cursor = db.execute("INSERT INTO commits (stamp, note) VALUES (?, ?)", (stamp, NOTE))
    db.execute("COMMIT")
    returned, returned_at = time.time(), time.monotonic()
    assert cursor.lastrowid is not None
    return Commit(cursor.lastrowid, stamp, returned, returned_at)


def write_commits(database: str, seconds: float, pace: float, notes: str) -> None:
    """The writer process: commit for ``seconds``, one every ``pace`` seconds (0: flat
    out), then write one line per commit to ``notes``."""
    db = connect_writer(Path(database))
    made: list[Commit] = []
    start = next_at = time.monotonic()
    while (now := time.monotonic()) < start + seconds:
        if pace:
            if now < next_at:
                time.sleep(next_at - now)
            next_at = max(next_at + pace, time.monotonic() - pace)
        made.append(commit_one(db))
    db.close()
    Path(notes).write_text(
        "".join(f"{c.id} {c.stamp!r} {c.returned!r} {c.returned_at!r}\n" for c in made)
    )


@dataclass
class Writer:
    """A writer process over one database; ``committed`` gathers every commit made there."""

    database: Path
    committed: list[Commit] = field(default_factory=list)
    process: multiprocessing.process.BaseProcess | None = None
    notes: Path | None = None

    def start(self, seconds: float, pace: float) -> None:
        self.notes = self.database.with_name(f"writer-{len(self.committed)}.txt")
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(
            target=write_commits, args=(str(self.database), seconds, pace, str(self.notes))
        )
        self.process.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def join(self) -> None:
        assert self.process is not None
        self.process.join()

    def finish(self) -> list[Commit]:
        """Wait for the writer; its commits, in order."""
        self.join()
        assert self.process is not None
        assert self.notes is not None
        if self.process.exitcode != 0:
            raise SystemExit(f"the writer failed (exit code {self.process.exitcode})")
        made = [read_commit(line) for line in self.notes.read_text().splitlines()]
        self.notes.unlink()
        self.process = self.notes = None
        self.committed.extend(made)
        return made

    def run(self, seconds: float, pace: float) -> list[Commit]:
        self.start(seconds, pace)
        return self.finish()

    def marker(self) -> Commit:
        """One commit made here (to see a replicator catch up)."""
        db = connect_writer(self.database)
        try:
            made = commit_one(db)
        finally:
            db.close()
        self.committed.append(made)
        return made


def read_commit(line: str) -> Commit:
    row_id, stamp, returned, returned_at = line.split()
    return Commit(int(row_id), float(stamp), float(returned), float(returned_at))


def measure_rate(
    writer: Writer, args: argparse.Namespace, cpu_seconds: Callable[[], float]
) -> tuple[float, float]:
    """The writer for ``--rate-seconds`` (flat out unless ``--rate-pace``): its commits per
    second, and the share of a core ``cpu_seconds`` (the replicator's CPU time so far) grew
    by meanwhile."""
    writer.start(args.rate_seconds, args.rate_pace)
    before = cpu_seconds()
    writer.join()
    used = cpu_seconds() - before
    made = writer.finish()  # parsing its notes is not the replicator's CPU
    span = made[-1].returned_at - made[0].returned_at
    return (len(made) - 1) / span, used / span


def own_cpu_seconds() -> float:
    """CPU time of this process: every thread, so the worker thread's."""
    times = os.times()
    return times.user + times.system


def no_cpu() -> float:
    return 0.0


def build(path: Path, size_mb: int) -> int:
    """The shared database: the orders table, and the writers' (empty) commits table."""
    build_database(path, size_mb)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE commits (id INTEGER PRIMARY KEY, stamp REAL, note TEXT)")
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


# ---------------------------------------------------------------- checks


@dataclass(frozen=True)
class Moment:
    """The moment T of the restores, between two commits: the ``expected`` first ones
    returned at or before it, every later one was stamped after it."""

    at: float  # time.time()
    expected: int  # commits at or before T

    @property
    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


def moment_between(committed: list[Commit], made: list[Commit]) -> Moment:
    middle = len(made) // 2
    before, after = made[middle], made[middle + 1]
    at = (before.returned + after.stamp) / 2
    assert before.returned < at < after.stamp
    return Moment(at, committed.index(before) + 1)


@dataclass(frozen=True)
class Checked:
    rows: int  # commits rows restored (ids 1..rows)
    missing: int  # commits at or before T that are not there
    missing_seconds: float  # how long before T the first missing one returned


def check_restored(
    path: Path, committed: list[Commit], moment: Moment | None, orders_max: int
) -> Checked:
    """The restored database holds the contiguous prefix 1..n of ``committed``, nothing
    stamped after ``moment`` (all of them without one), and the source's orders."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        count, low, high = db.execute("SELECT count(*), min(id), max(id) FROM commits").fetchone()
        orders = db.execute("SELECT max(id) FROM orders").fetchone()[0]
    db.close()
    if orders != orders_max:
        raise SystemExit(f"{path}: orders max(id) {orders}, not {orders_max}")
    if count and (low != 1 or high != count):
        raise SystemExit(f"{path}: commits ids {low}..{high} for {count} rows: not 1..n")
    expected = len(committed) if moment is None else moment.expected
    if count > expected:
        raise SystemExit(f"{path}: {count} commits rows, past the {expected} at or before T")
    if count < expected and moment is None:
        raise SystemExit(f"{path}: {count} commits rows, not {expected}")
    missing_seconds = 0.0
    if count < expected and moment is not None:
        missing_seconds = moment.at - committed[count].returned
    return Checked(count, expected - count, missing_seconds)


# ---------------------------------------------------------------- results


@dataclass
class Side:
    """One replicator's figures."""

    name: str
    first_replica: float = 0.0  # seconds from turning it on to the first restorable state
    rpo: list[float] = field(default_factory=list)
    rpo_commits: int = 0
    probe_seconds: float = 0.0  # one look at the window or the replica's directory
    rate: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STATES})
    cpu: list[float] = field(default_factory=list)  # the replicator's share of a core, running
    restore: float = 0.0
    restore_check: Checked | None = None
    plain_restore: float = 0.0
    mapping_restores: int = 0

    @property
    def rate_ratio(self) -> float:
        running, stopped = self.rate["running"], self.rate["stopped"]
        return (sum(running) / len(running)) / (sum(stopped) / len(stopped))


def abba(rounds: int) -> list[str]:
    order: list[str] = []
    for number in range(rounds):
        order += list(STATES) if number % 2 == 0 else list(reversed(STATES))
    return order


def delays(made: list[Commit], sightings: list[tuple[float, int]]) -> list[float]:
    """Per commit, seconds from its return to the first sighting (monotonic time, highest
    commit id restorable then), both in order, that holds it."""
    found: list[float] = []
    index = 0
    for commit in made:
        while index < len(sightings) and (
            sightings[index][0] < commit.returned_at or sightings[index][1] < commit.id
        ):
            index += 1
        if index == len(sightings):
            raise SystemExit(f"commit {commit.id} was never seen restorable")
        found.append(sightings[index][0] - commit.returned_at)
    return found


# ---------------------------------------------------------------- ours


@dataclass
class Worker:
    """A worker thread over the engine's directory (``capy worker``): runs jobs, replicates."""

    directory: Path
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    engine: Engine | None = None

    def start(self) -> None:
        self.stop.clear()
        self.engine = Engine(self.directory)
        self.thread = threading.Thread(
            target=self.engine.run_worker,
            args=(self.stop,),
            kwargs={"poll_interval": 0.05, "tick_interval": 86400.0},
            daemon=True,
        )
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=120)
            assert not self.thread.is_alive(), "the worker thread did not stop"
        if self.engine is not None:
            self.engine.close()
        self.thread = self.engine = None


def window_end(engine: Engine, project_id: str) -> float | None:
    end = engine.get_pitr(project_id).window_end
    return None if end is None else end.timestamp()


def wait_covered(engine: Engine, project_id: str, commit: Commit) -> None:
    def covered() -> bool:
        end = window_end(engine, project_id)
        return end is not None and end >= commit.returned

    wait_until(f"the window to cover commit {commit.id}", covered, 600, 0.05)


def watch(engine: Engine, job_id: str) -> Job:
    """Wait for a job run by the worker thread."""
    deadline = time.monotonic() + 3600
    while not (job := engine.get_job(job_id)).is_terminal:
        if time.monotonic() > deadline:
            raise SystemExit(f"job {job_id} did not end: {job}")
        time.sleep(0.05)
    if job.state != "completed" or job.result is None:
        raise SystemExit(f"job {job_id} ({job.type}) ended {job.state}: {job.error}")
    return job


def preview_path(engine: Engine, job: Job) -> Path:
    assert job.result is not None
    preview = engine.get_preview_database(str(job.result["preview_database_id"]))
    if preview.database_name is None:
        raise SystemExit(f"preview {preview.id} has no database path")
    return Path(preview.database_name)


def drop_preview(engine: Engine, job: Job, *, run_here: bool) -> None:
    assert job.result is not None
    dropping = engine.delete_preview_database(str(job.result["preview_database_id"]))
    if run_here:
        assert engine.worker.run_once(only_id=dropping.id)
        engine.wait_for_job(dropping.id)
    else:
        watch(engine, dropping.id)


def ours_rpo(engine: Engine, project_id: str, writer: Writer, seconds: float, side: Side) -> None:
    sightings: list[tuple[float, int]] = []
    ends: list[tuple[float, float | None]] = []
    looks: list[float] = []
    writer.start(seconds, PACE)

    def look() -> None:
        asked = time.monotonic()
        end = window_end(engine, project_id)
        now = time.monotonic()
        looks.append(now - asked)
        ends.append((now, end))
        time.sleep(POLL)

    while writer.running:
        look()
    made = writer.finish()
    deadline = time.monotonic() + 60
    while (ends[-1][1] or 0.0) < made[-1].returned and time.monotonic() < deadline:
        look()
    # the highest id whose commit returned at or before each window end
    returns = [(c.returned, c.id) for c in writer.committed]
    index = 0
    for at, end in ends:
        while index < len(returns) and end is not None and returns[index][0] <= end:
            index += 1
        sightings.append((at, returns[index - 1][1] if index else 0))
    side.rpo, side.rpo_commits = delays(made, sightings), len(made)
    side.probe_seconds = sum(looks) / len(looks)


def ours_rate(
    engine: Engine, project_id: str, worker: Worker, writer: Writer, args: argparse.Namespace
) -> tuple[dict[str, list[float]], list[float]]:
    """The flat-out writer's commits/s by the worker's state, ABBA; and the share of a core
    this process (the worker thread) used in each running measurement."""
    rates: dict[str, list[float]] = {state: [] for state in STATES}
    cpu: list[float] = []
    for state in abba(args.rate_rounds):
        if state == "stopped" and worker.thread is not None:
            worker.halt()
        if state == "running":
            if worker.thread is None:
                worker.start()
            wait_covered(engine, project_id, writer.marker())
        os.sync()
        rate, share = measure_rate(writer, args, own_cpu_seconds)
        rates[state].append(rate)
        if state == "running":
            cpu.append(share)
        log(f"  writer, replicator {state}: {rates[state][-1]:.0f} commits/s")
    if worker.thread is None:
        worker.start()
    return rates, cpu


def ours_restores(
    engine: Engine,
    project_id: str,
    writer: Writer,
    workdir: Path,
    args: argparse.Namespace,
    side: Side,
) -> None:
    made = writer.run(args.before + args.after, PACE)
    moment = moment_between(writer.committed, made)
    wait_covered(engine, project_id, made[-1])
    orders = orders_max(writer.database)
    log(f"  T = {moment.datetime.isoformat()} ({moment.expected} commits at or before it)")
    os.sync()
    start = time.monotonic()
    job = watch(
        engine, engine.create_restore(project_id, RestoreRequest(restore_time=moment.datetime)).id
    )
    side.restore = time.monotonic() - start
    side.restore_check = check_restored(preview_path(engine, job), writer.committed, moment, orders)
    log(f"  restore to T into a new preview: {side.restore:.2f} s, {side.restore_check}")
    drop_preview(engine, job, run_here=False)

    with Engine(workdir / "plain") as plain:
        url = f"sqlite:///{writer.database}"
        plain_id = plain.create_project(CreateProject(name="plain", database_url=url)).project.id
        backup = plain.create_backup(plain_id)
        assert plain.worker.run_once(only_id=backup.id)
        done = plain.wait_for_job(backup.id, timeout=3600)
        assert done.result is not None, done.error
        request = RestoreRequest(
            backup_key=str(done.result["backup_key"]), allow_unverified_backup=True
        )
        os.sync()
        start = time.monotonic()
        restore = plain.create_restore(plain_id, request)
        assert plain.worker.run_once(only_id=restore.id)
        restored = plain.wait_for_job(restore.id, timeout=3600)
        side.plain_restore = time.monotonic() - start
        check_restored(preview_path(plain, restored), writer.committed, None, orders)
        log(f"  plain restore of a backup into a new preview: {side.plain_restore:.2f} s")
        drop_preview(plain, restored, run_here=True)


def run_ours(base: Path, workdir: Path, args: argparse.Namespace) -> Side:
    side = Side("ours")
    database = workdir / "ours" / "app.db"
    database.parent.mkdir()
    shutil.copyfile(base, database)
    writer = Writer(database)
    worker = Worker(workdir / "ours" / "engine")
    with Engine(worker.directory) as engine:
        project = engine.create_project(
            CreateProject(name="bench", database_url=f"sqlite:///{database}")
        ).project
        log("ours: PITR on, the first base backup, a worker thread replicating")
        start = time.monotonic()
        try:
            engine.put_pitr(project.id, PutPitr(enabled=True))
        except CapyError as exc:
            raise SystemExit(
                f"ours: PITR refused: {exc} (--only litestream runs the rest)"
            ) from exc
        worker.start()
        try:
            wait_until(
                "the PITR window to open",
                lambda: engine.get_pitr(project.id).window_start is not None,
                900,
                0.05,
            )
            side.first_replica = time.monotonic() - start
            log(f"  window open after {side.first_replica:.1f} s")
            log(f"ours: RPO, a commit every {PACE * 1000:.0f} ms for {args.rpo_seconds} s")
            ours_rpo(engine, project.id, writer, args.rpo_seconds, side)
            log_rpo(side)
            log(f"ours: the writer's commit rate, {args.rate_rounds} rounds ABBA")
            side.rate, side.cpu = ours_rate(engine, project.id, worker, writer, args)
            log(f"ours: restores, {args.before} s + {args.after} s of commits around T")
            ours_restores(engine, project.id, writer, workdir / "ours", args, side)
        finally:
            worker.halt()
            engine.put_pitr(project.id, PutPitr(enabled=False))
    shutil.rmtree(database.parent, ignore_errors=True)
    return side


def log_rpo(side: Side) -> None:
    log(
        f"  {side.rpo_commits} commits: p50 {percentile(side.rpo, 0.5):.3f} s, "
        f"p95 {percentile(side.rpo, 0.95):.3f} s, max {max(side.rpo):.3f} s"
    )


def orders_max(database: Path) -> int:
    with sqlite3.connect(database) as db:
        value = db.execute("SELECT max(id) FROM orders").fetchone()[0]
    db.close()
    return int(value)


# ---------------------------------------------------------------- Litestream


def litestream_binary() -> str:
    built = ROOT / ".tools" / "bin" / "litestream"
    if built.is_file():
        return str(built)
    found = shutil.which("litestream")
    if found is None:
        raise SystemExit("litestream not found: run scripts/install-litestream")
    return found


@dataclass
class Litestream:
    """``litestream replicate`` of one database to a ``file://`` replica, every setting at
    its default."""

    binary: str
    database: Path
    base: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def replica(self) -> Path:
        return self.base / "replica"

    @property
    def url(self) -> str:
        return f"file://{self.replica}"

    @property
    def level0(self) -> Path:
        return self.replica / "ltx" / "0"

    def write_config(self) -> Path:
        config = self.base / "litestream.yml"
        config.write_text(f"dbs:\n  - path: {self.database}\n    replica:\n      url: {self.url}\n")
        return config

    def start(self) -> None:
        logfile = (self.base / "litestream.log").open("ab")
        self.process = subprocess.Popen(
            [self.binary, "replicate", "-config", str(self.base / "litestream.yml")],
            stdout=logfile,
            stderr=subprocess.STDOUT,
        )
        logfile.close()

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def files(self) -> list[str]:
        """The replica's whole L0 files, oldest first."""
        try:
            names = os.listdir(self.level0)
        except FileNotFoundError:
            return []
        return sorted(name for name in names if name.endswith(".ltx"))

    def cpu_seconds(self) -> float:
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def restore(self, output: Path, *options: str) -> float:
        start = time.monotonic()
        done = subprocess.run(
            [self.binary, "restore", *options, "-o", str(output), self.url],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(
                f"litestream restore {' '.join(options)}: {done.stderr or done.stdout}"
            )
        return time.monotonic() - start


def header_time(path: Path) -> float:
    """An LTX file's header timestamp (milliseconds since the epoch, at offset 32)."""
    with path.open("rb") as file:
        head = file.read(40)
    if head[:4] != b"LTX1":
        raise SystemExit(f"{path} is not an LTX file")
    return int.from_bytes(head[32:40], "big") / 1000


def max_txid(name: str) -> str:
    return name.removesuffix(".ltx").split("-")[1]


def wait_replicated(litestream: Litestream, commit: Commit) -> None:
    """Until an L0 file made after ``commit`` returned (read from the WAL after it: its
    header time is taken just after the read) is in the replica."""

    def made_after() -> bool:
        files = litestream.files()
        return bool(files) and header_time(litestream.level0 / files[-1]) > commit.returned

    wait_until(f"Litestream to replicate commit {commit.id}", made_after, 600, 0.05)


def litestream_rpo(litestream: Litestream, writer: Writer, seconds: float, side: Side) -> None:
    seen = set(litestream.files())
    new: list[tuple[float, str]] = []
    looks: list[float] = []

    def look() -> None:
        asked = time.monotonic()
        files = litestream.files()
        now = time.monotonic()
        looks.append(now - asked)
        for name in files:
            if name not in seen:
                seen.add(name)
                new.append((now, name))
        time.sleep(POLL)

    writer.start(seconds, PACE)
    while writer.running:
        look()
    made = writer.finish()
    deadline = time.monotonic() + 60
    while not (new and header_time(litestream.level0 / new[-1][1]) > made[-1].returned):
        if time.monotonic() > deadline:
            raise SystemExit("Litestream did not replicate the last commits within 60 s")
        look()
    sightings: list[tuple[float, int]] = []
    scratch = litestream.base / "mapping.db"
    for at, name in new:
        litestream.restore(scratch, "-txid", max_txid(name))
        with sqlite3.connect(scratch) as db:
            sightings.append(
                (at, int(db.execute("SELECT coalesce(max(id), 0) FROM commits").fetchone()[0]))
            )
        db.close()
        scratch.unlink()
    side.mapping_restores = len(new)
    side.rpo, side.rpo_commits = delays(made, sightings), len(made)
    side.probe_seconds = sum(looks) / len(looks)


def litestream_rate(
    litestream: Litestream, writer: Writer, args: argparse.Namespace, side: Side
) -> None:
    for state in abba(args.rate_rounds):
        if state == "stopped":
            litestream.stop()
        if state == "running" and litestream.process is None:
            litestream.start()
            wait_replicated(litestream, writer.marker())
        os.sync()
        cpu = litestream.cpu_seconds if litestream.process else no_cpu
        rate, share = measure_rate(writer, args, cpu)
        side.rate[state].append(rate)
        if state == "running":
            side.cpu.append(share)
        log(f"  writer, Litestream {state}: {side.rate[state][-1]:.0f} commits/s")
    if litestream.process is None:
        litestream.start()
        wait_replicated(litestream, writer.marker())


def run_litestream(base: Path, workdir: Path, args: argparse.Namespace) -> Side:
    side = Side("litestream")
    home = workdir / "litestream"
    home.mkdir()
    database = home / "app.db"
    shutil.copyfile(base, database)
    writer = Writer(database)
    litestream = Litestream(litestream_binary(), database, home)
    litestream.write_config()
    log("Litestream: litestream replicate, defaults, to a file:// replica")
    start = time.monotonic()
    litestream.start()
    try:
        wait_until("Litestream's first replica file", lambda: bool(litestream.files()), 900, 0.05)
        side.first_replica = time.monotonic() - start
        log(f"  first L0 file in the replica after {side.first_replica:.1f} s")
        log(f"Litestream: RPO, a commit every {PACE * 1000:.0f} ms for {args.rpo_seconds} s")
        litestream_rpo(litestream, writer, args.rpo_seconds, side)
        log_rpo(side)
        log(f"Litestream: the writer's commit rate, {args.rate_rounds} rounds ABBA")
        litestream_rate(litestream, writer, args, side)
        log(f"Litestream: restore, {args.before} s + {args.after} s of commits around T")
        made = writer.run(args.before + args.after, PACE)
        moment = moment_between(writer.committed, made)
        wait_replicated(litestream, made[-1])
        log(f"  T = {moment.datetime.isoformat()} ({moment.expected} commits at or before it)")
        restored = home / "restored.db"
        stamp = moment.datetime.isoformat().replace("+00:00", "Z")
        os.sync()
        side.restore = litestream.restore(restored, "-timestamp", stamp)
        side.restore_check = check_restored(
            restored, writer.committed, moment, orders_max(database)
        )
        log(f"  litestream restore -timestamp T: {side.restore:.2f} s, {side.restore_check}")
    finally:
        litestream.stop()
    shutil.rmtree(home, ignore_errors=True)
    return side


# ---------------------------------------------------------------- the report


def report(args: argparse.Namespace, size: int, sides: dict[str, Side]) -> None:
    ours, theirs = sides.get("ours"), sides.get("litestream")

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISSED"

    def both(figure: Callable[[Side], str]) -> tuple[str, str]:
        return (
            figure(ours) if ours else "not run",
            figure(theirs) if theirs else "not run",
        )

    def rpo(side: Side) -> str:
        return (
            f"p50 {percentile(side.rpo, 0.5):.3f} s, p95 {percentile(side.rpo, 0.95):.3f} s, "
            f"max {max(side.rpo):.3f} s ({side.rpo_commits} commits)"
        )

    def rate(side: Side) -> str:
        return (
            "stopped "
            + " / ".join(f"{v:.0f}" for v in side.rate["stopped"])
            + ", running "
            + " / ".join(f"{v:.0f}" for v in side.rate["running"])
            + f": {side.rate_ratio:.3f}x"
        )

    def checked(side: Side) -> str:
        check = side.restore_check
        assert check is not None
        if not check.missing:
            return f"{check.rows} rows: all up to T, none after"
        return (
            f"{check.rows} rows, none after T; the last {check.missing} before T "
            f"missing ({check.missing_seconds:.3f} s)"
        )

    pace = f"a commit every {args.rate_pace * 1000:g} ms" if args.rate_pace else "flat out"
    rows: list[tuple[str, str, str, str]] = [
        ("database", f"{size / 1e6:.0f} MB", "same copy", ""),
        ("", "ours", "Litestream", "target (ours)"),
        ("first restorable state", *both(lambda s: f"{s.first_replica:.1f} s"), ""),
        (
            f"RPO, a commit every {PACE * 1000:.0f} ms",
            *both(rpo),
            f"p95 <= 1 s: {verdict(percentile(ours.rpo, 0.95) <= 1.0)}" if ours else "p95 <= 1 s",
        ),
        (
            "  one look (window / replica dir)",
            *both(lambda s: f"{s.probe_seconds * 1000:.2f} ms"),
            "",
        ),
        (
            f"writer commits/s, {args.rate_seconds} s {pace}",
            *both(rate),
            f">= 0.9x: {verdict(ours.rate_ratio >= 0.9)}" if ours else ">= 0.9x",
        ),
        (
            "  replicator CPU while running",
            *both(lambda s: f"{sum(s.cpu) / len(s.cpu):.0%} of a core"),
            "",
        ),
        ("restore to T", *both(lambda s: f"{s.restore:.2f} s"), ""),
        ("  checked", *both(checked), ""),
    ]
    if ours:
        ratio = ours.restore / ours.plain_restore
        rows.append(
            (
                "plain backup restore",
                f"{ours.plain_restore:.2f} s",
                "",
                f"PITR/plain {ratio:.2f}x, <= 1.5x: {verdict(ratio <= 1.5)}",
            )
        )
    if ours and theirs:
        rows.append(
            ("ours / Litestream, restore to T", f"{ours.restore / theirs.restore:.2f}x", "", "")
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print()
    for row in rows:
        print("  ".join(f"{cell:<{widths[i]}}" for i, cell in enumerate(row[:3])) + "  " + row[3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 MB, shorter phases")
    parser.add_argument("--only", choices=("both", "ours", "litestream"), default="both")
    parser.add_argument("--size-mb", type=int, default=None, help="database size (500; quick 50)")
    parser.add_argument("--rpo-seconds", type=float, default=None, help="paced commits for the RPO")
    parser.add_argument("--rate-seconds", type=float, default=None, help="each flat-out writer run")
    parser.add_argument(
        "--rate-pace",
        type=float,
        default=0.0,
        help="seconds between the rate writer's commits (0: flat out)",
    )
    parser.add_argument("--rate-rounds", type=int, default=2, help="ABBA rounds (2: 4 runs)")
    parser.add_argument("--before", type=float, default=None, help="paced commits before T")
    parser.add_argument("--after", type=float, default=None, help="paced commits after T")
    parser.add_argument("--dir", type=Path, default=None, help="work directory (on real disk)")
    args = parser.parse_args()
    quick = args.quick
    for name, full, short in (
        ("size_mb", 500, 50),
        ("rpo_seconds", 10.0, 3.0),
        ("rate_seconds", 10.0, 3.0),
        ("before", 10.0, 3.0),
        ("after", 10.0, 3.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.rpo_seconds * 0.8 / PACE < 200:
        parser.error("--rpo-seconds: at least 1.25 (200 commits)")
    os.environ.pop("CAPY_DIR", None)
    workdir = Path(tempfile.mkdtemp(prefix="capy-bench-sqlite-pitr-", dir=args.dir))
    sides: dict[str, Side] = {}
    try:
        base = workdir / "base.db"
        log(f"building a ~{args.size_mb} MB database in {workdir}")
        size = build(base, args.size_mb)
        if args.only in ("both", "ours"):
            sides["ours"] = run_ours(base, workdir, args)
        if args.only in ("both", "litestream"):
            sides["litestream"] = run_litestream(base, workdir, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, size, sides)


if __name__ == "__main__":
    main()
