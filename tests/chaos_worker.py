"""A worker process for the chaos test: ``capy worker`` with short leases, whose jobs
record themselves.

Usage: python -m tests.chaos_worker ENGINE_DIR LOG THREADS

Each thread runs ``Engine.run_worker`` (the loop ``capy worker`` runs) with a lease of
``LEASE`` seconds, so that the jobs of a killed worker are rescued quickly; every job
appends a line to LOG when it starts, when its work is over (before the store records
how it ended, which frees its lock) and when it completed (its completion committed by
the store under its fence), with its lock, attempt, pid and the wall clock. Lines are
written with one ``write`` on an ``O_APPEND`` descriptor each, so that processes and
threads never interleave them, and a SIGKILL loses none already written. The store and
the blobs come from the environment (``CAPY_STORE_URL``, ``CAPY_BLOB_URL``...).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from pulumi_capy.engine import Engine
from pulumi_capy.engine.runtime import Hook
from pulumi_capy.engine.stores.contract import JobRecord

LEASE = 2.0


def main() -> None:
    directory, log_path, threads = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(event: str) -> Hook:
        def hook(job: JobRecord) -> None:
            line = {
                "event": event,
                "job": job.id,
                "lock": job.locked_resource,
                "attempt": job.attempts,  # a deferral hands a job back uncounted: with
                "claimed_at": str(job.claimed_at),  # this and the pid, one claim
                "pid": os.getpid(),
                "t": time.time(),
            }
            os.write(log, (json.dumps(line) + "\n").encode())

        return hook

    hooks = {
        "job.started": record("start"),
        "job.ended": record("end"),  # its work over, before its end is recorded
        "job.completed": record("done"),  # its completion committed under its fence
    }
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def work() -> None:
        with Engine(directory, lease_seconds=LEASE, hooks=hooks) as engine:
            engine.run_worker(stop, poll_interval=0.2, tick_interval=0.5)

    running = [threading.Thread(target=work) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join()


if __name__ == "__main__":
    main()
