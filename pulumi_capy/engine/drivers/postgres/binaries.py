"""Which ``pg_dump``/``pg_restore`` to run against a given PostgreSQL server.

``pg_dump`` refuses a server newer than itself, and a newer one writes statements an
older server refuses (``SET transaction_timeout`` from 17 on): the engine runs the
binaries of the server's own major version, else the oldest newer one it finds.

Looked for in every directory of ``PATH`` that holds them (Debian's version-picking
``pg_wrapper`` aside), in ``pg_config --bindir``, and in Debian's
``/usr/lib/postgresql/<major>/bin``.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pulumi_capy.engine.drivers import DriverFailure

__all__ = ["Installation", "binary", "installations"]

DEBIAN = Path("/usr/lib/postgresql")
VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Installation:
    bindir: Path
    major: int
    version: str  # "15.20"


def binary(name: str, server_major: int | None = None) -> str:
    """The path of ``name`` (``pg_dump``, ``pg_restore``) for a server of
    ``server_major``: the same major, else the oldest newer one; any, when the server's
    is not known. ``DriverFailure`` (permanent) naming what to install otherwise."""
    found = [item for item in installations() if (item.bindir / name).is_file()]
    if not found:
        raise DriverFailure(
            f"{name} not found on PATH or in `pg_config --bindir`: install Debian's "
            "postgresql-client package",
            permanent=True,
        )
    if server_major is None:
        return str(found[-1].bindir / name)
    usable = [item for item in found if item.major >= server_major]
    if not usable:
        versions = ", ".join(sorted({item.version for item in found}))
        raise DriverFailure(
            f"the server runs PostgreSQL {server_major}, and {name} must be at least as new; "
            f"found only {versions}: install postgresql-client-{server_major} (or put its "
            "bin directory on PATH)",
            permanent=True,
        )
    same = [item for item in usable if item.major == server_major]
    return str((same or usable)[0].bindir / name)


def installations() -> list[Installation]:
    """Every PostgreSQL client installation found, oldest major first (for one major,
    the first found wins)."""
    return list(_installations(os.environ.get("PATH", "")))


@functools.cache
def _installations(path: str) -> tuple[Installation, ...]:
    candidates: list[Path] = []
    for entry in path.split(os.pathsep):
        tool = Path(entry or ".") / "pg_dump"
        # Debian's /usr/bin/pg_dump picks a version by itself: look behind it instead
        if _is_file(tool) and "postgresql-common" not in str(tool.resolve()):
            candidates.append(Path(entry))
    pg_config_bindir = _pg_config_bindir(path)
    if pg_config_bindir:
        candidates.append(Path(pg_config_bindir))
    candidates += sorted(DEBIAN.glob("*/bin"))
    found: dict[int, Installation] = {}
    for bindir in candidates:
        installation = _probe(bindir)
        if installation is not None and installation.major not in found:
            found[installation.major] = installation
    return tuple(found[major] for major in sorted(found))


def _is_file(path: Path) -> bool:
    """``Path.is_file``, false too for a directory this user may not look into (a PATH
    inherited from another user, ``/root/go/bin`` say)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _probe(bindir: Path) -> Installation | None:
    tool = bindir / "pg_dump"
    if not _is_file(tool):
        tool = bindir / "pg_restore"
    if not _is_file(tool):
        return None
    try:
        printed = subprocess.run(
            [str(tool), "--version"], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = VERSION.search(printed)
    if match is None:
        return None
    major, minor = match.groups()
    return Installation(bindir, int(major), f"{major}.{minor}" if minor else major)


def _pg_config_bindir(path: str) -> str:
    pg_config = shutil.which("pg_config", path=path)
    if pg_config is None:
        return ""
    try:
        return subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
