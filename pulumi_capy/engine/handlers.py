"""Every job type's handler, by type: the worker's table (``jobs`` for backups, restores
and previews; ``pitr`` for base backups, point-in-time restores and the log's retention).

The PostgreSQL point-in-time handlers are imported when a job of theirs runs: they load
psycopg, which a provider process pinning SQLite restore points never needs."""

from __future__ import annotations

from pulumi_capy.api.models import JobType
from pulumi_capy.engine import jobs
from pulumi_capy.engine.jobs import Handler, JobDone
from pulumi_capy.engine.pitr import retention
from pulumi_capy.engine.queue import Lease
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import JobRecord

__all__ = ["HANDLERS"]


def run_restore(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    """A restore from a backup, or to a point in time (``restore_time``)."""
    if job.payload.get("restore_time"):
        from pulumi_capy.engine.pitr import recovery

        return recovery.run_pitr_restore(rt, job, lease)
    return jobs.run_restore(rt, job, lease)


def run_base_backup(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    """A base backup for PostgreSQL point-in-time recovery."""
    from pulumi_capy.engine.pitr import basebackup

    return basebackup.run_base_backup(rt, job, lease)


HANDLERS: dict[str, Handler] = {
    **jobs.HANDLERS,
    JobType.project_restore: Handler(run_restore, jobs.new_preview_failed),
    JobType.pitr_base_backup: Handler(run_base_backup),
    JobType.pitr_expire: Handler(retention.run_pitr_expire),
}
