"""The SQLite driver: projects whose ``database_url`` is ``sqlite:////absolute/path.db``.

- dump: the online backup API in one step (``pages=-1``), which holds one read
  snapshot of the source while other connections keep writing. (A stepwise
  copy restarts on every concurrent write and may never finish.)
- check: ``PRAGMA quick_check`` on the restored copy.
- restore into a new file: write it beside the target under a hidden name, then
  link it into place (refusing to clobber) and fsync the directory.
- restore over a live file: the backup API again, scratch -> target, in one
  step: one write transaction, so open connections see the old database or the
  new one and nothing in between. ``recreate`` changes nothing here: the copy
  replaces the whole database anyway.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pulumi_capy.api.errors import FieldError, InvalidInput
from pulumi_capy.engine.blobs import BlobParts, fsync_directory
from pulumi_capy.engine.drivers import DatabaseInfo, DriverFailure, Materialize, Outcome
from pulumi_capy.engine.private import create_private_file, private_directory

__all__ = ["SQLITE_VERSION", "SqliteDriver", "sqlite_path"]

HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_SECONDS = 30.0
SQLITE_VERSION = sqlite3.sqlite_version  # of the library this Python links, in manifests


def sqlite_path(url: str, *, cwd: Path | None = None) -> Path:
    """The file of a ``sqlite:///`` URL; a relative path is taken from ``cwd``."""
    if not url.startswith("sqlite:///"):
        raise InvalidInput(
            [
                FieldError(
                    "database_url",
                    "a SQLite URL is sqlite:////absolute/path.db (or sqlite:///relative.db)",
                )
            ]
        )
    raw = url.removeprefix("sqlite:///").split("?", 1)[0]
    if not raw:
        raise InvalidInput([FieldError("database_url", "the SQLite URL names no file")])
    path = Path(raw)
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    return path.resolve()


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
    db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
    return db


def _not_a_database(path: Path) -> str | None:
    """Why the file is no SQLite database we can use (None: it is one), read through
    SQLite: a descriptor of our own, once closed, would drop every POSIX lock this process
    holds on the file (the locks of its SQLite connections: the replicator's read
    transaction, a running backup's snapshot), and another connection could then reset
    the log under them, or delete it."""
    if path.stat().st_size < len(HEADER):
        return f"{path} is not a SQLite database"  # SQLite would take it for an empty one
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=2.0)
    try:
        db.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        text = str(exc)
        if "not a database" in text:
            return f"{path} is not a SQLite database"
        if "unable to open" in text:
            return f"{path} cannot be opened by this process: {text}"
        # locked or busy: the jobs that use the file will say so, with retries
    finally:
        db.close()
    return None


def _classify(exc: sqlite3.Error, doing: str) -> DriverFailure:
    text = f"{doing}: {exc}"
    transient = isinstance(exc, sqlite3.OperationalError) and any(
        word in str(exc).lower() for word in ("locked", "busy", "disk i/o", "full")
    )
    outcome = Outcome(summary=text, exit_code=1, stderr=text)
    return DriverFailure(text, permanent=not transient, outcome=outcome)


