"""A PostgreSQL database copied out: ``pg_dump -Fd -Z0`` (the directory format, one file
per table's data) inside an exported snapshot, with what the backup's manifest records
of the source read in that same snapshot; the directory streamed as a tar, and unpacked
from one."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, cast

import psycopg
from psycopg import sql

from pulumi_capy.engine.drivers import Consume, DriverFailure, Outcome
from pulumi_capy.engine.drivers.postgres import admin, properties, roles
from pulumi_capy.engine.drivers.postgres.binaries import binary
from pulumi_capy.engine.drivers.postgres.failures import is_permanent
from pulumi_capy.engine.drivers.postgres.halves import splits, splitter
from pulumi_capy.engine.drivers.postgres.libpq import connect, database_of, run, with_database
from pulumi_capy.engine.private import open_private
from pulumi_capy.engine.tarstream import BLOCK, TarDamaged, TarReader, is_tar, unpack

__all__ = ["CUSTOM_ARCHIVE", "dump", "dump_streamed", "empty_dump", "row_counts", "unpack_dump"]

CUSTOM_ARCHIVE = b"PGDMP"  # pg_dump's custom format (-Fc), restored as one archive file


def row_counts(conn: psycopg.Connection) -> dict[str, int]:
    """The row count of every table, ``{"schema.table": rows}``."""
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
def snapshot(url: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """An exported snapshot of ``url`` (held while the block runs) and what the
    backup's manifest records of it: the row count of every table, read in that
    same snapshot (pg_dump reads the very snapshot the counts were taken in), the
    database's own properties and the roles its objects refer to."""
    with connect(url) as conn:
        conn.autocommit = False
        name = database_of(url)
        try:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            exported = str(row[0]) if row else ""
            recorded = properties.read(conn, name)
            if recorded is None:
                raise DriverFailure(f"database {name} is gone", permanent=True)
            details = {
                "server_major": conn.info.server_version // 10000,
                "row_counts": row_counts(conn),
                "database": recorded.to_json(),
                "roles": roles.needed(conn, recorded).to_json(),
            }
            yield exported, details
        except psycopg.Error as exc:
            raise DriverFailure(
                f"snapshot of {name}: {str(exc).strip()}", permanent=is_permanent(str(exc))
            ) from None
        finally:
            conn.rollback()


def dump(url: str, destination: Path) -> Outcome:
    """``pg_dump -Fd -Z0`` into ``destination``, a directory it creates."""
    try:
        with snapshot(url) as (exported, details):
            pg_dump = binary("pg_dump", details["server_major"])
            done = run(
                [pg_dump, "-Fd", "-Z0", f"--snapshot={exported}", "-f", str(destination)],
                url,
                f"pg_dump of {database_of(url)}",
            )
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)  # what pg_dump wrote before failing
        raise
    size = sum(path.stat().st_size for path in destination.iterdir())
    counts = details["row_counts"]
    summary = (
        f"pg_dump of {database_of(url)}: {len(counts)} tables, "
        f"{sum(counts.values())} rows, {size} bytes"
    )
    return Outcome(
        summary,
        done.returncode,
        done.stdout or summary,
        done.stderr,
        details={**details, "size_bytes": size},
    )


def dump_streamed(url: str, consume: Consume, workdir: Path, split_over: int) -> Outcome:
    """The dump's directory, written under ``workdir``, handed to ``consume`` as one tar
    stream (made as it is read; the largest table's rows of at least ``split_over``
    bytes cut in two, see ``halves``), then removed."""
    directory = workdir / "pg_dump"
    try:
        dumped = dump(url, directory)
        stream = TarReader(directory, split=lambda name, size: splits(name, size, split_over))
        consume(cast(IO[bytes], stream))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    details = {**dumped.details, "size_bytes": stream.count, "tar": stream.layout}
    return replace(dumped, details=details)


def unpack_dump(stream: IO[bytes], destination: Path, split_over: int) -> None:
    """What ``dump_streamed`` streamed, back at ``destination``: the directory (the
    largest table's second half aside, see ``halves``), or a custom-format archive
    file."""
    head = b""
    while len(head) < BLOCK:
        data = stream.read(BLOCK - len(head))
        if not data:
            break
        head += data
    if head.startswith(CUSTOM_ARCHIVE):
        with open_private(destination, "wb") as out:
            out.write(head)
            shutil.copyfileobj(stream, out, 1 << 20)
        return
    if not is_tar(head):
        raise DriverFailure(
            "the backup holds neither a pg_dump directory nor a pg_dump archive", permanent=True
        )
    try:
        unpack(stream, destination, head, split=splitter(destination, split_over))
    except TarDamaged as exc:
        raise DriverFailure(f"the backup's archive is damaged: {exc}", permanent=True) from None


def empty_dump(url: str, destination: Path) -> Outcome:
    """The dump of an empty database with the project's encoding and locale, owned by
    the engine's role."""
    empty = admin.scratch_name(database_of(url), "empty", str(destination.resolve()))
    admin.drop(url, empty)
    admin.create(url, empty, admin.properties(url, database_of(url)))
    try:
        return dump(with_database(url, empty), destination)
    finally:
        admin.drop(url, empty)
