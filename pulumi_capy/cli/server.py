"""``capy serve`` and ``capy worker``: the engine as a service (``pulumi_capy.server.runner``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from pulumi_capy.cli.common import Failure, engine_dir_option, engine_directory, example, note
from pulumi_capy.engine.stores.contract import sqlite_dir_prefix
from pulumi_capy.engine.workers import HEARTBEAT_INTERVAL

__all__ = ["serve", "worker"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

F = TypeVar("F", bound=Callable[..., Any])


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def sqlite_options(function: F) -> F:
    """``--sqlite-dir DIR`` (repeatable) and ``--no-sqlite``: the SQLite files its workers
    can open, for workers on several hosts."""
    function = click.option(
        "--no-sqlite",
        is_flag=True,
        help="Claim no job of a SQLite project (this host cannot open their files).",
    )(function)
    return click.option(
        "--sqlite-dir",
        "sqlite_dirs",
        multiple=True,
        metavar="DIR",
        type=click.Path(file_okay=False, path_type=Path),
        help="Claim only the jobs of SQLite projects whose file is under DIR (repeatable); "
        "without it or --no-sqlite, all of them (one host).",
    )(function)


def _sqlite_dirs(sqlite_dirs: tuple[Path, ...], no_sqlite: bool) -> tuple[str, ...] | None:
    """What the workers may open: None all, () none, or these directories (resolved, so
    that they name a file's directory as its project does)."""
    if no_sqlite and sqlite_dirs:
        raise click.UsageError("--no-sqlite and --sqlite-dir say opposite things: give one")
    if no_sqlite:
        return ()
    if not sqlite_dirs:
        return None
    return tuple(sqlite_dir_prefix(path.expanduser().resolve()) for path in sqlite_dirs)


def _sqlite_note(sqlite_dirs: tuple[str, ...] | None) -> str:
    if sqlite_dirs is None:
        return "jobs of every project"
    if not sqlite_dirs:
        return "no job of a SQLite project"
    return "jobs of SQLite projects under " + ", ".join(sqlite_dirs) + " only"


@click.command(
    epilog=example(
        "capy serve --engine-dir /srv/capy --host 0.0.0.0 --port 8080 --workers 2",
        "capy keys create --engine-dir /srv/capy --name admin --scopes all   # the first key",
        "capy serve --engine-dir /srv/capy --session-jwks /etc/capy/idp.jwks.json "
        "--session-org acme=org_default",
    )
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Worker threads that run jobs in this process (0: run `capy worker` apart).",
)
@click.option(
    "--tick-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="S",
    help="Seconds between runs of the time-driven work (schedules, retention, TTLs).",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.option(
    "--session-jwks",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also accept session JWTs (RS256/ES256) signed by a key of this JWKS file "
    "[env: CAPY_SESSION_JWKS].",
)
@click.option("--session-audience", help="The `aud` session tokens must have.")
@click.option("--session-issuer", help="The `iss` session tokens must have.")
@click.option(
    "--session-org-claim",
    metavar="CLAIM",
    help="The claim that names the token's organization (default: org_id).",
)
@click.option(
    "--session-org",
    "session_orgs",
    multiple=True,
    metavar="EXTERNAL=ORG_ID",
    help="Map an organization of the identity provider to one of the engine (repeatable).",
)
@sqlite_options
@engine_dir_option
def serve(
    host: str,
    port: int,
    workers: int,
    tick_interval: float,
    log_level: str,
    session_jwks: Path | None,
    session_audience: str | None,
    session_issuer: str | None,
    session_org_claim: str | None,
    session_orgs: tuple[str, ...],
    sqlite_dirs: tuple[Path, ...],
    no_sqlite: bool,
) -> None:
    """Serve CapyDB's REST API over the engine (keys: `capy keys create`).

    SIGINT/SIGTERM stop it gracefully: requests in flight and running jobs finish.
    """
    try:
        from pulumi_capy.server.runner import WorkerOptions
        from pulumi_capy.server.runner import serve as run
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise Failure(
            f"capy serve needs the server extra ({exc.name} is missing): "
            "pip install 'pulumi-capy[server]'"
        ) from None
    from pulumi_capy.server.sessions import session_settings_from_env

    directory = engine_directory()
    may_open = _sqlite_dirs(sqlite_dirs, no_sqlite)
    sessions = session_settings_from_env(
        session_jwks,
        session_audience,
        issuer=session_issuer,
        org_claim=session_org_claim,
        organizations=session_orgs,
    )
    _logging(log_level)
    note(f"capy serve: engine {directory}, http://{host}:{port}/v1, {workers} worker thread(s)")
    if sessions is not None:
        note(f"capy serve: session tokens signed by a key of {sessions.jwks} are accepted")
    if workers and may_open is not None:
        note(f"capy serve: its workers claim {_sqlite_note(may_open)}")
    run(
        directory,
        host,
        port,
        workers,
        worker_options=WorkerOptions(tick_interval=tick_interval, sqlite_dirs=may_open),
        log_level=log_level,
        sessions=sessions,
    )


@click.command(
    epilog=example(
        "capy worker --engine-dir /srv/capy --concurrency 2 --tick-interval 30",
        "CAPY_STORE_URL=postgresql://capy@db/capy capy worker --engine-dir /var/lib/capy "
        "--sqlite-dir /srv/apps",
        "CAPY_STORE_URL=postgresql://capy@db/capy capy worker --engine-dir /var/lib/capy "
        "--no-sqlite",
    )
)
@click.option(
    "--concurrency",
    "--threads",
    "threads",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Jobs this worker runs at once, one thread each (--threads: the same).",
)
@click.option(
    "--tick-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="S",
    help="Seconds between runs of the time-driven work (schedules, retention, TTLs).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="S",
    help="Seconds an idle worker waits before it looks for jobs again.",
)
@click.option(
    "--heartbeat-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=HEARTBEAT_INTERVAL,
    show_default=True,
    metavar="S",
    help="Seconds between two heartbeats of each thread in the store (`capy workers list`).",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@sqlite_options
@engine_dir_option
def worker(
    threads: int,
    tick_interval: float,
    poll_interval: float,
    heartbeat_interval: float,
    log_level: str,
    sqlite_dirs: tuple[Path, ...],
    no_sqlite: bool,
) -> None:
    """Run jobs (and the scheduled work) from the engine directory until stopped.

    SIGTERM or ctrl-C: the running jobs finish, then it exits 0; a second signal
    quits at once (the jobs' leases expire and another worker takes them over).
    With the metadata on PostgreSQL (CAPY_STORE_URL) and workers on several hosts,
    --sqlite-dir or --no-sqlite says which SQLite projects' files this host can open;
    the engine directory is this host's scratch space.
    """
    from pulumi_capy.server.runner import WorkerOptions, run_workers, stop_on_signals

    directory = engine_directory()
    options = WorkerOptions(
        tick_interval=tick_interval,
        poll_interval=poll_interval,
        heartbeat_interval=heartbeat_interval,
        sqlite_dirs=_sqlite_dirs(sqlite_dirs, no_sqlite),
    )
    _logging(log_level)
    note(
        f"capy worker: engine {directory}, {threads} job(s) at once, "
        f"{_sqlite_note(options.sqlite_dirs)}; SIGTERM or ctrl-C stops it"
    )
    stop = threading.Event()
    with stop_on_signals(stop):
        run_workers(directory, threads, tick_interval, stop, options=options)
    note("capy worker: stopped")
