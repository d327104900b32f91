"""A directory as one tar stream through a blob and back; damaged or hostile tars refused."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from pulumi_capy.engine.blobs import ChecksumMismatch, LocalBlobStore
from pulumi_capy.engine.tarstream import TarDamaged, TarReader, is_tar, unpack


def _directory(root: Path) -> dict[str, bytes]:
    root.mkdir()
    files = {
        "toc.dat": os.urandom(700),
        "3364.dat": os.urandom(3 << 20) + b"tail",  # spans reads, not a block multiple
        "3365.dat": b"",
        "blobs.toc": b"16385 blob_16385.dat\n",
        "blob_16385.dat": os.urandom(512),  # exactly one block
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def _contents(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in root.iterdir()}


@pytest.mark.parametrize("read_size", [1, 511, 4096, 1 << 20, -1])
def test_a_directory_round_trips_through_the_tar_stream(tmp_path: Path, read_size: int) -> None:
    files = _directory(tmp_path / "dump")
    reader = TarReader(tmp_path / "dump")
    if read_size == 1:  # byte by byte is slow: only the head, then the rest at once
        head = b"".join(reader.read(1) for _ in range(1024))
        data = head + reader.read()
    else:
        data = b"".join(iter(lambda: reader.read(read_size), b""))
    assert reader.count == len(data)
    assert data[:7] == b"toc.dat"  # the table of contents first
    assert is_tar(data[:512])
    # the standard library reads it as a plain tar of the same files
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sorted(tar.getnames()) == sorted(files)
    assert unpack(io.BytesIO(data), tmp_path / "back") == len(files)
    assert _contents(tmp_path / "back") == files
    # what was read ahead to tell the format is handed back in
    assert unpack(io.BytesIO(data[512:]), tmp_path / "again", head=data[:512]) == len(files)
    assert _contents(tmp_path / "again") == files


def test_a_directory_goes_through_a_blob_and_back(tmp_path: Path) -> None:
    files = _directory(tmp_path / "dump")
    store = LocalBlobStore(tmp_path / "blobs")
    staged = store.stage("bk.tar.zst", TarReader(tmp_path / "dump"))  # type: ignore[arg-type]
    info = store.commit(staged, {"format": "test"})
    store.read(info.key, info.sha256, lambda stream: unpack(stream, tmp_path / "back"))
    assert _contents(tmp_path / "back") == files


def _tar_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("../escape.dat", tarfile.REGTYPE),
        ("sub/3364.dat", tarfile.REGTYPE),
        ("/etc/passwd", tarfile.REGTYPE),
        ("link.dat", tarfile.SYMTYPE),
        ("directory", tarfile.DIRTYPE),
    ],
)
def test_anything_but_flat_regular_files_is_refused(tmp_path: Path, name: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
    data = _tar_of((info, b"x" * 10))
    with pytest.raises(TarDamaged, match="unexpected member"):
        unpack(io.BytesIO(data), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "escape.dat").exists()


def test_a_truncated_or_corrupt_stream_is_refused(tmp_path: Path) -> None:
    _directory(tmp_path / "dump")
    data = TarReader(tmp_path / "dump").read()
    with pytest.raises(TarDamaged, match="early"):
        unpack(io.BytesIO(data[: len(data) // 2]), tmp_path / "half")
    damaged = bytearray(data)
    damaged[100] ^= 0xFF  # inside the first header: its checksum no longer matches
    with pytest.raises(TarDamaged, match="damaged tar header"):
        unpack(io.BytesIO(bytes(damaged)), tmp_path / "bad")
    twice = _tar_of((tarfile.TarInfo("toc.dat"), b"one"), (tarfile.TarInfo("toc.dat"), b"two"))
    with pytest.raises(TarDamaged, match="twice"):
        unpack(io.BytesIO(twice), tmp_path / "twice")


def test_a_damaged_blob_is_a_checksum_mismatch_even_when_the_reader_fails_first(
    tmp_path: Path,
) -> None:
    _directory(tmp_path / "dump")
    store = LocalBlobStore(tmp_path / "blobs")
    staged = store.stage("bk.tar.zst", TarReader(tmp_path / "dump"))  # type: ignore[arg-type]
    info = store.commit(staged, {"format": "test"})
    path = store.path(info.key)
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 3] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ChecksumMismatch):
        store.read(info.key, info.sha256, lambda stream: unpack(stream, tmp_path / "back"))

    # a reader that fails on an intact blob: its own error, not a mismatch
    path.write_bytes(original)

    def refuse(stream: object) -> None:
        raise RuntimeError("no space left")

    with pytest.raises(RuntimeError, match="no space left"):
        store.read(info.key, info.sha256, refuse)


def test_members_come_table_of_contents_first_then_largest_first(tmp_path: Path) -> None:
    files = _directory(tmp_path / "dump")
    with tarfile.open(fileobj=io.BytesIO(TarReader(tmp_path / "dump").read())) as tar:
        names = tar.getnames()
    by_size = sorted((name for name in files if name != "toc.dat"), key=lambda n: -len(files[n]))
    assert names == ["toc.dat", *by_size]


def _lines(count: int) -> bytes:
    return b"".join(b"%d\trow %d\t%s\n" % (n, n, b"x" * (n % 37)) for n in range(count))


@pytest.mark.parametrize("read_size", [1000, 1 << 20])
def test_a_member_splits_in_two_halves_at_a_line_end(tmp_path: Path, read_size: int) -> None:
    """The first half ends at the first line end at or after the member's middle; the
    second half is the rest, elsewhere; other members are untouched."""
    rows = _lines(200_000) + b"\\.\n\n\n"  # as pg_dump ends a table's data
    (tmp_path / "dump").mkdir()
    (tmp_path / "dump" / "toc.dat").write_bytes(b"toc")
    (tmp_path / "dump" / "7.dat").write_bytes(rows)
    (tmp_path / "dump" / "8.dat").write_bytes(_lines(10))
    asked: list[tuple[str, int]] = []

    def split(name: str, size: int) -> Path | None:
        asked.append((name, size))
        return tmp_path / "back" / ".side" / name if name == "7.dat" else None

    data = TarReader(tmp_path / "dump").read()
    stream = io.BufferedReader(io.BytesIO(data), buffer_size=read_size)
    assert unpack(stream, tmp_path / "back", split=split) == 3
    assert asked == [("toc.dat", 3), ("7.dat", len(rows)), ("8.dat", len(_lines(10)))]
    first = (tmp_path / "back" / "7.dat").read_bytes()
    second = (tmp_path / "back" / ".side" / "7.dat").read_bytes()
    assert first + second == rows
    middle = len(rows) // 2
    assert len(first) > middle
    assert first.endswith(b"\n")
    assert b"\n" not in first[middle : len(first) - 1]  # cut at the first line end after it
    assert (tmp_path / "back" / "8.dat").read_bytes() == _lines(10)


def test_a_member_without_a_line_end_after_its_middle_stays_whole_in_its_first_half(
    tmp_path: Path,
) -> None:
    (tmp_path / "dump").mkdir()
    data = b"a\n" + b"b" * 5000  # the only line end is before the middle
    (tmp_path / "dump" / "9.dat").write_bytes(data)
    side = tmp_path / "back" / ".side" / "9.dat"
    tar = io.BytesIO(TarReader(tmp_path / "dump").read())
    unpack(tar, tmp_path / "back", split=lambda *_: side)
    assert (tmp_path / "back" / "9.dat").read_bytes() == data
    assert side.read_bytes() == b""
