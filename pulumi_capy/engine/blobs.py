"""Backup objects: one zstd-compressed blob per backup key, with a SHA-256 and a manifest.

Blobs live in an object store (``objects``: a local directory, or an S3-compatible
bucket). A write streams the source through the compressor and the hasher into an
upload that becomes visible whole or not at all (a ``.tmp`` file renamed into place,
or a multipart upload completed): a crash leaves either no blob or a whole one. The
manifest (``<key>.manifest.json``) is written before the blob is committed, so a blob
that exists always has its manifest.

With blob keys (``CAPY_BLOB_KEY``/``CAPY_BLOB_KEY_FILE``, ``blob_keys``) the
compressed stream is encrypted (``blob_crypto``: AES-256-GCM in segments) before it
leaves the worker, and the manifest too; the SHA-256 is of the bytes as stored.
Frames are then offsets in the compressed stream, read through the cipher's ranged
reader. A reader tells an encrypted blob (or manifest) by its first bytes, so blobs
written before a key was set stay readable. A source may ask for frames to begin
at given offsets (``frames``): the manifest then records where each begins in
the blob, and ``parts`` reads any range of the blob on its own, in parallel with
others, once its checksum was checked. A read streams the blob back
through the hasher and the decompressor to a consumer (or into a file) and raises
``ChecksumMismatch`` (a permanent failure) if the bytes are not the ones
recorded: the caller writes into scratch space and only uses it after the read
returned, so a bad blob touches no target.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import zstandard

from pulumi_capy.api.errors import ConfigError, EngineFailure
from pulumi_capy.engine.blob_crypto import (
    MAGIC,
    DecryptingReader,
    EncryptingWriter,
    RangedReader,
    decrypt_bytes,
    encrypt_bytes,
    is_encrypted,
)
from pulumi_capy.engine.blob_keys import BlobKeyRing, load_blob_keys
from pulumi_capy.engine.objects import (
    LocalObjectStore,
    ObjectMissing,
    ObjectStore,
    ObjectUpload,
    check_name,
    fsync_directory,
)
from pulumi_capy.engine.private import open_private, private_directory

__all__ = [
    "MANIFEST",
    "BlobInfo",
    "BlobMissing",
    "BlobParts",
    "BlobStore",
    "ChecksumMismatch",
    "LocalBlobStore",
    "StagedBlob",
    "fsync_directory",
    "open_blob_store",
]

CHUNK = 1 << 20
ZSTD_LEVEL = 1  # when the caller names no level; each driver names its own (zstd_level)
MANIFEST = ".manifest.json"  # the manifest of blob K is the object K + MANIFEST


class ChecksumMismatch(EngineFailure):
    """The blob's bytes differ from the checksum recorded when it was written."""


class BlobMissing(EngineFailure):
    """The blob of a backup is gone."""


@dataclass(frozen=True)
class BlobInfo:
    key: str
    sha256: str
    blob_bytes: int
    source_bytes: int


@dataclass(frozen=True)
class StagedBlob:
    """A blob written whole into an upload that is not yet committed (invisible)."""

    info: BlobInfo
    upload: ObjectUpload
    level: int
    # [offset in the source, offset in the blob] of every frame, when asked for (in the
    # compressed stream: the blob's own offsets unless it is encrypted)
    frames: list[list[int]] | None = None
    encryption: dict[str, Any] | None = None  # for the manifest, when encrypted


