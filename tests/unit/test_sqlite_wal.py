"""Reading SQLite's write-ahead log as SQLite's recovery does, against logs SQLite wrote."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import struct
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from pulumi_capy.api.models import format_timestamp
from pulumi_capy.engine.pitr.sqlite_replicate import Segment, decode_segment, encode_segment
from pulumi_capy.engine.pitr.sqlite_wal import (
    FRAME_HEADER,
    READ_FRAMES,
    WAL_HEADER,
    Frames,
    Restarted,
    WalCursor,
    apply_pages,
    checksum,
    parse_header,
)


def naive_checksum(data: bytes, s0: int, s1: int, *, big_endian: bool) -> tuple[int, int]:
    """SQLite's walChecksumBytes, word by word."""
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for x0, x1 in zip(words[0::2], words[1::2], strict=True):
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return s0, s1


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("size", [8, 24, 512, 4096, 65536])
def test_the_checksum_is_sqlites_word_by_word_one(size: int, big_endian: bool) -> None:
    generator = random.Random(size)
    data = generator.randbytes(size)
    start = (generator.getrandbits(32), generator.getrandbits(32))
    assert checksum(data, *start, big_endian=big_endian) == naive_checksum(
        data, *start, big_endian=big_endian
    )


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(tmp_path / "app.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA wal_autocheckpoint = 0")
    connection.execute("CREATE TABLE t (x INTEGER, pad BLOB)")
    yield connection
    connection.close()


def wal_of(tmp_path: Path) -> Path:
    return tmp_path / "app.db-wal"


def read(cursor: WalCursor) -> Frames:
    found = cursor.poll()
    assert found is not None
    return found


def frames_in(path: Path) -> int:
    header = parse_header(path.read_bytes()[:WAL_HEADER])
    assert header is not None
    return (path.stat().st_size - WAL_HEADER) // (FRAME_HEADER + header.page_size)


