"""Session-wide test settings: no CAPY*/CAPYDB_* variable of the caller leaks into a test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pg import PostgresServer, bindir, running_server


@pytest.fixture(autouse=True)
def _clean_capy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CAPY_", "CAPYDB_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the session. In CI a missing server fails; elsewhere it skips."""
    if bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is missing in CI: scripts/test must install it")
        # never reached in CI (CI=true fails above, and scripts/test installs postgresql):
        # only a developer running pytest by hand without PostgreSQL gets this skip
        pytest.skip("PostgreSQL is not installed here (Debian: apt-get install postgresql)")
    with running_server() as server:
        yield server
