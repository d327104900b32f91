"""What the Go acceptance tests of ``terraform-provider-capy`` cannot do over the API:
make real application databases, count their rows, and damage the server's engine
directory behind its back. Run with the virtualenv's python (``CAPY_TF_HELPER`` is the
argv prefix; ``tests/terraform/conftest.py`` sets it and the variables below).

    acc_helper.py sqlite-db PATH ROWS     a SQLite database with ROWS customers; prints PATH
    acc_helper.py pg-db NAME [ROWS]       a PostgreSQL database NAME (20 customers by default)
                                          on the tests' server; prints its URL (a secret)
    acc_helper.py expire-backup BACKUP_ID the backup and its restore points expired, out of band
    acc_helper.py corrupt-blob BACKUP_KEY one byte of the backup's blob flipped (a restore fails:
                                          checksum mismatch)
    acc_helper.py rows URL_OR_PATH TABLE  prints the number of rows of TABLE

Every database it makes has ``customers(id, name, email)``. Environment:
``CAPY_TF_ENGINE_DIR`` (the engine directory of the running ``capy serve``: its SQLite
store and ``blobs/``, opened by this second process while the server runs) and
``CAPY_TF_POSTGRES_ADMIN_URL`` (a superuser URL of the tests' PostgreSQL server). An
error exits 1 with one line on stderr, which never holds a database URL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from pulumi_capy.api.errors import CapyError
from pulumi_capy.engine import Engine
from pulumi_capy.engine.blobs import LocalBlobStore

ENGINE_DIR_ENV = "CAPY_TF_ENGINE_DIR"
POSTGRES_ADMIN_URL_ENV = "CAPY_TF_POSTGRES_ADMIN_URL"
DEFAULT_PG_ROWS = 20
# a database name the helper accepts: an unquoted PostgreSQL identifier
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# a table name ``rows`` accepts: ``name`` or ``schema.name``
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")


class HelperError(Exception):
    """What went wrong, in a sentence fit for the Go test's failure message."""


def _customers(rows: int) -> list[tuple[int, str, str]]:
    return [(i, f"customer-{i}", f"c{i}@example.test") for i in range(1, rows + 1)]


