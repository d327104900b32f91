"""``CapyClient``'s PITR control over ``httpx.MockTransport``: a ``capy serve`` answers
``…/pitr``; hosted CapyDB has PITR always on and no such endpoint."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from pulumi_capy.api.client import HOSTED_PITR
from pulumi_capy.api.errors import BadRequest, NotFound, NotSupported
from pulumi_capy.api.models import PitrMethod, PitrStatus, PutPitr
from tests.unit.test_client import (
    BASE_PATH,
    CAPY_SERVER_ME,
    HOSTED_ME,
    JOB,
    PITR,
    PROJECT,
    make_client,
    reply,
    sent_body,
)

PITR_PATH = BASE_PATH + "/v1/projects/prj_1/pitr"
PROJECT_PATH = BASE_PATH + "/v1/projects/prj_1"
OFF: dict[str, Any] = {"enabled": False, "method": None, "notices": []}
PENDING: dict[str, Any] = {**OFF, "enabled": True, "method": "stream", "notices": ["no worker"]}
BASE_BACKUP_JOB: dict[str, Any] = {**JOB, "type": "pitr.base_backup"}
NOT_FOUND = {"error": "not found"}


def routes(table: dict[tuple[str, str], httpx.Response]) -> Any:
    def handle(request: httpx.Request) -> httpx.Response:
        answer = table.get((request.method, request.url.path))
        assert answer is not None, f"unexpected {request.method} {request.url.path}"
        return answer

    return handle


def sent(requests: list[httpx.Request]) -> list[tuple[str, str]]:
    return [(request.method, request.url.path) for request in requests]


def test_get_pitr_reads_the_status_with_its_window_and_streamer() -> None:
    harness = make_client(routes({("GET", PITR_PATH): reply(200, {"pitr": PITR})}))

    status = harness.client.get_pitr("prj_1")

    assert status.enabled is True
    assert status.method is PitrMethod.stream
    assert status.window_start == datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
    assert status.streamer is not None
    assert status.streamer.worker_id == "wrk_1"
    assert sent(harness.requests) == [("GET", PITR_PATH)]  # no identity call on success


def test_put_pitr_on_that_starts_a_job_is_a_202_with_the_job() -> None:
    harness = make_client(
        routes(
            {
                ("GET", BASE_PATH + "/v1/me"): reply(200, CAPY_SERVER_ME),
                ("PUT", PITR_PATH): reply(202, {"pitr": PENDING, "job": BASE_BACKUP_JOB}),
            }
        )
    )

    change = harness.client.put_pitr("prj_1", PutPitr(enabled=True))

    assert change.pitr == PitrStatus.model_validate(PENDING)
    assert change.job is not None
    assert (change.job.id, change.job.type) == ("job_1", "pitr.base_backup")
    put = harness.requests[-1]
    assert sent_body(put) == {"enabled": True, "method": "stream"}
    assert "Idempotency-Key" not in put.headers  # a PUT is idempotent by itself


@pytest.mark.parametrize(
    ("request_", "body"),
    [
        (PutPitr(enabled=False), {"enabled": False, "method": "stream"}),
        (
            PutPitr(enabled=True, method=PitrMethod.archive),
            {"enabled": True, "method": "archive"},
        ),
    ],
)
def test_put_pitr_without_a_job_is_a_200(request_: PutPitr, body: dict[str, Any]) -> None:
    answer = OFF if not request_.enabled else {**PENDING, "method": "archive", "notices": []}
    harness = make_client(
        routes(
            {
                ("GET", BASE_PATH + "/v1/me"): reply(200, CAPY_SERVER_ME),
                ("PUT", PITR_PATH): reply(200, {"pitr": answer}),
            }
        )
    )

    change = harness.client.put_pitr("prj_1", request_)
    harness.client.put_pitr("prj_1", request_)  # the server is identified once per client

    assert change.job is None
    assert change.pitr == PitrStatus.model_validate(answer)
    assert sent(harness.requests) == [
        ("GET", BASE_PATH + "/v1/me"),
        ("PUT", PITR_PATH),
        ("PUT", PITR_PATH),
    ]
    assert sent_body(harness.requests[1]) == body


def test_a_capy_server_404_is_an_unknown_project() -> None:
    harness = make_client(
        routes(
            {
                ("GET", BASE_PATH + "/v1/me"): reply(200, CAPY_SERVER_ME),
                ("GET", PITR_PATH): reply(404, {"error": "project prj_1 not found"}),
            }
        )
    )

    with pytest.raises(NotFound, match="project prj_1 not found"):
        harness.client.get_pitr("prj_1")


def test_hosted_404_means_always_on_window_unknown() -> None:
    harness = make_client(
        routes(
            {
                ("GET", BASE_PATH + "/v1/me"): reply(200, HOSTED_ME),
                ("GET", PITR_PATH): reply(404, NOT_FOUND),
                ("GET", PROJECT_PATH): reply(200, {"project": PROJECT}),
            }
        )
    )

    status = harness.client.get_pitr("prj_1")

    assert status == PitrStatus(enabled=True, method=None, notices=[HOSTED_PITR])
    assert (status.window_start, status.window_end, status.streamer) == (None, None, None)
    assert sent(harness.requests) == [
        ("GET", PITR_PATH),
        ("GET", BASE_PATH + "/v1/me"),
        ("GET", PROJECT_PATH),  # the project itself exists
    ]


def test_hosted_404_of_an_unknown_project_stays_not_found() -> None:
    harness = make_client(
        routes(
            {
                ("GET", BASE_PATH + "/v1/me"): reply(200, HOSTED_ME),
                ("GET", PITR_PATH): reply(404, NOT_FOUND),
                ("GET", PROJECT_PATH): reply(404, {"error": "project prj_1 not found"}),
            }
        )
    )

    with pytest.raises(NotFound, match="prj_1"):
        harness.client.get_pitr("prj_1")


def test_hosted_put_on_sends_nothing_and_answers_always_on() -> None:
    harness = make_client(
        routes(
            {
                ("GET", BASE_PATH + "/v1/me"): reply(200, HOSTED_ME),
                ("GET", PROJECT_PATH): reply(200, {"project": PROJECT}),
            }
        )
    )

    change = harness.client.put_pitr("prj_1", PutPitr(enabled=True))

    assert change.job is None
    assert change.pitr.enabled is True
    assert change.pitr.notices == [HOSTED_PITR]
    assert "PUT" not in {method for method, _ in sent(harness.requests)}


def test_hosted_put_off_is_not_supported_and_sends_nothing() -> None:
    harness = make_client(routes({("GET", BASE_PATH + "/v1/me"): reply(200, HOSTED_ME)}))

    with pytest.raises(NotSupported, match="cannot be turned off"):
        harness.client.put_pitr("prj_1", PutPitr(enabled=False))

    assert sent(harness.requests) == [("GET", BASE_PATH + "/v1/me")]


def test_a_400_names_the_field() -> None:
    message = (
        "database_url: /srv/app.db is in journal_mode=delete; point-in-time recovery ships "
        "its write-ahead log, so it must be in WAL mode"
    )
    harness = make_client(
        routes(
            {
                ("GET", BASE_PATH + "/v1/me"): reply(200, CAPY_SERVER_ME),
                ("PUT", PITR_PATH): reply(400, {"error": message}),
            }
        )
    )

    with pytest.raises(BadRequest, match=r"database_url: /srv/app\.db is in journal_mode"):
        harness.client.put_pitr("prj_1", PutPitr(enabled=True))
