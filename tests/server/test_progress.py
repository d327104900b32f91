"""GET /v1/jobs/{id} carries the job's progress [ours]: what ``capy --wait`` in api mode
and ``pulumi up`` against a server show."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from pulumi_capy.api.client import CapyClient
from pulumi_capy.api.models import CreateBackup, Job
from tests.server.conftest import AppProject, LiveServer
from tests.server.helpers import assert_envelope


@pytest.fixture
def http(live_server: LiveServer, org_key: str) -> Iterator[httpx.Client]:
    with live_server.http(org_key) as client:
        yield client


def test_a_job_read_over_http_carries_its_progress(
    http: httpx.Client, live_server: LiveServer, app_project: AppProject
) -> None:
    started = http.post(f"/v1/projects/{app_project.id}/backups", json={"label": "p"}).json()
    job_id = started["job"]["id"]
    assert started["job"]["progress"] is None  # nothing has run yet
    live_server.engine.wait_for_job(job_id)  # run here, through a second handle on the engine

    job = assert_envelope(http.get(f"/v1/jobs/{job_id}"), 200, "job")["job"]
    progress = job["progress"]
    assert set(progress) == {"step", "bytes_done", "bytes_total", "updated_at"}
    assert progress["step"] == "compressing"
    size = app_project.app_db.stat().st_size
    assert progress["bytes_done"] == progress["bytes_total"] == size
    datetime.fromisoformat(progress["updated_at"])

    # the client of api mode reads it as the model
    read = Job.model_validate(job)
    assert read.progress is not None
    assert read.progress.fraction == 1.0


def test_the_api_client_reads_the_progress(
    live_server: LiveServer, org_key: str, app_project: AppProject
) -> None:
    with CapyClient(live_server.url, org_key) as client:
        job = client.create_backup(app_project.id, CreateBackup(label="q"))
        live_server.engine.wait_for_job(job.id)
        read = client.get_job(job.id)
    assert read.progress is not None
    assert read.progress.step == "compressing"
    assert read.progress.bytes_done == read.progress.bytes_total
