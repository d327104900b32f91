"""The job queue's SQL in a SQLite store.

Claiming a job is one ``UPDATE … RETURNING`` that also refuses a job whose
``locked_resource`` a running job holds (backed by a partial unique index).
Every write to a claimed job is fenced by ``(id, claimed_by, attempts)``: a
worker whose lease was taken over changes nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pulumi_capy.api.models import JobProgress, JobState, JobType
from pulumi_capy.engine.stores.contract import (
    Fence,
    JobOutput,
    JobRecord,
    NewJob,
    Transaction,
)
from pulumi_capy.engine.stores.sqlite_base import SqliteConnections, read_row, to_timestamp

__all__ = ["JOBS_USING_RESTORE_POINT", "SqliteJobQueue"]

CLAIM_JOB = """
UPDATE jobs
SET state = 'running',
    attempts = attempts + 1,
    claimed_by = :worker,
    claimed_at = :now,
    lease_expires_at = :lease_until,
    started_at = COALESCE(started_at, :now),
    updated_at = :now,
    retry_classification = NULL,
    progress = NULL
WHERE id = (
    SELECT candidate.id FROM jobs AS candidate
    WHERE candidate.state = 'pending'
      AND candidate.run_after <= :now
      AND (:only_id IS NULL OR candidate.id = :only_id)
      AND (
        candidate.locked_resource IS NULL
        OR NOT EXISTS (
            SELECT 1 FROM jobs AS holder
            WHERE holder.state = 'running'
              AND holder.locked_resource = candidate.locked_resource
        )
      )
    ORDER BY candidate.created_at, candidate.rowid
    LIMIT 1
)
RETURNING *
"""

RENEW_LEASE = """
UPDATE jobs SET lease_expires_at = :lease_until, updated_at = :now
WHERE id = :id AND claimed_by = :worker AND attempts = :attempt AND state = 'running'
"""

EXPIRED_LEASES = """
SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at < :now ORDER BY created_at
"""

RESCUE_TO_PENDING = """
UPDATE jobs
SET state = 'pending', claimed_by = NULL, claimed_at = NULL, lease_expires_at = NULL,
    run_after = :now, updated_at = :now, retry_classification = 'transient', error = :error
WHERE id = :id AND state = 'running' AND claimed_by = :worker AND attempts = :attempt
"""

RESCUE_TO_FAILED = """
UPDATE jobs
SET state = 'failed', lease_expires_at = NULL, completed_at = :now, updated_at = :now,
    retry_classification = 'transient', error = :error
WHERE id = :id AND state = 'running' AND claimed_by = :worker AND attempts = :attempt
"""

JOBS_USING_RESTORE_POINT = """
SELECT id FROM jobs
WHERE state IN ('pending', 'running')
  AND json_extract(payload, '$.request.restore_point_id') = :restore_point_id
"""

JOBS_USING_BACKUP = """
SELECT id FROM jobs
WHERE state IN ('pending', 'running')
  AND (json_extract(payload, '$.backup_id') = :backup_id
       OR json_extract(payload, '$.request.backup_key') = :backup_key)
