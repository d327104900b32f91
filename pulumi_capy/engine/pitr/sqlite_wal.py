"""Reading a SQLite write-ahead log as SQLite's own recovery reads it.

A WAL file is a 32-byte header and frames, each a 24-byte header and one page. A frame
is valid when its salts are the header's and its checksum continues the running checksum
from the header's (SQLite's Fibonacci-weighted sum of 32-bit words, in the byte order the
magic number says); a transaction is the valid frames up to a commit frame (one whose
"database size after commit" is not zero). Anything after the last valid commit frame is
a transaction still being written, one rolled back after spilling, or the leftovers of
an older log: never shipped.

``WalCursor.poll`` reads what was appended since the last poll and returns the whole
transactions it completes. A changed header is a restart of the log (a checkpoint reset
it: new salts, the frames written again from the start); whether that is continuous with
what was read before is the caller's to prove (``Restarted``).

The checksum, written the obvious way, costs a Python loop of ``page_size / 8`` steps per
frame (~400 us for a 4 KiB page: a writer's thousand frames a second would take a core).
It is linear, so it is computed instead as dot products of the words with weights
precomputed once per page size (powers of the step's 2x2 matrix): every page read in one
poll in a single numpy matrix product (~30 us a frame), then chained frame by frame.
"""

from __future__ import annotations

import os
import struct
import sys
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from operator import mul
from pathlib import Path
from typing import IO

import numpy as np

__all__ = [
    "FRAME_HEADER",
    "WAL_HEADER",
    "Frames",
    "IndexHeader",
    "Restarted",
    "WalCursor",
    "WalHeader",
    "WalIndex",
    "apply_pages",
    "checksum",
    "parse_header",
]

WAL_HEADER = 32
FRAME_HEADER = 24
MAGIC_LITTLE = 0x377F0682
MAGIC_BIG = 0x377F0683
WAL_VERSION = 3007000
MASK = 0xFFFFFFFF
MIN_PAGE_SIZE = 512


@lru_cache(maxsize=8)
def _weights(pairs: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, int, int, int]]:
    """For a block of ``pairs`` word pairs: the weights of each word in the final s0 and
    in the final s1 (interleaved, as the words come), and how the initial (s0, s1) carry.

    One step is ``s0 += x0 + s1; s1 += x1 + s0``: (s0, s1) <- M (s0, s1) + (x0, x0 + x1)
    with M = [[1, 1], [1, 2]]. M^k is [[a, b], [b, a + b]] (a symmetric matrix of
    Fibonacci numbers), so a pair k steps before the end weighs (a + b, b) in s0 and
    (a + 2b, a + b) in s1."""
    powers: list[tuple[int, int]] = []
    a, b = 1, 0  # M^0
    for _ in range(pairs + 1):
        powers.append((a, b))
        a, b = (a + b) & MASK, (a + 2 * b) & MASK
    s0_weights: list[int] = []
    s1_weights: list[int] = []
    for index in range(pairs):
        a, b = powers[pairs - 1 - index]
        s0_weights += [(a + b) & MASK, b]
        s1_weights += [(a + 2 * b) & MASK, (a + b) & MASK]
    a, b = powers[pairs]
    return tuple(s0_weights), tuple(s1_weights), (a, b, b, (a + b) & MASK)


