"""Databases on a PostgreSQL server, as the engine administers them: create, drop,
rename, terminate sessions, refuse or allow connections, give a database its own
properties, and the swap of a restored database into place."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import LiteralString

import psycopg
from psycopg import sql

from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.drivers.postgres import properties as database_properties
from pulumi_capy.engine.drivers.postgres.failures import is_permanent, statement_failure
from pulumi_capy.engine.drivers.postgres.libpq import NAME_LIMIT, admin, execute
from pulumi_capy.engine.drivers.postgres.properties import DatabaseProperties

__all__ = [
    "allow_connections",
    "create",
    "drop",
    "exists",
    "give_properties",
    "properties",
    "refuse_connections",
    "rename",
    "scratch_name",
    "server_major",
    "swap",
    "terminate",
    "try_properties",
]


def scratch_name(base: str, tag: str, key: str | None = None) -> str:
    """A helper database's name, derived from what it serves, so that a retry finds (and
    drops) what a killed attempt left; restores of one target never overlap (job lock)."""
    digest = hashlib.sha256((key or base).encode()).hexdigest()[:8]
    suffix = f"__capy_{tag}_{digest}"
    return base[: NAME_LIMIT - len(suffix)] + suffix


def create(url: str, name: str, properties: DatabaseProperties | None) -> None:
    """Create ``name`` from ``template0`` with ``properties``' encoding and locale."""
    execute(url, database_properties.create_statement(name, properties), f"create {name}")


def drop(url: str, name: str) -> None:
    """Drop ``name`` and its sessions; gone already is fine."""
    terminate(url, name)
    execute(
        url,
        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)),
        f"drop {name}",
    )


def terminate(url: str, name: str) -> None:
    """End every session on ``name`` but this one."""
    with admin(url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def exists(url: str, name: str) -> bool:
    with admin(url) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def server_major(url: str) -> int:
    with admin(url) as conn:
        return int(conn.info.server_version) // 10000


def properties(url: str, name: str) -> DatabaseProperties | None:
    """``name``'s own properties; None when there is no such database."""
    with admin(url) as conn:
        return database_properties.read(conn, name)


def rename(url: str, old: str, new: str) -> None:
    execute(
        url,
        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)),
        f"rename {old} to {new}",
    )


def refuse_connections(url: str, name: str) -> None:
    _allow_connections(url, name, "false", f"refuse connections to {name}")


def allow_connections(url: str, name: str) -> None:
    _allow_connections(url, name, "true", f"allow connections to {name}")


def _allow_connections(url: str, name: str, value: LiteralString, doing: str) -> None:
    statement = sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}")
    execute(url, statement.format(sql.Identifier(name), sql.SQL(value)), doing)


def give_properties(url: str, scratch: str, properties: DatabaseProperties) -> None:
    """``scratch`` gets ``properties``' owner, ``ALTER DATABASE … SET``s (and
    ``ALTER ROLE … IN DATABASE … SET``s), database-level grants, comment and
    connection limit, in one transaction."""
    _apply_properties(url, scratch, properties, psycopg.Connection.commit)


def try_properties(url: str, scratch: str, properties: DatabaseProperties) -> None:
    """``give_properties``, rolled back: whether the engine's role may, learnt before
    the load."""
    _apply_properties(url, scratch, properties, psycopg.Connection.rollback)


def _apply_properties(
    url: str,
    scratch: str,
    properties: DatabaseProperties,
    finish: Callable[[psycopg.Connection], None],
) -> None:
    try:
        steps = database_properties.apply_statements(scratch, properties)
    except ValueError as exc:
        raise DriverFailure(f"the engine cannot copy {exc}", permanent=True) from None
    with admin(url) as conn:  # closed on a failure, which rolls the transaction back
        conn.autocommit = False
        for doing, statement in steps:
            try:
                conn.execute(statement)
            except psycopg.Error as exc:
                raise statement_failure(f"{scratch}: {doing}", exc) from None
        finish(conn)


def swap(url: str, scratch: str, target: str) -> None:
    """Put ``scratch`` in ``target``'s place; on any failure the target stays as it was.

    Both renames commit together: a crash between them cannot leave the target's name
    without a database.
    """
    aside = scratch_name(target, "old")
    refuse_connections(url, target)
    try:
        terminate(url, target)
        _rename_both(url, (target, aside), (scratch, target))
    except BaseException:
        if exists(url, target):
            allow_connections(url, target)
        raise
    drop(url, aside)


def _rename_both(url: str, first: tuple[str, str], second: tuple[str, str]) -> None:
    """Two renames in one transaction."""
    with admin(url) as conn:
        try:
            with conn.transaction():
                for old, new in (first, second):
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(old), sql.Identifier(new)
                        )
                    )
        except psycopg.Error as exc:
            text = str(exc).strip()
            raise DriverFailure(
                f"swap {second[0]} into {second[1]}: {text}", permanent=is_permanent(text)
            ) from None
