"""How the engine reaches a PostgreSQL server: a URL's libpq settings (for psycopg and
for the binaries it runs, the password never on a command line), connections, control
statements, and running ``pg_dump``/``pg_restore``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from pulumi_capy.api.errors import FieldError, InvalidInput
from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.drivers.postgres.failures import (
    command_failure,
    is_permanent,
    statement_failure,
)

__all__ = [
    "CONNECT_TIMEOUT",
    "NAME_LIMIT",
    "admin",
    "connect",
    "database_of",
    "env",
    "execute",
    "redact",
    "run",
    "with_database",
]

NAME_LIMIT = 63  # PostgreSQL identifiers
CONNECT_TIMEOUT = 10
MAINTENANCE_DATABASE = "postgres"


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def database_of(url: str) -> str:
    """The database a URL names; ``InvalidInput`` when it names none."""
    name = unquote(urlsplit(url).path.lstrip("/"))
    if not name:
        raise InvalidInput([FieldError("database_url", "the URL names no database")])
    return name


def with_database(url: str, name: str) -> str:
    """The URL of database ``name`` on ``url``'s server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


def env(url: str) -> dict[str, str]:
    """libpq environment for a URL: the password never goes on a command line."""
    parts = urlsplit(url)
    variables = dict(os.environ)
    for key, value in (
        ("PGHOST", parts.hostname),
        ("PGPORT", str(parts.port) if parts.port else None),
        ("PGUSER", unquote(parts.username) if parts.username else None),
        ("PGPASSWORD", unquote(parts.password) if parts.password else None),
        ("PGDATABASE", database_of(url)),
        ("PGCONNECT_TIMEOUT", str(CONNECT_TIMEOUT)),
    ):
        if value:
            variables[key] = value
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if key == "sslmode" and value:
            variables["PGSSLMODE"] = value
        elif key == "host" and value:  # a socket directory: postgresql://user@/db?host=/dir
            variables["PGHOST"] = unquote(value)
        elif key == "port" and value:
            variables["PGPORT"] = value
    return variables


def run(command: list[str], url: str, doing: str) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL binary against ``url``; ``DriverFailure`` when it fails."""
    done = subprocess.run(command, env=env(url), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise command_failure(doing, done, url)
    return done


@contextmanager
def connect(url: str, database: str | None = None) -> Iterator[psycopg.Connection]:
    """An autocommit connection to ``url`` (or to ``database`` on its server)."""
    target = with_database(url, database) if database else url
    try:
        conn = psycopg.connect(target, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.OperationalError as exc:
        text = str(exc).replace(urlsplit(url).password or "\0", "***")
        raise DriverFailure(
            f"connect to {redact(target)}: {text.strip()}", permanent=is_permanent(text)
        ) from None
    try:
        yield conn
    finally:
        conn.close()


def admin(url: str) -> AbstractContextManager[psycopg.Connection]:
    """A connection for CREATE/ALTER/DROP DATABASE (to the server's maintenance db)."""
    return connect(url, MAINTENANCE_DATABASE)


def execute(url: str, statement: sql.Composed, doing: str) -> None:
    """Run one control statement on the maintenance database."""
    with admin(url) as conn:
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            raise statement_failure(doing, exc) from None
