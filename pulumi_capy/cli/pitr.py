"""``capy pitr enable|disable|status``: a project's point-in-time recovery.

Turning it on creates the project's replication slot and starts the first base
backup; the window opens once that backup and the log after it are archived,
which needs a worker streaming the log (``capy worker``, or ``capy serve
--workers N``). ``enable --wait`` waits for both and fails plainly when nothing
streams. A SQLite project has no slot: its database must be in WAL mode
(``enable --set-wal`` switches it), a worker's replicator ships its log and its
first snapshot opens the window. Hosted CapyDB has PITR always on (its window is
not reported).
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import click

from pulumi_capy.api.models import (
    Job,
    PitrChange,
    PitrMethod,
    PitrStatus,
    PutPitr,
    format_timestamp,
)
from pulumi_capy.cli.common import (
    CapyGroup,
    Failure,
    backend,
    backend_options,
    echo,
    emit,
    example,
    json_option,
    jsonable,
    note,
    project_option,
    request,
    state,
    timeout_option,
    wait_for,
)

__all__ = ["describe_status", "pitr", "wait_for_window"]

POLL_SECONDS = 1.0  # between looks at the status while waiting for the window
STREAMER_GRACE = 15.0  # seconds a worker may take to pick the project's log up
NOTHING_STREAMS = (
    "nothing streams this project's log: start `capy worker` on the engine directory "
    "(or `capy serve --workers N`); the window opens once a worker streams it"
)


@click.group(
    cls=CapyGroup,
    epilog=example(
        "capy pitr enable --project prj_5f2c81d04be97a13 --wait",
        "capy pitr status --project prj_5f2c81d04be97a13",
    ),
)
def pitr() -> None:
    """Point-in-time recovery of a project (PostgreSQL or SQLite): on, off, its window."""


# ---------------------------------------------------------------- output


def _moment(value: datetime | None, *, reported: bool) -> str:
    if value is not None:
        return format_timestamp(value)
    return "not open" if reported else "not reported"


def describe_status(project: str, status: PitrStatus) -> list[str]:
    """The status for people: one fact per line, then each notice on its own line."""
    if not status.enabled:
        return [
            f"point-in-time recovery of {project}: off",
            f"turn it on with: capy pitr enable --project {project}",
        ]
    lag = "-" if status.lag_seconds is None else f"{status.lag_seconds:g} s"
    if status.streamer is not None:
        heartbeat = status.streamer.heartbeat_at
        streamer = f"worker {status.streamer.worker_id}, last heartbeat " + (
            format_timestamp(heartbeat) if heartbeat else "never"
        )
    elif status.method == PitrMethod.archive:
        streamer = "none (method archive: the server pushes the log with `capy wal-push`)"
    elif status.method is None:
        streamer = "-"
    else:
        streamer = "none"
    # no method: hosted CapyDB, where PITR is always on and the window is not reported
    reported = status.method is not None
    lines = [
        f"point-in-time recovery of {project}: on",
        f"method:        {status.method or 'not reported'}",
        f"window start:  {_moment(status.window_start, reported=reported)}",
        f"window end:    {_moment(status.window_end, reported=reported)}",
        f"lag:           {lag}",
        f"streamer:      {streamer}",
    ]
    for generation in status.generations:
        span = (
            f"restorable {format_timestamp(generation.restorable_from)} .. "
            f"{format_timestamp(generation.restorable_to)}"
            if generation.restorable_from and generation.restorable_to
            else "not restorable yet (its snapshot is to come)"
            if generation.current
            else "not restorable (no snapshot of it kept)"
        )
        lines.append(
            f"generation {generation.number}{' (current)' if generation.current else ''}: "
            f"since {format_timestamp(generation.started_at)}, {span}; {generation.reason}"
        )
    return lines + [f"notice: {text}" for text in status.notices]


def _show(project: str, status: PitrStatus) -> None:
    for line in describe_status(project, status):
        echo(line)


def _archive_hint(project: str) -> str:
    """What the server needs for method archive: it pushes its log with ``capy wal-push``."""
    from pulumi_capy.engine import Engine

    chosen = backend()
    directory = str(chosen.directory) if isinstance(chosen, Engine) else "<engine dir>"
    return (
        "the server pushes its log: set archive_mode = on and archive_command = "
        f"'capy wal-push --engine-dir {directory} --project {project} %p' in its "
        "postgresql.conf (the engine directory must be writable by the server's user)"
    )


# ---------------------------------------------------------------- waiting for the window


def _no_streamer_message(status: PitrStatus) -> str:
    """The status's own notice about the missing streamer, else ours."""
    for text in status.notices:
        if "capy worker" in text:
            return text
    return NOTHING_STREAMS