def _table_count(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()
    return int(row[0])


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class SqliteDriver:
    kind = "sqlite"
    format = "sqlite3"
    extension = "sqlite"
    zstd_level = 1  # bench/sqlite_backup.py measures it against level 3 (see the README)
    dump_becomes_database = True  # a new preview is the materialized file, linked into place

    def inspect(self, url: str, *, cwd: Path | None = None) -> DatabaseInfo:
        path = sqlite_path(url, cwd=cwd)
        if not path.is_file():
            raise InvalidInput(
                [FieldError("database_url", f"no SQLite file at {path}; create it first")]
            )
        problem = _not_a_database(path)
        if problem is not None:
            raise InvalidInput([FieldError("database_url", problem)])
        return DatabaseInfo(kind=self.kind, url=_url(path), database_name=str(path))

    def source_size(self, url: str) -> int | None:
        """The database's pages times their size (what the backup API copies)."""
        path = sqlite_path(url)
        if not path.is_file():
            return None
        try:
            db = _connect(path)
            try:
                count = db.execute("PRAGMA page_count").fetchone()[0]
                size = db.execute("PRAGMA page_size").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return int(count) * int(size)

    def dump(self, url: str, destination: Path) -> Outcome:
        source_path = sqlite_path(url)
        if not source_path.is_file():
            raise DriverFailure(f"the project database {source_path} is missing", permanent=True)
        try:
            source = _connect(source_path)
            try:
                create_private_file(destination)
                target = sqlite3.connect(destination)
                try:
                    # a scratch copy: the blob made from it is what gets fsynced
                    target.execute("PRAGMA synchronous = OFF")
                    target.execute("PRAGMA journal_mode = OFF")
                    source.backup(target, pages=-1)
                    tables = _table_count(target)
                finally:
                    target.close()
            finally:
                source.close()
        except sqlite3.Error as exc:
            destination.unlink(missing_ok=True)
            raise _classify(exc, f"backup of {source_path}") from exc
        size = destination.stat().st_size
        return Outcome(
            summary=f"copied {tables} tables ({size} bytes) from {source_path}",
            details={"tables": tables, "size_bytes": size},
        )

    def check(self, dump: Path, url: str = "", details: Mapping[str, Any] | None = None) -> Outcome:
        try:
            db = _connect(dump)
            try:
                rows = [str(row[0]) for row in db.execute("PRAGMA quick_check").fetchall()]
                tables = _table_count(db)
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise _classify(exc, "quick_check") from exc
        if rows != ["ok"]:
            problems = "\n".join(rows[:20])
            raise DriverFailure(
                f"quick_check found problems: {rows[0]}",
                permanent=True,
                outcome=Outcome(summary="quick_check failed", exit_code=1, stderr=problems),
            )
        return Outcome(summary=f"quick_check ok ({tables} tables)", details={"tables": tables})

    def connection_fields(self, url: str) -> dict[str, Any]:
        return {"database_name": str(sqlite_path(url))}

    def empty_dump(self, url: str, destination: Path) -> Outcome:
        create_private_file(destination)
        db = sqlite3.connect(destination)
        try:
            db.execute("PRAGMA user_version = 0")
            db.execute("CREATE TABLE capy_empty (x)")  # writes the header; then nothing is left
            db.execute("DROP TABLE capy_empty")
            db.commit()
        finally:
            db.close()
        return Outcome(summary=f"an empty database, {destination.stat().st_size} bytes")

    def preview_url(self, project_url: str, preview_id: str, previews_dir: Path) -> str:
        return _url(previews_dir / f"{preview_id}.db")

    def restore_new(
        self,
        materialize: Materialize,
        target_url: str,
        *,
        before_commit: Callable[[], None],
        workdir: Path | None = None,  # unused: the scratch copy sits beside the target
        parts: BlobParts | None = None,  # unused: a SQLite backup is one file
        details: Mapping[str, Any] | None = None,  # unused: the file is the whole database
    ) -> Outcome:
        target = sqlite_path(target_url)
        if target.exists():
            raise DriverFailure(f"{target} exists already; not overwriting it", permanent=True)
        private_directory(target.parent)
        scratch = target.with_name(f".{target.name}.restoring")
        try:
            materialize(scratch)
            before_commit()
            os.link(scratch, target)  # fails rather than clobber
            fsync_directory(target.parent)
        finally:
            scratch.unlink(missing_ok=True)
        size = target.stat().st_size
        return Outcome(summary=f"restored {size} bytes into new database {target}")

    def restore_over(
        self,
        materialize: Materialize,
        target_url: str,
        *,
        before_commit: Callable[[], None],
        workdir: Path | None = None,  # unused: the scratch copy sits beside the target
        parts: BlobParts | None = None,  # unused: a SQLite backup is one file
        details: Mapping[str, Any] | None = None,  # unused: the file is the whole database
    ) -> Outcome:
        target = sqlite_path(target_url)
        if not target.is_file():
            raise DriverFailure(f"the target database {target} is missing", permanent=True)
        scratch = target.with_name(f".{target.name}.restoring")
        try:
            materialize(scratch)
            try:
                source = _connect(scratch)
                live = _connect(target)
                try:
                    self._match_page_size(source, live)
                    before_commit()
                    source.backup(live, pages=-1)
                    tables = _table_count(live)
                finally:
                    live.close()
                    source.close()
            except sqlite3.Error as exc:
                raise _classify(exc, f"restore into {target}") from exc
        finally:
            _remove_database(scratch)
        return Outcome(summary=f"restored {tables} tables into {target} (atomic replace)")

    @staticmethod
    def _match_page_size(source: sqlite3.Connection, live: sqlite3.Connection) -> None:
        """A WAL-mode target refuses a copy with another page size; convert the scratch."""
        wanted = int(live.execute("PRAGMA page_size").fetchone()[0])
        if int(source.execute("PRAGMA page_size").fetchone()[0]) != wanted:
            source.execute("PRAGMA journal_mode = DELETE")
            source.execute(f"PRAGMA page_size = {wanted}")
            source.execute("VACUUM")

    def database_name(self, url: str) -> str:
        return str(sqlite_path(url))

    def drop(self, url: str) -> None:
        path = sqlite_path(url)
        _remove_database(path)
        with contextlib.suppress(OSError):
            fsync_directory(path.parent)
