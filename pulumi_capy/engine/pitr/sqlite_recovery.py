"""Point-in-time recovery of SQLite: snapshots that start each generation's part of the
window, the window itself, and a restore to a moment.

A snapshot is the database as one read transaction sees it (SQLite's backup API, as a
backup takes it), taken while the replicator ships the log. Which frame it stands at is
not known exactly, only bounded: at or after the shipped position read before its read
transaction began (``start_lsn``), and at or before every position the replicator reads
after (``stop_lsn``). That is enough: the log's frames are whole pages, so replaying from
the lower bound onto a snapshot that already holds some of them writes pages it holds
already, and each page ends as the newest frame up to the moment makes it. A snapshot
restores to any moment after the replicator's first poll that began after it
(``ended_at``): the log read by then reaches past it.

A generation's part of the window is [its oldest kept snapshot's ``ended_at``, the last
moment it covers]; the window is [the oldest part's start, the newest part's end], and a
moment between two parts (while no replicator ran) is refused, naming the hole.

Restore to T: the newest snapshot of the generation whose part holds T that ended at or
before T, then its generation's segments from the snapshot's position on, applied up to
the last transaction labelled at or before T (the snapshot and the segments read by two
threads ahead of the replay); checked as ``PRAGMA integrity_check`` would (``_integrity``:
``quick_check`` of the whole, ``integrity_check`` of the tables the log changed); then
loaded into the target as every restore is (``jobs.load_into_target``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sqlite3
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from pulumi_capy.api.errors import CapyError, FieldError, InvalidInput
from pulumi_capy.api.models import format_timestamp
from pulumi_capy.engine.drivers import DriverFailure, Outcome
from pulumi_capy.engine.drivers.sqlite import sqlite_path
from pulumi_capy.engine.jobs import JobDone, Loaded, PermanentFailure, load_into_target
from pulumi_capy.engine.pitr.sqlite_replicate import (
    Segment,
    generation_of,
    journal_mode,
    parse_segment_name,
    read_segment,
    sequence_of,
)
from pulumi_capy.engine.pitr.sqlite_wal import apply_pages
from pulumi_capy.engine.private import create_private_file
from pulumi_capy.engine.queue import Lease, new_id
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import (
    BaseBackupRecord,
    JobRecord,
    PitrRecord,
    PreviewSource,
    ProjectRecord,
    WalSegmentRecord,
)
from pulumi_capy.engine.stores.contract import Transaction as StoreTransaction

__all__ = [
    "Part",
    "parts_of",
    "run_snapshot",
    "run_sqlite_pitr_restore",
    "set_wal",
    "snapshot_key",
]

SNAPSHOT_ZSTD_LEVEL = 1
CATCH_UP_WAIT = 30.0  # seconds a snapshot waits for the replicator to read past it
BUSY_SECONDS = 30.0
READERS = 2  # threads reading the snapshot and the segments ahead of the replay
READ_AHEAD = 3  # segments read ahead of the one being applied (each up to ~32 MiB)
LEASE_CHECK = 1.0  # seconds between the replay's checks that the job is still ours
MMAP_BYTES = 1 << 30  # the check reads the replayed file through mmap (~15% faster)
MODE_WAIT = 2.0  # seconds turning PITR on waits for a database another connection holds


def snapshot_key(project_id: str, snapshot_id: str) -> str:
    """[ours] ``projects/<project_id>/base/<id>.sqlite.zst``."""
    return f"projects/{project_id}/base/{snapshot_id}.sqlite.zst"


# ---------------------------------------------------------------- the window


@dataclass(frozen=True)
class Part:
    """A generation's part of the window and the snapshots that start it."""

    generation: int
    start: datetime
    end: datetime
    end_position: int
    snapshots: list[BaseBackupRecord]


def parts_of(rt: Runtime, record: PitrRecord) -> list[Part]:
    """The restorable parts of the window, oldest first (none before a snapshot)."""
    snapshots = rt.store.list_base_backups(record.project_id)
    parts: list[Part] = []
    for generation in record.generations:
        current = generation.ended_at is None
        end_position = record.streamed_lsn if current else generation.end_position
        end_at = record.covered_at if current else generation.ended_at
        if end_position is None or end_at is None:
            continue
        if generation_of(end_position) != generation.number:
            continue  # nothing of it shipped yet
        usable = [
            s for s in snapshots if s.timeline == generation.number and s.stop_lsn <= end_position
        ]
        if usable and usable[0].ended_at <= end_at:
            parts.append(Part(generation.number, usable[0].ended_at, end_at, end_position, usable))
    return parts


