"""Blobs written in frames: any range read on its own, the whole still one checked stream.

A restore of PostgreSQL reads the largest table's two halves from the blob at once
(``BlobParts.copy`` from the frame that holds a range), after ``verify`` checked the
blob; a blob written without frames is read whole, as before.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from pulumi_capy.engine.blobs import ChecksumMismatch, LocalBlobStore
from pulumi_capy.engine.tarstream import TarReader


def _source() -> bytes:
    rng = random.Random(7)
    lines = b"".join(b"%d\t%s\n" % (n, b"v" * rng.randint(0, 90)) for n in range(60_000))
    return os.urandom(3000) + lines + os.urandom(5000)


def _store(tmp_path: Path, data: bytes, frames: list[int]) -> tuple[LocalBlobStore, str]:
    store = LocalBlobStore(tmp_path / "blobs")
    staged = store.stage("bk_1", io.BytesIO(data), level=3, frames=frames)
    info = store.commit(staged, {"details": {"what": "test"}})
    return store, info.sha256


def test_every_range_reads_back_from_the_frame_that_holds_it(tmp_path: Path) -> None:
    data = _source()
    frames = [1, 3000, 700_000, len(data) // 2, len(data) - 10]
    store, sha = _store(tmp_path, data, frames)
    manifest = store.read_manifest("bk_1")
    starts = [source for source, _ in manifest["frames"]]
    assert starts == [0, *frames]  # a frame begins at each offset asked for
    parts = store.parts("bk_1", sha)
    assert parts is not None
    assert parts.details == {"what": "test"}
    parts.verify()
    rng = random.Random(1)
    extents = [(0, len(data)), (3000, 700_000), (len(data) - 10, len(data)), (5, 5)]
    for _ in range(20):
        low, high = sorted(rng.sample(range(len(data) + 1), 2))
        extents.append((low, high))
    for start, end in extents:
        out = io.BytesIO()
        parts.copy(start, end, out)
        assert out.getvalue() == data[start:end], (start, end)
    # read whole, it is the same stream as ever
    back: list[bytes] = []
    store.read("bk_1", sha, lambda stream: back.append(stream.read()))
    assert back == [data]


def test_a_blob_without_frames_has_no_parts(tmp_path: Path) -> None:
    store, sha = _store(tmp_path, _source(), [])
    assert "frames" not in store.read_manifest("bk_1")
    assert store.parts("bk_1", sha) is None


def test_a_damaged_blob_fails_verify(tmp_path: Path) -> None:
    data = _source()
    store, sha = _store(tmp_path, data, [len(data) // 2])
    path = store.path("bk_1")
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 3] ^= 0x40
    path.write_bytes(bytes(damaged))
    parts = store.parts("bk_1", sha)
    assert parts is not None
    with pytest.raises(ChecksumMismatch):
        parts.verify()


def test_a_range_past_the_end_is_refused(tmp_path: Path) -> None:
    data = _source()
    store, sha = _store(tmp_path, data, [len(data) // 2])
    parts = store.parts("bk_1", sha)
    assert parts is not None
    with pytest.raises(ChecksumMismatch, match="ends before"):
        parts.copy(len(data) - 5, len(data) + 5, io.BytesIO())


def test_a_tar_reader_asks_for_a_frame_per_member_and_at_the_cut(tmp_path: Path) -> None:
    (tmp_path / "dump").mkdir()
    rows = b"".join(b"%d\trow\n" % n for n in range(100_000))
    (tmp_path / "dump" / "toc.dat").write_bytes(b"toc")
    (tmp_path / "dump" / "5.dat").write_bytes(rows)
    (tmp_path / "dump" / "6.dat").write_bytes(b"1\tx\n")
    reader = TarReader(tmp_path / "dump", split=lambda name, size: name == "5.dat")
    assert reader.cut is not None
    name, cut = reader.cut
    assert name == "5.dat"
    assert rows[cut - 1 : cut] == b"\n"
    assert cut >= len(rows) // 2
    assert b"\n" not in rows[len(rows) // 2 : cut - 1]
    members = {member[0]: member[1:] for member in reader.members}
    store = LocalBlobStore(tmp_path / "blobs")
    staged = store.stage("bk_2", reader, frames=reader.frames)  # type: ignore[arg-type]
    info = store.commit(staged, {"details": {}})
    parts = store.parts("bk_2", info.sha256)
    assert parts is not None
    start, size = members["5.dat"]
    halves = [io.BytesIO(), io.BytesIO()]
    parts.copy(start, start + cut, halves[0])
    parts.copy(start + cut, start + size, halves[1])
    assert halves[0].getvalue() + halves[1].getvalue() == rows
    # the frames begin at the members' headers and at the cut
    starts = {source for source, _ in store.read_manifest("bk_2")["frames"]}
    assert {offset - 512 for _, offset, _ in reader.members} | {start + cut} <= starts
