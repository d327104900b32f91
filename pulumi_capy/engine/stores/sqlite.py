"""The SQLite store: the metadata of one engine directory. Its operations' SQL is shared
with the PostgreSQL store (``sql_store``, ``sql_jobs``, ``sql_pitr``); connections in
``sqlite_base``, schema in ``sqlite_migrations``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pulumi_capy.api.errors import ConfigError
from pulumi_capy.engine.secret_keys import SecretKeys
from pulumi_capy.engine.stores.sql_store import SqlStore
from pulumi_capy.engine.stores.sqlite_base import SqliteConnections, from_timestamp, to_timestamp
from pulumi_capy.engine.stores.sqlite_migrations import NewerStore

__all__ = ["SqliteStore", "from_timestamp", "open_store", "to_timestamp"]


class SqliteStore(SqlStore, SqliteConnections):
    """The metadata store of one engine directory (``engine.db``). Thread-safe.

    Projects' ``database_url`` are kept sealed with ``secret_keys`` (by default those of
    ``CAPY_SECRET_KEY`` or of ``secret.key`` beside the store); on open, a URL kept in
    plaintext (a store from before) or sealed by an older key is sealed anew.
    """

    WHERE = "engine.db"

    def __init__(self, path: Path, *, secret_keys: SecretKeys | None = None) -> None:
        self.secret_keys = secret_keys or SecretKeys.beside(path)
        super().__init__(path)

    def _after_migrations(self, db: sqlite3.Connection) -> bool:
        return self._reseal(db)


def open_store(path: Path) -> SqliteStore:
    """The store in the file ``path``; ``ConfigError`` naming it when it is not a
    database or was migrated by a newer capy (a lock or an I/O error is raised as it
    is: no verdict on the file)."""
    try:
        return SqliteStore(path)
    except NewerStore as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as exc:
        raise ConfigError(
            f"{path} is not a capy engine database ({exc}): restore it from a copy, or move "
            "it aside to start an empty engine there"
        ) from exc