def hole_message(parts: list[Part], moment: datetime) -> str | None:
    """Why ``moment``, inside [first start, last end], is in no part; None if it is."""
    for before, after in itertools.pairwise(parts):
        if before.end < moment < after.start:
            return (
                f"{format_timestamp(moment)} falls between generation {before.generation} "
                f"(restorable to {format_timestamp(before.end)}) and generation "
                f"{after.generation} (restorable from {format_timestamp(after.start)}): "
                "nothing of that time was shipped"
            )
    return None


# ---------------------------------------------------------------- turning it on


def mode_of(path: Path) -> str:
    """The database's journal mode; ``InvalidInput`` on ``database_url`` when it cannot be
    read (not a database, or held exclusively by another connection for seconds)."""
    try:
        return journal_mode(path, timeout=MODE_WAIT)
    except sqlite3.Error as exc:
        raise InvalidInput(
            [
                FieldError(
                    "database_url",
                    f"cannot read the journal mode of {path}: {exc} (is it a SQLite database, "
                    "and does another connection hold it exclusively?)",
                )
            ]
        ) from None


def set_wal(path: Path) -> None:
    """Switch the database to WAL mode, if no other connection holds it; ``InvalidInput``
    on ``database_url`` otherwise."""
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        mode = str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
    except sqlite3.Error as exc:
        mode = f"unchanged ({exc})"
    finally:
        db.close()
    if mode != "wal":
        raise InvalidInput(
            [
                FieldError(
                    "database_url",
                    f"could not switch {path} to WAL mode: {mode}; another connection may hold "
                    "it: stop the application, or run PRAGMA journal_mode=WAL from it",
                )
            ]
        )


# ---------------------------------------------------------------- snapshots


def run_snapshot(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    """A snapshot of the database for the replicator's current generation."""
    project = rt.store.get_project(job.project_id or "")
    record = rt.store.get_pitr(job.project_id or "")
    if project is None or record is None or not record.enabled:
        raise PermanentFailure("point-in-time recovery is off for this project: no snapshot")
    if not record.generations or record.streamed_lsn is None:
        raise DriverFailure(
            "no replicator has started shipping this project's log yet (a `capy worker` "
            "takes it up within seconds); the snapshot is tried again",
            permanent=False,
        )
    generation = record.generations[-1].number
    start = record.streamed_lsn  # the snapshot stands at or after this position
    path = sqlite_path(project.database_url)
    snapshot_id = new_id("base")
    key = snapshot_key(project.id, snapshot_id)
    with rt.scratch_space() as scratch:
        copy = scratch / "snapshot.db"
        began = _copy(rt, path, copy)
        page_size, pages = _size(copy)
        stop, ended_at = _read_past(rt, lease, project.id, generation, began)
        with copy.open("rb") as reader:
            staged = rt.blobs.stage(key, reader, level=SNAPSHOT_ZSTD_LEVEL)
    try:
        lease.check()
    except BaseException:
        rt.blobs.discard(staged)  # nothing of it becomes a blob
        raise
    info = rt.blobs.commit(
        staged,
        {
            "format": "sqlite3",
            "project_id": project.id,
            "base_backup_id": snapshot_id,
            "job_id": job.id,
            "generation": generation,
            "start_frame": sequence_of(start),
            "stop_frame": sequence_of(stop),
            "page_size": page_size,
        },
    )
    snapshot = BaseBackupRecord(
        id=snapshot_id,
        project_id=project.id,
        blob_key=key,
        sha256=info.sha256,
        size_bytes=info.source_bytes,
        blob_bytes=info.blob_bytes,
        timeline=generation,
        start_lsn=start,
        stop_lsn=stop,
        ended_at=ended_at,
        server_major=0,
        superuser="",
        created_by_job_id=job.id,
        created_at=rt.now(),
    )

    def commit(tx: StoreTransaction) -> dict[str, Any] | None:
        rt.store.insert_base_backup(tx, snapshot)
        return None

    summary = (
        f"snapshot {snapshot_id} of {path} for generation {generation} ({pages} pages of "
        f"{page_size} bytes), restorable from {format_timestamp(ended_at)}: blob {key}, "
        f"{info.blob_bytes} bytes, sha256 {info.sha256[:16]}"
    )
    return JobDone(
        {"base_backup_id": snapshot_id, "blob_key": key},
        Outcome(summary=summary, stdout=summary),
        commit,
    )


def _copy(rt: Runtime, path: Path, destination: Path) -> datetime:
    """Copy the database as one read transaction sees it; when that transaction had begun
    (by the engine's clock, read right after it did)."""
    if not path.is_file():
        raise PermanentFailure(f"the project database {path} is missing")
    try:
        source = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None)
        try:
            source.execute("BEGIN")
            source.execute("SELECT count(*) FROM sqlite_master").fetchall()
            began = rt.now()
            create_private_file(destination)
            target = sqlite3.connect(destination)
            try:
                target.execute("PRAGMA synchronous = OFF")
                target.execute("PRAGMA journal_mode = OFF")
                source.backup(target, pages=-1)
            finally:
                target.close()
            source.execute("COMMIT")
        finally:
            source.close()
    except sqlite3.Error as exc:
        raise DriverFailure(f"snapshot of {path}: {exc}", permanent=False) from exc
    return began