def _environment(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise HelperError(f"{name} is not set (tests/terraform/conftest.py sets it)")
    return value


def _redact(message: str, url: str) -> str:
    """``message`` without the password of ``url`` (a driver may echo a connection string)."""
    password = urlsplit(url).password
    for secret in {password, unquote(password)} if password else set():
        message = message.replace(secret, "***")
    return message


def _engine() -> Engine:
    """A second handle on the running server's engine (its SQLite store takes writers
    from other processes); never a new engine where there was none."""
    directory = Path(_environment(ENGINE_DIR_ENV))
    if not (directory / "engine.db").is_file():
        raise HelperError(f"{ENGINE_DIR_ENV}={directory} holds no engine (no engine.db)")
    return Engine(directory)


# ---------------------------------------------------------------- commands


def sqlite_db(path: str, rows: int) -> str:
    """A new SQLite database at ``path`` with ``rows`` customers; its absolute path."""
    target = Path(path).expanduser().resolve()
    if target.exists():
        raise HelperError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.closing(sqlite3.connect(target)) as db, db:
            db.execute(
                "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT)"
            )
            db.executemany("INSERT INTO customers VALUES (?, ?, ?)", _customers(rows))
    except sqlite3.Error as exc:
        raise HelperError(f"create {target}: {exc}") from exc
    return str(target)


def pg_db(name: str, rows: int) -> str:
    """A new database ``name`` with ``rows`` customers on the tests' PostgreSQL server;
    its URL (the superuser's, password included)."""
    if not DATABASE_NAME.fullmatch(name):
        raise HelperError(
            f"database name {name!r}: lowercase letters, digits and _ only, 63 at most, "
            "not starting with a digit"
        )
    admin = _environment(POSTGRES_ADMIN_URL_ENV)
    url = urlsplit(admin)._replace(path=f"/{name}").geturl()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as db:
            db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(url, connect_timeout=10) as db:
            db.execute(
                "CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL, email text)"
            )
            with db.cursor() as cursor:
                cursor.executemany("INSERT INTO customers VALUES (%s, %s, %s)", _customers(rows))
    except psycopg.Error as exc:
        raise HelperError(f"create database {name}: {_redact(str(exc), admin)}") from exc
    return url


def expire_backup(backup_id: str) -> str:
    """Marks the backup expired in the server's store, as retention would; its id."""
    with _engine() as engine:
        if engine.rt.store.get_backup(backup_id) is None:
            raise HelperError(f"no backup {backup_id} in the engine's store")
        if not engine.rt.store.expire_backup(backup_id, datetime.now(UTC)):
            raise HelperError(f"backup {backup_id} was already expired")
    return backup_id


def corrupt_blob(backup_key: str) -> str:
    """Flips one byte in the middle of the backup's blob (its checksum no longer matches);
    the blob's path."""
    with _engine() as engine:
        blobs = engine.rt.blobs
        if not isinstance(blobs, LocalBlobStore):
            raise HelperError(f"the engine keeps its blobs in {blobs.describe()}, not local files")
        blob = blobs.path(backup_key)  # CapyError for a key that names no object
    if not blob.is_file():
        raise HelperError(f"no blob for backup key {backup_key} ({blob})")
    data = bytearray(blob.read_bytes())
    if not data:
        raise HelperError(f"the blob of {backup_key} is empty")
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    return str(blob)


def count_rows(where: str, table: str) -> int:
    """The rows of ``table`` in a PostgreSQL database (a ``postgresql://`` URL) or a SQLite
    file (a path or a ``sqlite:///`` URL), opened read-only."""
    if not TABLE_NAME.fullmatch(table):
        raise HelperError(f"table name {table!r}: name or schema.name")
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table.split(".")))
    if where.startswith(("postgresql://", "postgres://")):
        try:
            with psycopg.connect(where, connect_timeout=10) as db:
                row = db.execute(query).fetchone()
        except psycopg.Error as exc:
            raise HelperError(f"count rows of {table}: {_redact(str(exc), where)}") from exc
        assert row is not None
        return int(row[0])
    path = Path(where.removeprefix("sqlite://") if where.startswith("sqlite://") else where)
    if not path.is_file():
        raise HelperError(f"no SQLite database at {path}")
    try:
        uri = f"file:{path.resolve()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            # the name matched TABLE_NAME: letters, digits, _ and one dot
            quoted = ".".join(f'"{part}"' for part in table.split("."))
            found = db.execute(f"SELECT count(*) FROM {quoted}").fetchone()  # noqa: S608
    except sqlite3.Error as exc:
        raise HelperError(f"count rows of {table} in {path}: {exc}") from exc
    return int(found[0])


# ---------------------------------------------------------------- command line


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a row count cannot be negative: {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acc_helper.py",
        description="Out-of-band help for the Go acceptance tests of terraform-provider-capy.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("sqlite-db", help="a SQLite database of ROWS customers")
    command.add_argument("path")
    command.add_argument("rows", type=_positive)
    command = commands.add_parser("pg-db", help="a PostgreSQL database; prints its URL")
    command.add_argument("name")
    command.add_argument("rows", type=_positive, nargs="?", default=DEFAULT_PG_ROWS)
    command = commands.add_parser("expire-backup", help="expire a backup out of band")
    command.add_argument("backup_id")
    command = commands.add_parser("corrupt-blob", help="flip a byte of a backup's blob")
    command.add_argument("backup_key")
    command = commands.add_parser("rows", help="count the rows of a table")
    command.add_argument("where", metavar="URL_OR_PATH")
    command.add_argument("table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    commands: dict[str, Callable[[], object]] = {
        "sqlite-db": lambda: sqlite_db(arguments.path, arguments.rows),
        "pg-db": lambda: pg_db(arguments.name, arguments.rows),
        "expire-backup": lambda: expire_backup(arguments.backup_id),
        "corrupt-blob": lambda: corrupt_blob(arguments.backup_key),
        "rows": lambda: count_rows(arguments.where, arguments.table),
    }
    try:
        printed = commands[arguments.command]()
    except (HelperError, CapyError) as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"acc_helper {arguments.command}: {message}", file=sys.stderr)
        return 1
    print(printed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
