"""What the SQL stores (SQLite, PostgreSQL) share: how values become column values and back,
and the connection plumbing their operations are written against.

The shared operations (``sql_store``, ``sql_jobs``, ``sql_pitr``) hold one text of each
statement, with ``:name`` or ``?`` parameters; a store's connections run it (PostgreSQL's
translate the parameters). Where the dialects differ, a statement asks its store: the
insertion order of a table (``ROWID``), a JSON field (``json_text``), the row lock a claim
takes (``SKIP_LOCKED``), null-safe equality (``IS``), the wake-up of waiting workers
(``_work_changed``).
"""

from __future__ import annotations

import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel

from pulumi_capy.engine.stores.contract import Transaction

__all__ = [
    "Cursor",
    "Database",
    "SqlConnections",
    "from_timestamp",
    "read_row",
    "read_rows",
    "stored",
    "to_timestamp",
]


class Cursor(Protocol):
    """What the shared operations read from a statement (sqlite3's and psycopg's cursors)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Database(Protocol):
    """A connection as the shared operations use it: ``execute`` with ``:name`` or ``?``."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...


def to_timestamp(value: datetime | None) -> str | None:
    """Fixed-width UTC text, so that text order is time order."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    # fromisoformat reads our fixed format (Python >= 3.11) several times faster than strptime
    return datetime.fromisoformat(value)


_JSON_COLUMNS = {
    "payload",
    "result",
    "scopes",
    "notices",
    "generations",
    "progress",
    "sqlite_dirs",
}
_BOOL_COLUMNS = {"is_active", "enabled", "partial"}


def _json(value: Any) -> Any:
    return json.loads(value)


def _progress(value: Any) -> Any:
    # a job's progress: an object; an engine of before it kept the step as plain text
    return json.loads(value) if isinstance(value, str) and value.startswith("{") else value


def _timestamp(value: Any) -> Any:
    # SQLite keeps text; PostgreSQL's timestamptz arrives as a datetime already
    return datetime.fromisoformat(value) if isinstance(value, str) else value


@functools.cache
def _column_reader(key: str) -> Callable[[Any], Any] | None:
    """How a column's stored value becomes its model value (``None`` stays ``None``)."""
    if key == "progress":
        return _progress
    if key in _JSON_COLUMNS:
        return _json
    if key in _BOOL_COLUMNS:
        return bool
    if key.endswith(("_at", "_time")):
        return _timestamp
    return None


def read_row(row: Any) -> dict[str, Any]:
    return read_rows([row])[0]


def read_rows(rows: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of one query (``sqlite3.Row`` or dicts) as dicts, each column read as
    :func:`_column_reader` says (one plan per query, not per cell: listing answers are the
    server's hottest path)."""
    if not rows:
        return []
    plan = [(key, _column_reader(key)) for key in rows[0].keys()]  # noqa: SIM118 - no __iter__
    out: list[dict[str, Any]] = []
    for row in rows:
        data: dict[str, Any] = {}
        values = row.values() if isinstance(row, dict) else row
        for (key, reader), value in zip(plan, values, strict=True):
            data[key] = value if reader is None or value is None else reader(value)
        out.append(data)
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_timestamp(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def stored(key: str, value: Any) -> Any:
    """A value as its column keeps it."""
    if isinstance(value, datetime):
        return to_timestamp(value)
    if key in _JSON_COLUMNS and value is not None:
        return json.dumps(value, sort_keys=True, default=_json_default)
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value  # an enum member
    return value


_IDENT_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def checked_names(fields: Mapping[str, Any] | Sequence[str]) -> list[str]:
    names = list(fields)
    for name in names:  # column names come from the store's own code; guard anyway
        if not set(name) <= _IDENT_OK:
            raise ValueError(f"bad column name {name!r}")
    return names


class SqlConnections(ABC):
    """Connections, transactions and row plumbing of a SQL store; the dialect's hooks."""

    # the column that orders a table's rows as they were inserted (ties of created_at)
    ROWID = "rowid"
    # what a claim's choice of a job locks (PostgreSQL: the row, skipping those taken)
    SKIP_LOCKED = ""
    # null-safe equality
    IS = "IS"
    # the errors a broken unique constraint raises
    integrity_errors: tuple[type[Exception], ...] = ()

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]: ...

    @abstractmethod
    def _writing(self) -> AbstractContextManager[Database]:
        """A transaction of its own, for one operation."""

    def _statement(self) -> AbstractContextManager[Database]:
        """Where one statement that writes runs (atomic alone): SQLite's writing
        transaction; PostgreSQL's autocommit, which spares a claim two round trips."""
        return self._writing()

    def _prepared(self, db: Database, sql: str, params: Mapping[str, Any]) -> Cursor:
        """Run a hot statement (a claim) as one the server keeps planned (PostgreSQL's
        prepared statements); SQLite's connection caches its statements anyway."""
        return db.execute(sql, params)

    @abstractmethod
    def _connection(self, tx: Transaction) -> Database:
        """The connection behind ``tx``, which must be one of this store's transactions."""

    @abstractmethod
    def _reading(self) -> AbstractContextManager[Database]:
        """The connection a read uses: inside this thread's transaction, that
        transaction's (to see its own writes); otherwise one to read with."""

    def _one(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any] | None:
        with self._reading() as db:
            row = db.execute(sql, params).fetchone()
        return read_row(row) if row is not None else None

    def _all(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> list[dict[str, Any]]:
        with self._reading() as db:
            rows = db.execute(sql, params).fetchall()
        return read_rows(rows)

    @staticmethod
    def json_text(column: str, *path: str) -> str:
        """The SQL of the text at ``path`` in the JSON of ``column`` (SQLite's)."""
        checked_names([column, *path])
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def _work_changed(self, db: Database) -> None:  # noqa: B027 - SQLite wakes nobody
        """A job became claimable (or may have): wake the workers waiting for work."""

    @staticmethod
    def _insert(
        db: Database,
        table: str,
        fields: Mapping[str, Any],
        *,
        replace: Sequence[str] = (),
    ) -> None:
        """Insert a row (``replace``: the key columns; in place of the row with that key)."""
        names = checked_names(fields)
        upsert = ""
        if replace:
            keys = checked_names(replace)
            sets = ", ".join(f"{n} = excluded.{n}" for n in names if n not in keys)
            upsert = f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
        db.execute(
            f"INSERT INTO {table} ({', '.join(names)}) "  # noqa: S608 - names are checked
            f"VALUES ({', '.join(':' + n for n in names)}){upsert}",
            {name: stored(name, fields[name]) for name in names},
        )

    @staticmethod
    def _set(
        db: Database,
        table: str,
        key: str,
        fields: Mapping[str, Any],
        *,
        where: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> int:
        """Set ``fields`` of the row ``key`` (and ``where``); the number of rows changed."""
        names = checked_names(fields)
        sets = ", ".join(f"{name} = :set_{name}" for name in names)
        values = {f"set_{name}": stored(name, fields[name]) for name in names}
        values.update(params or {})
        values["key"] = key
        cursor = db.execute(
            f"UPDATE {table} SET {sets} WHERE id = :key {where}",  # noqa: S608
            values,
        )
        return cursor.rowcount