def wait_for_window(project: str, timeout_minutes: float) -> PitrStatus:
    """Poll the status until its window opens; ``Failure`` when no worker picks the log
    up within ``STREAMER_GRACE`` seconds, or when ``timeout_minutes`` pass."""
    chosen = backend()
    started = time.monotonic()
    deadline = started + timeout_minutes * 60
    reported = ""
    while True:
        status = chosen.get_pitr(project)
        if not status.enabled:
            raise Failure(f"point-in-time recovery of {project} was turned off while waiting")
        if status.window_start is not None or status.method is None:
            return status  # open (method None: hosted CapyDB, always on, window not reported)
        now = time.monotonic()
        if (
            status.method == PitrMethod.stream
            and status.streamer is None
            and now - started >= STREAMER_GRACE
        ):
            _print_json(status)
            raise Failure(_no_streamer_message(status))
        if now >= deadline:
            _print_json(status)
            raise Failure(
                f"the PITR window of {project} did not open within {timeout_minutes:g} "
                f"minute(s); see `capy pitr status --project {project}`"
            )
        line = "waiting for the window: " + (
            f"worker {status.streamer.worker_id} streams" if status.streamer else "no streamer yet"
        )
        if line != reported:
            note(line)
            reported = line
        time.sleep(min(POLL_SECONDS, max(deadline - now, 0.0)))


def _print_json(status: PitrStatus) -> None:
    """With --json, the status as last seen goes to stdout before the failure."""
    if state().json:
        click.echo(json.dumps(jsonable(status), indent=2))


# ---------------------------------------------------------------- commands


@pitr.command(
    epilog=example(
        "capy pitr enable --project prj_5f2c81d04be97a13",
        "capy pitr enable --project prj_5f2c81d04be97a13 --wait --timeout 30",
        "capy pitr enable --project prj_5f2c81d04be97a13 --method archive   "
        "# archive_command = 'capy wal-push --project prj_5f2c81d04be97a13 %p'",
        "capy pitr enable --project prj_9b1e64c07d3a2f85 --set-wal   # SQLite not yet in WAL mode",
    )
)
@project_option
@click.option(
    "--method",
    type=click.Choice([method.value for method in PitrMethod]),
    default=PitrMethod.stream.value,
    show_default=True,
    help="stream: a worker streams the log from a replication slot; archive: the server "
    "pushes it (archive_command = 'capy wal-push --project ID %p').",
)
@click.option(
    "--set-wal",
    is_flag=True,
    help="SQLite: switch a database not in WAL mode to it first (no other connection may "
    "hold it open).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for the first base backup and until the window is open (exit 1 otherwise, "
    f"and when no worker streams the log within {STREAMER_GRACE:g} s).",
)
@timeout_option
@backend_options
@json_option
def enable(project: str, method: str, set_wal: bool, wait: bool, timeout: float) -> None:
    """Turn point-in-time recovery on: PostgreSQL, a replication slot and a first base
    backup; SQLite (in WAL mode), a worker's replicator ships its log from a snapshot on."""
    chosen = backend()
    fields: dict[str, object] = {"enabled": True, "method": method}
    if set_wal:
        fields["set_wal"] = True
    change = chosen.put_pitr(project, request(PutPitr, **fields))
    if not wait:

        def human() -> None:
            if change.job is not None:
                echo(
                    f"point-in-time recovery of {project} is on (method {change.pitr.method}); "
                    f"its first base backup runs as job {change.job.id}"
                )
            else:
                echo(f"point-in-time recovery of {project} is on (method {change.pitr.method})")
            for text in change.pitr.notices:
                echo(f"notice: {text}")
            if change.pitr.method == PitrMethod.archive:
                echo(_archive_hint(project))
            note(f"follow it with: capy pitr status --project {project}")

        emit(change, human)
        return
    job: Job | None = None
    if change.job is not None:
        job = wait_for(change.job, timeout, "base backup")
    status = wait_for_window(project, timeout)
    done = PitrChange(pitr=status, job=job)
    emit(done, lambda: _show(project, status))


@pitr.command(epilog=example("capy pitr disable --project prj_5f2c81d04be97a13"))
@project_option
@backend_options
@json_option
def disable(project: str) -> None:
    """Turn it off: streaming (PostgreSQL) or replicating (SQLite) stops, a PostgreSQL
    project's slot is dropped; what is archived stays until retention removes it."""
    change = backend().put_pitr(project, request(PutPitr, enabled=False))
    emit(
        change,
        lambda: echo(
            f"point-in-time recovery of {project} is off: nothing streams its log (a "
            "PostgreSQL project's replication slot is dropped, a SQLite project's replicator "
            "lets go of its file); what is archived stays until retention removes it"
        ),
    )


@pitr.command(
    epilog=example(
        "capy pitr status --project prj_5f2c81d04be97a13",
        "capy pitr status --project prj_5f2c81d04be97a13 --json",
    )
)
@project_option
@backend_options
@json_option
def status(project: str) -> None:
    """Show whether it is on, how, its window (RFC 3339 UTC), the lag and who streams."""
    found = backend().get_pitr(project)
    emit(found, lambda: _show(project, found))
