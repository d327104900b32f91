"""Files at rest: what the engine writes is its owner's alone, whatever the umask.

An engine directory holds copies of users' databases (blobs, previews) and the
metadata store, so every directory the engine makes is 0700 and every file 0600.
The mode is given at creation (``os.open``, ``mkdir``), never fixed afterwards, so
there is no moment at which another user could open the file; a umask only ever
removes bits, so a lax one (0o000) cannot widen these modes. SQLite gives a
database's ``-wal`` and ``-shm`` the mode of the database file, so a database the
engine creates is created empty here first (:func:`create_private_file`).

``loose_paths`` finds what others can read, for ``capy doctor``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DIRECTORY_MODE",
    "FILE_MODE",
    "create_private_file",
    "loose_paths",
    "open_private",
    "private_directory",
    "private_opener",
]

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
_OTHERS = stat.S_IRWXG | stat.S_IRWXO


def private_directory(path: Path) -> Path:
    """``mkdir -p path``, each directory it creates 0700; those that exist stay as they are
    (``capy doctor`` reports them). Returns ``path``."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:  # another process made it meanwhile
            if not directory.is_dir():
                raise
    return path


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that creates the file 0600."""
    return os.open(path, flags, FILE_MODE)


def open_private(path: Path, mode: str = "wb", **kwargs: Any) -> IO[Any]:
    """``open(path, mode)``, a file it creates being 0600."""
    return open(path, mode, opener=private_opener, **kwargs)


def create_private_file(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists (before SQLite opens it: SQLite takes
    an empty file for an empty database and gives its ``-wal``/``-shm`` the same mode).

    A file that exists is never opened here: closing a descriptor of a SQLite database
    drops every POSIX lock this process's connections hold on it."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    os.close(descriptor)


def loose_paths(root: Path) -> Iterator[tuple[Path, int]]:
    """``root`` and every path under it that a group or others may use, with its mode
    (symbolic links are not followed)."""
    for path in (root, *sorted(root.rglob("*"))):
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # removed while we looked (scratch space)
            continue
        if stat.S_ISLNK(mode):
            continue
        if mode & _OTHERS:
            yield path, stat.S_IMODE(mode)
