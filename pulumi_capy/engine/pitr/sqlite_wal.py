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

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from operator import mul
from pathlib import Path

import numpy as np

__all__ = [
    "FRAME_HEADER",
    "WAL_HEADER",
    "Restarted",
    "Transaction",
    "WalCursor",
    "WalHeader",
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
class Transaction:
    """One committed transaction: its pages (in frame order; a page may repeat, the last
    image wins) and the database's size in pages after it."""

    pages: list[tuple[int, bytes]]
    db_pages: int


class Restarted(Exception):
    """The log was reset (a new header) since the last poll."""

    def __init__(self, old: WalHeader, new: WalHeader | None) -> None:
        super().__init__("the WAL was restarted")
        self.old = old
        self.new = new


@dataclass
class WalCursor:
    """Where a reader of one WAL file is: after the last commit frame it returned."""

    path: Path
    header: WalHeader | None = None
    frames: int = 0  # valid frames up to and including the last commit returned
    running: tuple[int, int] = (0, 0)
    restarts: int = 0
    _pending: list[tuple[int, bytes]] = field(default_factory=list)

    def reset(self, header: WalHeader | None) -> None:
        """Follow a restarted log from its first frame."""
        self.header = header
        self.frames = 0
        self.running = header.checksum if header else (0, 0)
        self.restarts += 1

    def poll(self) -> list[Transaction]:
        """The transactions committed since the last poll. ``Restarted`` when the log has
        another header than the one followed (call ``reset`` to follow it)."""
        try:
            with self.path.open("rb") as handle:
                raw = handle.read(WAL_HEADER)
                header = parse_header(raw)
                if self.header is None:
                    if header is None:
                        return []  # no log yet (or one being reset): nothing committed in it
                    self.reset(header)
                elif header is None or header.raw != self.header.raw:
                    if header is None and len(raw) >= WAL_HEADER:
                        return []  # a header half written: look again
                    raise Restarted(self.header, header)
                assert self.header is not None
                page_size = self.header.page_size
                frame_size = FRAME_HEADER + page_size
                handle.seek(WAL_HEADER + self.frames * frame_size)
                data = handle.read()
        except FileNotFoundError:
            if self.header is not None:
                raise Restarted(self.header, None) from None
            return []
        return self._frames(memoryview(data), page_size, frame_size)

    def _frames(self, data: memoryview, page_size: int, frame_size: int) -> list[Transaction]:
        assert self.header is not None
        header = self.header
        big = header.big_endian
        done: list[Transaction] = []
        pending: list[tuple[int, bytes]] = []
        running = self.running
        count = len(data) // frame_size
        if not count:
            return done
        frames = np.frombuffer(data, dtype=np.uint8, count=count * frame_size)
        words = frames.reshape(count, frame_size)[:, FRAME_HEADER:].copy()
        pages = words.view(">u4" if big else "<u4").astype(np.uint64)
        sums = (pages @ _page_matrix(page_size)) & MASK  # each page's part, from (0, 0)
        a, b, c, d = _carry(page_size // 8)
        word = ">2I" if big else "<2I"
        for index in range(count):
            frame = data[index * frame_size : index * frame_size + FRAME_HEADER]
            page_no, db_pages, salt1, salt2, c1, c2 = struct.unpack(">6I", frame)
            if salt1 != header.salt1 or salt2 != header.salt2 or page_no == 0:
                break
            x0, x1 = struct.unpack(word, frame[:8])  # the header's first 8 bytes, one step
            s0 = (running[0] + x0 + running[1]) & MASK
            s1 = (running[1] + x1 + s0) & MASK
            running = (
                (a * s0 + b * s1 + int(sums[index, 0])) & MASK,
                (c * s0 + d * s1 + int(sums[index, 1])) & MASK,
            )
            if running != (c1, c2):
                break
            start = index * frame_size + FRAME_HEADER
            pending.append((page_no, bytes(data[start : start + page_size])))
            if db_pages:
                done.append(Transaction(pending, db_pages))
                self.frames += len(pending)
                self.running = running
                pending = []
        return done


def apply_pages(path: Path, page_size: int, transactions: list[Transaction]) -> None:
    """Write the transactions' pages into the database file at ``path`` in order, and
    give it the size the last one committed."""
    if not transactions:
        return
    with path.open("r+b") as handle:
        for transaction in transactions:
            for page_no, page in transaction.pages:
                handle.seek((page_no - 1) * page_size)
                handle.write(page)
        handle.truncate(transactions[-1].db_pages * page_size)
