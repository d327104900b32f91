"""The largest table's rows in two halves, to be loaded by two ``COPY … FROM STDIN`` at
once (``loading.restore_split``).

A table's data file in pg_dump's directory (``<dump id>.dat``) of at least
``split_over`` bytes is cut in two at a line end: unpacking a blob writes the second
half under ``.capy-side/`` (``splitter``, then ``unpacked``), and a blob written in
frames is read from its ranges directly (``from_blob``), nothing of that table written
to disk.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pulumi_capy.engine.blobs import BlobParts
from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.tarstream import Split, plain_name

__all__ = ["TABLE_DATA", "Halves", "WriteHalf", "from_blob", "splits", "splitter", "unpacked"]

# in pg_dump's directory, "<dump id>.dat" holds a table's rows as COPY text, one per line
TABLE_DATA = re.compile(r"[1-9][0-9]*\.dat")
SIDE = ".capy-side"  # not a name a tar member can have (see tarstream)

# writes one half of the largest table's rows (pg_dump's COPY text) into a stream
WriteHalf = Callable[[IO[bytes]], None]


@dataclass(frozen=True)
class Halves:
    """The largest table's rows in two halves, each written into a stream when asked
    (from the blob's frames, or from the two files an unpacking wrote), the name of its
    data file, and the writing of the other files, which the rest of the restore waits
    for (``rest``)."""

    name: str
    write: tuple[WriteHalf, WriteHalf]
    rest: Future[None] | None = None


def splits(name: str, size: int, split_over: int) -> bool:
    """Is this file of pg_dump's directory a table's rows worth loading in halves?"""
    return size >= split_over and TABLE_DATA.fullmatch(name) is not None


def splitter(destination: Path, split_over: int) -> Split:
    """The largest table's rows (the first data file of the stream, which has them
    largest first) in two halves, when large enough: the second half goes to
    ``destination/.capy-side/``, to be loaded alongside the first."""
    chosen: list[str] = []

    def split(name: str, size: int) -> Path | None:
        if chosen or not splits(name, size, split_over):
            return None
        chosen.append(name)
        return destination / SIDE / name

    return split


def from_blob(parts: BlobParts, dump: Path, pool: ThreadPoolExecutor) -> Halves:
    """Check the blob, write pg_dump's table of contents at ``dump``, start writing
    the other files (in ``pool``); the largest table's halves are read from the
    blob's frames as they are loaded (nothing of that table is written to disk
    uncompressed). A blob in an object store is downloaded once, beside ``dump``,
    while it is checked, and its ranges read from that copy."""
    layout = parts.details.get("tar") or {}
    name, cut = layout["cut"]
    members = {str(item[0]): (int(item[1]), int(item[2])) for item in layout["members"]}
    start, size = members[name]
    if not all(map(plain_name, members)) or not TABLE_DATA.fullmatch(name) or cut > size:
        raise DriverFailure(f"blob {parts.key}: its manifest's layout is damaged", permanent=True)
    dump.mkdir(mode=0o700, parents=True)
    # checked before any of it is used (from an object store, a copy beside the dump)
    parts = parts.verified(dump.with_name(f"{dump.name}.blob"))
    (toc_start, toc_size) = members["toc.dat"]
    with (dump / "toc.dat").open("wb") as out:
        parts.copy(toc_start, toc_start + toc_size, out)
    others = {other: extent for other, extent in members.items() if other not in (name, "toc.dat")}

    def first(out: IO[bytes]) -> None:
        parts.copy(start, start + cut, out)

    def second(out: IO[bytes]) -> None:
        parts.copy(start + cut, start + size, out)

    return Halves(name, (first, second), pool.submit(_write_members, parts, dump, others))


def _write_members(parts: BlobParts, dump: Path, members: dict[str, tuple[int, int]]) -> None:
    for name, (start, size) in members.items():
        with (dump / name).open("wb") as out:
            parts.copy(start, start + size, out)


def unpacked(dump: Path) -> Halves | None:
    """The halves an unpacking wrote (``<dump>/<name>``, ``<dump>/.capy-side/<name>``)."""
    side = dump / SIDE
    if not side.is_dir():
        return None
    (half,) = (path for path in side.iterdir() if TABLE_DATA.fullmatch(path.name))

    def reader(path: Path) -> WriteHalf:
        def write(out: IO[bytes]) -> None:
            with path.open("rb") as source:
                shutil.copyfileobj(source, out, 1 << 20)

        return write

    return Halves(half.name, (reader(dump / half.name), reader(half)))
