"""Blobs encrypted at rest, on every backend: what leaves the worker is ciphertext, a
missing or wrong key fails permanently and writes nothing, rotation reads old blobs."""

from __future__ import annotations

import io
import json
import secrets
from pathlib import Path
from typing import BinaryIO
from unittest.mock import patch

import pytest

from pulumi_capy.engine.blob_crypto import MAGIC, BlobKeyMissing
from pulumi_capy.engine.blob_keys import BlobKey, BlobKeyRing
from pulumi_capy.engine.blobs import MANIFEST, BlobStore
from pulumi_capy.engine.objects import ObjectStore

KEY = "projects/prj_1/backups/bk_1"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
TEXT = b"".join(b"row %d\tcustomer-%d\tsecret-marker\n" % (n, n % 97) for n in range(20_000))
SOURCE = b"".join(TEXT + secrets.token_bytes(400_000) for _ in range(8))  # ~4 MB stored


def _key() -> BlobKey:
    return BlobKey(secrets.token_bytes(32))


def _write(blobs: BlobStore, key: str = KEY, frames: tuple[int, ...] = ()) -> str:
    staged = blobs.stage(key, io.BytesIO(SOURCE), frames=frames)
    return blobs.commit(staged, {"details": {"tables": ["customers"]}}).sha256


def _read(blobs: BlobStore, sha256: str, key: str = KEY) -> bytes:
    got: list[bytes] = []
    blobs.read(key, sha256, lambda stream: got.append(stream.read()))
    return got[0]


def test_what_is_stored_is_ciphertext_blob_and_manifest(objects: ObjectStore) -> None:
    key = _key()
    blobs = BlobStore(objects, keys=BlobKeyRing([key]))
    sha = _write(blobs)
    stored = objects.get_bytes(KEY)
    assert stored.startswith(MAGIC)
    assert ZSTD_MAGIC not in stored[:64]
    assert b"secret-marker" not in stored
    manifest = objects.get_bytes(KEY + MANIFEST)
    assert manifest.startswith(MAGIC)
    assert b"customers" not in manifest
    assert b"sha256" not in manifest
    read = blobs.read_manifest(KEY)
    assert read["encryption"]["key_id"] == key.key_id_hex
    assert read["details"] == {"tables": ["customers"]}
    assert _read(blobs, sha) == SOURCE


@pytest.mark.parametrize("reader_keys", ["none", "another"])
def test_no_key_or_another_key_fails_permanently_and_writes_nothing(
    objects: ObjectStore, tmp_path: Path, reader_keys: str
) -> None:
    sha = _write(BlobStore(objects, keys=BlobKeyRing([_key()])))
    ring = None if reader_keys == "none" else BlobKeyRing([_key()])
    reader = BlobStore(objects, keys=ring)
    out = tmp_path / "restored"
    with pytest.raises(BlobKeyMissing) as raised:
        reader.get_file(KEY, sha, out)
    assert raised.value.permanent
    assert "CAPY_BLOB_KEY" in str(raised.value)
    assert not out.exists()
    with pytest.raises(BlobKeyMissing):
        reader.read_manifest(KEY)


def test_rotation_writes_with_the_new_key_and_reads_the_old(objects: ObjectStore) -> None:
    old, new = _key(), _key()
    old_sha = _write(BlobStore(objects, keys=BlobKeyRing([old])), "projects/p/backups/old")
    rotated = BlobStore(objects, keys=BlobKeyRing([new, old]))
    new_sha = _write(rotated, "projects/p/backups/new")
    assert rotated.read_manifest("projects/p/backups/new")["encryption"]["key_id"] == (
        new.key_id_hex
    )
    assert _read(rotated, old_sha, "projects/p/backups/old") == SOURCE
    assert _read(rotated, new_sha, "projects/p/backups/new") == SOURCE
    dropped = BlobStore(objects, keys=BlobKeyRing([new]))  # the old key no longer listed
    assert _read(dropped, new_sha, "projects/p/backups/new") == SOURCE
    with pytest.raises(BlobKeyMissing, match=old.key_id_hex):
        _read(dropped, old_sha, "projects/p/backups/old")


def test_blobs_written_in_the_clear_stay_readable_once_a_key_is_set(
    objects: ObjectStore,
) -> None:
    sha = _write(BlobStore(objects))
    assert objects.get_bytes(KEY).startswith(ZSTD_MAGIC)
    keyed = BlobStore(objects, keys=BlobKeyRing([_key()]))
    assert _read(keyed, sha) == SOURCE
    assert "encryption" not in keyed.read_manifest(KEY)


def test_ranges_of_an_encrypted_framed_blob_fetch_only_their_segments(
    objects: ObjectStore,
) -> None:
    blobs = BlobStore(objects, keys=BlobKeyRing([_key()]))
    frames = (1000, *(len(SOURCE) * n // 8 for n in range(1, 8)), len(SOURCE) - 10)
    sha = _write(blobs, frames=frames)
    parts = blobs.parts(KEY, sha)
    assert parts is not None
    parts.verify()
    stored = objects.size(KEY)
    assert stored is not None
    opened: list[tuple[int, int | None]] = []
    real_open = objects.open

    def spy(name: str, start: int = 0, end: int | None = None) -> BinaryIO:
        opened.append((start, end))
        return real_open(name, start, end)

    for start, end in [(0, 5), (999, 1001), (len(SOURCE) // 2 - 3, len(SOURCE) // 2 + 3)]:
        opened.clear()
        out = io.BytesIO()
        with patch.object(objects, "open", spy):
            parts.copy(start, end, out)
        assert out.getvalue() == SOURCE[start:end]
        fetched = sum((stop or stored) - first for first, stop in opened)
        assert 0 < fetched < stored // 3, (start, end, opened)
    manifest = blobs.read_manifest(KEY)
    assert json.dumps(manifest)  # frames are offsets in the compressed stream
    assert manifest["frames"][-1][1] < manifest["encryption"]["compressed_bytes"]
