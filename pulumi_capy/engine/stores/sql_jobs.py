"""The job queue's SQL, shared by the SQLite and the PostgreSQL store.

Claiming a job is one ``UPDATE … RETURNING`` that also refuses a job whose
``locked_resource`` a running job holds (backed by a partial unique index). SQLite runs
one writer at a time; on PostgreSQL the choice locks the job's row and skips rows other
claimers hold (``FOR UPDATE SKIP LOCKED``), and a claim that lost a race for a lock to a
concurrent one (the partial unique index refused it) looks again.
Every write to a claimed job is fenced by ``(id, claimed_by, attempts)``: a
worker whose lease was taken over changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from pulumi_capy.engine.stores.sql_base import Database, SqlConnections, read_row, to_timestamp

__all__ = ["SqlJobQueue"]

CLAIM_ATTEMPTS = 5  # looks a claim takes when concurrent claims keep taking its job's lock

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
      AND (CAST(:only_id AS TEXT) IS NULL OR candidate.id = :only_id)
      AND (CAST(:only_id AS TEXT) IS NOT NULL OR candidate.sqlite_dir IS NULL OR {sqlite_dirs})
      AND (
        candidate.locked_resource IS NULL
        OR NOT EXISTS (
            SELECT 1 FROM jobs AS holder
            WHERE holder.state = 'running'
              AND holder.locked_resource = candidate.locked_resource
        )
      )
    ORDER BY candidate.created_at, candidate.{rowid}
    LIMIT 1
    {skip_locked}
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
  AND {restore_point_id} = :restore_point_id
"""

JOBS_USING_BACKUP = """
SELECT id FROM jobs
WHERE state IN ('pending', 'running')
  AND ({backup_id} = :backup_id OR {backup_key} = :backup_key)
"""

# one directory a claimer may open: a case-sensitive prefix match in both dialects (LIKE is
# case-insensitive on SQLite, and "_" or "%" in a path would be wildcards)
SQLITE_DIR_MATCH = (
    "substr(candidate.sqlite_dir, 1, length(CAST(:{name} AS TEXT))) = CAST(:{name} AS TEXT)"
)

RUNNING_JOBS = "SELECT * FROM jobs WHERE state = 'running' ORDER BY claimed_at, {rowid}"

OUTSTANDING_JOBS = """
SELECT id FROM jobs WHERE type = :type AND state IN ('pending', 'running')
AND {field} = :value ORDER BY created_at, {rowid}
"""


def _output(output: JobOutput) -> dict[str, Any]:
    return {
        "last_exit_code": output.exit_code,
        "last_stdout": output.stdout,
        "last_stderr": output.stderr,
    }


class SqlJobQueue(SqlConnections):
    """The queue's operations of a SQL store."""

    def _jobs_using_restore_point(self, db: Database, restore_point_id: str) -> list[str]:
        sql = JOBS_USING_RESTORE_POINT.format(
            restore_point_id=self.json_text("payload", "request", "restore_point_id")
        )
        rows = db.execute(sql, {"restore_point_id": restore_point_id}).fetchall()
        return [str(row["id"]) for row in rows]

    def enqueue(self, tx: Transaction, job: NewJob) -> None:
        db = self._connection(tx)
        self._work_changed(db)
        self._insert(
            db,
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
                "sqlite_dir": job.sqlite_dir,
                "payload": dict(job.payload),
            },
        )

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return JobRecord.model_validate(row) if row else None

    def list_jobs(self, project_id: str, limit: int) -> list[JobRecord]:
        rows = self._all(
            "SELECT * FROM jobs WHERE project_id = ? "  # noqa: S608 - the dialect's column
            f"ORDER BY created_at DESC, {self.ROWID} DESC LIMIT ?",
            (project_id, limit),
        )
        return [JobRecord.model_validate(row) for row in rows]

    def busy_jobs(self, project_id: str) -> list[JobRecord]:
        rows = self._all(
            "SELECT * FROM jobs WHERE project_id = ? AND state IN ('pending', 'running') "  # noqa: S608
            f"ORDER BY created_at DESC, {self.ROWID} DESC",
            (project_id,),
        )
        return [JobRecord.model_validate(row) for row in rows]

    def _outstanding(self, job_type: JobType, payload_key: str, value: str) -> list[str]:
        field = self.json_text("payload", payload_key)
        sql = OUTSTANDING_JOBS.format(field=field, rowid=self.ROWID)
        rows = self._all(sql, {"type": job_type.value, "value": value})
        return [str(row["id"]) for row in rows]

    def cancel_pending_job(
        self, tx: Transaction, job_id: str, *, error: str, now: datetime
    ) -> bool:
        stamp = to_timestamp(now)
        db = self._connection(tx)
        self._work_changed(db)
        updated = db.execute(
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
        sql = JOBS_USING_BACKUP.format(
            backup_id=self.json_text("payload", "backup_id"),
            backup_key=self.json_text("payload", "request", "backup_key"),
        )
        rows = self._all(sql, {"backup_id": backup_id, "backup_key": backup_key})
        return [str(row["id"]) for row in rows]

    # ------------------------------------------------------------ claims and leases

    def claim_job(
        self,
        worker_id: str,
        now: datetime,
        lease_until: datetime,
        only_id: str | None = None,
        *,
        sqlite_dirs: Sequence[str] | None = None,
    ) -> JobRecord | None:
        """Claim the oldest runnable job (or ``only_id``) in one statement."""
        params: dict[str, Any] = {
            "worker": worker_id,
            "now": to_timestamp(now),
            "lease_until": to_timestamp(lease_until),
            "only_id": only_id,
        }
        if sqlite_dirs is None:
            may_open = "1 = 1"
        elif not sqlite_dirs:
            may_open = "1 = 0"
        else:
            matches = []
            for number, directory in enumerate(sqlite_dirs):
                params[f"sqlite_dir_{number}"] = directory
                matches.append(SQLITE_DIR_MATCH.format(name=f"sqlite_dir_{number}"))
            may_open = "(" + " OR ".join(matches) + ")"
        sql = CLAIM_JOB.format(rowid=self.ROWID, skip_locked=self.SKIP_LOCKED, sqlite_dirs=may_open)
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                with self._statement() as db:
                    row = self._prepared(db, sql, params).fetchone()
            except self.integrity_errors:
                # a concurrent claim took the lock of the job this one chose (PostgreSQL):
                # that job now waits for it; look again
                if attempt == CLAIM_ATTEMPTS - 1:
                    return None
                continue
            return JobRecord.model_validate(read_row(row)) if row is not None else None
        return None

    def running_jobs(self) -> list[JobRecord]:
        rows = self._all(RUNNING_JOBS.format(rowid=self.ROWID), {})
        return [JobRecord.model_validate(row) for row in rows]

    def renew_lease(self, fence: Fence, now: datetime, lease_until: datetime) -> bool:
        with self._statement() as db:
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

    def _update_claimed(self, db: Database, fence: Fence, fields: Mapping[str, Any]) -> bool:
        """Write a claimed job's fields; False when the lease was taken over."""
        if "state" in fields:  # its lock is free again, or it is pending again
            self._work_changed(db)
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
            self._work_changed(db)
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
