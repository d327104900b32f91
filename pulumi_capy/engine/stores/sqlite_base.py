"""The connections of a SQLite store and how its rows become values.

One database in WAL mode. Several processes may open the same file at once:
every write runs in ``BEGIN IMMEDIATE`` on the store's one writing connection,
with a busy timeout; each thread reads through a reading connection of its own
(WAL readers wait for nobody), except inside its own transaction, whose writes
it must see.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pulumi_capy.engine.private import create_private_file, private_directory
from pulumi_capy.engine.stores.contract import Transaction
from pulumi_capy.engine.stores.sqlite_migrations import migrate

__all__ = ["SqliteConnections", "SqliteTransaction", "from_timestamp", "to_timestamp"]

BUSY_TIMEOUT_SECONDS = 30.0


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


_JSON_COLUMNS = {"payload", "result", "scopes", "notices", "generations", "progress"}
_BOOL_COLUMNS = {"is_active", "enabled", "partial"}


def _json(value: Any) -> Any:
    return json.loads(value)


def _progress(value: Any) -> Any:
    # a job's progress: an object; an engine of before it kept the step as plain text
    return json.loads(value) if isinstance(value, str) and value.startswith("{") else value


def _timestamp(value: Any) -> Any:
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


def read_row(row: sqlite3.Row) -> dict[str, Any]:
    return read_rows([row])[0]


def read_rows(rows: Sequence[sqlite3.Row]) -> list[dict[str, Any]]:
    """Rows of one query as dicts, each column read as :func:`_column_reader` says (one plan
    per query, not per cell: listing answers are the server's hottest path)."""
    if not rows:
        return []
    plan = [(key, _column_reader(key)) for key in rows[0].keys()]  # noqa: SIM118 - no __iter__
    out: list[dict[str, Any]] = []
    for row in rows:
        data: dict[str, Any] = {}
        for (key, reader), value in zip(plan, row, strict=True):
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


def _columns(fields: Mapping[str, Any]) -> list[str]:
    names = list(fields)
    for name in names:  # column names come from the store's own code; guard anyway
        if not set(name) <= _IDENT_OK:
            raise ValueError(f"bad column name {name!r}")
    return names


class SqliteTransaction:
    """The ``Transaction`` of a SQLite store: its writing connection, hidden."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db


class SqliteConnections:
    """Connections, transactions and row plumbing of the SQLite store. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        private_directory(path.parent)
        create_private_file(path)  # before SQLite makes it 0644, and its -wal/-shm alike
        self._lock = threading.RLock()  # the one writing connection, and reads in its txns
        self._local = threading.local()  # per thread: its reading connection, txn depth
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()  # not _lock: a writer's txn must not stop reads
        self._version_lock = threading.Lock()
        self._version_db: sqlite3.Connection | None = None
        self._closed = False
        self._db = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            # what a write frees is zeroed, not left on a free page (a URL sealed on open)
            self._db.execute("PRAGMA secure_delete = FAST")
            with self.transaction() as tx:
                migrate(self._connection(tx), str(to_timestamp(datetime.now(UTC))))
                rewritten = self._after_migrations(self._connection(tx))
            if rewritten:  # the log's older copies of the rewritten pages go too
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except BaseException:  # not a database, locked, no key: no connection left open
            self.close()
            raise

    def _after_migrations(self, db: sqlite3.Connection) -> bool:
        """Data changes the opening transaction makes after the migrations (a subclass's);
        whether it rewrote anything a reader of the file must no longer find."""
        return False

    def close(self) -> None:
        with self._lock, self._readers_lock, self._version_lock:
            self._closed = True
            self._db.close()
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            if self._version_db is not None:
                self._version_db.close()

    def _open_reader(self) -> sqlite3.Connection:
        if self._closed:
            raise sqlite3.ProgrammingError("the store is closed")
        reader = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,  # only its thread uses it; close() may be another
        )
        reader.row_factory = sqlite3.Row
        reader.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        reader.execute("PRAGMA query_only = ON")
        return reader

    def _reader(self) -> sqlite3.Connection:
        """This thread's reading connection. WAL readers never wait for the writer, nor for
        each other: reads of many threads (the server's) do not queue behind one lock."""
        reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if reader is None:
            with self._readers_lock:
                reader = self._open_reader()
                self._readers.append(reader)
            self._local.reader = reader
        return reader

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection a read uses: inside this thread's transaction, that transaction's
        (to see its own writes); otherwise this thread's reading connection."""
        if getattr(self._local, "depth", 0):
            with self._lock:
                yield self._db
        else:
            yield self._reader()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction (``BEGIN IMMEDIATE``): all or nothing."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._local.depth = getattr(self._local, "depth", 0) + 1
            try:
                yield SqliteTransaction(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._local.depth -= 1
            self._db.execute("COMMIT")

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A transaction of its own, for one operation."""
        with self.transaction() as tx:
            yield self._connection(tx)

    def _connection(self, tx: Transaction) -> sqlite3.Connection:
        """The connection behind ``tx``, which must be one of this store's transactions."""
        if not isinstance(tx, SqliteTransaction) or tx._db is not self._db:
            raise TypeError(f"not a transaction of this store: {tx!r}")
        return tx._db

    @property
    def schema_version(self) -> int:
        row = self._one("SELECT MAX(version) AS v FROM schema_migrations", {})
        return int(row["v"]) if row else 0

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``, on a connection of its own that never writes:
        it moves with every commit of any other connection, this store's writer included."""
        with self._version_lock:
            if self._version_db is None:
                self._version_db = self._open_reader()
            return int(self._version_db.execute("PRAGMA data_version").fetchone()[0])

    # ------------------------------------------------------------ rows

    def _one(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any] | None:
        with self._reading() as db:
            row = db.execute(sql, params).fetchone()
        return read_row(row) if row is not None else None

    def _all(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> list[dict[str, Any]]:
        with self._reading() as db:
            rows = db.execute(sql, params).fetchall()
        return read_rows(rows)

    @staticmethod
    def _insert(
        db: sqlite3.Connection, table: str, fields: Mapping[str, Any], *, replace: bool = False
    ) -> None:
        """Insert a row (``replace``: in place of the one with its key, if any)."""
        names = _columns(fields)
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        db.execute(
            f"{verb} INTO {table} ({', '.join(names)}) "  # names are checked
            f"VALUES ({', '.join(':' + n for n in names)})",
            {name: stored(name, fields[name]) for name in names},
        )

    @staticmethod
    def _set(
        db: sqlite3.Connection,
        table: str,
        key: str,
        fields: Mapping[str, Any],
        *,
        where: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> int:
        """Set ``fields`` of the row ``key`` (and ``where``); the number of rows changed."""
        names = _columns(fields)
        sets = ", ".join(f"{name} = :set_{name}" for name in names)
        values = {f"set_{name}": stored(name, fields[name]) for name in names}
        values.update(params or {})
        values["key"] = key
        cursor = db.execute(
            f"UPDATE {table} SET {sets} WHERE id = :key {where}",  # noqa: S608
            values,
        )
        return cursor.rowcount