@lru_cache(maxsize=8)
def _page_matrix(page_size: int) -> np.ndarray:
    """``_weights`` of a page as a (words, 2) matrix of uint64 (products wrap modulo 2^64,
    which keeps them right modulo 2^32)."""
    s0_weights, s1_weights, _ = _weights(page_size // 8)
    return np.array([s0_weights, s1_weights], dtype=np.uint64).T.copy()


def _carry(pairs: int) -> tuple[int, int, int, int]:
    return _weights(pairs)[2]


def checksum(data: bytes | memoryview, s0: int, s1: int, *, big_endian: bool) -> tuple[int, int]:
    """SQLite's WAL checksum of ``data`` (a multiple of 8 bytes), continuing (s0, s1)."""
    count = len(data) // 4
    words = struct.unpack(f"{'>' if big_endian else '<'}{count}I", data)
    s0_weights, s1_weights, (a, b, c, d) = _weights(count // 2)
    new0 = (a * s0 + b * s1 + sum(map(mul, s0_weights, words))) & MASK
    new1 = (c * s0 + d * s1 + sum(map(mul, s1_weights, words))) & MASK
    return new0, new1


@dataclass(frozen=True)
class WalHeader:
    raw: bytes
    big_endian: bool
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    checksum: tuple[int, int]


def parse_header(raw: bytes) -> WalHeader | None:
    """The header, or None when these 32 bytes are not a valid one (a log being reset)."""
    if len(raw) < WAL_HEADER:
        return None
    magic, version, page_size, seq, salt1, salt2, c1, c2 = struct.unpack(">8I", raw[:WAL_HEADER])
    if magic not in (MAGIC_LITTLE, MAGIC_BIG) or version != WAL_VERSION:
        return None
    if page_size == 1:
        page_size = 65536
    if page_size < MIN_PAGE_SIZE or page_size & (page_size - 1):
        return None
    big = magic == MAGIC_BIG
    if checksum(raw[:24], 0, 0, big_endian=big) != (c1, c2):
        return None
    return WalHeader(raw[:WAL_HEADER], big, page_size, seq, salt1, salt2, (c1, c2))


@dataclass(frozen=True)
class Frames:
    """Whole transactions read from a log, as arrays: each frame's page number and page
    image (a page may repeat: the last image up to a moment wins), and for each
    transaction the index after its last frame and the database's size in pages after it."""

    page_size: int
    numbers: np.ndarray  # uint32, one per frame
    pages: np.ndarray  # uint8, (frames, page_size)
    ends: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)

    @staticmethod
    def empty(page_size: int) -> Frames:
        return Frames(
            page_size,
            np.zeros(0, dtype=np.uint32),
            np.zeros((0, page_size), dtype=np.uint8),
        )

    def __len__(self) -> int:
        return len(self.numbers)

    @property
    def transactions(self) -> int:
        return len(self.ends)

    def first(self, count: int) -> Frames:
        """Its first ``count`` transactions."""
        end = self.ends[count - 1] if count else 0
        return Frames(
            self.page_size,
            self.numbers[:end],
            self.pages[:end],
            self.ends[:count],
            self.sizes[:count],
        )

    @staticmethod
    def join(parts: list[Frames]) -> Frames:
        """One run of the transactions of ``parts``, in order (all of one page size)."""
        if len(parts) == 1:
            return parts[0]
        ends: list[int] = []
        offset = 0
        for part in parts:
            ends += [offset + end for end in part.ends]
            offset += len(part)
        return Frames(
            parts[0].page_size,
            np.concatenate([part.numbers for part in parts]),
            np.concatenate([part.pages for part in parts]),
            ends,
            [size for part in parts for size in part.sizes],
        )


class Restarted(Exception):
    """The log was reset (a new header) since the last poll."""

    def __init__(self, old: WalHeader, new: WalHeader | None) -> None:
        super().__init__("the WAL was restarted")
        self.old = old
        self.new = new


READ_FRAMES = 4096  # frames read and checked at a time (16 MiB of 4 KiB pages)
INDEX_HEADER = 48  # the wal-index header, twice at the start of <db>-shm
NATIVE = "<" if sys.byteorder == "little" else ">"


@dataclass(frozen=True)
class IndexHeader:
    """What the wal-index says is committed: the log's valid frames (every commit up to
    the last one published ends at or before frame ``frames``) and the salts of the log
    they are in."""

    frames: int
    salts: tuple[int, int]


class WalIndex:
    """The header of a WAL database's wal-index (``<db>-shm``), as SQLite's readers read
    it: two copies that must agree, and their checksum (in the machine's byte order).

    The file is read through one descriptor per file for the whole process, never closed
    while the file is in use: closing any descriptor of a file drops every POSIX lock this
    process holds on it, the read marks of its SQLite connections included (SQLite itself
    defers such closes; a descriptor of ours cannot). A descriptor is only replaced (and
    closed) once the path names another file: SQLite deletes ``<db>-shm`` only as the
    last connection to the database closes, so no connection holds locks on the old one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> IndexHeader | None:
        """The header, or None while it is being written (or there is none)."""
        fd = _shared_fd(self.path)
        if fd is None:
            return None
        data = os.pread(fd, 2 * INDEX_HEADER, 0)
        if len(data) < 2 * INDEX_HEADER or data[:INDEX_HEADER] != data[INDEX_HEADER:]:
            return None
        version, _, _, ready, _, _, frames, _, _, _ = struct.unpack(NATIVE + "3IBBHII2I", data[:32])
        if version != WAL_VERSION or not ready:
            return None
        stored = struct.unpack(NATIVE + "2I", data[40:48])
        if checksum(data[:40], 0, 0, big_endian=NATIVE == ">") != stored:
            return None
        salt1, salt2 = struct.unpack(">2I", data[32:40])  # copied from the log's header
        return IndexHeader(frames, (salt1, salt2))


_SHARED: dict[str, tuple[int, int, int]] = {}  # path -> (fd, st_dev, st_ino)
_SHARED_LOCK = threading.Lock()


def _shared_fd(path: Path) -> int | None:
    """This process's descriptor of the file at ``path`` (see ``WalIndex``)."""
    key = str(path)
    with _SHARED_LOCK:
        try:
            status = os.stat(key)
        except FileNotFoundError:
            return None
        known = _SHARED.get(key)
        if known is not None and known[1:] == (status.st_dev, status.st_ino):
            return known[0]
        try:
            fd = os.open(key, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        opened = os.fstat(fd)
        _SHARED[key] = (fd, opened.st_dev, opened.st_ino)
        if known is not None:
            os.close(known[0])  # of a file SQLite deleted: nobody holds locks on it
        return fd


@dataclass
class WalCursor:
    """Where a reader of one WAL file is: after the last commit frame it returned."""

    path: Path
    header: WalHeader | None = None
    frames: int = 0  # valid frames up to and including the last commit returned
    running: tuple[int, int] = (0, 0)

    def reset(self, header: WalHeader | None) -> None:
        """Follow a restarted log from its first frame."""
        self.header = header
        self.frames = 0
        self.running = header.checksum if header else (0, 0)

    def poll(self, published: IndexHeader | None = None) -> Frames | None:
        """The transactions committed since the last poll (None: no log to read yet), up
        to what the wal-index ``published`` when given (none when it speaks of another
        log than the one followed). ``Restarted`` when the log has another header than
        the one followed (call ``reset`` to follow it)."""
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(WAL_HEADER)
                header = parse_header(raw)
                if self.header is None:
                    if header is None:
                        return None  # no log yet (or one being reset): nothing committed
                    self.reset(header)
                elif header is None or header.raw != self.header.raw:
                    if header is None and len(raw) >= WAL_HEADER:
                        return None  # a header half written: look again
                    raise Restarted(self.header, header)
                assert self.header is not None
                limit = None
                if published is not None:
                    same = published.salts == (self.header.salt1, self.header.salt2)
                    limit = max(published.frames - self.frames, 0) if same else 0
                return self._read(handle, self.header, limit)
        except FileNotFoundError:
            if self.header is not None:
                raise Restarted(self.header, None) from None
            return None

    def _read(self, handle: IO[bytes], header: WalHeader, limit: int | None) -> Frames:
        """Frames from the last commit read on (at most ``limit``, else to the end)."""
        frame_size = FRAME_HEADER + header.page_size
        handle.seek(WAL_HEADER + self.frames * frame_size)
        pending: list[Frames] = []  # checked frames after the last commit found
        committed: list[Frames] = []
        running = self.running
        left = limit
        while left is None or left > 0:
            wanted = READ_FRAMES if left is None else min(READ_FRAMES, left)
            data = handle.read(wanted * frame_size)
            count = len(data) // frame_size
            if not count:
                break
            if left is not None:
                left -= count
            checked, running, valid = _check(data, count, header, running)
            pending.append(checked)
            last_commit = checked.ends[-1] if checked.ends else 0
            if last_commit:
                run = Frames.join(pending)
                cut = run.ends[-1]
                committed.append(run)
                self.frames += cut
                self.running = _stored(data, frame_size, (last_commit - 1))
                tail = Frames(header.page_size, run.numbers[cut:], run.pages[cut:], [], [])
                pending = [tail] if len(tail) else []
            if valid < count or count < wanted:
                break
        if not committed:
            return Frames.empty(header.page_size)
        run = Frames.join(committed)
        return run.first(run.transactions)


def _stored(data: bytes, frame_size: int, index: int) -> tuple[int, int]:
    """The checksum stored in frame ``index`` of ``data``."""
    at = index * frame_size + 16
    first, second = struct.unpack(">2I", data[at : at + 8])
    return first, second


def _check(
    data: bytes, count: int, header: WalHeader, running: tuple[int, int]
) -> tuple[Frames, tuple[int, int], int]:
    """The valid frames at the start of ``data`` (salts, page numbers and the checksum
    chain from ``running``), with the transactions whose commit frame is among them; the
    checksum after the last valid frame, and how many are valid.

    Each frame's checksum follows from the previous frame's stored one, so that every
    frame is checked at once: frame k is valid when the checksum computed from frame
    k-1's stored value is frame k's stored value, for it and for every frame before it."""
    page_size = header.page_size
    frame_size = FRAME_HEADER + page_size
    frames = np.frombuffer(data, dtype=np.uint8, count=count * frame_size).reshape(
        count, frame_size
    )
    fields = frames[:, :FRAME_HEADER].copy().view(">u4").astype(np.uint64)
    numbers, sizes, salt1, salt2, stored0, stored1 = fields.T
    order = ">u4" if header.big_endian else "<u4"
    words = frames[:, :8].copy().view(order).astype(np.uint64)
    sums = (
        frames[:, FRAME_HEADER:].copy().view(order).astype(np.uint64) @ _page_matrix(page_size)
    ) & MASK
    before0 = np.concatenate(([running[0]], stored0[:-1])).astype(np.uint64)
    before1 = np.concatenate(([running[1]], stored1[:-1])).astype(np.uint64)
    s0 = (before0 + words[:, 0] + before1) & MASK
    s1 = (before1 + words[:, 1] + s0) & MASK
    a, b, c, d = (np.uint64(v) for v in _carry(page_size // 8))
    new0 = (a * s0 + b * s1 + sums[:, 0]) & MASK
    new1 = (c * s0 + d * s1 + sums[:, 1]) & MASK
    ok = (
        (salt1 == header.salt1)
        & (salt2 == header.salt2)
        & (numbers != 0)
        & (new0 == stored0)
        & (new1 == stored1)
    )
    valid = count if bool(ok.all()) else int(np.argmin(ok))
    commits = np.flatnonzero(sizes[:valid])
    after = (int(stored0[valid - 1]), int(stored1[valid - 1])) if valid else running
    checked = Frames(
        page_size,
        numbers[:valid].astype(np.uint32),
        frames[:valid, FRAME_HEADER:],
        [int(i) + 1 for i in commits],
        [int(sizes[i]) for i in commits],
    )
    return checked, after, valid


def apply_pages(path: Path, frames: Frames) -> None:
    """Write the transactions' pages into the database file at ``path`` (the last image
    of each page only), and give it the size the last one committed."""
    if not frames.transactions:
        return
    count = len(frames)
    # the last image of each page: unique over the reversed page numbers
    _, reversed_first = np.unique(frames.numbers[::-1], return_index=True)
    last = count - 1 - reversed_first
    size = frames.page_size
    with path.open("r+b") as handle:
        for index in sorted(last.tolist(), key=lambda i: int(frames.numbers[i])):
            handle.seek((int(frames.numbers[index]) - 1) * size)
            handle.write(frames.pages[index].tobytes())
        handle.truncate(frames.sizes[-1] * size)
