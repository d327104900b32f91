"""Two real ``capy serve`` processes on one PostgreSQL store, over real HTTP on loopback:
what one writes the other answers at once, and a key revoked through one is refused by the
other at once (their read caches and key caches follow the store, not their own writes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from pulumi_capy.api.models import SCOPES, CreateApiKey
from pulumi_capy.engine import Engine
from tests.engine.conftest import make_app_db, sqlite_url
from tests.engine.stores.conftest import drop_database, fresh_database
from tests.pg import PostgresServer
from tests.server.conftest import free_socket

ORG = "org_default"
DEADLINE = 30.0


class Serve:
    """``capy serve`` in a process of its own, its metadata in the PostgreSQL store."""

    def __init__(self, directory: Path, environ: dict[str, str]) -> None:
        with free_socket() as probe:
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = directory.with_suffix(".log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pulumi_capy.cli",
                    "serve",
                    "--port",
                    str(port),
                    "--workers",
                    "0",
                    "--log-level",
                    "info",
                    "--engine-dir",
                    str(directory),
                ],
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + DEADLINE
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"capy serve exited:\n{self.log.read_text(errors='replace')}")
            try:
                httpx.get(f"{self.url}/v1/me", timeout=1.0)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail("capy serve did not listen")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def store_url(debian_postgres: PostgresServer) -> Iterator[str]:
    made = fresh_database(debian_postgres)
    yield made
    drop_database(debian_postgres, made)


@pytest.fixture
def two_servers(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Serve, Serve, Engine]]:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("CAPY_SECRET_KEY", key)
    environ = {**os.environ, "CAPY_STORE_URL": store_url, "CAPY_SECRET_KEY": key}
    with Engine(tmp_path / "minter", store_url=store_url) as minter:  # migrates the store first
        servers = [Serve(tmp_path / name, environ) for name in ("serve-a", "serve-b")]
        try:
            for server in servers:
                server.wait_until_up()
            yield servers[0], servers[1], minter
        finally:
            for server in servers:
                server.stop()


def _key(minter: Engine, name: str) -> tuple[str, str]:
    created = minter.create_api_key(ORG, CreateApiKey(name=name, scopes=list(SCOPES)))
    return created.plaintext_api_key.get_secret_value(), created.api_key.id


def test_a_client_alternating_between_two_servers_sees_each_write_at_once(
    two_servers: tuple[Serve, Serve, Engine], tmp_path: Path, debian_postgres: PostgresServer
) -> None:
    first, second, minter = two_servers
    token, _ = _key(minter, "client")
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(headers=headers, timeout=30.0) as client:
        servers = [first, second]
        for server in servers:  # both have answered (and may keep) the empty list
            assert client.get(f"{server.url}/v1/projects").json()["projects"] == []
        names: list[str] = []
        for n in range(6):
            writer, reader = servers[n % 2], servers[(n + 1) % 2]
            app_db = make_app_db(tmp_path / f"app{n}.db", rows=3)
            made = client.post(
                f"{writer.url}/v1/projects",
                json={"name": f"app-{n}", "database_url": sqlite_url(app_db)},
            )
            assert made.status_code == 201, made.text
            names.append(f"app-{n}")
            listed = client.get(f"{reader.url}/v1/projects")
            assert listed.status_code == 200
            assert [p["name"] for p in listed.json()["projects"]] == names
    for server in servers:
        assert debian_postgres.password not in server.log.read_text(errors="replace")


def test_a_key_revoked_through_one_server_is_refused_by_the_other_at_once(
    two_servers: tuple[Serve, Serve, Engine],
) -> None:
    first, second, minter = two_servers
    admin, _ = _key(minter, "admin")
    doomed, doomed_id = _key(minter, "doomed")
    with httpx.Client(timeout=30.0) as client:
        as_doomed = {"Authorization": f"Bearer {doomed}"}
        for server in (first, second):  # both know the key (and may remember it)
            for _ in range(2):
                assert client.get(f"{server.url}/v1/projects", headers=as_doomed).status_code == 200
        revoked = client.delete(
            f"{first.url}/v1/organizations/{ORG}/api-keys/{doomed_id}",
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert revoked.status_code == 200, revoked.text
        assert client.get(f"{second.url}/v1/projects", headers=as_doomed).status_code == 401
        assert client.get(f"{second.url}/v1/me", headers=as_doomed).status_code == 401
        assert client.get(f"{first.url}/v1/projects", headers=as_doomed).status_code == 401