def _size(path: Path) -> tuple[int, int]:
    db = sqlite3.connect(path)
    try:
        page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    finally:
        db.close()
    return page_size, pages


def _read_past(
    rt: Runtime, lease: Lease, project_id: str, generation: int, began: datetime
) -> tuple[int, datetime]:
    """Wait until the replicator has shipped a poll that began after ``began``, and then
    one more (the first's transactions are labelled when it ended); that position and
    that poll's start."""
    deadline = time.monotonic() + CATCH_UP_WAIT
    first: datetime | None = None
    while time.monotonic() < deadline:
        lease.check()
        record = rt.store.get_pitr(project_id)
        if record is None or not record.enabled:
            raise PermanentFailure("point-in-time recovery was turned off during the snapshot")
        if record.streamed_lsn is None or generation_of(record.streamed_lsn) != generation:
            raise DriverFailure(
                f"a new generation of the log started during the snapshot for generation "
                f"{generation}; the snapshot is tried again",
                permanent=False,
            )
        covered = record.covered_at
        if covered is not None and covered >= began:
            if first is None:
                first = covered
            elif covered > first:
                return record.streamed_lsn, covered
        time.sleep(0.02)
    raise DriverFailure(
        f"the replicator did not ship the log past the snapshot within {CATCH_UP_WAIT:g} s "
        "(is a worker running?); the snapshot is tried again",
        permanent=False,
    )


# ---------------------------------------------------------------- restore to a moment


def _choose(
    rt: Runtime, project_id: str, moment: datetime
) -> tuple[BaseBackupRecord, list[WalSegmentRecord]]:
    """The snapshot and the segments a restore to ``moment`` reads; ``PermanentFailure``
    naming what is missing otherwise."""
    record = rt.store.get_pitr(project_id)
    if record is None:
        raise PermanentFailure(f"point-in-time recovery is off for project {project_id}")
    parts = parts_of(rt, record)
    part = next((p for p in parts if p.start <= moment <= p.end), None)
    if part is None:
        hole = hole_message(parts, moment)
        raise PermanentFailure(
            hole
            or f"{format_timestamp(moment)} is no longer in the PITR window of project "
            f"{project_id} (retention moved it)"
        )
    snapshot = [s for s in part.snapshots if s.ended_at <= moment][-1]
    first = sequence_of(snapshot.start_lsn)
    last = sequence_of(part.end_position)
    segments: list[WalSegmentRecord] = []
    expected = first
    # The replicator ships one segment at a time, while its polls go on reading (each
    # takes its moment and adds what it read to the next shipment under one lock): the
    # transactions of the segment after the next one were all labelled after this one
    # was catalogued. So past the one after the first segment catalogued after the
    # moment, none can hold a transaction at or before it.
    late = False  # seen a segment catalogued after the moment
    past = False  # no later segment is needed
    for item in rt.store.list_wal_segments(project_id, prefix=f"sqlite.{part.generation:08d}."):
        parsed = parse_segment_name(item.name)
        if parsed is None or parsed[2] <= first:
            continue
        if parsed[1] != expected:
            break
        segments.append(item)
        expected = parsed[2]
        if late:
            past = True
            break
        late = item.created_at > moment
    if not past and expected < last:
        raise PermanentFailure(
            f"the log archive of project {project_id} misses frames from {expected} of "
            f"generation {part.generation} (shipped to frame {last}): a gap between "
            f"snapshot {snapshot.id} and {format_timestamp(moment)}"
        )
    return snapshot, segments


