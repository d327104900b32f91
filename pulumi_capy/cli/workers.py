"""``capy workers list``: the workers of an engine's store, alive or not, and what they run.

It reads the metadata store itself (the API has no such call): run it where the store
is, with ``--engine-dir`` (SQLite: its ``engine.db``) or ``CAPY_STORE_URL`` (the
PostgreSQL store every worker shares).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import click
from pydantic import BaseModel

from pulumi_capy.cli.common import (
    CapyGroup,
    Failure,
    backend_options,
    emit,
    engine_directory,
    example,
    json_option,
    note,
    show_table,
    state,
)
from pulumi_capy.engine.stores.contract import WorkerRecord
from pulumi_capy.engine.workers import HEARTBEAT_INTERVAL, LOST_AFTER, WorkerState, worker_state

__all__ = ["workers"]

READS_THE_STORE = (
    "capy workers list reads the engine's metadata store directly, not the API: run it on "
    "a host that reaches the store, with --engine-dir DIR (the SQLite store DIR/engine.db) "
    "or CAPY_STORE_URL=postgresql://… (the store the workers share)"
)


class RunningJob(BaseModel):
    id: str
    type: str
    project_id: str | None = None


class WorkerStatus(WorkerRecord):
    """A worker as ``capy workers list`` shows it."""

    state: WorkerState
    running: list[RunningJob]  # the jobs it holds now
    heartbeat_age_seconds: float


@click.group(cls=CapyGroup, epilog=example("capy workers list --engine-dir /srv/capy"))
def workers() -> None:
    """The workers (capy worker, capy serve --workers) that run the jobs of a store."""


MINUTE, HOUR = 60, 3600


def _age(seconds: float) -> str:
    """How long ago, in the unit that reads best: 42s, 17m, 3.5h."""
    if seconds < 2 * MINUTE:
        return f"{seconds:.0f}s ago"
    if seconds < 2 * HOUR:
        return f"{seconds / MINUTE:.0f}m ago"
    return f"{seconds / HOUR:.1f}h ago"


def _dirs(sqlite_dirs: list[str] | None) -> str:
    if sqlite_dirs is None:
        return "all"
    return " ".join(sqlite_dirs) or "none"


@workers.command(
    "list",
    epilog=example(
        "capy workers list --engine-dir /srv/capy",
        "CAPY_STORE_URL=postgresql://capy@db/capy capy workers list --all --json",
    ),
)
@click.option("--all", "show_all", is_flag=True, help="Also list the workers that stopped.")
@click.option(
    "--lost-after",
    type=click.FloatRange(min=0, min_open=True),
    default=LOST_AFTER,
    show_default=True,
    metavar="S",
    help="A worker silent for longer than S seconds that did not stop is lost "
    f"(workers heartbeat every {HEARTBEAT_INTERVAL:g}s by default).",
)
@backend_options
@json_option
def list_(show_all: bool, lost_after: float) -> None:
    """List the workers: alive (a heartbeat within --lost-after seconds), stopped (ended
    on their own; with --all), or lost (silent: killed, or their host is gone), with the
    jobs each runs and the SQLite directories it may open.

    Reads the store directly: --engine-dir, or CAPY_STORE_URL for PostgreSQL. Workers
    not heard of for a day are forgotten by the next tick."""
    current = state()
    if current.api_url or (current.mode or os.environ.get("CAPY_MODE", "")).lower() == "api":
        raise Failure(READS_THE_STORE)
    from pulumi_capy.engine import Engine

    directory = engine_directory()
    if not os.environ.get("CAPY_STORE_URL", "").strip() and not (directory / "engine.db").is_file():
        raise Failure(f"no capy engine in {directory}: {READS_THE_STORE}")
    with Engine(directory) as engine:
        store = engine.rt.store
        found = store.list_workers(include_stopped=show_all)
        running = store.running_jobs()
    now = datetime.now(UTC)
    rows = [
        WorkerStatus(
            **worker.model_dump(),
            state=worker_state(worker, now, lost_after).value,
            running=[
                RunningJob(id=job.id, type=str(job.type), project_id=job.project_id)
                for job in running
                if job.claimed_by == worker.id
            ],
            heartbeat_age_seconds=round((now - worker.heartbeat_at).total_seconds(), 1),
        )
        for worker in found
    ]

    def human() -> None:
        show_table(
            rows,
            [
                ("ID", lambda w: w.id),
                ("HOST", lambda w: w.host),
                ("PID", lambda w: w.pid),
                ("STATE", lambda w: w.state),
                ("RUNNING", lambda w: [f"{job.id} ({job.type})" for job in w.running]),
                ("HEARTBEAT", lambda w: _age(w.heartbeat_age_seconds)),
                ("SQLITE DIRS", lambda w: _dirs(w.sqlite_dirs)),
            ],
            "no workers" + ("" if show_all else " running (--all: the stopped ones too)"),
        )
        if any(w.state == WorkerState.lost for w in rows):
            note(
                f"lost: no heartbeat for over {lost_after:g}s and no stop recorded (killed, or "
                "its host is gone); its jobs' leases expire and other workers take them over"
            )

    emit(rows, human)