@dataclass(frozen=True)
class BlobParts:
    """A blob written in frames, read a range at a time (``copy``), any number at once.

    ``verify`` checks the whole blob against its checksum; the caller does so before
    it uses any range. ``details`` are the manifest's (what the dump reported).
    """

    key: str
    objects: ObjectStore
    sha256: str
    frames: list[tuple[int, int]]
    details: dict[str, Any]
    keys: BlobKeyRing | None = None
    stored_bytes: int | None = None  # set when the blob is encrypted

    def verify(self, sink: Callable[[bytes], object] | None = None) -> None:
        """Check the whole blob against its checksum (each chunk read also to ``sink``)."""
        digest = hashlib.sha256()
        with _open(self.objects, self.key) as raw:
            for chunk in iter(lambda: raw.read(CHUNK), b""):
                digest.update(chunk)
                if sink is not None:
                    sink(chunk)
        _check_digest(self.key, self.sha256, digest.hexdigest())

    def verified(self, scratch: Path) -> BlobParts:
        """``verify``, and the parts to read the ranges from: these, when the blob is in
        local files; else the copy the check downloaded into ``scratch`` (a private
        directory of the caller's, thrown away with it: not fsynced), so that an object
        store is read once, not once to check and again by ranges."""
        if isinstance(self.objects, LocalObjectStore):
            self.verify()
            return self
        local = LocalObjectStore(scratch)
        target = local.path(self.key)
        private_directory(target.parent)
        try:
            with open_private(target) as copy:
                self.verify(copy.write)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return dataclasses.replace(self, objects=local)

    def copy(self, start: int, end: int, out: IO[bytes]) -> None:
        """Bytes ``start`` to ``end`` of the source, decompressed from the frame that
        holds ``start`` on, into ``out`` (only the frames that hold the range are read)."""
        index = bisect.bisect_right(self.frames, start, key=lambda frame: frame[0]) - 1
        source, offset = self.frames[max(index, 0)]
        after = bisect.bisect_left(self.frames, end, key=lambda frame: frame[0])
        stop = self.frames[after][1] if after < len(self.frames) else None
        with self._compressed(offset, stop) as raw:
            reader = zstandard.ZstdDecompressor().stream_reader(
                raw, read_size=CHUNK, read_across_frames=True, closefd=False
            )
            with reader:
                for position, stop, sink in ((source, start, None), (start, end, out)):
                    while position < stop:
                        data = reader.read(min(CHUNK, stop - position))
                        if not data:
                            raise ChecksumMismatch(
                                f"blob {self.key} ends before byte {stop} of its source"
                            )
                        position += len(data)
                        if sink is not None:
                            sink.write(data)

    def _compressed(self, start: int, end: int | None) -> BinaryIO:
        """The compressed stream from ``start`` to ``end``: the blob's own bytes, or
        through the cipher's ranged reader (fetching only the segments under the range)."""
        if self.stored_bytes is None:
            return _open(self.objects, self.key, start, end)

        def fetch(first: int, stop: int) -> bytes:
            with _open(self.objects, self.key, first, stop) as stream:
                return stream.read()

        ranged = RangedReader(self.keys, fetch, self.stored_bytes)
        return cast(BinaryIO, _Stream(ranged.open(start, end)))


def _open(objects: ObjectStore, key: str, start: int = 0, end: int | None = None) -> BinaryIO:
    try:
        return objects.open(key, start, end)
    except ObjectMissing:
        raise BlobMissing(f"blob {key} is missing from {objects.describe()}") from None


class _Stream:
    """A readable (``read``) as a stream to close and use in ``with``."""

    def __init__(self, reader: Any, close: Callable[[], object] | None = None) -> None:
        self.reader = reader
        self._close = close

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.reader.read(size)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if self._close is not None:
            self._close()

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Prefixed:
    """``head`` (bytes already read from ``rest``), then the rest of ``rest``."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head = head
        self.rest = rest

    def read(self, size: int = -1) -> bytes:
        if not self.head:
            data: bytes = self.rest.read(size)
            return data
        if size < 0:
            data, self.head = self.head + self.rest.read(), b""
            return data
        data, self.head = self.head[:size], self.head[size:]
        return data


class _HashingReader:
    """A file-like source that hashes what is read from it."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        return data


