"""A directory of flat files as one tar stream, and back.

PostgreSQL's fastest archive to restore is pg_dump's directory format (one file
per table: parallel pg_restore reads each table's data straight from its own
file). The engine keeps a backup as one blob, so the directory goes into the blob
as a tar stream (plain ustar, no compression: the blob store compresses) and
comes back out of it the same way. Only what pg_dump writes is accepted back:
regular files with plain names in one directory, so a damaged or hostile blob
cannot write anywhere else.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from pulumi_capy.api.errors import CapyError
from pulumi_capy.engine.private import open_private

__all__ = ["BLOCK", "Split", "TarDamaged", "TarReader", "is_tar", "plain_name", "unpack"]

BLOCK = 512
CHUNK = 1 << 20
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,99}")

Split = Callable[[str, int], Path | None]
"""Given a member's name and size: where to write its second half (cut at the first
line end after its middle), or None to write it whole."""


class TarDamaged(CapyError):
    """The stream is not a tar of flat files as :class:`TarReader` writes them.

    Not an ``EngineFailure``: the worker retries it as a transient failure."""


def plain_name(name: str) -> bool:
    """Is ``name`` one a member may have (a flat file name, nothing to climb out with)?"""
    return _NAME.fullmatch(name) is not None


def is_tar(head: bytes) -> bool:
    """Does a stream that starts with ``head`` (a block or more) look like a tar?"""
    return len(head) >= BLOCK and head[257:262] == b"ustar"


def _members(directory: Path) -> list[Path]:
    """pg_dump's table of contents first (pg_restore reads it first), then the largest
    files: the unpacker meets the biggest table first (the one worth loading in two
    halves, see ``Split``)."""
    files = [path for path in directory.iterdir() if path.is_file()]
    return sorted(files, key=lambda path: (path.name != "toc.dat", -path.stat().st_size, path.name))


def _line_end_after_middle(path: Path, size: int) -> int:
    """Where ``unpack``'s ``split`` cuts a member: after the first line end at or after
    its middle (its size if there is none)."""
    with path.open("rb") as source:
        position = size // 2
        source.seek(position)
        for chunk in iter(lambda: source.read(CHUNK), b""):
            found = chunk.find(b"\n")
            if found >= 0:
                return position + found + 1
            position += len(chunk)
    return size


def _blocks(members: list[tuple[Path, int]]) -> Iterator[bytes]:
    for path, size in members:
        info = tarfile.TarInfo(path.name)
        info.size = size
        info.mode = 0o600
        yield info.tobuf(format=tarfile.USTAR_FORMAT)
        written = 0
        with path.open("rb") as source:
            for chunk in iter(lambda: source.read(CHUNK), b""):
                written += len(chunk)
                yield chunk
        if written != size:
            raise TarDamaged(f"{path.name} changed size while it was packed")
        if size % BLOCK:
            yield b"\0" * (BLOCK - size % BLOCK)
    yield b"\0" * (2 * BLOCK)  # the end of the archive


class TarReader:
    """The files of ``directory`` as a readable tar stream (``read(size)``), made as it
    is read: nothing is written to disk.

    Its layout is known before the first read: ``members`` (name, offset of its data
    in the stream, size); ``cut``: the first member ``split(name, size)`` chose and
    the offset in it where ``unpack``'s ``split`` would cut it in two halves; and
    ``frames``: the offsets where a compressor should begin a new frame so that a
    reader can start there (every member's header, and the cut).
    """

    def __init__(self, directory: Path, split: Callable[[str, int], bool] | None = None) -> None:
        members: list[tuple[Path, int]] = []
        self.members: list[tuple[str, int, int]] = []
        self.frames: list[int] = []
        self.cut: tuple[str, int] | None = None
        offset = 0
        for path in _members(directory):
            if not _NAME.fullmatch(path.name):
                raise TarDamaged(f"{path.name!r} is not a plain file name")
            size = path.stat().st_size
            members.append((path, size))
            self.members.append((path.name, offset + BLOCK, size))
            if offset:
                self.frames.append(offset)
            if self.cut is None and split is not None and split(path.name, size):
                self.cut = (path.name, _line_end_after_middle(path, size))
                self.frames.append(offset + BLOCK + self.cut[1])
            offset += BLOCK + size + -size % BLOCK
        self._blocks = _blocks(members)
        self._pending = b""
        self.count = 0

    @property
    def layout(self) -> dict[str, Any]:
        """``members`` and ``cut``, as JSON for the blob's manifest."""
        return {"members": [list(member) for member in self.members], "cut": self.cut}

    def read(self, size: int = -1) -> bytes:
        parts = [self._pending]
        have = len(self._pending)
        while size < 0 or have < size:
            block = next(self._blocks, None)
            if block is None:
                break
            parts.append(block)
            have += len(block)
        data = b"".join(parts)
        if size >= 0:
            data, self._pending = data[:size], data[size:]
        else:
            self._pending = b""
        self.count += len(data)
        return data


class _Prefixed:
    """``stream`` with ``head`` (bytes already read from it) put back in front."""

    def __init__(self, head: bytes, stream: IO[bytes]) -> None:
        self.head = head
        self.stream = stream

    def read(self, size: int) -> bytes:
        if not self.head:
            return self.stream.read(size)
        data, self.head = self.head[:size], self.head[size:]
        return data


def _exactly(stream: _Prefixed, size: int) -> Iterator[bytes]:
    """The next ``size`` bytes of ``stream``, in chunks; ``TarDamaged`` if it ends first."""
    left = size
    while left:
        data = stream.read(min(left, CHUNK))
        if not data:
            raise TarDamaged(f"the stream ended {left} bytes early")
        left -= len(data)
        yield data


def _write_halves(chunks: Iterator[bytes], size: int, first: IO[bytes], second: IO[bytes]) -> None:
    """``size`` bytes of ``chunks`` into ``first`` up to the first line end at or after
    the middle (included), the rest into ``second`` (empty if no line ends there)."""
    middle, written = size // 2, 0
    out = first
    for chunk in chunks:
        if out is first:
            cut = chunk.find(b"\n", max(middle - written, 0))
            written += len(chunk)
            if cut >= 0:
                first.write(chunk[: cut + 1])
                chunk, out = chunk[cut + 1 :], second
        out.write(chunk)


def unpack(
    stream: IO[bytes], destination: Path, head: bytes = b"", *, split: Split | None = None
) -> int:
    """Write the files of a tar stream into ``destination`` (created; must not exist).

    ``head`` is what was already read from the stream (to tell its format). ``split``
    may send the second half of a member elsewhere (see ``Split``). Returns the number
    of files. Raises ``TarDamaged`` for anything but flat regular files.
    """
    destination.mkdir(mode=0o700)
    source = _Prefixed(head, stream)
    files = 0
    while True:
        header = b"".join(_exactly(source, BLOCK))
        if header == b"\0" * BLOCK:
            return files
        try:
            info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.TarError as exc:
            raise TarDamaged(f"a damaged tar header ({exc})") from None
        if not info.isreg() or not _NAME.fullmatch(info.name):
            raise TarDamaged(f"unexpected member {info.name!r} (only flat regular files)")
        target = destination / info.name
        if target.exists():
            raise TarDamaged(f"{info.name} appears twice")
        second = split(info.name, info.size) if split is not None else None
        with open_private(target, "xb") as out:
            if second is None:
                for chunk in _exactly(source, info.size):
                    out.write(chunk)
            else:
                second.parent.mkdir(mode=0o700, exist_ok=True)
                with open_private(second, "xb") as rest:
                    _write_halves(_exactly(source, info.size), info.size, out, rest)
        for _ in _exactly(source, -info.size % BLOCK):  # the padding to a whole block
            pass
        files += 1
