"""Shipping a SQLite project's write-ahead log into blobs: one worker per project, by lease.

The replicator holds a read transaction on the database at every moment (two
connections, taking turns): SQLite cannot reset its log under a reader that uses it, nor
copy into the database file past what a reader of the file alone sees. Every ``POLL``
seconds it begins a fresh read transaction, reads the log from where it stopped up to
what the wal-index had published (salts and running checksums checked, ``sqlite_wal``),
and only then ends the older one. So a reset of the log (a new header) can only come at
a moment when everything in the old log had been read, and the frames of the new log
follow on from it: the generation goes on.

When it reads, it takes a moment at which no commit was published: the wal-index header
read just before and just after the clock is the same. The transactions up to that
header are labelled with that moment: each committed before it, and every commit that
had returned by then is among them. So a restore to a moment holds exactly the commits
made by then (to the clock's resolution), and the window's end is such a moment.

Every ``FLUSH`` seconds the whole transactions read since the last shipment go out as
one segment (compressed, checksummed, catalogued), with their labels; then the store
records, fenced by the lease, how far the log is shipped and the latest shipped poll's
moment: the window's end. Shipping (and renewing the lease) runs in a thread of its own,
one segment at a time, while the polls go on: an application's own RESTART or TRUNCATE
checkpoint waits for the replicator's reader while it holds the write lock, so nothing
but a poll may keep a reader waiting.

Readers only ever look at the log: they keep it from being reset, and the log grows.
The engine checkpoints it itself, once it holds ``CHECKPOINT_FRAMES`` frames: it takes
the write lock (``BEGIN IMMEDIATE``: nothing more can be committed), reads the tail,
ends its readers, copies the log into the database (a PASSIVE checkpoint: the
application's readers are waited for by nobody), begins a reader again and lets go of
the lock. The log is then wholly in the database and read, so the next writer may reset
it, and nothing is lost whichever connection does. (Nothing is written into the user's
database for this: Litestream's ``_litestream_seq`` table would be in every restore.)

When continuity cannot be proven — the replicator starts (after a crash, on another
worker, or PITR turned on), or the log changed in a way the reading above cannot
follow — a new generation starts: its positions start again at ``generation << 40``,
and a snapshot (``sqlite_recovery.run_snapshot``) is queued to start its part of the window.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import itertools
import json
import logging
import sqlite3
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

from pulumi_capy.api.models import format_timestamp
from pulumi_capy.engine.drivers.sqlite import sqlite_path
from pulumi_capy.engine.pitr import archive
from pulumi_capy.engine.pitr.control import enqueue_base_backup
from pulumi_capy.engine.pitr.sqlite_wal import (
    Frames,
    IndexHeader,
    Restarted,
    WalCursor,
    WalIndex,
)
from pulumi_capy.engine.pitr.stream import HEARTBEAT, LeaseHolder, StreamStopped, clear_failure
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import PitrGeneration, PitrRecord

__all__ = [
    "GENERATION_SHIFT",
    "Replicator",
    "Segment",
    "decode_segment",
    "encode_parts",
    "encode_segment",
    "generation_of",
    "position",
    "segment_name",
    "sequence_of",
]

log = logging.getLogger(__name__)

POLL = 0.005  # seconds between two reads of the log: how exactly a commit's time is known
FLUSH = 0.25  # seconds between two shipments: a commit is durable in a blob within ~this
# The engine checkpoints the log once it holds CHECKPOINT_FRAMES frames (SQLite's default
# wal_autocheckpoint), at most once per CHECKPOINT_EVERY seconds unless it holds
# CHECKPOINT_MAX_FRAMES: each one holds the write lock a moment, and a writer that found
# it taken sleeps in its busy handler (bench/sqlite_pitr.py: a checkpoint every 500 or 2000
# frames cost a flat-out writer 0.34x, once a second 0.78x)
CHECKPOINT_FRAMES = 1000
CHECKPOINT_EVERY = 1.0
CHECKPOINT_MAX_FRAMES = 20000
CHECKPOINT_LOCK_WAIT = 0.2  # seconds to wait for the write lock before trying next time
MAX_BUFFERED = 32 * 1024 * 1024  # bytes of pages read but not shipped: ship early past this
# ... and past this (read, not yet taken by a shipment), stop polling until the shipper
# takes it: with the one under way, at most about twice this in memory (the reader held
# meanwhile keeps the log; only an application's own RESTART/TRUNCATE checkpoint waits)
MAX_UNSHIPPED = 4 * MAX_BUFFERED
BUSY_SECONDS = 30.0
GENERATION_SHIFT = 40
MARK_TRIES = 5  # reads of the wal-index for a moment no commit was published in
RESETS_PER_POLL = 5  # a log reset again and again while being read: give up (a new generation)
SEGMENT_MAGIC = b"CAPYSQLW"
SEGMENT_FORMAT = "capy-sqlite-wal/2"  # /2: labels in runs, one per poll


def position(generation: int, sequence: int) -> int:
    """A place in a project's shipped log: frames shipped in ``generation`` before it."""
    return (generation << GENERATION_SHIFT) | sequence