def test_every_committed_transaction_is_read_once_in_order(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    cursor = WalCursor(wal_of(tmp_path))
    first = read(cursor)  # the CREATE TABLE
    assert first.transactions == 1
    for value in range(10):
        db.execute("INSERT INTO t VALUES (?, randomblob(100))", (value,))
    found = read(cursor)
    assert found.transactions == 10
    assert read(cursor).transactions == 0
    assert cursor.frames == frames_in(wal_of(tmp_path))
    assert all(size >= 2 for size in found.sizes)
    assert found.ends == sorted(found.ends)


def test_a_transaction_spilled_to_the_log_but_not_committed_is_not_read(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    cursor = WalCursor(wal_of(tmp_path))
    cursor.poll()
    db.execute("PRAGMA cache_size = 2")  # spill pages into the log before the commit
    db.execute("BEGIN")
    for value in range(300):
        db.execute("INSERT INTO t VALUES (?, randomblob(1000))", (value,))
    spilled = frames_in(wal_of(tmp_path))
    assert spilled > cursor.frames + 10
    assert read(cursor).transactions == 0
    db.execute("ROLLBACK")
    assert read(cursor).transactions == 0
    db.execute("INSERT INTO t VALUES (1, 'after')")
    after = read(cursor)
    assert after.transactions == 1
    assert len(after) < 10  # the one small transaction, not the rolled-back frames


def test_a_damaged_frame_ends_what_is_read_before_its_transaction(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    cursor = WalCursor(wal_of(tmp_path))
    cursor.poll()
    db.execute("INSERT INTO t VALUES (1, randomblob(100))")
    committed = cursor.frames
    db.execute("INSERT INTO t VALUES (2, randomblob(100))")
    db.execute("INSERT INTO t VALUES (3, randomblob(100))")
    path = wal_of(tmp_path)
    header = parse_header(path.read_bytes()[:WAL_HEADER])
    assert header is not None
    frame = FRAME_HEADER + header.page_size
    data = bytearray(path.read_bytes())
    # a byte of the page of the first frame after the first new transaction
    data[WAL_HEADER + (committed + 1) * frame + FRAME_HEADER + 100] ^= 0x40
    path.write_bytes(bytes(data))
    found = read(cursor)
    assert found.transactions == 1  # transaction 1 only: 2 is damaged, 3 cannot follow on
    assert cursor.frames == committed + len(found)


def test_a_reset_log_is_reported_and_followed_from_its_first_frame(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    cursor = WalCursor(wal_of(tmp_path))
    cursor.poll()
    db.execute("INSERT INTO t VALUES (1, 'a')")
    assert read(cursor).transactions == 1
    assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    with pytest.raises(Restarted) as restarted:
        cursor.poll()
    assert restarted.value.new is None  # truncated to nothing
    cursor.reset(None)
    assert cursor.poll() is None
    db.execute("INSERT INTO t VALUES (2, 'b')")
    second = read(cursor)  # the new log's first transaction, under a new header
    assert cursor.header is not None
    assert cursor.header.salt1 != restarted.value.old.salt1
    assert second.transactions == 1


def test_pages_applied_to_a_copy_make_the_database_of_that_moment(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    snapshot = tmp_path / "snapshot.db"
    target = sqlite3.connect(snapshot)
    db.backup(target)
    target.close()
    cursor = WalCursor(wal_of(tmp_path))
    cursor.poll()  # in the snapshot already
    for value in range(200):
        db.execute("INSERT INTO t VALUES (?, randomblob(?))", (value, 50 + value * 10))
    db.execute("DELETE FROM t WHERE x % 3 = 0")
    db.execute("CREATE INDEX t_x ON t (x)")
    db.execute("VACUUM")  # shrinks the file: the last commit's size truncates it
    found = read(cursor)
    header = cursor.header
    assert header is not None
    assert found.transactions == 203
    apply_pages(snapshot, found)
    copy = sqlite3.connect(snapshot)
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = copy.execute("SELECT x, pad FROM t ORDER BY rowid").fetchall()
        assert rows == db.execute("SELECT x, pad FROM t ORDER BY rowid").fetchall()
        assert list(copy.iterdump()) == list(db.iterdump())
    finally:
        copy.close()
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    assert os.path.getsize(snapshot) == pages * header.page_size


def test_transactions_larger_than_one_read_are_read_whole(
    tmp_path: Path, db: sqlite3.Connection
) -> None:
    cursor = WalCursor(wal_of(tmp_path))
    cursor.poll()
    db.execute("BEGIN")
    for value in range(2 * READ_FRAMES + 100):  # a page each: one transaction over 3 reads
        db.execute("INSERT INTO t VALUES (?, randomblob(3000))", (value,))
    db.execute("COMMIT")
    for value in range(50):
        db.execute("INSERT INTO t VALUES (?, 'small')", (value,))
    found = read(cursor)
    assert found.transactions == 51
    assert found.ends[0] > 2 * READ_FRAMES
    assert cursor.frames == frames_in(wal_of(tmp_path))


def test_a_segment_keeps_its_frames_and_labels(tmp_path: Path, db: sqlite3.Connection) -> None:
    cursor = WalCursor(wal_of(tmp_path))
    for value in range(20):
        db.execute("INSERT INTO t VALUES (?, randomblob(500))", (value,))
    found = read(cursor)
    assert found.transactions == 21  # the table, then 20 rows
    # transactions labelled in runs (one per poll that read them): 2, 1, 8, 10
    labels = [datetime(2026, 12, 1, 12, 0, second, tzinfo=UTC) for second in (1, 2, 5, 9)]
    label_ends = [2, 3, 11, 21]
    segment = decode_segment(encode_segment(Segment(3, 7, found, labels, label_ends)))
    assert (segment.generation, segment.start, segment.end) == (3, 7, 7 + len(found))
    assert (segment.labels, segment.label_ends) == (labels, label_ends)
    assert segment.frames.ends == found.ends
    assert segment.frames.sizes == found.sizes
    assert np.array_equal(segment.frames.numbers, found.numbers)
    assert bytes(segment.frames.pages) == np.ascontiguousarray(found.pages).tobytes()
    moments = {datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC): 0, labels[0]: 2, labels[1]: 3}
    moments |= {datetime(2026, 12, 1, 12, 0, 8, tzinfo=UTC): 11, labels[3]: 21}
    for moment, transactions in moments.items():
        assert segment.until(moment).transactions == transactions
    with pytest.raises(ValueError, match="wrong length"):
        decode_segment(encode_segment(Segment(3, 7, found, labels, label_ends))[:-1])
    data = encode_segment(Segment(3, 7, found, labels, label_ends))
    for wrong in ([2, 3, 11, 20], [2, 2, 11, 21], [3, 2, 11, 21]):
        with pytest.raises(ValueError, match="labels"):
            decode_segment(_with_header(data, label_ends=wrong))
    with pytest.raises(ValueError, match="labels"):
        decode_segment(_with_header(data, labels=[format_timestamp(m) for m in labels[::-1]]))


def _with_header(data: bytes, **fields: object) -> bytes:
    """A segment's bytes with fields of its header replaced."""
    size = int.from_bytes(data[8:12], "big")
    header = json.loads(data[12 : 12 + size]) | fields
    encoded = json.dumps(header).encode()
    return data[:8] + len(encoded).to_bytes(4, "big") + encoded + data[12 + size :]
