"""A throwaway PostgreSQL instance that recovers a base backup to a moment.

It lives in a private directory (mode 0700; ``capy-pitr-<pid>-…``, so that a sweep can
tell a killed worker's leftovers), listens on a free loopback port that no ``pg_hba``
line admits and on a socket in that directory (trust, for the worker's own user), and
replays the log through a ``restore_command`` that copies segments a fetcher thread
writes from the archive, in order, each checked against its checksum. Its server dies
with the worker (SIGQUIT on the parent's death); ``sweep`` stops and removes what a
killed worker left.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote

from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.pitr.processes import popen_tied, stop_process
from pulumi_capy.engine.private import private_directory

__all__ = ["Instance", "RecoveryFailed", "instance_space", "sweep"]

PREFIX = "capy-pitr-"
SERVER_USER = "postgres"  # who runs the instance when the worker runs as root
START_TIMEOUT = 60.0
FETCH_SCRIPT = """#!/bin/sh
# restore_command: copy a log file the fetcher wrote; exit 1 for one not in the plan
dir="$(dirname "$0")/wal"
[ -e "$dir/$1.planned" ] || exit 1
while [ ! -e "$dir/$1" ]; do
  [ -e "$dir/.failed" ] && exit 1
  sleep 0.02
done
exec cp "$dir/$1" "$2"
"""
NOT_REACHED = "recovery ended before configured recovery target was reached"


class RecoveryFailed(DriverFailure):
    """The instance did not recover (its log's tail says why)."""


def _base_directory(scratch: Path) -> Path:
    # as root the instance runs as SERVER_USER, who must reach its directory: not under
    # root's private engine directory, but in the system's temporary directory
    return Path(tempfile.gettempdir()) if os.geteuid() == 0 else scratch


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise DriverFailure(
            "PostgreSQL refuses to run as root, and there is no postgres user to run the "
            "recovery instance as: run the worker as another user",
            permanent=True,
        ) from None


@contextmanager
def instance_space(scratch: Path) -> Iterator[Path]:
    """A private directory for one instance, removed (its server stopped) afterwards."""
    base = _base_directory(scratch)
    private_directory(base)
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
    try:
        yield root
    finally:
        _remove(root)


def _remove(root: Path) -> None:
    pid_file = root / "data" / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGQUIT)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.05)
    shutil.rmtree(root, ignore_errors=True)


def sweep(scratch: Path) -> int:
    """Stop and remove the instances of workers that no longer run; how many."""
    removed = 0
    for base in {_base_directory(scratch), scratch}:
        if not base.is_dir():
            continue
        for leftover in base.glob(f"{PREFIX}*-*"):
            pid = leftover.name.removeprefix(PREFIX).split("-")[0]
            if not pid.isdigit():
                continue
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                _remove(leftover)
                removed += 1
            except PermissionError:
                continue
    return removed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unpack(stream: IO[bytes], data: Path) -> None:
    """Extract a base backup's tar stream into ``data`` (mode 0700)."""
    data.mkdir(mode=0o700)
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        if hasattr(tarfile, "tar_filter"):  # Python 3.11.4 on
            archive.extractall(data, filter="tar")
        else:  # our own base backup: no member leaves ``data`` (pg_basebackup's tar)
            archive.extractall(data)  # noqa: S202
    (data / "pg_wal").mkdir(exist_ok=True)
    data.chmod(0o700)