def generation_of(place: int) -> int:
    return place >> GENERATION_SHIFT


def sequence_of(place: int) -> int:
    return place & ((1 << GENERATION_SHIFT) - 1)


def segment_name(generation: int, start: int, end: int) -> str:
    """[ours] the catalogue name of the segment holding frames ``start``..``end`` of a
    generation (text order is log order)."""
    return f"sqlite.{generation:08d}.{start:012d}-{end:012d}"


def parse_segment_name(name: str) -> tuple[int, int, int] | None:
    kind, _, rest = name.partition(".")
    generation, _, frames = rest.partition(".")
    start, _, end = frames.partition("-")
    if kind != "sqlite" or not (generation.isdigit() and start.isdigit() and end.isdigit()):
        return None
    return int(generation), int(start), int(end)


@dataclass(frozen=True)
class Segment:
    """A shipped run of whole transactions (frames ``start``.. of its generation). They
    are labelled in runs: the transactions before ``label_ends[i]`` (and after the
    previous run's) were read by the poll that ended at ``labels[i]`` (their commits came
    no later); labels never go back."""

    generation: int
    start: int
    frames: Frames
    labels: list[datetime]
    label_ends: list[int]

    @property
    def end(self) -> int:
        return self.start + len(self.frames)

    def until(self, moment: datetime) -> Frames:
        """Its transactions labelled at or before ``moment``."""
        runs = bisect.bisect_right(self.labels, moment)
        return self.frames.first(self.label_ends[runs - 1] if runs else 0)