"""

OUTSTANDING_JOBS = """
SELECT id FROM jobs WHERE type = :type AND state IN ('pending', 'running')
AND json_extract(payload, :path) = :value ORDER BY created_at, rowid
"""


def _output(output: JobOutput) -> dict[str, Any]:
    return {
        "last_exit_code": output.exit_code,
        "last_stdout": output.stdout,
        "last_stderr": output.stderr,
    }


class SqliteJobQueue(SqliteConnections):
    """The queue's operations of the SQLite store."""

    def enqueue(self, tx: Transaction, job: NewJob) -> None:
        self._insert(
            self._connection(tx),
            "jobs",
            {
                "id": job.id,
                "type": job.type,
                "state": JobState.pending,
                "attempts": 0,
                "max_attempts": job.max_attempts,
                "created_at": job.created_at,
                "updated_at": job.created_at,
                "run_after": job.run_after,
                "locked_resource": job.locked_resource,
                "organization_id": job.organization_id,
                "project_id": job.project_id,
                "preview_database_id": job.preview_database_id,
                "payload": dict(job.payload),
            },
        )

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return JobRecord.model_validate(row) if row else None

    def list_jobs(self, project_id: str, limit: int) -> list[JobRecord]:
        rows = self._all(
            "SELECT * FROM jobs WHERE project_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (project_id, limit),
        )
        return [JobRecord.model_validate(row) for row in rows]

    def busy_jobs(self, project_id: str) -> list[JobRecord]:
        rows = self._all(
            "SELECT * FROM jobs WHERE project_id = ? AND state IN ('pending', 'running') "
            "ORDER BY created_at DESC, rowid DESC",
            (project_id,),
        )
        return [JobRecord.model_validate(row) for row in rows]

    def _outstanding(self, job_type: JobType, payload_key: str, value: str) -> list[str]:
        rows = self._all(
            OUTSTANDING_JOBS,
            {"type": job_type.value, "path": f"$.{payload_key}", "value": value},
        )
        return [str(row["id"]) for row in rows]

    def cancel_pending_job(
        self, tx: Transaction, job_id: str, *, error: str, now: datetime
    ) -> bool:
        stamp = to_timestamp(now)
        updated = self._connection(tx).execute(
            "UPDATE jobs SET state = ?, error = ?, retry_classification = 'cancelled', "
            "completed_at = ?, updated_at = ? WHERE id = ? AND state = ?",
            (JobState.failed.value, error, stamp, stamp, job_id, JobState.pending.value),
        )
        return updated.rowcount > 0

    def verification_outstanding(self, backup_id: str) -> bool:
        return bool(self._outstanding(JobType.backup_verify, "backup_id", backup_id))

    def outstanding_verification(self, backup_id: str) -> str | None:
        jobs = self._outstanding(JobType.backup_verify, "backup_id", backup_id)
        return jobs[0] if jobs else None

    def outstanding_preview_deletion(self, preview_id: str) -> str | None:
        jobs = self._outstanding(JobType.preview_delete, "preview_id", preview_id)
        return jobs[0] if jobs else None

    def jobs_using_backup(self, backup_id: str, backup_key: str) -> list[str]:
        rows = self._all(JOBS_USING_BACKUP, {"backup_id": backup_id, "backup_key": backup_key})
        return [str(row["id"]) for row in rows]

    # ------------------------------------------------------------ claims and leases

    def claim_job(
        self, worker_id: str, now: datetime, lease_until: datetime, only_id: str | None = None
    ) -> JobRecord | None:
        """Claim the oldest runnable job (or ``only_id``) in one statement."""
        with self._writing() as db:
            row = db.execute(
                CLAIM_JOB,
                {
                    "worker": worker_id,
                    "now": to_timestamp(now),
                    "lease_until": to_timestamp(lease_until),
                    "only_id": only_id,
                },
            ).fetchone()
        return JobRecord.model_validate(read_row(row)) if row is not None else None

    def renew_lease(self, fence: Fence, now: datetime, lease_until: datetime) -> bool:
        with self._writing() as db:
            return (
                db.execute(
                    RENEW_LEASE,
                    {
                        "lease_until": to_timestamp(lease_until),
                        "now": to_timestamp(now),
                        "id": fence.job_id,
                        "worker": fence.worker_id,
                        "attempt": fence.attempt,
                    },
                ).rowcount
                > 0
            )

    def set_job_progress(self, fence: Fence, progress: JobProgress, now: datetime) -> bool:
        with self._writing() as db:
            return self._update_claimed(db, fence, {"progress": progress, "updated_at": now})

    def _update_claimed(
        self, db: sqlite3.Connection, fence: Fence, fields: Mapping[str, Any]
    ) -> bool:
        """Write a claimed job's fields; False when the lease was taken over."""
        return (
            self._set(
                db,
                "jobs",
                fence.job_id,
                fields,
                where="AND claimed_by = :fence_worker AND attempts = :fence_attempt "
                "AND state = 'running'",
                params={"fence_worker": fence.worker_id, "fence_attempt": fence.attempt},
            )
            > 0
        )

    def complete_job(
        self,
        tx: Transaction,
        fence: Fence,
        *,
        result: Mapping[str, Any],
        output: JobOutput,
        now: datetime,
    ) -> bool:
        fields: dict[str, Any] = {
            "state": JobState.completed,
            "completed_at": now,
            "updated_at": now,
            "lease_expires_at": None,
            "error": None,
            "retry_classification": None,
            "result": dict(result),
            **_output(output),
        }
        return self._update_claimed(self._connection(tx), fence, fields)

    def fail_job(
        self,
        tx: Transaction,
        fence: Fence,
        *,
        error: str,
        classification: str,
        output: JobOutput,
        now: datetime,
        retry_at: datetime | None,
    ) -> bool:
        fields: dict[str, Any] = {
            "error": error,
            "retry_classification": classification,
            "updated_at": now,
            "lease_expires_at": None,
            **_output(output),
        }
        if retry_at is not None:
            fields |= {
                "state": JobState.pending,
                "claimed_by": None,
                "claimed_at": None,
                "run_after": retry_at,
            }
        else:
            fields |= {"state": JobState.failed, "completed_at": now}
        return self._update_claimed(self._connection(tx), fence, fields)

    def defer_job(self, fence: Fence, *, run_after: datetime, note: str, now: datetime) -> bool:
        fields: dict[str, Any] = {
            "state": JobState.pending,
            "attempts": fence.attempt - 1,  # waiting is not an attempt
            "claimed_by": None,
            "claimed_at": None,
            "lease_expires_at": None,
            "run_after": run_after,
            "updated_at": now,
            "last_stdout": note,
        }
        with self._writing() as db:
            return self._update_claimed(db, fence, fields)

    def release_job(self, fence: Fence, *, note: str, now: datetime) -> bool:
        return self.defer_job(fence, run_after=now, note=note, now=now)

    def rescue_expired_leases(self, now: datetime, error: str) -> list[tuple[JobRecord, JobState]]:
        rescued: list[tuple[JobRecord, JobState]] = []
        with self._writing() as db:
            for row in db.execute(EXPIRED_LEASES, {"now": to_timestamp(now)}).fetchall():
                job = JobRecord.model_validate(read_row(row))
                to_failed = job.attempts >= job.max_attempts
                params = {
                    "now": to_timestamp(now),
                    "id": job.id,
                    "worker": job.claimed_by,
                    "attempt": job.attempts,
                    "error": error.format(worker=job.claimed_by, attempt=job.attempts),
                }
                db.execute(RESCUE_TO_FAILED if to_failed else RESCUE_TO_PENDING, params)
                rescued.append((job, JobState.failed if to_failed else JobState.pending))
        return rescued