@dataclass
class Instance:
    """A recovery instance in ``root``: configure, start, wait for the target, connect."""

    root: Path
    postgres: str  # the server binary, of the backup's major version
    superuser: str
    target_time: datetime
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def wal(self) -> Path:
        return self.root / "wal"

    @property
    def sockets(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str) -> str:
        return (
            f"postgresql://{quote(self.superuser, safe='')}@/{quote(database, safe='')}"
            f"?host={quote(str(self.sockets), safe='')}&port={self.port}"
        )

    def prepare(self, *, with_target: bool = True) -> None:
        """Write the instance's configuration over the backup's own."""
        self.wal.mkdir(exist_ok=True)
        self.sockets.mkdir(mode=0o700, exist_ok=True)
        script = self.root / "fetch"
        script.write_text(FETCH_SCRIPT)
        script.chmod(0o700)
        target = (
            f"recovery_target_time = '{self.target_time.isoformat()}'\n"
            "recovery_target_inclusive = on\n"
            "recovery_target_action = 'promote'\n"
            if with_target
            else ""
        )
        (self.data / "postgresql.conf").write_text(
            "# a throwaway recovery instance of pulumi_capy\n"
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{self.sockets}'\n"
            "unix_socket_permissions = 0700\n"
            f"restore_command = '{script} %f %p'\n"
            f"{target}"
            "recovery_target_timeline = 'latest'\n"
            "hot_standby = off\n"
            "archive_mode = off\n"
            "fsync = off\n"
            "synchronous_commit = off\n"
            "full_page_writes = off\n"
            "shared_buffers = 256MB\n"
            "max_wal_size = 4GB\n"
            "checkpoint_timeout = 30min\n"
            "maintenance_work_mem = 256MB\n"
            "max_connections = 20\n"
            "shared_preload_libraries = ''\n"
            "ssl = off\n"
            "logging_collector = off\n"
            "log_min_messages = log\n"
        )
        (self.data / "postgresql.auto.conf").write_text("")
        (self.data / "pg_hba.conf").write_text("local all all trust\n")
        (self.data / "pg_ident.conf").write_text("")
        (self.data / "recovery.signal").touch()
        for leftover in ("standby.signal", "postmaster.pid", "postmaster.opts"):
            (self.data / leftover).unlink(missing_ok=True)
        user = _server_user()
        if user is not None:  # the server's own files; the log's (0644) are only read
            owned = [self.root, self.wal, self.sockets, script, self.data, *self.data.rglob("*")]
            for path in owned:
                os.lchown(path, user.pw_uid, user.pw_gid)

    def start(self) -> None:
        user = _server_user()
        with self.log.open("ab") as log:
            self.process = popen_tied(
                [self.postgres, "-D", str(self.data)],
                on_parent_death=signal.SIGQUIT,
                user=user.pw_name if user else None,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, sig=signal.SIGQUIT)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def recover(self, on_progress: Callable[[str], None], failed: Callable[[], str | None]) -> bool:
        """Start the instance and wait until it was promoted at the target; when the
        archived log ends before a commit past the target (nothing happened between the
        last commit and the target), start it again to replay to the end, which is the
        state at the target. True when it had to replay to the end."""
        self.prepare()
        self.start()
        if self._wait(on_progress, failed):
            return False
        if NOT_REACHED not in self.log.read_text(errors="replace"):
            raise RecoveryFailed(
                f"the recovery instance stopped: {self.log_tail()}", permanent=True
            )
        self.prepare(with_target=False)
        self.start()
        if self._wait(on_progress, failed):
            return True
        raise RecoveryFailed(f"the recovery instance stopped: {self.log_tail()}", permanent=True)

    def _wait(self, on_progress: Callable[[str], None], failed: Callable[[], str | None]) -> bool:
        """True once promoted; False when the server exited."""
        assert self.process is not None
        restored = 0
        while True:
            problem = failed()
            if problem is not None:
                self.stop()
                raise RecoveryFailed(problem, permanent=True)
            if self.process.poll() is not None:
                return False
            text = self.log.read_text(errors="replace")
            count = text.count("restored log file")
            if count != restored:
                restored = count
                on_progress(f"{count} log segment(s) replayed")
            if "database system is ready to accept connections" in text and self._promoted():
                return True
            time.sleep(0.1)

    def _promoted(self) -> bool:
        import psycopg  # not at the top: the engine's other users never load it

        try:
            with psycopg.connect(self.url("postgres"), connect_timeout=5) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        except psycopg.Error:
            return False
        return row is not None and not row[0]
