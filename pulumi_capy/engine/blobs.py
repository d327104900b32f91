"""Backup objects: one zstd-compressed blob per backup key, with a SHA-256 and a manifest.

A write streams the source through the compressor and the hasher into
``<key>.tmp``, fsyncs it, renames it into place and fsyncs the directory, so a
crash leaves either no blob or a whole one. A source may ask for frames to begin
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
import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import zstandard

from pulumi_capy.api.errors import CapyError, EngineFailure
from pulumi_capy.engine.private import open_private, private_directory

__all__ = [
    "BlobInfo",
    "BlobParts",
    "ChecksumMismatch",
    "LocalBlobStore",
    "StagedBlob",
    "fsync_directory",
]

CHUNK = 1 << 20
ZSTD_LEVEL = 1  # when the caller names no level; each driver names its own (zstd_level)


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
    """A blob written and fsynced under its ``.tmp`` name, not yet in place."""

    info: BlobInfo
    scratch: Path
    level: int
    # [offset in the source, offset in the blob] of every frame, when asked for
    frames: list[list[int]] | None = None


@dataclass(frozen=True)
class BlobParts:
    """A blob written in frames, read a range at a time (``copy``), any number at once.

    ``verify`` checks the whole blob against its checksum; the caller does so before
    it uses any range. ``details`` are the manifest's (what the dump reported).
    """

    key: str
    path: Path
    sha256: str
    frames: list[tuple[int, int]]
    details: dict[str, Any]

    def verify(self) -> None:
        digest = hashlib.sha256()
        with self.path.open("rb") as raw:
            for chunk in iter(lambda: raw.read(CHUNK), b""):
                digest.update(chunk)
        _check_digest(self.key, self.sha256, digest.hexdigest())

    def copy(self, start: int, end: int, out: IO[bytes]) -> None:
        """Bytes ``start`` to ``end`` of the source, decompressed from the frame that
        holds ``start`` on, into ``out``."""
        index = bisect.bisect_right(self.frames, start, key=lambda frame: frame[0]) - 1
        source, offset = self.frames[max(index, 0)]
        with self.path.open("rb") as raw:
            raw.seek(offset)
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


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """A file-like sink that hashes and counts what passes through it."""

    def __init__(self, target: BinaryIO) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
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


def _safe_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise CapyError(f"invalid backup key {key!r}")
    return key


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


class LocalBlobStore:
    """Blobs in a local directory (``<engine dir>/blobs``)."""

    def __init__(self, root: Path, *, level: int = ZSTD_LEVEL, threads: int = 2) -> None:
        self.root = root
        self.level = level
        self.threads = threads

    def path(self, key: str) -> Path:
        return self.root / _safe_key(key)

    def manifest_path(self, key: str) -> Path:
        return self.path(key).with_name(self.path(key).name + ".manifest.json")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

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
        """Compress and hash ``reader`` (to its end) into ``<key>.tmp``, fsynced; nothing is
        a blob until :meth:`commit` (a producer that fails after its stream ended, such as
        pg_dump exiting non-zero, is :meth:`discard`-ed). A new frame begins at each of
        ``frames`` (offsets in the source), recorded in the manifest for ``parts``."""
        target = self.path(key)
        private_directory(target.parent)
        scratch = target.with_name(target.name + ".tmp")
        level = self.level if level is None else level
        compressor = zstandard.ZstdCompressor(level=level, threads=self.threads)
        index: list[list[int]] | None = None
        if counted is not None:
            reader = cast(IO[bytes], _CountingReader(reader, counted))
        try:
            with open_private(scratch, "wb") as raw:
                sink = _HashingWriter(cast(BinaryIO, raw))
                if frames:
                    source_bytes, index = _compress_in_frames(compressor, reader, sink, frames)
                else:
                    source_bytes, _ = compressor.copy_stream(
                        reader, cast(IO[bytes], sink), read_size=CHUNK, write_size=CHUNK
                    )
                raw.flush()
                os.fsync(raw.fileno())
        except BaseException:
            scratch.unlink(missing_ok=True)
            raise
        info = BlobInfo(key, sink.digest.hexdigest(), sink.count, int(source_bytes))
        return StagedBlob(info, scratch, level, index)

    def commit(self, staged: StagedBlob, manifest: dict[str, Any]) -> BlobInfo:
        """Write the manifest of a staged blob and move it into place."""
        info = staged.info
        try:
            frames = {} if staged.frames is None else {"frames": staged.frames}
            self._write_manifest(
                info.key,
                {
                    **manifest,
                    **asdict(info),
                    "compression": "zstd",
                    "zstd_level": staged.level,
                    **frames,
                },
            )
            target = self.path(info.key)
            staged.scratch.replace(target)
            fsync_directory(target.parent)
        except BaseException:
            self.discard(staged)
            raise
        return info

    def discard(self, staged: StagedBlob) -> None:
        staged.scratch.unlink(missing_ok=True)

    def _write_manifest(self, key: str, manifest: dict[str, Any]) -> None:
        path = self.manifest_path(key)
        scratch = path.with_name(path.name + ".tmp")
        with open_private(scratch, "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2, sort_keys=True, default=str)
            handle.flush()
            os.fsync(handle.fileno())
        scratch.replace(path)

    def read_manifest(self, key: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.manifest_path(key).read_text(encoding="utf-8"))
        return data

    def parts(self, key: str, expected_sha256: str) -> BlobParts | None:
        """Blob ``key`` for reading by ranges, if it was written in frames (else None)."""
        path = self.path(key)
        if not path.is_file():
            raise BlobMissing(f"blob {key} is missing from {self.root}")
        manifest = self.read_manifest(key)
        frames = manifest.get("frames")
        if not frames:
            return None
        return BlobParts(
            key,
            path,
            expected_sha256,
            [(int(source), int(offset)) for source, offset in frames],
            dict(manifest.get("details") or {}),
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
        path = self.path(key)
        if not path.is_file():
            raise BlobMissing(f"blob {key} is missing from {self.root}")
        decompressor = zstandard.ZstdDecompressor()
        with path.open("rb") as raw:
            source = _HashingReader(raw)
            try:
                with decompressor.stream_reader(
                    cast(IO[bytes], source), read_size=CHUNK, read_across_frames=True, closefd=False
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
        for path in (self.path(key), self.manifest_path(key)):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            fsync_directory(self.path(key).parent)
