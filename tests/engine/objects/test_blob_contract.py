"""The blob store over every object store (``conftest.BACKENDS``): what backups rely on."""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import IO

import pytest

from pulumi_capy.engine.blobs import MANIFEST, BlobMissing, BlobStore, ChecksumMismatch
from pulumi_capy.engine.objects import LocalObjectStore

KEY = "projects/prj_1/backups/bk_1"


def _source(size: int = 3_000_000) -> bytes:
    rng = random.Random(size)
    text = b"".join(b"%d\t%s\n" % (n, b"v" * rng.randint(0, 90)) for n in range(size // 50))
    return os.urandom(4000) + text[:size] + os.urandom(4000)


def _damage(blobs: BlobStore, name: str, at: int) -> None:
    data = bytearray(blobs.objects.get_bytes(name))
    data[at] ^= 0x40
    blobs.objects.put_bytes(name, bytes(data))


def test_a_blob_reads_back_as_written_with_its_manifest(blobs: BlobStore, tmp_path: Path) -> None:
    data = _source()
    staged = blobs.stage(KEY, io.BytesIO(data), level=3)
    assert not blobs.exists(KEY)  # staged is not a blob
    info = blobs.commit(staged, {"project_id": "prj_1"})
    assert blobs.exists(KEY)
    assert info.source_bytes == len(data)
    assert info.blob_bytes == blobs.objects.size(KEY)
    assert info.blob_bytes < len(data)
    manifest = blobs.read_manifest(KEY)
    assert manifest["sha256"] == info.sha256
    assert manifest["project_id"] == "prj_1"
    assert manifest["compression"] == "zstd"

    got: list[bytes] = []
    blobs.read(KEY, info.sha256, lambda stream: got.append(stream.read()))
    assert got == [data]
    out = tmp_path / "out"
    assert blobs.get_file(KEY, info.sha256, out) == len(data)
    assert out.read_bytes() == data
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_discarded_or_failed_write_leaves_no_blob(blobs: BlobStore) -> None:
    blobs.discard(blobs.stage(KEY, io.BytesIO(_source())))
    assert not blobs.exists(KEY)

    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 1_000_000:
                raise OSError("the producer died")
            return super().read(size)

    with pytest.raises(OSError, match="producer died"):
        blobs.stage(KEY, Broken(_source()))
    assert not blobs.exists(KEY)
    assert [i.name for i in blobs.objects.list("") if not i.name.endswith(".tmp")] == []


def test_a_damaged_blob_fails_its_checksum_and_leaves_no_file(
    blobs: BlobStore, tmp_path: Path
) -> None:
    data = _source()
    staged = blobs.stage(KEY, io.BytesIO(data))
    info = blobs.commit(staged, {})
    _damage(blobs, KEY, info.blob_bytes // 2)
    out = tmp_path / "out"
    with pytest.raises(ChecksumMismatch, match="checksum mismatch") as raised:
        blobs.get_file(KEY, info.sha256, out)
    assert raised.value.permanent
    assert not out.exists()


def test_a_missing_blob_is_a_permanent_failure_naming_it(blobs: BlobStore) -> None:
    with pytest.raises(BlobMissing, match=KEY) as raised:
        blobs.read(KEY, "0" * 64, lambda stream: stream.read())
    assert raised.value.permanent
    with pytest.raises(BlobMissing, match=KEY):
        blobs.parts(KEY, "0" * 64)


def test_a_delete_removes_the_blob_and_its_manifest(blobs: BlobStore) -> None:
    blobs.commit(blobs.stage(KEY, io.BytesIO(b"data")), {})
    blobs.delete(KEY)
    assert not blobs.exists(KEY)
    assert blobs.objects.size(KEY + MANIFEST) is None
    blobs.delete(KEY)  # twice is fine


def test_framed_blobs_read_any_range_from_its_frame(blobs: BlobStore) -> None:
    data = _source(6_000_000)
    frames = [5000, 1_000_000, 3_000_000, len(data) - 100]
    info = blobs.commit(blobs.stage(KEY, io.BytesIO(data), frames=frames), {"details": {"a": 1}})
    parts = blobs.parts(KEY, info.sha256)
    assert parts is not None
    assert parts.details == {"a": 1}
    parts.verify()
    for start, end in [(0, 10), (4999, 5001), (999_999, 3_000_001), (len(data) - 150, len(data))]:
        out = io.BytesIO()
        parts.copy(start, end, out)
        assert out.getvalue() == data[start:end], (start, end)


def test_a_damaged_framed_blob_fails_verify_and_verified_keeps_no_copy(
    blobs: BlobStore, tmp_path: Path
) -> None:
    data = _source()
    info = blobs.commit(blobs.stage(KEY, io.BytesIO(data), frames=[1_000_000]), {})
    _damage(blobs, KEY, 10)
    parts = blobs.parts(KEY, info.sha256)
    assert parts is not None
    with pytest.raises(ChecksumMismatch):
        parts.verify()
    with pytest.raises(ChecksumMismatch):
        parts.verified(tmp_path / "copy")
    assert not [p for p in (tmp_path / "copy").rglob("*") if p.is_file()]


def test_verified_checks_the_whole_blob_once_and_reads_ranges_from_a_copy_if_remote(
    blobs: BlobStore, tmp_path: Path
) -> None:
    data = _source(6_000_000)
    frames = [5000, 1_000_000, 3_000_000, len(data) - 100]
    info = blobs.commit(blobs.stage(KEY, io.BytesIO(data), frames=frames), {})
    parts = blobs.parts(KEY, info.sha256)
    assert parts is not None
    copy = tmp_path / "copy"
    checked = parts.verified(copy)
    if isinstance(blobs.objects, LocalObjectStore):
        assert checked is parts  # its own files: nothing copied
        assert not copy.exists()
    else:
        assert isinstance(checked.objects, LocalObjectStore)
        assert [p.stat().st_mode & 0o777 for p in copy.rglob("*") if p.is_file()] == [0o600]
        blobs.objects.delete(KEY)  # from here on, the ranges come from the copy alone
    for start, end in [(0, 10), (999_999, 3_000_001), (len(data) - 150, len(data))]:
        out = io.BytesIO()
        checked.copy(start, end, out)
        assert out.getvalue() == data[start:end], (start, end)


def test_a_reader_that_stops_early_still_has_the_blob_checked(blobs: BlobStore) -> None:
    data = _source()
    info = blobs.commit(blobs.stage(KEY, io.BytesIO(data)), {})
    _damage(blobs, KEY, info.blob_bytes - 5)  # past what the consumer reads

    def first_bytes(stream: IO[bytes]) -> None:
        stream.read(100)

    with pytest.raises(ChecksumMismatch):
        blobs.read(KEY, info.sha256, first_bytes)
