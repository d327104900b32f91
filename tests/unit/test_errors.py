from __future__ import annotations

import pytest

from pulumi_capy.api.errors import (
    ApiError,
    BadRequest,
    CapyError,
    Conflict,
    FieldError,
    Forbidden,
    InvalidInput,
    JobFailed,
    JobTimeout,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    error_for_status,
)
from pulumi_capy.api.models import Job


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (422, BadRequest),
        (429, RateLimited),
        (500, ServerError),
        (503, ServerError),
    ],
)
def test_error_for_status(status: int, cls: type[ApiError]) -> None:
    assert error_for_status(status) is cls
    assert issubclass(cls, CapyError)


def test_each_class_has_one_status() -> None:
    statuses = {
        cls: cls.status_code
        for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, RateLimited)
    }
    assert len(set(statuses.values())) == len(statuses)
    assert InvalidInput.status_code == 400


def test_default_message_is_the_docstring() -> None:
    assert str(NotFound()) == "No such object."


def test_message_says_what_was_done_and_what_next() -> None:
    error = Unauthorized(
        "invalid key", method="GET", url="https://capydb.dev/api/capydb/v1/projects/p/x"
    )
    text = str(error)
    assert text.startswith("401 from GET https://capydb.dev/api/capydb/v1/projects/p/x")
    assert "CAPYDB_API_KEY" in text
    assert "pulumi config set --secret capy:apiKey" in text


def test_engine_errors_read_without_http() -> None:
    assert str(NotFound("project p_1 not found")) == "project p_1 not found"


def test_invalid_input_groups_fields_with_one_message() -> None:
    error = InvalidInput(
        [FieldError("a", "pick one"), FieldError("b", "pick one"), FieldError("c", "bad")],
        what="restore",
    )
    assert str(error) == "restore: a, b: pick one; c: bad"
    assert error.fields == ["a", "b", "c"]


def _job(**fields: object) -> Job:
    return Job.model_validate(
        {"id": "job_1", "type": "project.restore", "state": "failed"} | fields
    )


def test_job_failed_carries_error_and_output_tail() -> None:
    job = _job(
        attempts=3,
        error="pg_restore exited 1",
        last_exit_code=1,
        last_stderr="x" * 5000 + "\nERROR: relation missing",
    )
    text = str(JobFailed(job))
    assert "job job_1 (project.restore) failed after 3 attempt(s): pg_restore exited 1" in text
    assert "[exit code 1]" in text
    assert text.endswith("ERROR: relation missing")
    assert len(text) < 2500


def test_job_timeout_says_how_to_follow() -> None:
    error = JobTimeout(_job(state="running"), 90)
    assert "still running after 90s" in str(error)
    assert "capy jobs get --job-id job_1 --wait" in str(error)
    assert error.job.id == "job_1"


def test_engine_failures_share_one_root_under_capy_error() -> None:
    from pulumi_capy.api.errors import EngineFailure
    from pulumi_capy.engine.blobs import BlobMissing, ChecksumMismatch
    from pulumi_capy.engine.drivers import DriverFailure
    from pulumi_capy.engine.jobs import PermanentFailure
    from pulumi_capy.engine.tarstream import TarDamaged
    from pulumi_capy.resources._provider import CapyResourceError

    for failure in (PermanentFailure, ChecksumMismatch, BlobMissing, DriverFailure):
        assert issubclass(failure, EngineFailure)
    for error in (EngineFailure, TarDamaged, CapyResourceError):
        assert issubclass(error, CapyError)
        assert not issubclass(error, ApiError)
    assert PermanentFailure("gone").permanent
    assert not DriverFailure("busy", permanent=False).permanent
    assert str(DriverFailure("busy", permanent=False)) == "busy"
