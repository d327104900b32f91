"""Where blob bytes live: the object-store contract and its local-directory implementation.

A blob store (``blobs.BlobStore``) keeps compressed, checksummed backups; it keeps
them *in* an object store, the small contract below that both a directory on this
host and an S3-compatible bucket (``objects_s3``) keep:

- an object becomes visible whole or not at all: :meth:`ObjectStore.begin` returns an
  upload the writer streams into (no whole-object temporary copy is required) and
  either :meth:`ObjectUpload.commit` makes visible under its name, durable, or
  :meth:`ObjectUpload.abort` drops; a reader never sees a partial object;
- a read streams an object, or any byte range of it (for framed restores);
- a listing under a prefix gives names, sizes and modification times (for gc);
- a delete of what is not there is not an error.

Names are ``/``-separated relative paths (``projects/prj_1/backups/bk_1``); the
contract refuses absolute names and ``.``/``..`` parts whatever the backend.

The local store writes ``<name>.<random>.tmp`` (0600, in 0700 directories), fsyncs it,
renames it into place and fsyncs the directory: a crash leaves a whole object or a
``.tmp`` file that gc removes once old.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

from pulumi_capy.api.errors import CapyError, EngineFailure
from pulumi_capy.engine.private import open_private, private_directory

__all__ = [
    "LocalObjectStore",
    "ObjectInfo",
    "ObjectMissing",
    "ObjectStore",
    "ObjectUpload",
    "check_name",
    "fsync_directory",
]

TMP = ".tmp"


class ObjectMissing(EngineFailure):
    """The object is not in the store (deleted, or never committed)."""


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    modified: float  # seconds since the epoch (an upload: when it began)
    upload: str = ""  # an unfinished upload: how its store finds it again (else empty)


class ObjectUpload(Protocol):
    """An object being written: invisible until :meth:`commit`."""

    def write(self, data: bytes) -> int: ...

    def commit(self) -> None:
        """Make the object visible under its name, whole and durable (replacing one
        that was there)."""
        ...

    def abort(self) -> None:
        """Drop what was written; nothing becomes visible. Safe to call twice, and after
        a failed :meth:`commit`."""
        ...


class ObjectStore(Protocol):
    def describe(self) -> str:
        """Where the objects are, for messages (never a secret)."""
        ...

    def begin(self, name: str) -> ObjectUpload: ...

    def put_bytes(self, name: str, data: bytes) -> None:
        """A small object, written whole (atomic like any upload)."""
        ...

    def get_bytes(self, name: str) -> bytes:
        """A small object's bytes; :class:`ObjectMissing` when it is not there."""
        ...

    def open(self, name: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """A stream of bytes ``start`` to ``end`` (exclusive; None: the end) of the object,
        to be closed by the caller; :class:`ObjectMissing` when it is not there."""
        ...

    def size(self, name: str) -> int | None:
        """The object's size, or None when it is not there."""
        ...

    def delete(self, name: str) -> None: ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose name starts with ``prefix``, in name order (committed
        objects only)."""
        ...

    def unfinished(self, prefix: str) -> Iterator[ObjectInfo]:
        """Uploads under ``prefix`` begun and neither committed nor aborted (a writer
        that was killed; or one still writing), for gc: each ``upload`` set."""
        ...

    def drop_unfinished(self, info: ObjectInfo) -> None:
        """Abort an upload :meth:`unfinished` gave (gone already is fine)."""
        ...


def check_name(name: str) -> str:
    """``name`` if it is a relative ``/``-separated name without ``.``/``..``/empty parts."""
    parts = name.split("/")
    if not name or name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise CapyError(f"invalid backup key {name!r}")
    return name


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalUpload:
    def __init__(self, target: Path) -> None:
        self.target = target
        private_directory(target.parent)
        self.scratch = target.with_name(f"{target.name}.{secrets.token_hex(4)}{TMP}")
        self.handle: IO[bytes] | None = open_private(self.scratch, "wb")

    def write(self, data: bytes) -> int:
        if self.handle is None:
            raise CapyError(f"object {self.target.name}: written after commit or abort")
        return self.handle.write(data)

    def commit(self) -> None:
        handle = self.handle
        if handle is None:
            raise CapyError(f"object {self.target.name}: committed after commit or abort")
        try:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            self.handle = None
            self.scratch.replace(self.target)
            fsync_directory(self.target.parent)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
            self.handle = None
        self.scratch.unlink(missing_ok=True)


class _RangeReader:
    """A file read from ``start`` up to ``end`` only."""

    def __init__(self, handle: BinaryIO, remaining: int | None) -> None:
        self.handle = handle
        self.remaining = remaining

    def read(self, size: int = -1) -> bytes:
        if self.remaining is None:
            return self.handle.read(size)
        if size < 0 or size > self.remaining:
            size = self.remaining
        data = self.handle.read(size)
        self.remaining -= len(data)
        return data

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> _RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalObjectStore:
    """Objects as files under ``root`` (files 0600, directories 0700)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        return str(self.root)

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def begin(self, name: str) -> ObjectUpload:
        return _LocalUpload(self.path(name))

    def put_bytes(self, name: str, data: bytes) -> None:
        upload = self.begin(name)
        try:
            upload.write(data)
        except BaseException:
            upload.abort()
            raise
        upload.commit()

    def get_bytes(self, name: str) -> bytes:
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"{name} is missing from {self.root}") from None

    def open(self, name: str, start: int = 0, end: int | None = None) -> BinaryIO:
        try:
            handle = self.path(name).open("rb")
        except FileNotFoundError:
            raise ObjectMissing(f"{name} is missing from {self.root}") from None
        if start:
            handle.seek(start)
        if end is None:
            return handle
        return cast(BinaryIO, _RangeReader(handle, max(end - start, 0)))

    def size(self, name: str) -> int | None:
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return None

    def delete(self, name: str) -> None:
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        with contextlib.suppress(OSError):
            fsync_directory(path.parent)

    def _files(self, prefix: str) -> list[ObjectInfo]:
        # the deepest directory the prefix names whole, then a filter on the rest
        folder = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not folder.is_dir():
            return []
        found: list[ObjectInfo] = []
        for path in folder.rglob("*"):
            name = path.relative_to(self.root).as_posix()
            if not name.startswith(prefix):
                continue
            try:
                stat = path.lstat()
            except FileNotFoundError:  # removed while we looked
                continue
            if path.is_file() and not path.is_symlink():
                found.append(ObjectInfo(name, stat.st_size, stat.st_mtime))
        return sorted(found, key=lambda info: info.name)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        yield from (info for info in self._files(prefix) if not info.name.endswith(TMP))

    def unfinished(self, prefix: str) -> Iterator[ObjectInfo]:
        for info in self._files(prefix):
            if info.name.endswith(TMP):  # <name>.<random>.tmp
                name = info.name[: -len(TMP)].rpartition(".")[0]
                yield ObjectInfo(name, info.size, info.modified, upload=info.name)

    def drop_unfinished(self, info: ObjectInfo) -> None:
        if not info.upload.endswith(TMP):
            raise CapyError(f"{info.upload!r} is not an upload of {self.root}")
        self.delete(info.upload)
