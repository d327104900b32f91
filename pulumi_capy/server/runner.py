"""The engine as a service: worker threads (``capy worker``) and the HTTP server (``capy serve``).

Each worker thread has its own ``Engine`` on the directory and runs
``Engine.run_worker`` (jobs, and ``tick`` every ``tick_interval`` seconds;
registered in the store, heartbeating) until ``stop`` is set. Stopping is
graceful: a thread finishes the job it is running, then returns, so nothing is
lost. A job cut short anyway (a second signal, SIGKILL, a lost machine) keeps
its lease until it expires, and the next worker's ``tick`` rescues it.

Importing this module does not import the web stack: ``serve`` does.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pulumi_capy.api.errors import CapyError
from pulumi_capy.engine import Engine
from pulumi_capy.engine.workers import HEARTBEAT_INTERVAL

if TYPE_CHECKING:
    from pulumi_capy.server.sessions import SessionSettings

__all__ = [
    "WorkerOptions",
    "run_workers",
    "serve",
    "start_workers",
    "stop_on_signals",
    "stop_workers",
]

log = logging.getLogger(__name__)

RESTART_DELAY = 5.0  # seconds before a worker loop that raised starts again
JOIN_STEP = 0.5  # join in steps, so the main thread keeps handling signals


@dataclass(frozen=True)
class WorkerOptions:
    """How each worker thread works: its intervals, and the SQLite files it may open."""

    tick_interval: float = 60.0
    poll_interval: float = 1.0
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    # directories of the SQLite files it may open: it claims no job of one elsewhere;
    # () none; None: all (the workers and the files are on one host)
    sqlite_dirs: tuple[str, ...] | None = None


def _work(engine_dir: Path, stop: threading.Event, options: WorkerOptions) -> None:
    name = threading.current_thread().name
    while not stop.is_set():
        try:
            with Engine(engine_dir, sqlite_dirs=options.sqlite_dirs) as engine:
                log.info("%s: started as %s on %s", name, engine.rt.worker_id, engine.directory)
                engine.run_worker(
                    stop,
                    poll_interval=options.poll_interval,
                    tick_interval=options.tick_interval,
                    heartbeat_interval=options.heartbeat_interval,
                )
        except Exception:
            log.exception("%s: the worker loop failed; again in %gs", name, RESTART_DELAY)
            stop.wait(RESTART_DELAY)
    log.info("%s: stopped", name)


def start_workers(
    engine_dir: str | Path,
    threads: int,
    stop: threading.Event,
    *,
    tick_interval: float = 60.0,
    poll_interval: float = 1.0,
    options: WorkerOptions | None = None,
) -> list[threading.Thread]:
    """Start ``threads`` worker threads; they run until ``stop`` is set. ``options``, when
    given, holds the intervals too (``tick_interval`` and ``poll_interval`` are ignored)."""
    if options is None:
        options = WorkerOptions(tick_interval=tick_interval, poll_interval=poll_interval)
    directory = Path(engine_dir)
    with Engine(directory):  # a directory that cannot work fails here, in the caller's thread
        pass
    started = []
    for number in range(threads):
        thread = threading.Thread(
            target=_work,
            args=(directory, stop, options),
            name=f"capy-worker-{number + 1}",
            daemon=True,  # a forced exit must not wait for them; leases are rescued
        )
        thread.start()
        started.append(thread)
    return started


def stop_workers(workers: list[threading.Thread], stop: threading.Event) -> None:
    """Set ``stop`` and wait for every thread to finish its running job."""
    stop.set()
    busy = [thread for thread in workers if thread.is_alive()]
    if busy:
        log.info("stopping %d worker thread(s); a running job finishes first", len(busy))
    for thread in workers:
        while thread.is_alive():
            thread.join(JOIN_STEP)


def run_workers(
    engine_dir: str | Path,
    threads: int,
    tick_interval: float,
    stop: threading.Event,
    *,
    poll_interval: float = 1.0,
    options: WorkerOptions | None = None,
) -> None:
    """Run ``threads`` workers until ``stop`` is set; return once their jobs are finished
    (``options``, when given, holds the intervals too)."""
    workers = start_workers(
        engine_dir,
        threads,
        stop,
        tick_interval=tick_interval,
        poll_interval=poll_interval,
        options=options,
    )
    try:
        while not stop.is_set() and any(thread.is_alive() for thread in workers):
            stop.wait(JOIN_STEP)
    finally:
        stop_workers(workers, stop)


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop``; a second one quits at once (exit 128 + signal).
    SIGUSR1 prints every thread's stack to stderr (what a worker that does not stop is
    waiting for).

    Only in the main thread (signal handlers cannot be set elsewhere).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _: FrameType | None) -> None:
        if stop.is_set():
            log.warning(
                "second %s: quitting now; running jobs are taken over when their lease expires",
                signal.Signals(signum).name,
            )
            raise SystemExit(128 + signum)
        log.info(
            "%s: stopping after the running jobs finish (again to quit now)",
            signal.Signals(signum).name,
        )
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        yield
    finally:
        faulthandler.unregister(signal.SIGUSR1)
        for sig, old in previous.items():
            signal.signal(sig, old)


def serve(
    engine_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    workers: int = 1,
    *,
    worker_options: WorkerOptions | None = None,
    log_level: str = "info",
    sessions: SessionSettings | None = None,
) -> None:
    """Serve CapyDB's API over the engine in ``engine_dir``, with ``workers`` worker threads
    working as ``worker_options`` says (and session JWTs when ``sessions`` says where their
    keys are).

    uvicorn handles SIGINT/SIGTERM: it stops accepting, finishes the requests in
    flight and returns; then the workers finish their running jobs and stop.
    """
    import uvicorn

    from pulumi_capy.server.app import create_app

    app = create_app(engine_dir, sessions=sessions)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    )
    stop = threading.Event()
    # uvicorn re-raises the signal it shut down for once it is done: this handler takes it
    with stop_on_signals(stop):
        threads = start_workers(
            engine_dir, workers, stop, options=worker_options or WorkerOptions()
        )
        try:
            server.run()
        except SystemExit as exc:  # uvicorn exits when it cannot start (e.g. the port is taken)
            if server.started:
                raise
            raise CapyError(
                f"the server could not start on {host}:{port} (exit status {exc.code}); "
                "its log above says why"
            ) from None
        finally:
            stop_workers(threads, stop)
            app.state.engine.close()
