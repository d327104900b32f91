"""The connections of a PostgreSQL store and how its statements are run.

A pool of connections (``psycopg_pool``) in autocommit: a read takes one for its statement;
a transaction holds one, in ``BEGIN … COMMIT``, for its thread (reads in it see its writes;
a transaction opened inside it is a savepoint). Statements are the shared text of
``sql_base``'s operations, their ``:name`` and ``?`` parameters turned into psycopg's, and
bound on the client (``ClientCursor``), as SQLite binds them: an untyped ``NULL`` compares
as it does there. JSON arrives as text and is read as SQLite's is.

Workers wait on ``LISTEN capy_work``; every write that may make a job claimable sends
``NOTIFY capy_work``, which PostgreSQL delivers at commit (once per transaction).

``data_version`` is a digest of ``pg_current_snapshot()``: any transaction that commits
between two readings leaves the second snapshot different (it was running in the first, or
it started after it, moving ``xmax``), so the number changes whenever anyone commits, and
costs one round trip without a write. It also changes for commits to other databases of
the server: a cache over it is then emptied for nothing, never kept too long.

The store's URL carries a password: no message, ``repr`` or file this module makes holds it
(:func:`redact`).
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg import ClientCursor
from psycopg.types.string import TextLoader

from pulumi_capy.api.errors import ConfigError
from pulumi_capy.engine.stores.contract import Transaction
from pulumi_capy.engine.stores.postgres_migrations import migrate
from pulumi_capy.engine.stores.sql_base import (
    Cursor,
    Database,
    SqlConnections,
    checked_names,
    to_timestamp,
)

__all__ = ["PostgresConnections", "PostgresTransaction", "mask", "probe", "redact"]

CHANNEL = "capy_work"
CONNECT_TIMEOUT = 10
POOL_SIZE = 8  # connections per store handle, at most (a server's threads share them)
HIDDEN_COLUMNS = frozenset({"seq"})  # the insertion order: ours, not a model's field


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def mask(text: str, url: str) -> str:
    """``text`` without the URL's password (as written and decoded)."""
    password = urlsplit(url).password
    for secret in (password, unquote(password)) if password else ():
        if secret:
            text = text.replace(secret, "***")
    return text


def probe(url: str) -> str | None:
    """Why the database at ``url`` cannot be reached (password hidden); None when it can."""
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return mask(str(exc).strip(), url)
    return None


_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


