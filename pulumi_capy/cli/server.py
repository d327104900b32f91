"""``capy serve`` and ``capy worker``: the engine as a service (``pulumi_capy.server.runner``)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import click

from pulumi_capy.cli.common import Failure, engine_dir_option, engine_directory, example, note

__all__ = ["serve", "worker"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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
) -> None:
    """Serve CapyDB's REST API over the engine (keys: `capy keys create`).

    SIGINT/SIGTERM stop it gracefully: requests in flight and running jobs finish.
    """
    try:
        from pulumi_capy.server.runner import serve as run
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise Failure(
            f"capy serve needs the server extra ({exc.name} is missing): "
            "pip install 'pulumi-capy[server]'"
        ) from None
    from pulumi_capy.server.sessions import session_settings_from_env

    directory = engine_directory()
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
    run(
        directory,
        host,
        port,
        workers,
        tick_interval=tick_interval,
        log_level=log_level,
        sessions=sessions,
    )


@click.command(
    epilog=example("capy worker --engine-dir /srv/capy --concurrency 2 --tick-interval 30")
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
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@engine_dir_option
def worker(threads: int, tick_interval: float, poll_interval: float, log_level: str) -> None:
    """Run jobs (and the scheduled work) from the engine directory until stopped.

    SIGTERM or ctrl-C: the running jobs finish, then it exits 0; a second signal
    quits at once (the jobs' leases expire and another worker takes them over).
    """
    from pulumi_capy.server.runner import run_workers, stop_on_signals

    directory = engine_directory()
    _logging(log_level)
    note(f"capy worker: engine {directory}, {threads} job(s) at once; SIGTERM or ctrl-C stops it")
    stop = threading.Event()
    with stop_on_signals(stop):
        run_workers(directory, threads, tick_interval, stop, poll_interval=poll_interval)
    note("capy worker: stopped")