class _CountingReader:
    """A stream that tells ``counted`` how many bytes each read gave (for progress)."""

    def __init__(self, source: IO[bytes], counted: Callable[[int], None]) -> None:
        self.source = source
        self.counted = counted

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        if data:
            self.counted(len(data))
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)


Counted = Callable[[int], None] | None


class _HashingWriter:
    """A file-like sink that hashes (unless ``hashing`` is off) and counts what passes."""

    def __init__(self, target: BinaryIO, *, hashing: bool = True) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.hashing = hashing
        self.count = 0

    def write(self, data: bytes) -> int:
        if self.hashing:
            self.digest.update(data)
        self.count += len(data)
        return self.target.write(data)


def _compress_in_frames(
    compressor: zstandard.ZstdCompressor,
    reader: IO[bytes],
    sink: _HashingWriter,
    frames: Sequence[int],
) -> tuple[int, list[list[int]]]:
    """``reader`` through ``compressor`` into ``sink``, a frame ending before each offset
    of ``frames``; returns the source's size and [source offset, blob offset] of every
    frame."""
    index = [[0, 0]]
    position = 0
    writer = compressor.stream_writer(cast(IO[bytes], sink), closefd=False)
    for boundary in [*sorted({offset for offset in frames if offset > 0}), None]:
        while boundary is None or position < boundary:
            data = reader.read(CHUNK if boundary is None else min(CHUNK, boundary - position))
            if not data:
                break
            writer.write(data)
            position += len(data)
        writer.flush(zstandard.FLUSH_FRAME)
        if boundary is None or position < boundary:
            break  # the source ended
        index.append([position, sink.count])
    return position, index


def _drain(reader: _HashingReader | IO[bytes]) -> None:
    """Read ``reader`` to its end (through whatever hashes it)."""
    for _ in iter(lambda: reader.read(CHUNK), b""):
        pass


def _check_digest(key: str, expected: str, actual: str) -> None:
    if actual != expected:
        raise ChecksumMismatch(
            f"blob {key}: checksum mismatch (recorded sha256 {expected[:16]}…, read "
            f"{actual[:16]}…); the backup is damaged and was not used"
        )


