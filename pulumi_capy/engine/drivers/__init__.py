"""Database drivers: how the engine copies a database out and loads one back.

One contract (``Driver``) and one shared test suite for every driver. A
driver never sees blobs or jobs: it dumps a database into a file and loads a
file into a target, reporting what it did as an ``Outcome`` (the job's
``last_exit_code``/``last_stdout``/``last_stderr``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, runtime_checkable

from pulumi_capy.api.errors import EngineFailure, FieldError, InvalidInput

if TYPE_CHECKING:
    from pulumi_capy.engine.blobs import BlobParts

__all__ = [
    "Consume",
    "DatabaseInfo",
    "Driver",
    "DriverFailure",
    "Materialize",
    "Outcome",
    "StreamsDump",
    "driver_for",
]

# Writes the dump (the blob, decompressed and checked) at the given path: a file, or
# the directory a driver's dump is (PostgreSQL's pg_dump directory format).
Materialize = Callable[[Path], None]
# Reads a dump's bytes to their end (the engine compresses and hashes them into a blob).
Consume = Callable[[IO[bytes]], None]


@dataclass(frozen=True)
class Outcome:
    """What a driver step did, as an executor would report it."""

    summary: str
    exit_code: int = 0
    stdout: str = ""
    stderr: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class DriverFailure(EngineFailure):
    """A driver step failed; ``permanent`` says whether a retry could help."""

    def __init__(self, message: str, *, permanent: bool, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.outcome = outcome


@dataclass(frozen=True)
class DatabaseInfo:
    kind: str  # "sqlite"
    url: str  # normalised, as stored
    database_name: str  # for messages and Project.database_name


@runtime_checkable
class StreamsDump(Protocol):
    """A driver whose dump is not one file (PostgreSQL: pg_dump's directory format): the
    engine compresses and hashes the stream it hands over into the blob, and hands the
    blob back as a stream for the driver to unpack."""

    def dump_streamed(self, url: str, consume: Consume, workdir: Path) -> Outcome:
        """Dump ``url`` (scratch files under ``workdir``), handing its byte stream to
        ``consume``; raise ``DriverFailure`` when the dump failed (what ``consume`` wrote
        is then thrown away by the caller)."""
        ...

    def unpack(self, stream: IO[bytes], destination: Path) -> None:
        """Write what ``dump_streamed`` streamed at ``destination``, in the form
        ``restore_new``/``restore_over``'s materialize and ``check`` take."""
        ...


class Driver(Protocol):
    kind: str
    format: str  # the dump format recorded in the manifest
    extension: str  # of the blob, before ".zst"
    zstd_level: int  # what bench/ measured as the best speed for a blob no larger than needed
    # does a restore keep the materialized dump as the database (so it must be durable)?
    # Otherwise it is read once and thrown away, and need not be fsynced
    dump_becomes_database: bool

    def inspect(self, url: str) -> DatabaseInfo:
        """Validate a project's ``database_url``; raise ``InvalidInput`` naming it."""
        ...

    def source_size(self, url: str) -> int | None:
        """The database's size in bytes as its engine reports it (the total a backup's
        progress is measured against); None when it cannot be told."""
        ...

    def dump(self, url: str, destination: Path) -> Outcome:
        """Write a consistent copy of the database at ``destination`` (a file, or a
        directory the driver creates)."""
        ...

    def check(self, dump: Path, url: str, details: Mapping[str, Any]) -> Outcome:
        """Verify a dump by restoring it into a throwaway database and checking it.

        ``url`` is the database it came from (its server hosts the throwaway one);
        ``details`` are what ``dump`` reported (e.g. row counts to compare).
        """
        ...

    def empty_dump(self, url: str, destination: Path) -> Outcome:
        """Write the dump of an empty database on ``url``'s server (``mode: empty``), as
        ``dump`` would (its ``details`` are the empty database's)."""
        ...

    def connection_fields(self, url: str) -> dict[str, Any]:
        """How to reach a database, as PreviewDatabase fields (no password)."""
        ...

    def preview_url(self, project_url: str, preview_id: str, previews_dir: Path) -> str:
        """Where a new preview of this project lives."""
        ...

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
        """Load the dump into ``target_url``, a database that must not exist yet (a new
        preview); refuse one that does.

        ``workdir``: where scratch files may go (the engine's scratch space, swept
        when a killed worker left them); the system's temporary directory if None.
        ``parts``: the backup's blob, when it was written in frames, for a driver that
        reads its ranges itself instead of calling ``materialize`` (else None).
        ``details``: what ``dump`` reported of the source (the backup's manifest).

        ``before_commit`` runs right before the target comes into being and may raise
        to abort; a failure at any point leaves no target behind.
        """
        ...

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
        """Load the dump over ``target_url``, an existing database, replacing it in one
        atomic step; refuse a missing one.

        ``workdir``, ``parts`` and ``details`` as for ``restore_new``. ``before_commit``
        runs right before the first change to the target and may raise to abort; until
        then the target is untouched, and a failure at any point leaves it as it was.
        """
        ...

    def database_name(self, url: str) -> str:
        """How a database is named in ``PreviewDatabase.database_name``."""
        ...

    def drop(self, url: str) -> None:
        """Remove a preview database; gone already is fine."""
        ...


def driver_for(url: str) -> Driver:
    """The driver for a ``database_url``; ``InvalidInput`` when none fits."""
    from pulumi_capy.engine.drivers.sqlite import SqliteDriver

    if url.startswith("sqlite:"):
        return SqliteDriver()
    scheme = url.split(":", 1)[0] if ":" in url else ""
    if scheme in ("postgres", "postgresql"):
        try:
            from pulumi_capy.engine.drivers.postgres import PostgresDriver
        except ImportError as exc:  # psycopg is the `postgres` extra
            raise InvalidInput(
                [
                    FieldError(
                        "database_url",
                        f"PostgreSQL needs psycopg: pip install 'pulumi-capy[postgres]' ({exc})",
                    )
                ]
            ) from None
        return PostgresDriver()
    raise InvalidInput(
        [
            FieldError(
                "database_url",
                "unsupported URL; expected sqlite:////absolute/path.db or "
                "postgresql://user:password@host:port/database",
            )
        ]
    )