def _read_segment(rt: Runtime, item: WalSegmentRecord) -> Segment:
    """The segment, decompressed straight into its arrays; its blob's checksum checked."""
    read: list[Segment] = []

    def consume(stream: IO[bytes]) -> None:
        read.append(read_segment(stream))

    try:
        rt.blobs.read(item.blob_key, item.sha256, consume)
    except CapyError as exc:
        raise PermanentFailure(f"log segment {item.name} cannot be read: {exc}") from exc
    except ValueError as exc:
        raise PermanentFailure(f"log segment {item.name}: {exc}") from exc
    return read[0]


def _rebuild(
    rt: Runtime,
    snapshot: BaseBackupRecord,
    segments: list[WalSegmentRecord],
    moment: datetime,
    *,
    database: Path,
    lease: Lease,
) -> tuple[int, np.ndarray[Any, np.dtype[np.uint32]], list[tuple[Any, ...]]]:
    """The snapshot into ``database``, then the segments' transactions labelled at or
    before ``moment`` applied to it: how many, the page numbers written, and the
    snapshot's schema.

    Reading is most of the work (decompressing the snapshot and every page image the
    log shipped), and decompression runs outside the GIL: the snapshot and the next
    ``READ_AHEAD`` segments are read by ``READERS`` threads while the pages are applied
    here, in order."""
    with ThreadPoolExecutor(READERS, thread_name_prefix="capy-replay") as pool:
        base = pool.submit(_read_snapshot, rt, snapshot, database)
        pending = iter(segments)
        ahead: deque[tuple[WalSegmentRecord, Future[Segment]]] = deque()

        def read_ahead() -> None:
            while len(ahead) < READ_AHEAD and (item := next(pending, None)) is not None:
                ahead.append((item, pool.submit(_read_segment, rt, item)))

        try:
            read_ahead()
            base.result()
            schema = _snapshot_schema(database)
            page_size, _ = _size(database)
            applied = 0
            checked_at = time.monotonic()
            written: list[np.ndarray[Any, np.dtype[np.uint32]]] = []
            while ahead:
                item, reading = ahead.popleft()
                segment = reading.result()
                read_ahead()
                if time.monotonic() >= checked_at + LEASE_CHECK:  # each asks the store
                    lease.check()
                    checked_at = time.monotonic()
                if segment.frames.page_size != page_size:
                    raise PermanentFailure(
                        f"log segment {item.name} has pages of {segment.frames.page_size} "
                        f"bytes, snapshot {snapshot.id} of {page_size}"
                    )
                frames = segment.until(moment)
                apply_pages(database, frames)
                applied += frames.transactions
                written.append(np.unique(frames.numbers))
                if frames.transactions < segment.frames.transactions:
                    break
        finally:
            for _, reading in ahead:
                reading.cancel()
    pages = np.unique(np.concatenate(written)) if written else np.empty(0, np.uint32)
    return applied, pages, schema


def _read_snapshot(rt: Runtime, snapshot: BaseBackupRecord, database: Path) -> None:
    try:
        rt.blobs.get_file(snapshot.blob_key, snapshot.sha256, database, durable=False)
    except CapyError as exc:
        raise PermanentFailure(f"snapshot {snapshot.id} cannot be read: {exc}") from exc