@functools.cache
def to_pyformat(sql: str) -> str:
    """A statement of the shared text (``:name``, ``?``) with psycopg's parameters."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")).replace("?", "%s")


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], dict[str, Any]]:
    names = [column.name for column in cursor.description or ()]
    keep = [index for index, name in enumerate(names) if name not in HIDDEN_COLUMNS]

    def make(values: Sequence[Any]) -> dict[str, Any]:
        return {names[index]: values[index] for index in keep}

    return make


class _Statements:
    """A psycopg connection as the shared operations use it (``Database``)."""

    __slots__ = ("conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return self.conn.execute(to_pyformat(sql), parameters)


class PostgresTransaction:
    """The ``Transaction`` of a PostgreSQL store: the connection it holds, hidden."""

    __slots__ = ("_db",)

    def __init__(self, db: _Statements) -> None:
        self._db: _Statements = db


def _configure(conn: psycopg.Connection[Any]) -> None:
    for name in ("json", "jsonb"):  # read as SQLite's JSON text is (``sql_base``)
        conn.adapters.register_loader(name, TextLoader)


def connection_options() -> dict[str, Any]:
    return {
        "autocommit": True,
        "cursor_factory": ClientCursor,
        "row_factory": _row_factory,
        "connect_timeout": CONNECT_TIMEOUT,
        "options": "-c TimeZone=UTC",
        "application_name": "capy",
    }


class PostgresConnections(SqlConnections):
    """Connections, transactions and row plumbing of the PostgreSQL store. Thread-safe."""

    ROWID = "seq"
    SKIP_LOCKED = "FOR UPDATE SKIP LOCKED"
    IS = "IS NOT DISTINCT FROM"
    integrity_errors = (psycopg.errors.UniqueViolation,)

    @staticmethod
    def json_text(column: str, *path: str) -> str:
        checked_names([column, *path])
        return f"({column} #>> '{{{','.join(path)}}}')"

    def __init__(self, url: str) -> None:
        self._url = url
        self.location = redact(url)
        self._local = threading.local()  # per thread: the connection of its transaction
        self._listen_lock = threading.Lock()
        self._listener: psycopg.Connection[Any] | None = None
        self._wakeups = 0  # notifications the listener has received (and its start)
        self._check_reachable()
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[Any]] = (
            psycopg_pool.ConnectionPool(
                url,
                kwargs=connection_options(),
                configure=_configure,
                min_size=1,
                max_size=POOL_SIZE,
                open=True,
                name="capy-store",
                num_workers=1,
            )
        )
        try:
            with self.transaction() as tx:
                db = self._connection(tx)
                migrate(self._raw(tx), str(to_timestamp(datetime.now(UTC))))
                self._after_migrations(db)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def _check_reachable(self) -> None:
        """Connect once, so that a wrong URL is one clear error (not a pool's retries)."""
        why = probe(self._url)
        if why is not None:
            raise ConfigError(f"cannot open the store at {self.location}: {why}")

    def _after_migrations(self, db: Database) -> bool:
        """Data changes the opening transaction makes after the migrations (a subclass's)."""
        return False

    def close(self) -> None:
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    # ------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One write transaction: all or nothing (a savepoint when nested in a thread's)."""
        held: _Statements | None = getattr(self._local, "db", None)
        if held is not None:
            with held.conn.transaction():
                yield PostgresTransaction(held)
            return
        with self._pool.connection() as conn:
            db = _Statements(conn)
            self._local.db = db
            try:
                with conn.transaction():
                    yield PostgresTransaction(db)
            finally:
                self._local.db = None

    @contextmanager
    def _writing(self) -> Iterator[Database]:
        with self.transaction() as tx:
            yield self._connection(tx)

    def _statement(self) -> AbstractContextManager[Database]:
        return self._reading()

    def _prepared(self, db: Database, sql: str, params: Mapping[str, Any]) -> Cursor:
        # bound on the server (not ``ClientCursor``), so the statement can be prepared:
        # planning a claim costs about what running it does
        assert isinstance(db, _Statements)
        cursor: psycopg.Cursor[Any] = psycopg.Cursor(db.conn)
        return cursor.execute(to_pyformat(sql), params, prepare=True)

    def _connection(self, tx: Transaction) -> Database:
        held: _Statements | None = getattr(self._local, "db", None)
        if not isinstance(tx, PostgresTransaction) or held is None or tx._db is not held:
            raise TypeError(f"not an open transaction of this store: {tx!r}")
        return held

    def _raw(self, tx: Transaction) -> psycopg.Connection[Any]:
        statements = self._connection(tx)
        assert isinstance(statements, _Statements)
        return statements.conn

    @contextmanager
    def _reading(self) -> Iterator[Database]:
        held: _Statements | None = getattr(self._local, "db", None)
        if held is not None:
            yield held
            return
        with self._pool.connection() as conn:
            yield _Statements(conn)

    @property
    def schema_version(self) -> int:
        row = self._one("SELECT MAX(version) AS v FROM schema_migrations", {})
        return int(row["v"]) if row and row["v"] is not None else 0

    def data_version(self) -> int:
        """A digest of ``pg_current_snapshot()`` (see the module's docstring)."""
        row = self._one("SELECT pg_current_snapshot()::text AS snapshot", ())
        assert row is not None
        digest = hashlib.blake2b(str(row["snapshot"]).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") >> 1

    # ------------------------------------------------------------ wake-ups

    def _work_changed(self, db: Database) -> None:
        db.execute(f"NOTIFY {CHANNEL}", ())

    def wait_for_work(self, timeout: float) -> bool:
        """Wait until a write may have made a job claimable (True) or ``timeout`` passed.
        The first call returns True at once: what was queued before it listened would
        otherwise wait a whole ``timeout``. Threads share one listening connection: one
        listens while the others wait for it, and a wake-up it gets wakes them too."""
        seen = self._wakeups
        if not self._listen_lock.acquire(timeout=max(timeout, 0.0)):
            return self._wakeups != seen
        try:
            if self._wakeups != seen:
                return True
            if self._listener is None:
                self._listener = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                )
                self._listener.execute(f"LISTEN {CHANNEL}")
                self._wakeups += 1
                return True
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                self._wakeups += 1
                return True
        except psycopg.OperationalError:
            # the server went away (a restart, a failover): listen anew next time, and
            # meanwhile wait as SQLite does; the caller looks at the queue regardless
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            time.sleep(timeout)
        finally:
            self._listen_lock.release()
        return False
