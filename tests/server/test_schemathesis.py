"""schemathesis against the live server's own ``/v1/openapi.json``, with a valid org key.

Every phase of schemathesis' engine runs (examples, coverage, fuzzing, stateful)
with every default check: no 5xx, no status, header, content type or body the
document does not promise, invalid input refused, valid input accepted.

Bounded: ``max-examples`` per operation is small, and a timer stops the run
after ``TIME_BOUND`` seconds whatever is left (schemathesis' own ``max-time``
is not a bound: it repeats the fuzzing phases until the time is up). The seed
is fixed, so that a failure in CI reproduces locally.

``pytest``-side integration (``schemathesis.pytest.from_fixture``) is not used:
with pytest 9 it fails on ``request.node._nodeid`` (schemathesis 4.32);
the engine API is the one the ``st`` command line uses.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
import schemathesis
from schemathesis.engine import Status, StopReason, events, from_schema

from pulumi_capy.api.models import RestoreRequest
from tests.server.conftest import AppProject, LiveServer

ORG = "org_default"
SEED = 20261126
MAX_EXAMPLES = 50  # per operation and phase
TIME_BOUND = 50.0  # seconds


@pytest.fixture(scope="module")
def fuzz_project(live_server: LiveServer, app_project: AppProject) -> AppProject:
    # A pending job (no worker runs here) keeps the project from being deleted by the
    # fuzzer's DELETE /v1/projects/{id}?force=true, so every operation keeps a real target.
    live_server.engine.create_restore(
        app_project.id, RestoreRequest(backup_key=app_project.backup.backup_key)
    )
    return app_project


@dataclass
class Run:
    failures: list[str] = field(default_factory=list)
    operations: set[str] = field(default_factory=set)
    stop_reason: StopReason | None = None
    events: list[events.EngineEvent] = field(default_factory=list)


def run_schemathesis(url: str, key: str, project_id: str) -> Run:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "request-timeout": 10,
            "headers": {"Authorization": f"Bearer {key}"},
            # path parameters that name real objects, so that calls get past the 404
            "parameters": {"project_id": project_id, "organization_id": ORG},
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "operations": [
                {
                    # database_url must name a database that exists on the server's machine:
                    # no schema can say which strings do, and every other one is a 400 that
                    # names database_url (the contract). The other checks still run.
                    "include-path": "/v1/projects",
                    "include-method": "POST",
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
                {
                    # the same for a project's new database_url [ours]
                    "include-path": "/v1/projects/{project_id}",
                    "include-method": "PATCH",
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
                {
                    # the fuzzed project is SQLite: turning PITR on is a 400 naming enabled
                    # (PITR is for PostgreSQL projects), whatever the schema allows
                    "include-path": "/v1/projects/{project_id}/pitr",
                    "include-method": "PUT",
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
            ],
        }
    )
    schema = schemathesis.openapi.from_url(f"{url}/v1/openapi.json", config=config)
    run = Run()
    stream = from_schema(schema).execute()
    timer = threading.Timer(TIME_BOUND, stream.stop)
    timer.start()
    try:
        run.events = list(stream)
    finally:
        timer.cancel()
    for event in run.events:
        if isinstance(event, events.ScenarioFinished | events.FuzzScenarioFinished):
            run.operations.add(event.recorder.label)
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status != Status.FAILURE:
                        continue
                    interaction = event.recorder.interactions.get(case_id)
                    detail = ""
                    if interaction is not None and interaction.response is not None:
                        request = interaction.request
                        response = interaction.response
                        body = (response.content or b"")[:300]
                        detail = (
                            f" <- {request.method} {request.uri} {request.body!r} "
                            f"-> {response.status_code} {body!r}"
                        )
                    title = check.failure_info.failure.title if check.failure_info else ""
                    run.failures.append(f"{event.recorder.label}: {check.name}: {title}{detail}")
        elif isinstance(event, events.NonFatalError):
            run.failures.append(f"error in {event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            run.failures.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            run.stop_reason = event.stop_reason
            run.failures.extend(f"after run: {failure.title}" for failure in event.failures)
    return run


def test_schemathesis_finds_no_5xx_and_no_broken_promise(
    live_server: LiveServer, org_key: str, fuzz_project: AppProject
) -> None:
    run = run_schemathesis(live_server.url, org_key, fuzz_project.id)
    assert run.stop_reason in (StopReason.COMPLETED, StopReason.INTERRUPTED), run.stop_reason
    if run.failures:
        pytest.fail("schemathesis found:\n" + "\n".join(sorted(set(run.failures))))
    with live_server.http() as http:
        schema = http.get("/v1/openapi.json").json()
    declared = {
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method in operations
    }
    if run.stop_reason is StopReason.COMPLETED:
        assert declared <= run.operations, declared - run.operations
    assert fuzz_project.id in {p.id for p in live_server.engine.list_projects()}
