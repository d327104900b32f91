"""The job queue's policy: ids, retry decisions, leases and their heartbeat.

The SQL of claiming and fencing lives in the store (``stores``); this module decides what
a failure means and keeps a claimed job's lease alive while it runs.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from pulumi_capy.engine.clock import Clock
from pulumi_capy.engine.stores.contract import Fence, Store

__all__ = [
    "OUTPUT_LIMIT",
    "Deferred",
    "JobRetryPolicy",
    "Lease",
    "LeaseLost",
    "RetryDecision",
    "new_id",
    "new_worker_id",
    "truncate_output",
]

OUTPUT_LIMIT = 64 * 1024  # bytes kept of each of last_stdout / last_stderr [ours]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def new_worker_id() -> str:
    """host:pid:random, unique per worker object."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def truncate_output(text: str | None) -> str | None:
    """The last ``OUTPUT_LIMIT`` bytes of an output, marked when cut."""
    if text is None:
        return None
    data = text.encode("utf-8", errors="replace")
    if len(data) <= OUTPUT_LIMIT:
        return text
    tail = data[-(OUTPUT_LIMIT - 64) :].decode("utf-8", errors="ignore")
    return f"[... {len(data) - len(tail.encode())} bytes cut ...]\n{tail}"


class LeaseLost(Exception):
    """Another worker took this job over; stop without writing anything."""


class Deferred(Exception):
    """The job cannot run yet (e.g. its backup is still being verified); try later.

    Not a failure: the attempt is not counted.
    """

    def __init__(self, reason: str, delay: float = 1.0) -> None:
        super().__init__(reason)
        self.delay = delay


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay: float  # seconds before the next attempt (when retrying)
    classification: str  # "transient" or "permanent"


@dataclass(frozen=True)
class JobRetryPolicy:
    """Transient failures wait ``base_delay * 2**(attempt-1)`` (capped), up to ``max_attempts``."""

    max_attempts: int = 3
    base_delay: float = 2.0
    max_delay: float = 300.0

    def decide(self, attempts: int, max_attempts: int, *, permanent: bool) -> RetryDecision:
        if permanent:
            return RetryDecision(retry=False, delay=0.0, classification="permanent")
        if attempts >= max_attempts:
            return RetryDecision(retry=False, delay=0.0, classification="transient")
        delay = min(self.max_delay, self.base_delay * 2.0 ** (attempts - 1))
        return RetryDecision(retry=True, delay=delay, classification="transient")


class Lease:
    """Renews a claimed job's lease every third of its length, in a thread.

    ``check()`` raises ``LeaseLost`` once a renewal found the job taken over.
    """

    def __init__(self, store: Store, clock: Clock, fence: Fence, seconds: float) -> None:
        self._store = store
        self._clock = clock
        self.fence = fence
        self.seconds = seconds
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{fence.job_id}", daemon=True)

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.seconds)

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            if not self.renew():
                return

    def renew(self) -> bool:
        now = self._clock.now()
        try:
            kept = self._store.renew_lease(self.fence, now, self.until(now))
        except Exception:
            return True
        if not kept:
            self._lost.set()
        return kept

    def check(self) -> None:
        """Raise ``LeaseLost`` unless this worker still holds the job (asks the store)."""
        if self._lost.is_set() or not self.renew():
            raise LeaseLost(f"job {self.fence.job_id}: lease taken over")
