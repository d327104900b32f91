"""The PostgreSQL driver: projects whose ``database_url`` is ``postgresql://…``.

The data moves through the real ``pg_dump``/``pg_restore`` (their exit code and
output become the job's ``last_exit_code``/``last_stdout``/``last_stderr``);
psycopg runs the control statements.

- dump: ``pg_dump -Fd -Z0`` (the directory format: one file per table's data)
  inside an exported snapshot, with the row count of every table read in that
  same snapshot; the directory is streamed as a tar into the engine's zstd
  compressor and SHA-256 (faster than pg_dump's gzip, for a blob no larger) and
  unpacked from the blob the same way. Parallel pg_restore reads each
  table's own file, where from a custom-format archive written to a pipe (no
  data offsets) a worker skips through every data block before its own
  (``bench/postgres.py --formats``: 0.8-0.97x the time);
- check: restore into a throwaway database, compare the row counts, drop it;
- restore: from the directory (or, for backups taken before the directory
  format, a custom-format archive file), always into a scratch database first,
  created from ``template0`` with the source's encoding and locale
  (``pg_database``), keeping every owner and grant (``pg_restore -j 2``); the
  largest table's rows, from ``split_over`` up, are loaded in two halves by two
  ``COPY … FROM STDIN`` at once, between the schema and the rest
  (``_restore_split``), streamed from the blob's frames when the blob has them
  (backups from now on) or else unpacked in two files; only when all that
  succeeded is the scratch database renamed into place. Over an existing
  database: connections are refused and terminated, the target is renamed aside
  (``<name>__capy_old_…``), the scratch database takes its name, the old one is
  dropped. A failure at any step leaves the target as it was. A new database
  gets the source database's own properties (owner, grants, settings) from the
  backup; a database restored in place keeps its own.

The engine's role needs CREATEDB, ownership of the project database, the right to
terminate its connections (``pg_signal_backend``, or the same role), and membership
in every role that owns something in it (to give the restored objects back to their
owners); a superuser has all of these.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pulumi_capy.api.errors import FieldError, InvalidInput
from pulumi_capy.engine.blobs import BlobParts
from pulumi_capy.engine.drivers import (
    Consume,
    DatabaseInfo,
    DriverFailure,
    Materialize,
    Outcome,
    pg_database,
)
from pulumi_capy.engine.drivers.pg_binaries import binary
from pulumi_capy.engine.drivers.pg_database import DatabaseProperties
from pulumi_capy.engine.tarstream import (
    BLOCK,
    Split,
    TarDamaged,
    TarReader,
    is_tar,
    plain_name,
    unpack,
)

CUSTOM_ARCHIVE = b"PGDMP"  # pg_dump's custom format: backups taken before the directory one

__all__ = ["PostgresDriver", "redact"]

NAME_LIMIT = 63  # PostgreSQL identifiers
RESTORE_JOBS = 2
# in pg_dump's directory, "<dump id>.dat" holds a table's rows as COPY text, one per line
TABLE_DATA = re.compile(r"[1-9][0-9]*\.dat")
SIDE = ".capy-side"  # not a name a tar member can have (see tarstream)
# where the COPY statement of the largest table is rendered (its data file empty)
RENDER = ".capy-copy"
# a password in a statement (an option of a user mapping) or a connection string
SECRET_OPTION = re.compile(r"(?i)(\bpassword\s*=\s*|\bpassword\s+(?='))('(?:[^']|'')*'|[^\s',)]+)")
ERROR_LINE = re.compile(r"\b(?:error|ERROR|FATAL|PANIC):")
COPY_END = re.compile(rb"(?:^|\n)\\\.\n*\Z")  # the "\." line closing pg_dump's COPY data
CONNECT_TIMEOUT = 10
# what pg_dump / pg_restore / libpq print when retrying may help
TRANSIENT = (
    "could not connect",
    "connection refused",
    "timeout expired",
    "server closed the connection",
    "the database system is starting up",
    "the database system is shutting down",
    "too many connections",
    "could not translate host name",
    "is being accessed by other users",  # a swap met a session; the next attempt may not
)
PRIVILEGE_HINT = (
    "the engine's role needs CREATEDB, ownership of the project database, the right to "
    "terminate its connections, and to give every object back to its owner: a superuser "
    "can; another role only where PostgreSQL lets it (see the README)"
)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# writes one half of the largest table's rows (pg_dump's COPY text) into a stream
WriteHalf = Callable[[IO[bytes]], None]


@dataclass(frozen=True)
class _Halves:
    """The largest table's rows in two halves, each written into a stream when asked
    (from the blob's frames, or from the two files an unpacking wrote), the name of its
    data file, and the writing of the other files, which the rest of the restore waits
    for (``rest``)."""

    name: str
    write: tuple[WriteHalf, WriteHalf]
    rest: Future[None] | None = None


class _CopyIn:
    """A half of pg_dump's COPY data into a ``COPY … FROM STDIN``, without the ``\\.``
    line with which the dump's data ends (holding back the last bytes until ``close``)."""

    HOLD = 64

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy
        self._tail = b""

    def write(self, data: bytes) -> int:
        if len(data) >= self.HOLD:
            if self._tail:
                self._copy.write(self._tail)
            self._copy.write(data[: -self.HOLD])
            self._tail = data[-self.HOLD :]
        else:
            self._tail += data
            if len(self._tail) > self.HOLD:
                self._copy.write(self._tail[: -self.HOLD])
                self._tail = self._tail[-self.HOLD :]
        return len(data)

    def close(self) -> None:
        tail = self._tail
        end = COPY_END.search(tail)
        if end is not None:  # keep the line end of the last row
            tail = tail[: end.start() + (1 if tail[end.start() : end.start() + 1] == b"\n" else 0)]
        if tail:
            self._copy.write(tail)


def _recorded(details: Mapping[str, Any]) -> DatabaseProperties | None:
    """The source database's properties as the backup recorded them (None for backups
    from before they were)."""
    recorded = details.get("database")
    return DatabaseProperties.from_json(dict(recorded)) if recorded else None


def _database(url: str) -> str:
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name:
        raise InvalidInput([FieldError("database_url", "the URL names no database")])
    return name


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


def _env(url: str) -> dict[str, str]:
    """libpq environment for a URL: the password never goes on a command line."""
    parts = urlsplit(url)
    env = dict(os.environ)
    for key, value in (
        ("PGHOST", parts.hostname),
        ("PGPORT", str(parts.port) if parts.port else None),
        ("PGUSER", unquote(parts.username) if parts.username else None),
        ("PGPASSWORD", unquote(parts.password) if parts.password else None),
        ("PGDATABASE", _database(url)),
        ("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT)),
    ):
        if value:
            env[key] = value
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if key == "sslmode" and value:
            env["PGSSLMODE"] = value
    return env


def _scratch_name(base: str, tag: str, key: str | None = None) -> str:
    """A helper database's name, derived from what it serves, so that a retry finds (and
    drops) what a killed attempt left; restores of one target never overlap (job lock)."""
    digest = hashlib.sha256((key or base).encode()).hexdigest()[:8]
    suffix = f"__capy_{tag}_{digest}"
    return base[: NAME_LIMIT - len(suffix)] + suffix


def _classify(text: str) -> bool:
    """True when a failure is permanent."""
    lowered = text.lower()
    return not any(marker in lowered for marker in TRANSIENT)


def _cause(stderr: str) -> str | None:
    """The first real cause in what pg_restore, pg_dump or libpq printed: the first
    error line, the DETAIL/HINT lines after it and the first line of the statement that
    failed (pg_restore's last line is often only the end of that statement)."""
    lines = [line.rstrip() for line in stderr.splitlines()]
    for index, line in enumerate(lines):
        if not ERROR_LINE.search(line):
            continue
        found = [line.strip()]
        for follow in lines[index + 1 :]:
            stripped = follow.strip()
            if stripped.startswith(("DETAIL:", "HINT:", "CONTEXT:")):
                found.append(stripped)
            elif stripped.startswith("Command was:"):
                command = stripped.removeprefix("Command was:").strip()
                found.append(f"(while running: {command[:200]})")
                break
            elif not stripped.startswith("LINE ") and not stripped.startswith("^"):
                break
        return " ".join(found)
    return None


def _mask(text: str, url: str) -> str:
    """``text`` without the URL's password (as written and decoded) nor any password a
    failed statement carried (``OPTIONS (password '…')``, ``password=…`` in a
    connection string)."""
    password = urlsplit(url).password
    for secret in (password, unquote(password)) if password else ():
        text = text.replace(secret, "***")
    return SECRET_OPTION.sub(
        lambda found: found.group(1) + ("'***'" if found.group(2).startswith("'") else "***"),
        text,
    )


def _failure(doing: str, done: subprocess.CompletedProcess[str], url: str = "") -> DriverFailure:
    stderr = _mask(done.stderr or "", url)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {done.returncode}"
    message = f"{doing}: {_cause(stderr) or last}"
    if "permission denied" in stderr.lower() or "must be owner" in stderr.lower():
        message += f" ({PRIVILEGE_HINT})"
    outcome = Outcome(message, done.returncode, _mask(done.stdout or "", url), stderr)
    # killed by a signal (negative exit code): nothing wrong with the data, try again
    permanent = done.returncode > 0 and _classify(stderr)
    return DriverFailure(message, permanent=permanent, outcome=outcome)


def _statement_failure(doing: str, exc: psycopg.Error) -> DriverFailure:
    """A control statement that failed, with the privileges hint when it was refused."""
    text = str(exc).strip()
    hint = f" ({PRIVILEGE_HINT})" if isinstance(exc, psycopg.errors.InsufficientPrivilege) else ""
    return DriverFailure(f"{doing}: {text}{hint}", permanent=_classify(text))


def _run(command: list[str], url: str, doing: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=_env(url), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise _failure(doing, done, url)
    return done


class PostgresDriver:
    kind = "postgresql"
    format = "pg_dump-directory"  # packed in a tar stream
    extension = "pgdir.tar"
    # bench/postgres.py: on text-heavy data level 1 gave 1.08-1.10x the size of pg_dump's gzip
    # archive, level 3 0.95-1.03x at about the same speed with two threads
    zstd_level = 3
    dump_becomes_database = False  # pg_restore reads it, then it is deleted
    # a table's rows at least this large are loaded in two halves (see _restore_split)
    split_over = 32 << 20

    # ------------------------------------------------------------ connections

    @contextmanager
    def _connect(self, url: str, database: str | None = None) -> Iterator[psycopg.Connection]:
        target = _with_database(url, database) if database else url
        try:
            conn = psycopg.connect(target, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.OperationalError as exc:
            text = str(exc).replace(urlsplit(url).password or "\0", "***")
            raise DriverFailure(
                f"connect to {redact(target)}: {text.strip()}", permanent=_classify(text)
            ) from None
        try:
            yield conn
        finally:
            conn.close()

    def _admin(self, url: str) -> Any:
        """A connection for CREATE/ALTER/DROP DATABASE (to the server's maintenance db)."""
        return self._connect(url, "postgres")

    def _execute(self, url: str, statement: sql.Composable, doing: str) -> None:
        with self._admin(url) as conn:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                raise _statement_failure(doing, exc) from None

    # ------------------------------------------------------------ contract

    def inspect(self, url: str) -> DatabaseInfo:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise InvalidInput(
                [FieldError("database_url", "expected postgresql://user:password@host:port/db")]
            )
        name = _database(url)
        try:
            with self._connect(url) as conn:
                conn.execute("SELECT 1")
        except DriverFailure as exc:
            raise InvalidInput([FieldError("database_url", str(exc))]) from None
        return DatabaseInfo(kind=self.kind, url=url, database_name=name)

    def database_name(self, url: str) -> str:
        return _database(url)

    def connection_fields(self, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        fields: dict[str, Any] = {
            "database_name": _database(url),
            "public_host": parts.hostname,
            "direct_port": parts.port or 5432,
            "role_name": unquote(parts.username) if parts.username else None,
        }
        for item in parts.query.split("&"):
            key, _, value = item.partition("=")
            if key == "sslmode":
                fields["ssl_mode"] = value
        return fields

    def preview_url(self, project_url: str, preview_id: str, previews_dir: Path) -> str:
        base = _database(project_url)
        suffix = f"_{preview_id}"
        return _with_database(project_url, base[: NAME_LIMIT - len(suffix)] + suffix)

    def _row_counts(self, conn: psycopg.Connection) -> dict[str, int]:
        tables = conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' "
            "ORDER BY 1, 2"
        ).fetchall()
        counts: dict[str, int] = {}
        for schema, table in tables:
            query = sql.SQL("SELECT count(*) FROM {}.{}").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            row = conn.execute(query).fetchone()
            counts[f"{schema}.{table}"] = int(row[0]) if row else 0
        return counts

    @contextmanager
    def _snapshot(self, url: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """An exported snapshot of ``url`` (held while the block runs) and what the
        backup's manifest records of it: the row count of every table, read in that
        same snapshot (pg_dump reads the very snapshot the counts were taken in), the
        database's own properties and the roles its objects refer to."""
        with self._connect(url) as conn:
            conn.autocommit = False
            try:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                row = conn.execute("SELECT pg_export_snapshot()").fetchone()
                snapshot = str(row[0]) if row else ""
                properties = pg_database.read(conn, _database(url))
                if properties is None:
                    raise DriverFailure(f"database {_database(url)} is gone", permanent=True)
                details = {
                    "server_major": conn.info.server_version // 10000,
                    "row_counts": self._row_counts(conn),
                    "database": properties.to_json(),
                    "roles": pg_database.roles(conn, properties).to_json(),
                }
                yield snapshot, details
            except psycopg.Error as exc:
                raise DriverFailure(
                    f"snapshot of {_database(url)}: {str(exc).strip()}",
                    permanent=_classify(str(exc)),
                ) from None
            finally:
                conn.rollback()

    def dump(self, url: str, destination: Path) -> Outcome:
        """``pg_dump -Fd -Z0`` into ``destination``, a directory it creates."""
        try:
            with self._snapshot(url) as (snapshot, details):
                pg_dump = binary("pg_dump", details["server_major"])
                done = _run(
                    [pg_dump, "-Fd", "-Z0", f"--snapshot={snapshot}", "-f", str(destination)],
                    url,
                    f"pg_dump of {_database(url)}",
                )
        except BaseException:
            shutil.rmtree(destination, ignore_errors=True)  # what pg_dump wrote before failing
            raise
        size = sum(path.stat().st_size for path in destination.iterdir())
        counts = details["row_counts"]
        summary = (
            f"pg_dump of {_database(url)}: {len(counts)} tables, "
            f"{sum(counts.values())} rows, {size} bytes"
        )
        return Outcome(
            summary,
            done.returncode,
            done.stdout or summary,
            done.stderr,
            details={**details, "size_bytes": size},
        )

    def dump_streamed(self, url: str, consume: Consume, workdir: Path) -> Outcome:
        """The dump's directory, written under ``workdir``, handed to ``consume`` as one tar
        stream (made as it is read), then removed."""
        directory = workdir / "pg_dump"
        try:
            dumped = self.dump(url, directory)
            stream = TarReader(directory, split=self._splits)
            consume(cast(IO[bytes], stream))
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        details = {**dumped.details, "size_bytes": stream.count, "tar": stream.layout}
        return replace(dumped, details=details)

    def unpack(self, stream: IO[bytes], destination: Path) -> None:
        """What ``dump_streamed`` streamed, back at ``destination``: the directory, or
        (a backup from before the directory format) the custom-format archive file."""
        head = b""
        while len(head) < BLOCK:
            data = stream.read(BLOCK - len(head))
            if not data:
                break
            head += data
        if head.startswith(CUSTOM_ARCHIVE):
            with destination.open("wb") as out:
                out.write(head)
                shutil.copyfileobj(stream, out, 1 << 20)
            return
        if not is_tar(head):
            raise DriverFailure(
                "the backup holds neither a pg_dump directory nor a pg_dump archive",
                permanent=True,
            )
        try:
            unpack(stream, destination, head, split=self._splitter(destination))
        except TarDamaged as exc:
            raise DriverFailure(f"the backup's archive is damaged: {exc}", permanent=True) from None

    def _splitter(self, destination: Path) -> Split:
        """The largest table's rows (the first data file of the stream, which has them
        largest first) in two halves, when large enough: the second half goes to
        ``destination/.capy-side/``, to be loaded alongside the first (see
        ``_restore_split``)."""
        chosen: list[str] = []

        def split(name: str, size: int) -> Path | None:
            if chosen or not self._splits(name, size):
                return None
            chosen.append(name)
            return destination / SIDE / name

        return split

    def _splits(self, name: str, size: int) -> bool:
        """Is this file of pg_dump's directory a table's rows worth loading in halves?"""
        return size >= self.split_over and TABLE_DATA.fullmatch(name) is not None

    def _halves(self, parts: BlobParts, dump: Path, pool: ThreadPoolExecutor) -> _Halves:
        """Check the blob, write pg_dump's table of contents at ``dump``, start writing
        the other files (in ``pool``); the largest table's halves are read from the
        blob's frames as they are loaded (nothing of that table is written to disk)."""
        layout = parts.details.get("tar") or {}
        name, cut = layout["cut"]
        members = {str(item[0]): (int(item[1]), int(item[2])) for item in layout["members"]}
        start, size = members[name]
        if not all(map(plain_name, members)) or not TABLE_DATA.fullmatch(name) or cut > size:
            raise DriverFailure(
                f"blob {parts.key}: its manifest's layout is damaged", permanent=True
            )
        parts.verify()  # before any of it is used
        dump.mkdir(mode=0o700, parents=True)
        (toc_start, toc_size) = members["toc.dat"]
        with (dump / "toc.dat").open("wb") as out:
            parts.copy(toc_start, toc_start + toc_size, out)
        others = {
            other: extent for other, extent in members.items() if other not in (name, "toc.dat")
        }

        def first(out: IO[bytes]) -> None:
            parts.copy(start, start + cut, out)

        def second(out: IO[bytes]) -> None:
            parts.copy(start + cut, start + size, out)

        return _Halves(name, (first, second), pool.submit(self._write_members, parts, dump, others))

    @staticmethod
    def _write_members(parts: BlobParts, dump: Path, members: dict[str, tuple[int, int]]) -> None:
        for name, (start, size) in members.items():
            with (dump / name).open("wb") as out:
                parts.copy(start, start + size, out)

    @staticmethod
    def _unpacked_halves(dump: Path) -> _Halves | None:
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

        return _Halves(half.name, (reader(dump / half.name), reader(half)))

    def _restore_into(
        self, dump: Path, url: str, database: str, doing: str, halves: _Halves | None = None
    ) -> Outcome:
        pg_restore = binary("pg_restore", self._server_major(url))
        # owners and grants as they were: the engine's role gives each object back
        options = ["--exit-on-error", "--dbname", database]
        halves = halves or self._unpacked_halves(dump)
        if halves is not None:
            return self._restore_split(pg_restore, options, dump, url, database, doing, halves)
        done = _run(
            [pg_restore, *options, f"--jobs={RESTORE_JOBS}", str(dump)],
            _with_database(url, database),
            doing,
        )
        return Outcome(f"{doing}: done", done.returncode, done.stdout, done.stderr)

    def _restore_split(
        self,
        pg_restore: str,
        options: list[str],
        dump: Path,
        url: str,
        database: str,
        doing: str,
        halves: _Halves,
    ) -> Outcome:
        """pg_restore loads a table with one COPY, so with ``-j2`` the largest table's
        load and then its indexes are the restore's critical path while the second
        worker idles. Here that table's rows come in two halves, and the restore runs
        in three steps, each begun when the one before has ended:

        1. the schema (``pg_restore --section=pre-data``);
        2. the two halves, by two ``COPY … FROM STDIN`` at once (the statement and
           session settings pg_restore itself would use), which keeps both cores busy;
        3. everything else (``--section=data --section=post-data`` with ``-j2``, that
           table's data left out): the other tables' rows, then every index,
           constraint, trigger and grant, as pg_restore orders them; the largest
           table's indexes are built while the other tables load.

        The halves never pass through pg_restore, which (from 15.20 and the other
        branches' releases of the same day) reads only regular files.
        """
        item = halves.name.removesuffix(".dat")  # the data item's dump id
        target = _with_database(url, database)
        prelude, copy = self._copy_statement(pg_restore, dump, halves.name, item, target, doing)
        listed = _run([pg_restore, "--list", str(dump)], target, f"{doing} (the contents)")
        rest = dump / RENDER / "rest.list"
        rest.write_text(
            "".join(
                line
                for line in listed.stdout.splitlines(keepends=True)
                if line.partition(";")[0].strip() != item
            )
        )
        steps = [_run([pg_restore, *options, "--section=pre-data", str(dump)], target, doing)]
        with ThreadPoolExecutor(2) as pool:
            loads = [
                pool.submit(self._copy_in, target, prelude, copy, write, doing)
                for write in halves.write
            ]
            wait(loads, return_when=FIRST_EXCEPTION)
            failed = [load for load in loads if load.done() and load.exception() is not None]
            if failed:
                self._terminate(url, database)  # stops the other half
                wait(loads)
                failed[0].result()
        if halves.rest is not None:
            halves.rest.result()
        steps.append(
            _run(
                [
                    pg_restore,
                    *options,
                    f"--jobs={RESTORE_JOBS}",
                    "--section=data",
                    "--section=post-data",
                    f"--use-list={rest}",
                    str(dump),
                ],
                target,
                doing,
            )
        )
        return Outcome(
            f"{doing}: done",
            0,
            "".join(step.stdout for step in steps),
            "".join(step.stderr for step in steps),
        )

    @staticmethod
    def _copy_statement(
        pg_restore: str, dump: Path, name: str, item: str, target: str, doing: str
    ) -> tuple[list[bytes], bytes]:
        """The session settings and the ``COPY … FROM stdin`` that pg_restore would run
        for data item ``item``, rendered by pg_restore from the dump's table of contents
        (in a directory where that item's data file is empty)."""
        render = dump / RENDER
        render.mkdir(mode=0o700, exist_ok=True)
        if not (render / "toc.dat").exists():
            os.link(dump / "toc.dat", render / "toc.dat")
        (render / name).write_bytes(b"")
        (render / "only.list").write_text(f"{item}\n")
        done = subprocess.run(
            [
                pg_restore,
                "--data-only",
                f"--use-list={render / 'only.list'}",
                "-f",
                "-",
                str(render),
            ],
            env=_env(target),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            text = subprocess.CompletedProcess(
                done.args, done.returncode, "", done.stderr.decode(errors="replace")
            )
            raise _failure(f"{doing} (the largest table's COPY statement)", text, target)
        prelude: list[bytes] = []
        for line in done.stdout.splitlines():
            if line.startswith(b"COPY "):
                return prelude, line.rstrip(b";")
            if line.startswith((b"SET ", b"SELECT pg_catalog.set_config(")):
                prelude.append(line)
        raise DriverFailure(
            f"{doing}: pg_restore gave no COPY statement for the largest table", permanent=True
        )

    def _copy_in(
        self, target: str, prelude: list[bytes], copy: bytes, write: WriteHalf, doing: str
    ) -> None:
        """One half of the largest table's rows, loaded with ``COPY … FROM STDIN``."""
        with self._connect(target) as conn:
            try:
                for statement in prelude:
                    conn.execute(statement)
                with conn.cursor() as cursor, cursor.copy(copy) as into:
                    stream = _CopyIn(into)
                    write(cast(IO[bytes], stream))
                    stream.close()
            except psycopg.Error as exc:
                text = _mask(str(exc).strip(), target)
                message = f"{doing} (the largest table, in two halves): {text.splitlines()[0]}"
                raise DriverFailure(
                    message, permanent=_classify(text), outcome=Outcome(message, 1, "", text)
                ) from None

    def _create(self, url: str, name: str, properties: DatabaseProperties | None) -> None:
        self._execute(url, pg_database.create_statement(name, properties), f"create {name}")

    def _drop(self, url: str, name: str) -> None:
        self._terminate(url, name)
        self._execute(
            url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
            f"drop {name}",
        )

    def _terminate(self, url: str, name: str) -> None:
        with self._admin(url) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )

    def _exists(self, url: str, name: str) -> bool:
        with self._admin(url) as conn:
            row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None

    def _server_major(self, url: str) -> int:
        with self._admin(url) as conn:
            return int(conn.info.server_version) // 10000

    def _properties(self, url: str, name: str) -> DatabaseProperties | None:
        with self._admin(url) as conn:
            return pg_database.read(conn, name)

    def _check_roles(self, url: str, details: Mapping[str, Any]) -> None:
        """Refuse, before anything is done, a restore that needs a role the server does
        not have, or the right to give objects to a role the engine's role lacks."""
        needs = details.get("roles")
        if not needs:  # a backup from before roles were recorded: pg_restore will say
            return
        owners, others = list(needs.get("owners") or []), list(needs.get("others") or [])
        with self._admin(url) as conn:
            # ALTER … OWNER TO needs membership (15), the SET option of it (16 on)
            privilege = "SET" if conn.info.server_version >= 160000 else "MEMBER"
            found = {
                str(name): bool(allowed)
                for name, allowed in conn.execute(
                    "SELECT rolname, pg_has_role(current_user, oid, %s) "
                    "FROM pg_roles WHERE rolname = ANY(%s)",
                    (privilege, owners + others),
                )
            }
            row = conn.execute(
                "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        missing = sorted(set(owners + others) - set(found))
        if missing:
            raise DriverFailure(
                "the backup's objects belong or are granted to roles this server does not "
                f"have: {', '.join(missing)}; create them (CREATE ROLE …) and restore again",
                permanent=True,
            )
        engine_role, superuser = row if row else ("", False)
        foreign = sorted(owner for owner in owners if not superuser and not found[owner])
        if foreign:
            raise DriverFailure(
                f"the engine's role {engine_role} cannot give the restored objects back to "
                f"their owners {', '.join(foreign)}: grant it membership "
                f"(GRANT {foreign[0]} TO {engine_role}) or restore as a superuser",
                permanent=True,
            )

    def check(self, dump: Path, url: str, details: Mapping[str, Any]) -> Outcome:
        self._check_roles(url, details)
        # named after the dump file, which is named after the job: a retry drops it first
        throwaway = _scratch_name(_database(url), "verify", str(dump.resolve()))
        self._drop(url, throwaway)
        self._create(url, throwaway, _recorded(details))
        try:
            self._restore_into(dump, url, throwaway, "restore into a throwaway database")
            with self._connect(url, throwaway) as conn:
                counts = self._row_counts(conn)
        finally:
            self._drop(url, throwaway)
        expected = details.get("row_counts")
        if expected is not None and dict(expected) != counts:
            differing = sorted(
                name
                for name in set(expected) | set(counts)
                if expected.get(name) != counts.get(name)
            )
            raise DriverFailure(
                f"row counts differ after restore in {', '.join(differing[:5])}", permanent=True
            )
        return Outcome(f"restored and counted {len(counts)} tables ({sum(counts.values())} rows)")

    def empty_dump(self, url: str, destination: Path) -> Outcome:
        empty = _scratch_name(_database(url), "empty", str(destination.resolve()))
        self._drop(url, empty)
        # the project's encoding and locale; owned by the engine's role
        self._create(url, empty, self._properties(url, _database(url)))
        try:
            return self.dump(_with_database(url, empty), destination)
        finally:
            self._drop(url, empty)

    def restore_new(
        self,
        materialize: Materialize,
        target_url: str,
        *,
        before_commit: Callable[[], None],
        workdir: Path | None = None,
        parts: BlobParts | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """The new database gets the source database's properties from ``details`` (its
        encoding and locale, owner, grants, settings). Every object keeps the owner and
        grants it had."""
        target = _database(target_url)
        details = details or {}
        self._check_roles(target_url, details)
        if self._properties(target_url, target) is not None:
            raise DriverFailure(
                f"database {target} exists already; not overwriting it", permanent=True
            )
        restored = self._restore_through_scratch(
            materialize,
            target_url,
            _recorded(details),
            self._rename,
            before_commit=before_commit,
            workdir=workdir,
            parts=parts,
        )
        summary = f"restored into {target} (new database)"
        return Outcome(summary, 0, restored.stdout or summary, restored.stderr)

    def restore_over(
        self,
        materialize: Materialize,
        target_url: str,
        *,
        before_commit: Callable[[], None],
        workdir: Path | None = None,
        parts: BlobParts | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Outcome:
        """The database keeps its own properties (encoding and locale, owner, grants,
        settings). Every object keeps the owner and grants it had in the backup."""
        target = _database(target_url)
        self._check_roles(target_url, details or {})
        current = self._properties(target_url, target)
        if current is None:
            raise DriverFailure(f"the target database {target} is missing", permanent=True)
        restored = self._restore_through_scratch(
            materialize,
            target_url,
            current,
            self._swap,
            before_commit=before_commit,
            workdir=workdir,
            parts=parts,
        )
        summary = f"restored into {target} (swapped in)"
        return Outcome(summary, 0, restored.stdout or summary, restored.stderr)

    def _restore_through_scratch(
        self,
        materialize: Materialize,
        target_url: str,
        properties: DatabaseProperties | None,
        put_in_place: Callable[[str, str, str], None],
        *,
        before_commit: Callable[[], None],
        workdir: Path | None,
        parts: BlobParts | None,
    ) -> Outcome:
        """Restore into a scratch database given ``properties``, then (after
        ``before_commit``) ``put_in_place(url, scratch, target)``; the scratch database is
        dropped on any failure."""
        target = _database(target_url)
        scratch = _scratch_name(target, "new")
        self._drop(target_url, scratch)  # what a killed attempt left
        self._drop(target_url, _scratch_name(target, "old"))
        with tempfile.TemporaryDirectory(prefix="capy-restore-", dir=workdir) as scratch_dir:
            dump = Path(scratch_dir) / "restore"  # pg_dump's directory (or an archive file)
            try:
                # the scratch database, while unpacking; then the other files, while loading
                with ThreadPoolExecutor(2) as pool:
                    created = pool.submit(self._create, target_url, scratch, properties)
                    halves = None
                    try:
                        # a blob in frames with a cut: its largest table streams from the blob
                        if parts is not None and (parts.details.get("tar") or {}).get("cut"):
                            halves = self._halves(parts, dump, pool)
                        else:
                            materialize(dump)
                    except BaseException:
                        wait([created])  # then dropped below; the unpacking's error is the one
                        raise
                    created.result()
                    if properties is not None:  # may the engine? Known before the load
                        self._give_properties(target_url, scratch, properties, dry_run=True)
                    restored = self._restore_into(
                        dump, target_url, scratch, f"pg_restore into {scratch}", halves
                    )
                if properties is not None:
                    self._give_properties(target_url, scratch, properties)
                before_commit()
                put_in_place(target_url, scratch, target)
            except BaseException:
                self._drop(target_url, scratch)
                raise
        return restored

    def _rename(self, url: str, old: str, new: str) -> None:
        self._execute(
            url,
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(old), sql.Identifier(new)
            ),
            f"rename {old} to {new}",
        )

    def _allow_connections(self, url: str, name: str, allow: bool) -> None:
        self._execute(
            url,
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allow)
            ),
            f"{'allow' if allow else 'refuse'} connections to {name}",
        )

    def _give_properties(
        self, url: str, scratch: str, properties: DatabaseProperties, *, dry_run: bool = False
    ) -> None:
        """``scratch`` gets ``properties``' owner, ``ALTER DATABASE … SET``s (and
        ``ALTER ROLE … IN DATABASE … SET``s), database-level grants, comment and
        connection limit, in one transaction (``dry_run``: rolled back, to learn early
        whether the engine's role may)."""
        try:
            steps = pg_database.apply_statements(scratch, properties)
        except ValueError as exc:
            raise DriverFailure(f"the engine cannot copy {exc}", permanent=True) from None
        with self._admin(url) as conn:
            conn.autocommit = False
            try:
                for doing, statement in steps:
                    try:
                        conn.execute(statement)
                    except psycopg.Error as exc:
                        raise _statement_failure(f"{scratch}: {doing}", exc) from None
                if dry_run:
                    conn.rollback()
                else:
                    conn.commit()
            finally:
                if not conn.closed and conn.info.transaction_status != TransactionStatus.IDLE:
                    conn.rollback()

    def _swap(self, url: str, scratch: str, target: str) -> None:
        """Put ``scratch`` in ``target``'s place; on any failure the target stays as it was.

        Both renames commit together: a crash between them cannot leave the target's name
        without a database.
        """
        aside = _scratch_name(target, "old")
        self._allow_connections(url, target, False)
        try:
            self._terminate(url, target)
            with self._admin(url) as conn:
                try:
                    with conn.transaction():
                        conn.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                sql.Identifier(target), sql.Identifier(aside)
                            )
                        )
                        conn.execute(
                            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                                sql.Identifier(scratch), sql.Identifier(target)
                            )
                        )
                except psycopg.Error as exc:
                    text = str(exc).strip()
                    raise DriverFailure(
                        f"swap {scratch} into {target}: {text}", permanent=_classify(text)
                    ) from None
        except BaseException:
            if self._exists(url, target):
                self._allow_connections(url, target, True)
            raise
        self._drop(url, aside)

    def drop(self, url: str) -> None:
        self._drop(url, _database(url))