class _Chunks(io.RawIOBase):
    """A read-only stream over buffers, read without joining them first."""

    def __init__(self, chunks: list[memoryview]) -> None:
        self._chunks = chunks
        self._index = 0
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target) and self._index < len(self._chunks):
            chunk = self._chunks[self._index]
            take = min(len(target) - filled, len(chunk) - self._offset)
            target[filled : filled + take] = chunk[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset == len(chunk):
                self._index += 1
                self._offset = 0
        return filled


def encode_parts(generation: int, start: int, parts: list[tuple[Frames, datetime]]) -> IO[bytes]:
    """The segment of ``parts`` (whole transactions read by successive polls, each with
    the poll's moment), as a stream that reads their pages in place."""
    ends: list[int] = []
    sizes: list[int] = []
    labels: list[str] = []
    label_ends: list[int] = []
    offset = 0
    for frames, moment in parts:
        ends += [offset + end for end in frames.ends]
        sizes += frames.sizes
        offset += len(frames)
        if frames.transactions:
            labels.append(format_timestamp(moment))
            label_ends.append(len(ends))
    header = json.dumps(
        {
            "format": SEGMENT_FORMAT,
            "generation": generation,
            "start": start,
            "page_size": parts[0][0].page_size if parts else 0,
            "frames": offset,
            "ends": ends,
            "sizes": sizes,
            "labels": labels,
            "label_ends": label_ends,
        }
    ).encode()
    numbers = np.concatenate([frames.numbers for frames, _ in parts]).astype(">u4")
    chunks = [
        memoryview(SEGMENT_MAGIC + struct.pack(">I", len(header)) + header),
        memoryview(numbers.tobytes()),
    ]
    chunks += [
        np.ascontiguousarray(frames.pages).data.cast("B") for frames, _ in parts if len(frames)
    ]
    return io.BufferedReader(_Chunks(chunks), buffer_size=1 << 20)


def encode_segment(segment: Segment) -> bytes:
    """The bytes of ``segment`` (as ``encode_parts`` streams them)."""
    parts: list[tuple[Frames, datetime]] = []
    done = 0
    for moment, end in zip(segment.labels, segment.label_ends, strict=True):
        run = segment.frames.first(end)
        begin = segment.frames.ends[done - 1] if done else 0
        parts.append(
            (
                Frames(
                    run.page_size,
                    run.numbers[begin:],
                    run.pages[begin:],
                    [e - begin for e in run.ends[done:]],
                    run.sizes[done:],
                ),
                moment,
            )
        )
        done = end
    return encode_parts(segment.generation, segment.start, parts).read()


def decode_segment(data: bytes) -> Segment:
    """``ValueError`` when ``data`` is not a segment this engine wrote."""
    return read_segment(io.BytesIO(data))


def read_segment(stream: IO[bytes]) -> Segment:
    """The segment ``stream`` holds, its pages read straight into one array (no copy of
    the whole). ``ValueError`` when it is not a segment this engine wrote."""
    if _read_exactly(stream, len(SEGMENT_MAGIC)) != SEGMENT_MAGIC:
        raise ValueError("not a SQLite log segment of this engine")
    (size,) = struct.unpack(">I", _read_exactly(stream, 4))
    header: dict[str, Any] = json.loads(_read_exactly(stream, size))
    if header.get("format") != SEGMENT_FORMAT:
        raise ValueError(f"a SQLite log segment of format {header.get('format')!r}")
    page_size = int(header["page_size"])
    count = int(header["frames"])
    numbers = np.frombuffer(_read_exactly(stream, 4 * count), dtype=">u4").astype(np.uint32)
    pages = np.empty((count, page_size), dtype=np.uint8)
    view = pages.data.cast("B")
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            break
        filled += got
    if filled < len(view) or stream.read(1):
        raise ValueError("a SQLite log segment of the wrong length")
    ends = [int(end) for end in header["ends"]]
    if not ends or ends[-1] != count or len(header["sizes"]) != len(ends):
        raise ValueError("a SQLite log segment whose last transaction is not whole")
    frames = Frames(page_size, numbers, pages, ends, [int(v) for v in header["sizes"]])
    labels = [datetime.fromisoformat(label) for label in header["labels"]]
    label_ends = [int(end) for end in header["label_ends"]]
    if (
        len(labels) != len(label_ends)
        or not label_ends
        or label_ends[-1] != len(ends)
        or any(b <= a for a, b in itertools.pairwise(label_ends))
        or any(b < a for a, b in itertools.pairwise(labels))
    ):
        raise ValueError("a SQLite log segment whose labels are not its transactions'")
    return Segment(int(header["generation"]), int(header["start"]), frames, labels, label_ends)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    data = stream.read(size)
    while len(data) < size:
        more = stream.read(size - len(data))
        if not more:
            raise ValueError("a SQLite log segment of the wrong length")
        data += more
    return data


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_SECONDS * 1000)}")
    return db


def journal_mode(path: Path, *, timeout: float = BUSY_SECONDS) -> str:
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        return str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    finally:
        db.close()


class _Readers:
    """Two connections taking turns at holding a read transaction on the database."""

    def __init__(self, path: Path) -> None:
        self.connections = [_connect(path), _connect(path)]

    def begin(self, held: int | None) -> int:
        """Begin a read transaction on the connection that does not hold one (``held``)."""
        index = 1 if held == 0 else 0
        db = self.connections[index]
        db.execute("BEGIN")
        db.execute("SELECT count(*) FROM sqlite_master").fetchall()  # takes the snapshot
        return index

    def end(self, index: int | None) -> None:
        if index is not None:
            self.connections[index].execute("COMMIT")

    def close(self) -> None:
        for db in self.connections:
            with contextlib.suppress(sqlite3.Error):
                db.close()


