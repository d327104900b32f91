"""The connections of a SQLite store and how its rows become values.

One database in WAL mode. Several processes may open the same file at once:
every write runs in ``BEGIN IMMEDIATE`` on the store's one writing connection,
with a busy timeout; each thread reads through a reading connection of its own
(WAL readers wait for nobody), except inside its own transaction, whose writes
it must see.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pulumi_capy.engine.private import create_private_file, private_directory
from pulumi_capy.engine.stores.contract import Transaction
from pulumi_capy.engine.stores.sql_base import (
    SqlConnections,
    from_timestamp,
    read_row,
    stored,
    to_timestamp,
)
from pulumi_capy.engine.stores.sqlite_migrations import migrate

__all__ = [
    "SqliteConnections",
    "SqliteTransaction",
    "from_timestamp",
    "read_row",
    "stored",
    "to_timestamp",
]

BUSY_TIMEOUT_SECONDS = 30.0


class SqliteTransaction:
    """The ``Transaction`` of a SQLite store: its writing connection, hidden."""

    __slots__ = ("_db",)

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db


class SqliteConnections(SqlConnections):
    """Connections, transactions and row plumbing of the SQLite store. Thread-safe."""

    integrity_errors = (sqlite3.IntegrityError,)

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

    def wait_for_work(self, timeout: float) -> bool:
        """SQLite has no way to say a job was queued: wait ``timeout`` and let the caller
        look again (False: not woken)."""
        time.sleep(timeout)
        return False

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version``, on a connection of its own that never writes:
        it moves with every commit of any other connection, this store's writer included."""
        with self._version_lock:
            if self._version_db is None:
                self._version_db = self._open_reader()
            return int(self._version_db.execute("PRAGMA data_version").fetchone()[0])
