"""The worker registry: each worker loop (``Engine.run_worker``, one per thread of a
``capy worker`` or ``capy serve``) records itself in the store, heartbeats while it runs
and notes when it stops, so that ``capy workers list`` can say who runs what.

The heartbeat is a thread of its own: the loop is busy for as long as a job runs (hours,
for a large restore), and a worker running a job is alive. A worker whose heartbeats
stopped without a stop (SIGKILL, a lost machine) is ``lost``; the tick forgets workers
not heard of for ``FORGET_AFTER``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta
from enum import StrEnum

from pulumi_capy.engine.clock import Clock
from pulumi_capy.engine.stores.contract import Store, WorkerRecord

__all__ = [
    "FORGET_AFTER",
    "HEARTBEAT_INTERVAL",
    "LOST_AFTER",
    "Heartbeat",
    "WorkerState",
    "worker_state",
]

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 5.0  # seconds between two heartbeats of a worker
LOST_AFTER = 30.0  # seconds without a heartbeat after which a worker that did not stop is lost
FORGET_AFTER = timedelta(days=1)  # the tick forgets workers not heard of for this long


class WorkerState(StrEnum):
    alive = "alive"  # its last heartbeat is recent (within ``lost_after``)
    stopped = "stopped"  # it ended on its own (SIGTERM, ctrl-C)
    lost = "lost"  # silent for longer than ``lost_after`` without stopping: killed, or gone


def worker_state(
    worker: WorkerRecord, now: datetime, lost_after: float = LOST_AFTER
) -> WorkerState:
    if worker.stopped_at is not None:
        return WorkerState.stopped
    if (now - worker.heartbeat_at).total_seconds() > lost_after:
        return WorkerState.lost
    return WorkerState.alive


class Heartbeat:
    """Registers a worker loop while it runs: recorded on enter, a heartbeat every
    ``interval`` seconds in a thread, stopped on exit. A store that fails a heartbeat is
    tried again at the next one (the worker's jobs have leases of their own)."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        worker_id: str,
        sqlite_dirs: tuple[str, ...] | None,
        interval: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self._store = store
        self._clock = clock
        self.worker_id = worker_id
        self.sqlite_dirs = sqlite_dirs
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{worker_id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        now = self._clock.now()
        self._record = WorkerRecord(
            id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            thread=threading.current_thread().name,
            sqlite_dirs=list(self.sqlite_dirs) if self.sqlite_dirs is not None else None,
            started_at=now,
            heartbeat_at=now,
        )
        self._store.record_worker(self._record)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        try:
            self._store.stop_worker(self.worker_id, self._clock.now())
        except Exception:  # the store is unreachable: the worker will show as lost
            log.warning("worker %s: could not record that it stopped", self.worker_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                now = self._clock.now()
                if not self._store.heartbeat_worker(self.worker_id, now):
                    # forgotten meanwhile (the store was out of reach for longer than
                    # FORGET_AFTER, or someone cleared the table): register again
                    self._store.record_worker(self._record.model_copy(update={"heartbeat_at": now}))
            except Exception:
                log.warning("worker %s: heartbeat failed; trying again", self.worker_id)