class BlobStore:
    """Blobs in an object store: a local directory or an S3-compatible bucket."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        level: int = ZSTD_LEVEL,
        threads: int = 2,
        keys: BlobKeyRing | None = None,
    ) -> None:
        self.objects = objects
        self.level = level
        self.threads = threads
        self.keys = keys  # encrypt new blobs with keys.current; read with any of them

    def describe(self) -> str:
        return self.objects.describe()

    def exists(self, key: str) -> bool:
        return self.objects.size(check_name(key)) is not None

    def put_file(
        self,
        key: str,
        source: Path,
        manifest: dict[str, Any],
        *,
        level: int | None = None,
        counted: Counted = None,
    ) -> BlobInfo:
        """Compress ``source`` into the blob ``key``; write its manifest beside it.
        ``counted`` is told the bytes of ``source`` as they are read."""
        with source.open("rb") as reader:
            staged = self.stage(key, reader, level=level, counted=counted)
        return self.commit(staged, manifest)

    def stage(
        self,
        key: str,
        reader: IO[bytes],
        *,
        level: int | None = None,
        frames: Sequence[int] = (),
        counted: Counted = None,
    ) -> StagedBlob:
        """Compress and hash ``reader`` (to its end) into an upload of ``key``; nothing is
        a blob until :meth:`commit` (a producer that fails after its stream ended, such as
        pg_dump exiting non-zero, is :meth:`discard`-ed). A new frame begins at each of
        ``frames`` (offsets in the source), recorded in the manifest for ``parts``."""
        upload = self.objects.begin(check_name(key))
        level = self.level if level is None else level
        compressor = zstandard.ZstdCompressor(level=level, threads=self.threads)
        index: list[list[int]] | None = None
        if counted is not None:
            reader = cast(IO[bytes], _CountingReader(reader, counted))
        try:
            stored = _HashingWriter(cast(BinaryIO, upload))  # the checksum: bytes as stored
            cipher = None if self.keys is None else EncryptingWriter(self.keys, stored)
            # the compressed stream, counted for the frames' offsets
            sink = (
                stored if cipher is None else _HashingWriter(cast(BinaryIO, cipher), hashing=False)
            )
            if frames:
                source_bytes, index = _compress_in_frames(compressor, reader, sink, frames)
            else:
                source_bytes, _ = compressor.copy_stream(
                    reader, cast(IO[bytes], sink), read_size=CHUNK, write_size=CHUNK
                )
            if cipher is not None:
                cipher.finish()
        except BaseException:
            upload.abort()
            raise
        info = BlobInfo(key, stored.digest.hexdigest(), stored.count, int(source_bytes))
        encryption = None
        if cipher is not None:
            encryption = {
                "cipher": "aes-256-gcm",
                "key_id": cipher.key_id,
                "compressed_bytes": sink.count,
            }
        return StagedBlob(info, upload, level, index, encryption)

    def commit(self, staged: StagedBlob, manifest: dict[str, Any]) -> BlobInfo:
        """Write the manifest of a staged blob, then make the blob visible."""
        info = staged.info
        try:
            frames = {} if staged.frames is None else {"frames": staged.frames}
            encryption = {} if staged.encryption is None else {"encryption": staged.encryption}
            self._write_manifest(
                info.key,
                {
                    **manifest,
                    **asdict(info),
                    "compression": "zstd",
                    "zstd_level": staged.level,
                    **frames,
                    **encryption,
                },
            )
            staged.upload.commit()
        except BaseException:
            self.discard(staged)
            raise
        return info

    def discard(self, staged: StagedBlob) -> None:
        staged.upload.abort()

    def _write_manifest(self, key: str, manifest: dict[str, Any]) -> None:
        data = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        if self.keys is not None:  # it names tables and sizes: encrypted like the blob
            data = encrypt_bytes(self.keys, data)
        self.objects.put_bytes(check_name(key) + MANIFEST, data)

    def read_manifest(self, key: str) -> dict[str, Any]:
        try:
            raw = self.objects.get_bytes(check_name(key) + MANIFEST)
        except ObjectMissing:
            raise BlobMissing(
                f"the manifest of blob {key} is missing from {self.describe()}"
            ) from None
        if is_encrypted(raw[: len(MAGIC)]):
            raw = decrypt_bytes(self.keys, raw)
        data: dict[str, Any] = json.loads(raw)
        return data

    def parts(self, key: str, expected_sha256: str) -> BlobParts | None:
        """Blob ``key`` for reading by ranges, if it was written in frames (else None)."""
        if not self.exists(key):
            raise BlobMissing(f"blob {key} is missing from {self.describe()}")
        manifest = self.read_manifest(key)
        frames = manifest.get("frames")
        if not frames:
            return None
        encrypted = manifest.get("encryption") is not None
        return BlobParts(
            key,
            self.objects,
            expected_sha256,
            [(int(source), int(offset)) for source, offset in frames],
            dict(manifest.get("details") or {}),
            self.keys,
            int(manifest["blob_bytes"]) if encrypted else None,
        )

    def read(
        self,
        key: str,
        expected_sha256: str,
        consume: Callable[[IO[bytes]], object],
        *,
        counted: Counted = None,
    ) -> None:
        """Hand blob ``key``, decompressed, to ``consume`` as a stream; then check it.

        The checksum covers the whole blob, so it is judged once ``consume`` returned
        (what it did not read is read here): whatever ``consume`` wrote must stay
        scratch until this returns. A damaged blob raises ``ChecksumMismatch``, also
        when the damage made ``consume`` (or the decompressor) fail first.
        """
        decompressor = zstandard.ZstdDecompressor()
        with _open(self.objects, check_name(key)) as raw:
            source = _HashingReader(raw)
            try:
                head = source.read(len(MAGIC))
                compressed: Any = _Prefixed(head, source)
                if is_encrypted(head):
                    compressed = DecryptingReader(self.keys, compressed)
                with decompressor.stream_reader(
                    compressed, read_size=CHUNK, read_across_frames=True, closefd=False
                ) as stream:
                    given = stream if counted is None else _CountingReader(stream, counted)
                    consume(cast(IO[bytes], given))
                    _drain(cast(IO[bytes], given))  # counted too: the whole dump was read
            except Exception as exc:
                # damage can break the frame (or what it holds) before the end: hash the
                # rest, then judge
                _drain(source)
                _check_digest(key, expected_sha256, source.digest.hexdigest())
                if isinstance(exc, zstandard.ZstdError):
                    raise ChecksumMismatch(
                        f"blob {key}: matches its checksum but cannot be decompressed ({exc})"
                    ) from exc
                raise
            _drain(source)
            _check_digest(key, expected_sha256, source.digest.hexdigest())

    def get_file(
        self,
        key: str,
        expected_sha256: str,
        destination: Path,
        *,
        durable: bool = True,
        counted: Counted = None,
    ) -> int:
        """Decompress blob ``key`` into ``destination`` (created), checking its checksum.

        On a mismatch the partly written destination is removed and
        ``ChecksumMismatch`` is raised. Returns the decompressed size. ``durable=False``
        skips the fsync, for a file that is read once and deleted (a crash loses only
        a scratch file its job's next attempt writes again).
        """

        def write(stream: IO[bytes]) -> None:
            with open_private(destination, "wb") as out:
                for chunk in iter(lambda: stream.read(CHUNK), b""):
                    out.write(chunk)
                out.flush()
                if durable:
                    os.fsync(out.fileno())

        try:
            self.read(key, expected_sha256, write, counted=counted)
        except BaseException:
            destination.unlink(missing_ok=True)
            raise
        return destination.stat().st_size

    def delete(self, key: str) -> None:
        """Remove the blob, then its manifest (a blob never outlives its manifest)."""
        self.objects.delete(check_name(key))
        self.objects.delete(key + MANIFEST)


class LocalBlobStore(BlobStore):
    """Blobs in a local directory (``<engine dir>/blobs``)."""

    def __init__(
        self,
        root: Path,
        *,
        level: int = ZSTD_LEVEL,
        threads: int = 2,
        keys: BlobKeyRing | None = None,
    ) -> None:
        self.local = LocalObjectStore(root)
        super().__init__(self.local, level=level, threads=threads, keys=keys)
        self.root = root

    def path(self, key: str) -> Path:
        return self.local.path(key)

    def manifest_path(self, key: str) -> Path:
        return self.local.path(key + MANIFEST)


def open_blob_store(directory: Path, environ: Mapping[str, str] | None = None) -> BlobStore:
    """The blob store ``CAPY_BLOB_URL`` names: ``s3://bucket/prefix`` (S3-compatible
    storage, the AWS variables saying where and as whom), or when unset the
    ``blobs/`` directory of the engine directory ``directory``; encrypting with the
    keys of ``CAPY_BLOB_KEY``/``CAPY_BLOB_KEY_FILE`` when one is set."""
    environ = os.environ if environ is None else environ
    keys = load_blob_keys(environ)
    url = environ.get("CAPY_BLOB_URL", "").strip()
    if not url:
        return LocalBlobStore(directory / "blobs", keys=keys)
    if url.startswith("s3://"):
        from pulumi_capy.engine.objects_s3 import S3ObjectStore

        return BlobStore(S3ObjectStore.from_url(url, environ), keys=keys)
    raise ConfigError(
        "CAPY_BLOB_URL must be s3://bucket/prefix (S3-compatible storage), or unset for the "
        f"engine directory's blobs/; got a {url.split(':', 1)[0]!r} URL"
    )
