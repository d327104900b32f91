"""Time-driven work, run by ``Engine.tick(now)``: schedules, retention, TTLs, lost leases,
and forgetting workers long gone."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pulumi_capy.api.models import JobType, ScheduledBackup
from pulumi_capy.engine.pitr.control import enqueue_base_backup
from pulumi_capy.engine.pitr.retention import tick_pitr
from pulumi_capy.engine.previews import enqueue_preview_delete
from pulumi_capy.engine.queue import new_id
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.worker import Worker
from pulumi_capy.engine.workers import FORGET_AFTER

__all__ = ["TickReport", "last_due", "run_tick"]


@dataclass
class TickReport:
    backup_jobs: list[str] = field(default_factory=list)  # scheduled backups started
    expired_backups: list[str] = field(default_factory=list)  # backup keys past retention
    deleted_previews: list[str] = field(default_factory=list)  # previews past their TTL
    rescued_jobs: int = 0  # running jobs whose lease had expired
    pitr_base_backup_jobs: list[str] = field(default_factory=list)  # scheduled base backups
    expired_base_backups: list[str] = field(default_factory=list)  # past retention
    expired_restore_points: int = 0  # pitr restore points the window left behind
    forgotten_workers: int = 0  # workers stopped or silent for longer than FORGET_AFTER


def last_due(schedule: ScheduledBackup, now: datetime) -> datetime:
    """The latest daily run time (UTC hour:minute) at or before ``now``."""
    now = now.astimezone(UTC)
    due = now.replace(hour=schedule.cron_hour, minute=schedule.cron_minute, second=0, microsecond=0)
    return due if due <= now else due - timedelta(days=1)


def run_tick(rt: Runtime, worker: Worker, now: datetime) -> TickReport:
    store = rt.store
    report = TickReport(rescued_jobs=worker.rescue())

    for schedule in store.active_schedules():
        due = last_due(schedule, now)
        created = schedule.created_at or due
        if created > due or (schedule.last_run_at is not None and schedule.last_run_at >= due):
            continue
        with store.transaction() as tx:
            job_id = new_id("job")
            if store.record_schedule_run(tx, schedule.id, schedule.last_run_at, job_id, now):
                rt.enqueue(
                    tx,
                    JobType.project_backup,
                    project_id=schedule.project_id,
                    payload={"backup_id": new_id("bkp"), "label": schedule.label or "scheduled"},
                    locked_resource=f"project:{schedule.project_id}",
                    job_id=job_id,
                )
                report.backup_jobs.append(job_id)
                pitr = store.get_pitr(schedule.project_id)
                if pitr is not None and pitr.enabled:  # PITR: a base backup on the schedule too
                    report.pitr_base_backup_jobs.append(
                        enqueue_base_backup(rt, schedule.project_id, tx)
                    )

    for schedule in store.retention_schedules():
        cutoff = now - timedelta(days=schedule.retention_days or 0)
        for backup in store.list_backups(schedule.project_id, state="completed"):
            if backup.created_at is None or backup.created_at >= cutoff:
                continue
            if store.expire_backup(backup.id, now):
                with store.transaction() as tx:
                    rt.enqueue(
                        tx,
                        JobType.backup_expire,
                        project_id=schedule.project_id,
                        payload={"backup_id": backup.id},
                        locked_resource=f"backup:{backup.id}",
                    )
                report.expired_backups.append(backup.backup_key)

    retained = tick_pitr(rt, now)
    report.expired_base_backups = retained.expired_base_backups
    report.expired_restore_points = retained.expired_restore_points

    for preview in store.previews_past_ttl(now):
        with store.transaction() as tx:
            enqueue_preview_delete(rt, tx, preview)
        report.deleted_previews.append(preview.id)

    report.forgotten_workers = store.forget_workers(now - FORGET_AFTER)
    return report
