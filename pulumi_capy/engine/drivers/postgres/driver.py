"""``PostgresDriver``: the ``Driver`` contract over the modules of this package."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import psycopg

from pulumi_capy.api.errors import FieldError, InvalidInput
from pulumi_capy.engine.blobs import BlobParts
from pulumi_capy.engine.drivers import Consume, DatabaseInfo, DriverFailure, Materialize, Outcome
from pulumi_capy.engine.drivers.postgres import admin, dump, restore
from pulumi_capy.engine.drivers.postgres.libpq import (
    NAME_LIMIT,
    connect,
    database_of,
    with_database,
)

__all__ = ["PostgresDriver"]


class PostgresDriver:
    kind = "postgresql"
    format = "pg_dump-directory"  # packed in a tar stream
    extension = "pgdir.tar"
    # bench/postgres.py measures it against pg_dump's own gzip (see the README)
    zstd_level = 3
    dump_becomes_database = False  # pg_restore reads it, then it is deleted
    # a table's rows at least this large are loaded in two halves (see halves)
    split_over = 32 << 20

    def inspect(self, url: str) -> DatabaseInfo:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
            raise InvalidInput(
                [FieldError("database_url", "expected postgresql://user:password@host:port/db")]
            )
        name = database_of(url)
        try:
            with connect(url) as conn:
                conn.execute("SELECT 1")
        except DriverFailure as exc:
            raise InvalidInput([FieldError("database_url", str(exc))]) from None
        return DatabaseInfo(kind=self.kind, url=url, database_name=name)

    def database_name(self, url: str) -> str:
        return database_of(url)

    def connection_fields(self, url: str) -> dict[str, Any]:
        parts = urlsplit(url)
        fields: dict[str, Any] = {
            "database_name": database_of(url),
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
        base = database_of(project_url)
        suffix = f"_{preview_id}"
        return with_database(project_url, base[: NAME_LIMIT - len(suffix)] + suffix)

    def source_size(self, url: str) -> int | None:
        """``pg_database_size``: the database's files on the server, a dump's total only
        roughly (indexes are not dumped; the dump's bytes are what is counted)."""
        try:
            with connect(url) as conn:
                row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        except (DriverFailure, psycopg.Error):
            return None
        return int(row[0]) if row else None

    def dump(self, url: str, destination: Path) -> Outcome:
        """``pg_dump -Fd -Z0`` into ``destination``, a directory it creates."""
        return dump.dump(url, destination)

    def dump_streamed(self, url: str, consume: Consume, workdir: Path) -> Outcome:
        """The dump's directory, written under ``workdir``, handed to ``consume`` as one tar
        stream (made as it is read), then removed."""
        return dump.dump_streamed(url, consume, workdir, self.split_over)

    def unpack(self, stream: IO[bytes], destination: Path) -> None:
        """What ``dump_streamed`` streamed, back at ``destination``: the directory, or
        a custom-format archive file."""
        dump.unpack_dump(stream, destination, self.split_over)

    def empty_dump(self, url: str, destination: Path) -> Outcome:
        return dump.empty_dump(url, destination)

    def check(self, dump: Path, url: str, details: Mapping[str, Any]) -> Outcome:
        return restore.check(dump, url, details)

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
        return restore.restore_new(
            materialize,
            target_url,
            before_commit=before_commit,
            workdir=workdir,
            parts=parts,
            details=details or {},
        )

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
        settings). Every object keeps the owner and grants it had."""
        return restore.restore_over(
            materialize,
            target_url,
            before_commit=before_commit,
            workdir=workdir,
            parts=parts,
            details=details or {},
        )

    def drop(self, url: str) -> None:
        admin.drop(url, database_of(url))
