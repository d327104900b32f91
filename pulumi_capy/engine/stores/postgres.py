"""The PostgreSQL store: the metadata of engines on several hosts in one database.

Its operations' SQL is shared with the SQLite store (``sql_store``, ``sql_jobs``,
``sql_pitr``); connections in ``postgres_base``, schema in ``postgres_migrations``.
Projects' URLs are sealed with ``CAPY_SECRET_KEY`` alone: no host's engine directory can
hold the key of a store every host uses.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pulumi_capy.api.errors import ConfigError
from pulumi_capy.engine.secret_keys import ENV_SECRET_KEY, HOW_TO_MAKE_A_KEY, SecretKeys
from pulumi_capy.engine.stores.postgres_base import PostgresConnections, redact
from pulumi_capy.engine.stores.sql_base import Database
from pulumi_capy.engine.stores.sql_store import SqlStore
from pulumi_capy.engine.stores.sqlite_migrations import NewerStore

__all__ = ["PostgresStore", "is_postgres_url", "open_postgres_store"]

SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(url: str) -> bool:
    return url.startswith(SCHEMES)


class PostgresStore(SqlStore, PostgresConnections):
    """The metadata store in the PostgreSQL database at ``url``. Thread-safe."""

    WHERE = "the PostgreSQL store"

    def __init__(self, url: str, *, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        # never read: with CAPY_SECRET_KEY set, the keys come from it alone
        self.secret_keys = SecretKeys(Path(os.devnull), environ)
        if not self.secret_keys.from_environment:
            raise ConfigError(
                f"the PostgreSQL store ({redact(url)}) needs {ENV_SECRET_KEY}: the key that "
                "seals projects' URLs must be the same on every host (make one with "
                f"{HOW_TO_MAKE_A_KEY})"
            )
        super().__init__(url)

    def _after_migrations(self, db: Database) -> bool:
        return self._reseal(db)


def open_postgres_store(url: str) -> PostgresStore:
    """The store at ``url``; ``ConfigError`` (the URL's password hidden) when it cannot be
    reached, or was migrated by a newer capy."""
    try:
        return PostgresStore(url)
    except NewerStore as exc:
        raise ConfigError(f"{redact(url)}: {exc}") from None
