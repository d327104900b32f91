"""A throwaway PostgreSQL server for the tests: initdb into a temp dir, pg_ctl start on a
loopback port with password auth, stopped at the end of the session. No Docker.

`scripts/test` installs Debian's postgresql when it is missing. As root (CI runs as
root), the server runs as the `postgres` user, because initdb refuses root.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "capy"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@{self.host}:{self.port}/{database}"


def bindir() -> Path | None:
    """The server binaries: `pg_config --bindir` (libpq-dev), else Debian's layout."""
    candidates: list[Path] = []
    try:
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        candidates.append(Path(found))
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    return None


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
def running_server() -> Iterator[PostgresServer]:
    binaries = bindir()
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
        yield PostgresServer("127.0.0.1", port, SUPERUSER, password)
    finally:
        subprocess.run(
            _as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)
