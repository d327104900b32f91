"""Runs jobs: claim one, hold its lease while its handler works, record the end.

Used inline by ``Engine.wait_for_job`` (embedded mode needs no daemon) and in
a loop by ``Engine.run_worker`` (``capy worker``).
"""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta

from pulumi_capy.api.errors import EngineFailure
from pulumi_capy.api.models import JobState
from pulumi_capy.engine.drivers import DriverFailure, Outcome
from pulumi_capy.engine.handlers import HANDLERS
from pulumi_capy.engine.jobs import JobDone, PermanentFailure
from pulumi_capy.engine.queue import Deferred, Lease, LeaseLost, truncate_output
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import JobOutput, JobRecord

__all__ = ["Worker"]

log = logging.getLogger(__name__)

RESCUE_ERROR = (
    "worker {worker} stopped renewing the lease of attempt {attempt} "
    "(process killed or machine lost); the attempt counts as a transient failure"
)


class _Abandon(Exception):
    """The fenced write found the job taken over: roll back and walk away."""


class Worker:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def rescue(self) -> int:
        """Return jobs whose lease expired to the queue (or fail them when out of attempts)."""
        rescued = self.rt.store.rescue_expired_leases(self.rt.now(), RESCUE_ERROR)
        for job, state in rescued:
            log.warning("rescued job %s from %s: now %s", job.id, job.claimed_by, state)
            if state == JobState.failed:
                handler = HANDLERS.get(str(job.type))
                if handler is not None:
                    error = RESCUE_ERROR.format(worker=job.claimed_by, attempt=job.attempts)
                    with self.rt.store.transaction() as tx:
                        handler.on_failed(self.rt, tx, job, error)
        return len(rescued)

    def run_once(self, only_id: str | None = None) -> bool:
        """Claim and run one job; False when none is runnable now."""
        self.rescue()
        now = self.rt.now()
        job = self.rt.store.claim_job(
            self.rt.worker_id,
            now,
            now + timedelta(seconds=self.rt.lease_seconds),
            only_id,
            sqlite_dirs=self.rt.sqlite_dirs,
        )
        if job is None:
            return False
        self.execute(job)
        return True

    def execute(self, job: JobRecord) -> None:
        """Run a claimed job to its end; on Ctrl-C, hand it back (``release``) and re-raise."""
        try:
            self._execute(job)
        except KeyboardInterrupt:
            # the handler's child processes (pg_dump...) are killed by subprocess.run as the
            # interrupt unwinds it; the lease thread has stopped: the job waits for no lease
            self.release(job, "interrupted (Ctrl-C) before it ended")
            raise

    def release(self, job: JobRecord, why: str) -> bool:
        """Hand a claimed job back to the queue, claimable at once; False if it was not ours."""
        now = self.rt.now()
        note = f"handed back by {self.rt.worker_id}: {why}"
        try:
            released = self.rt.store.release_job(job.fence, note=note, now=now)
        except Exception:  # the store is unreachable: the lease lapses, as for a killed worker
            log.warning("job %s: could not hand it back; its lease will lapse", job.id)
            return False
        if released:
            log.info("job %s: handed back to the queue (%s)", job.id, why)
        return released

    def _execute(self, job: JobRecord) -> None:
        handler = HANDLERS.get(str(job.type))
        with Lease(self.rt.store, self.rt.clock, job.fence, self.rt.lease_seconds) as lease:
            self.rt.hook("job.started", job)
            try:
                if handler is None:
                    raise PermanentFailure(f"no handler for job type {job.type!r}")
                try:
                    done = handler.run(self.rt, job, lease)
                finally:  # its work is over (its lock is freed by what is recorded next)
                    self.rt.hook("job.ended", job)
            except LeaseLost:
                log.warning("job %s: lease lost; leaving it to its new owner", job.id)
                return
            except Deferred as deferred:
                self._defer(job, deferred)
                return
            except Exception as exc:
                self._fail(job, exc)
                return
            try:
                self._complete(job, done)
                self.rt.hook("job.completed", job)
            except _Abandon:
                log.warning("job %s: lease lost before completion; result discarded", job.id)
            except Exception as exc:  # recording the result failed: the job did not complete
                self._fail(job, exc)

    # ------------------------------------------------------------ endings

    def _complete(self, job: JobRecord, done: JobDone) -> None:
        now = self.rt.now()
        with self.rt.store.transaction() as tx:
            result = dict(done.result)
            if done.commit is not None:
                result.update(done.commit(tx) or {})
            completed = self.rt.store.complete_job(
                tx, job.fence, result=result, output=self._output(done.outcome), now=now
            )
            if not completed:
                raise _Abandon

    def _defer(self, job: JobRecord, deferred: Deferred) -> None:
        now = self.rt.now()
        self.rt.store.defer_job(
            job.fence,
            run_after=now + timedelta(seconds=deferred.delay),
            note=f"waiting: {deferred}",
            now=now,
        )

    def _fail(self, job: JobRecord, exc: Exception) -> None:
        permanent, outcome = self._classify(exc)
        decision = self.rt.retry.decide(job.attempts, job.max_attempts, permanent=permanent)
        now = self.rt.now()
        error = str(exc) or type(exc).__name__
        retry_at = now + timedelta(seconds=decision.delay) if decision.retry else None
        log.info(
            "job %s attempt %d failed (%s): %s",
            job.id,
            job.attempts,
            decision.classification,
            error,
        )
        try:
            with self.rt.store.transaction() as tx:
                recorded = self.rt.store.fail_job(
                    tx,
                    job.fence,
                    error=error,
                    classification=decision.classification,
                    output=self._output(outcome),
                    now=now,
                    retry_at=retry_at,
                )
                if not recorded:
                    raise _Abandon
                if not decision.retry:
                    handler = HANDLERS.get(str(job.type))
                    if handler is not None:
                        handler.on_failed(self.rt, tx, job, error)
        except _Abandon:
            log.warning("job %s: lease lost before recording its failure", job.id)

    @staticmethod
    def _classify(exc: Exception) -> tuple[bool, Outcome]:
        if isinstance(exc, EngineFailure):
            reported = exc.outcome if isinstance(exc, DriverFailure) else None
            return exc.permanent, reported or Outcome(str(exc), 1, stderr=str(exc))
        # anything else is unexpected: retrying may help, and the trace helps whoever looks
        trace = "".join(traceback.format_exception(exc))
        return False, Outcome(str(exc), 1, stderr=trace)

    @staticmethod
    def _output(outcome: Outcome) -> JobOutput:
        return JobOutput(
            exit_code=outcome.exit_code,
            stdout=truncate_output(outcome.stdout or outcome.summary),
            stderr=truncate_output(outcome.stderr),
        )
