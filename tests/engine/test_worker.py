"""The worker: it classifies failures by one root (an ``EngineFailure`` says whether it is
permanent; anything else is transient and keeps its traceback) and finds a handler for
every job type."""

from __future__ import annotations

import pytest

from pulumi_capy.api.errors import CapyError
from pulumi_capy.engine.blobs import BlobMissing, ChecksumMismatch
from pulumi_capy.engine.drivers import DriverFailure, Outcome
from pulumi_capy.engine.jobs import PermanentFailure
from pulumi_capy.engine.tarstream import TarDamaged
from pulumi_capy.engine.worker import Worker


@pytest.mark.parametrize(
    "failure", [PermanentFailure("p"), ChecksumMismatch("c"), BlobMissing("b")]
)
def test_engine_failures_are_permanent_with_their_message(failure: Exception) -> None:
    permanent, outcome = Worker._classify(failure)
    assert permanent
    assert outcome == Outcome(str(failure), 1, stderr=str(failure))


@pytest.mark.parametrize("permanent", [True, False])
def test_a_driver_failure_keeps_its_permanence_and_outcome(permanent: bool) -> None:
    reported = Outcome("pg_dump failed", 2, stderr="connection refused")
    assert Worker._classify(DriverFailure("dump", permanent=permanent, outcome=reported)) == (
        permanent,
        reported,
    )
    assert Worker._classify(DriverFailure("dump", permanent=permanent)) == (
        permanent,
        Outcome("dump", 1, stderr="dump"),
    )


@pytest.mark.parametrize("failure", [TarDamaged("short"), CapyError("odd"), RuntimeError("bug")])
def test_anything_else_is_transient_with_its_traceback(failure: Exception) -> None:
    permanent, outcome = Worker._classify(failure)
    assert not permanent
    assert outcome.summary == str(failure)
    assert type(failure).__name__ in outcome.stderr


def test_job_types_and_states_keep_their_stored_values() -> None:
    """The enums are the stored values and the API's JSON: they must never change."""
    from pulumi_capy.api.models import JobState, JobType
    from pulumi_capy.engine.handlers import HANDLERS

    assert [state.value for state in JobState] == ["pending", "running", "completed", "failed"]
    assert [kind.value for kind in JobType] == [
        "project.backup",
        "project.restore",
        "backup.verify",
        "preview.create",
        "preview.delete",
        "backup.expire",
        "pitr.base_backup",
        "pitr.expire",
    ]
    assert set(HANDLERS) == set(JobType)
    assert all(HANDLERS.get(str(kind)) is HANDLERS[kind] for kind in JobType)