def _integrity(
    database: Path, written: np.ndarray[Any, np.dtype[np.uint32]], schema: list[tuple[Any, ...]]
) -> str:
    """Check the replayed database as ``PRAGMA integrity_check`` would; what was run.

    The whole of it where it counts and nothing twice: ``PRAGMA quick_check`` over the
    whole file (every b-tree's structure, every page used once, the freelist), and the
    rest of ``integrity_check`` (each index against its table, UNIQUE and NOT NULL) for
    the tables with a page the replay wrote (``dbstat`` tells whose pages they are). The
    tables without one are, page for page, as in the snapshot (SQLite's backup API wrote
    it from one read transaction). Without ``dbstat`` in this SQLite, or with a schema
    other than the snapshot's (``schema``), the full ``PRAGMA integrity_check``."""
    db = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    step = "reading its schema"
    try:
        db.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
        tables: list[str] | None = None
        if _schema(db) == schema:
            step = "PRAGMA quick_check"
            _expect_ok(db, step)
            step = "reading dbstat"
            tables = _tables_written(db, written)
        if tables is None:
            step = "PRAGMA integrity_check"
            _expect_ok(db, step)
            return step
        for table in tables:
            step = f"PRAGMA integrity_check({table})"
            _expect_ok(db, "PRAGMA integrity_check(" + '"' + table.replace('"', '""') + '")')
    except sqlite3.DatabaseError as exc:  # damage SQLite stops at: "malformed", ...
        raise PermanentFailure(f"the database replayed to the moment fails {step}: {exc}") from exc
    finally:
        db.close()
    return f"PRAGMA quick_check, PRAGMA integrity_check of {len(tables)} table(s) the log changed"


def _tables_written(
    db: sqlite3.Connection, written: np.ndarray[Any, np.dtype[np.uint32]]
) -> list[str] | None:
    """The tables whose b-trees (their own or an index's) hold a written page; None when
    ``dbstat`` is not there. (The schema's own b-tree is written whenever the file's
    size changes: its first page holds the file's header. Its rows are compared with the
    snapshot's instead.)"""
    try:
        rows = db.execute("SELECT name, pageno FROM dbstat").fetchall()
    except sqlite3.OperationalError:
        return None  # SQLite without SQLITE_ENABLE_DBSTAT_VTAB
    if not len(written):
        return []
    names = [name for name, _ in rows]
    pagenos = np.fromiter((pageno for _, pageno in rows), dtype=np.int64, count=len(rows))
    hit = np.isin(pagenos, written.astype(np.int64))
    btrees = {names[index] for index in np.flatnonzero(hit).tolist()}
    btrees -= {"sqlite_schema", "sqlite_master"}
    owner = dict(db.execute("SELECT name, tbl_name FROM sqlite_schema").fetchall())
    return sorted({owner.get(name, name) for name in btrees})


def _schema(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT type, name, tbl_name, rootpage, sql FROM sqlite_schema ORDER BY rowid"
    ).fetchall()


def _snapshot_schema(database: Path) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)
    try:
        return _schema(db)
    except sqlite3.DatabaseError as exc:
        raise PermanentFailure(f"the snapshot cannot be read by SQLite: {exc}") from exc
    finally:
        db.close()


def _expect_ok(db: sqlite3.Connection, sql: str) -> None:
    rows = [str(row[0]) for row in db.execute(sql).fetchall()]
    if rows != ["ok"]:
        raise sqlite3.DatabaseError("; ".join(rows[:5]))


def run_sqlite_pitr_restore(
    rt: Runtime, job: JobRecord, lease: Lease, project: ProjectRecord, moment: datetime
) -> JobDone:
    snapshot, segments = _choose(rt, project.id, moment)
    target = format_timestamp(moment)
    with rt.scratch_space() as scratch:
        database = scratch / "restored.db"
        rt.report_progress(
            job,
            f"reading snapshot {snapshot.id} ({snapshot.size_bytes} bytes) and replaying "
            f"{len(segments)} log segment(s) to {target}",
        )
        applied, written, schema = _rebuild(
            rt, snapshot, segments, moment, database=database, lease=lease
        )
        lease.check()
        rt.report_progress(job, "checking the result (PRAGMA integrity_check)")
        checked = _integrity(database, written, schema)
        rt.report_progress(job, f"loading the state at {target} into the target")

        def materialize(path: Path) -> None:
            shutil.move(database, path)
            with path.open("rb+") as moved:  # the preview's file: durable before it is linked
                os.fsync(moved.fileno())

        loaded = Loaded(
            materialize,
            {},
            None,
            PreviewSource(
                kind=job.payload.get("source_kind") or "restore_time",
                database=project.database_name,
                backup_key=None,
                restore_time=moment,
            ),
            f"the state at {target} (snapshot {snapshot.id}, {applied} transaction(s) of the "
            f"log replayed; {checked}: ok)",
        )
        return load_into_target(
            rt,
            job,
            lease,
            project,
            loaded,
            result={"restore_time": target, "base_backup_id": snapshot.id},
        )
