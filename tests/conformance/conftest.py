"""The back ends the conformance suite runs over, each as a ``Backend``.

- ``engine``: ``Engine(tmp_dir)`` in this process; ``wait_for_job`` runs the
  work inline.
- ``client``: ``CapyClient(url, org_key)`` against the real server (uvicorn on
  a loopback port) over its own engine directory, with one worker thread
  (``Engine(dir).run_worker``) running the jobs, as ``capy serve`` and
  ``capy worker`` would.

Every test gets a fresh back end and directory. ``app_db`` is a real SQLite
application database for the projects to protect.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.client import CapyClient
from pulumi_capy.api.models import SCOPES, CreateApiKey
from pulumi_capy.engine import Engine
from pulumi_capy.server import create_app
from tests.engine.conftest import make_app_db, sqlite_url
from tests.server.conftest import serve

WORKER_POLL = 0.02  # seconds between a worker's looks at the queue
CLIENT_POLL_CAP = 0.05  # the client's polls of a job, at most this far apart


@dataclass
class Subject:
    name: str
    backend: Backend


def _fast_sleep(seconds: float) -> None:
    # CapyClient polls a job from 0.5 s up to 10 s apart; a test needs no such patience
    time.sleep(min(seconds, CLIENT_POLL_CAP))


@pytest.fixture(params=["engine", "client"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    engine_dir = tmp_path / ".capy"
    if request.param == "engine":
        with Engine(engine_dir) as engine:
            yield Subject("engine", engine)
        return
    with Engine(engine_dir) as admin:
        key = admin.create_api_key(
            "org_default", CreateApiKey(name="conformance", scopes=list(SCOPES))
        ).plaintext_api_key.get_secret_value()
    stop = threading.Event()
    with Engine(engine_dir) as worker_engine, serve(create_app(engine_dir)) as url:
        worker = threading.Thread(
            target=worker_engine.run_worker,
            args=(stop,),
            kwargs={"poll_interval": WORKER_POLL},
            name="conformance-worker",
            daemon=True,
        )
        worker.start()
        try:
            with CapyClient(url, key, sleep=_fast_sleep) as client:
                yield Subject("client", client)
        finally:
            stop.set()
            worker.join(timeout=30)
            assert not worker.is_alive()


@pytest.fixture
def backend(subject: Subject) -> Backend:
    return subject.backend


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    return make_app_db(tmp_path / "app" / "app.db", rows=50)


@pytest.fixture
def app_db_url(app_db: Path) -> str:
    return sqlite_url(app_db)