class Replicator(LeaseHolder):
    """Ships one SQLite project's log while this worker holds its lease."""

    def __init__(self, rt: Runtime, project_id: str, stop: threading.Event) -> None:
        super().__init__(rt, project_id, stop)
        self.generation = 0
        self.sequence = 0  # frames of this generation shipped
        # what the polls read and the shipper has not shipped yet, and the latest poll's
        # moment: written by the polls, taken by the shipper, under _buffer_lock
        self.buffer: list[tuple[Frames, datetime]] = []
        self.buffered = 0
        self.covered: datetime | None = None
        self._buffer_lock = threading.Lock()
        self._ship_now = threading.Event()  # wakes the shipper early (or to halt)
        self._ship_error: BaseException | None = None
        self._next_checkpoint = CHECKPOINT_FRAMES  # the log's length that calls for one
        self._checkpointed = 0.0  # time.monotonic() of the last engine checkpoint
        self.held: int | None = None  # which reader holds a read transaction
        self.page_size = 0  # of the log's frames (a WAL database's cannot change)

    # ------------------------------------------------------------ running

    def run(self) -> None:
        try:
            self._run()
        except StreamStopped as stopped:
            log.info("replicator of %s stopped: %s", self.project_id, stopped)
        finally:
            self.rt.store.release_streamer(self.project_id, self.rt.worker_id)

    def _record(self) -> PitrRecord:
        record = self.rt.store.get_pitr(self.project_id)
        if record is None or not record.enabled:
            raise StreamStopped("PITR is off")
        return record

    def _run(self) -> None:
        self.renew()
        record = self._record()
        project = self.rt.store.get_project(self.project_id)
        if project is None:
            raise StreamStopped("the project is gone")
        path = sqlite_path(project.database_url)
        if not path.is_file():
            raise RuntimeError(f"the project database {path} is missing")
        mode = journal_mode(path)
        if mode != "wal":
            raise RuntimeError(
                f"{path} is not in WAL mode any more (journal_mode={mode}): its log cannot be "
                "shipped; switch it back with PRAGMA journal_mode=WAL"
            )
        readers = _Readers(path)
        self.readers = readers
        self.locker = _connect(path)
        self.checkpointer = _connect(path)
        self.cursor = WalCursor(Path(f"{path}-wal"))
        self.index = WalIndex(Path(f"{path}-shm"))
        try:
            self.held = readers.begin(None)
            marked = self._mark()
            # what the log holds now is in the generation's first snapshot
            self._read(marked[0] if marked else None)
            self._new_generation(record)
            self._loop()
        finally:
            readers.close()
            for db in (self.locker, self.checkpointer):
                with contextlib.suppress(sqlite3.Error):
                    db.close()

    def _new_generation(self, record: PitrRecord) -> None:
        generations = list(record.generations)
        now = self.rt.now()
        if not generations or (
            record.enabled_at and record.enabled_at > generations[-1].started_at
        ):
            reason = "point-in-time recovery turned on"
        else:
            reason = (
                f"the replicator started (worker {self.rt.worker_id}): what was committed "
                "between the previous generation's end and this one's first snapshot was "
                "not shipped"
            )
        if generations and generations[-1].ended_at is None:
            generations[-1] = generations[-1].model_copy(
                update={
                    "ended_at": record.covered_at or generations[-1].started_at,
                    "end_position": record.streamed_lsn,
                }
            )
        self.generation = (generations[-1].number + 1) if generations else 1
        self.sequence = 0
        generations.append(PitrGeneration(number=self.generation, started_at=now, reason=reason))
        start = position(self.generation, 0)
        self.rt.store.update_pitr(
            self.project_id,
            {
                "generations": [g.model_dump(mode="json") for g in generations[-50:]],
                "floor_lsn": start,
                "streamed_lsn": start,
            },
        )
        log.info("project %s: generation %d: %s", self.project_id, self.generation, reason)
        enqueue_base_backup(self.rt, self.project_id)

    def _loop(self) -> None:
        """Poll (and checkpoint) in this thread, ship and renew the lease in another: a
        shipment or a renewal waiting on its blob store or its store never keeps this
        thread from taking a fresh reader, which an application's own RESTART or
        TRUNCATE checkpoint waits for while it holds the write lock."""
        halt = threading.Event()
        shipper = threading.Thread(
            target=self._ship, args=(halt,), name=f"capy-ship-{self.project_id}", daemon=True
        )
        shipper.start()
        try:
            while not halt.is_set() and not self.stop.is_set():
                if self.buffered < MAX_UNSHIPPED:  # else hold: the shipper catches up
                    self._poll()
                    if self._checkpoint_due():
                        self._checkpoint()
                    if self.buffered >= MAX_BUFFERED:
                        self._ship_now.set()
                self.stop.wait(POLL)
        finally:
            halt.set()
            self._ship_now.set()
            shipper.join()
        if self._ship_error is not None:
            raise self._ship_error
        raise StreamStopped("the worker stops")

    def _ship(self, halt: threading.Event) -> None:
        """The shipper: renews the lease, ships what the polls read every ``FLUSH``
        seconds (sooner past ``MAX_BUFFERED``). Its failure (a lost lease included)
        halts the polls and is raised by ``_loop``."""
        flushed = time.monotonic()
        announced = False
        try:
            while not halt.is_set():
                self.renew(every=HEARTBEAT)
                due = flushed + FLUSH - time.monotonic()
                if due > 0 and not self._ship_now.is_set():
                    self._ship_now.wait(min(due, HEARTBEAT))
                    continue
                self._ship_now.clear()
                flushed = time.monotonic()
                if self._flush() and not announced:
                    announced = True
                    clear_failure(self.rt, self.project_id)
        except BaseException as error:  # raised again by _loop
            self._ship_error = error
        finally:
            halt.set()

    # ------------------------------------------------------------ reading

    def _poll(self) -> None:
        """Begin a new read transaction; at a moment when no commit was published (the
        wal-index reads the same just before and just after it), read the log up to what
        the index published; then end the older read transaction. The transactions read
        are labelled with that moment: each was committed before it, and every commit that
        had returned by then is among them."""
        newer = self.readers.begin(self.held)
        # From the moment to the buffer under one hold of the lock: a shipment taking the
        # buffer in between (once a slow one before it was catalogued) would leave these
        # transactions, labelled before that cataloguing, for the segment after its own,
        # where a restore to a moment before the cataloguing does not look (_choose).
        with self._buffer_lock:
            try:
                marked = self._mark()
                if marked is None:  # commits kept coming: look again next time
                    self.readers.end(newer)
                    return
                published, moment = marked
                found = self._read(published)
            except BaseException:
                self.readers.end(newer)
                raise
            self.readers.end(self.held)
            self.held = newer
            if self.cursor.header is not None:
                self.page_size = self.cursor.header.page_size
            if found is not None and found.transactions:
                self.buffer.append((found, moment))
                self.buffered += len(found) * self.page_size
            self.covered = moment

    def _mark(self) -> tuple[IndexHeader, datetime] | None:
        for _ in range(MARK_TRIES):
            before = self.index.read()
            moment = self.rt.now()
            if before is not None and self.index.read() == before:
                return before, moment
        return None

    def _read(self, published: IndexHeader | None) -> Frames | None:
        for _ in range(RESETS_PER_POLL):
            try:
                return self.cursor.poll(published)
            except Restarted as restarted:
                # a reset could only come once the old log was wholly read (see the
                # module's docstring): follow the new one from its first frame
                new = restarted.new
                if new is not None and self.page_size and new.page_size != self.page_size:
                    raise RuntimeError("the log's page size changed") from None
                self.cursor.reset(restarted.new)
                self._next_checkpoint = CHECKPOINT_FRAMES
        raise RuntimeError(f"the log was reset {RESETS_PER_POLL} times during one read")

    def _checkpoint_due(self) -> bool:
        frames = self.cursor.frames
        if frames < CHECKPOINT_FRAMES:
            return False
        if frames >= CHECKPOINT_MAX_FRAMES and frames >= self._next_checkpoint:
            return True
        return time.monotonic() - self._checkpointed >= CHECKPOINT_EVERY

    def _checkpoint(self) -> None:
        """Copy the log into the database, the last of it under the write lock, so that
        the next writer can reset it."""
        self._checkpointed = time.monotonic()
        self._next_checkpoint = self.cursor.frames + CHECKPOINT_FRAMES
        # the bulk of the copy while the application writes on (up to our reader's view)
        self.checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        locker = self.locker
        locker.execute(f"PRAGMA busy_timeout = {int(CHECKPOINT_LOCK_WAIT * 1000)}")
        try:
            locker.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return  # the application writes: next time
        try:
            self._poll()  # the tail: nothing more can be committed now
            self.readers.end(self.held)
            self.held = None
            row = self.checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.held = self.readers.begin(None)
            log.debug("project %s: checkpoint %s", self.project_id, row)
        finally:
            locker.execute("ROLLBACK")

    # ------------------------------------------------------------ shipping

    def _flush(self) -> bool:
        """Ship what the polls read since the last shipment; False before the first poll."""
        with self._buffer_lock:
            buffer, self.buffer, self.buffered = self.buffer, [], 0
            covered = self.covered
        if covered is None:
            return False
        if buffer:
            end = self.sequence + sum(len(found) for found, _ in buffer)
            name = segment_name(self.generation, self.sequence, end)
            key = f"projects/{self.project_id}/wal/{name}.zst"
            stream = encode_parts(self.generation, self.sequence, buffer)
            archive.keep_stream(self.rt, self.project_id, name, key, stream)
            self.sequence = end
        if not self.rt.store.record_streamed(
            self.project_id,
            self.rt.worker_id,
            position(self.generation, self.sequence),
            covered,
        ):
            raise StreamStopped("the lease is gone")
        return True
