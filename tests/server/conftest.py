"""The real server on a loopback port, for tests that speak HTTP to it.

Helpers (import them from ``tests.server.conftest``):

- ``serve(app)``: a context manager that runs an ASGI app under uvicorn in a
  thread, on a free loopback port, and yields its base URL.
- ``LiveServer``: a running ``create_app`` server over an engine directory,
  with ``mint(...)`` (keys made directly through ``Engine.create_api_key``)
  and ``http(key)`` (an ``httpx.Client`` that sends the key).
- ``ALL_SCOPES``: every scope of the contract.

Fixtures: ``live_server`` (one per test module), ``org_key`` (an
organization key with every scope), ``app_project`` (a project over a real
SQLite application database, with one verified backup).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from pulumi_capy.api.models import SCOPES, ApiKey, Backup, CreateApiKey, CreateProject, Project
from pulumi_capy.engine import Engine
from pulumi_capy.server import create_app
from tests.engine.conftest import make_app_db, sqlite_url, take_backup

__all__ = ["ALL_SCOPES", "AppProject", "LiveServer", "free_socket", "serve"]

ALL_SCOPES: tuple[str, ...] = SCOPES
ORG = "org_default"
START_TIMEOUT = 15.0


def free_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port (no race over the port).

    ``IPPROTO_TCP`` explicitly: asyncio sets ``TCP_NODELAY`` on accepted connections only
    when the listening socket says so; with proto 0 every answer waits ~40 ms for a
    delayed ACK (Nagle).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn in a thread on a free loopback port; yield its URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@dataclass
class LiveServer:
    """A running ``capy serve`` app over ``directory``; ``engine`` is a second handle on it."""

    url: str
    directory: Path
    engine: Engine

    def mint(
        self,
        scopes: Sequence[str] = ALL_SCOPES,
        *,
        project_id: str | None = None,
        expires_at: datetime | None = None,
        name: str = "test",
    ) -> tuple[str, ApiKey]:
        """A new key straight from the engine: its plaintext and its record."""
        created = self.engine.create_api_key(
            ORG,
            CreateApiKey(
                name=name, scopes=list(scopes), project_id=project_id, expires_at=expires_at
            ),
        )
        return created.plaintext_api_key.get_secret_value(), created.api_key

    def http(self, key: str | None = None, *, header: str = "bearer") -> httpx.Client:
        """A client of the server sending ``key`` as a Bearer token or as ``X-API-Key``."""
        headers: dict[str, str] = {}
        if key is not None:
            if header == "bearer":
                headers["Authorization"] = f"Bearer {key}"
            else:
                headers["X-API-Key"] = key
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)


@dataclass
class AppProject:
    """A project over a real SQLite app database, with a verified backup."""

    project: Project
    app_db: Path
    backup: Backup

    @property
    def id(self) -> str:
        return self.project.id


def add_project(engine: Engine, root: Path, name: str) -> AppProject:
    app_db = make_app_db(root / name / "app.db", rows=20)
    project = engine.create_project(CreateProject(name=name, database_url=sqlite_url(app_db)))
    backup = take_backup(engine, project.project.id, label=f"{name}-base")
    return AppProject(project=project.project, app_db=app_db, backup=backup)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("server") / ".capy"
    with Engine(directory) as engine, serve(create_app(directory)) as url:
        yield LiveServer(url=url, directory=directory, engine=engine)


@pytest.fixture(scope="module")
def org_key(live_server: LiveServer) -> str:
    return live_server.mint(name="org-all")[0]


@pytest.fixture(scope="module")
def app_project(live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> AppProject:
    return add_project(live_server.engine, tmp_path_factory.mktemp("apps"), "shop")
