"""The PITR window over time, run by ``tick``: restore points the window left behind are
``expired``; base backups past the project's retention (``retention_days`` of its backup
schedule) expire, the newest usable one always kept, and a ``pitr.expire`` job removes
their blobs with the log no kept base backup needs any more."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from pulumi_capy.api.models import JobType
from pulumi_capy.engine.drivers import Outcome
from pulumi_capy.engine.jobs import JobDone
from pulumi_capy.engine.pitr.control import usable_base_backups, window
from pulumi_capy.engine.pitr.lsn import SEGMENT_NAME, segment_name
from pulumi_capy.engine.queue import Lease
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import BaseBackupRecord, JobRecord, PitrRecord

__all__ = ["PitrTick", "run_pitr_expire", "tick_pitr"]


class PitrTick:
    def __init__(self) -> None:
        self.expired_restore_points = 0
        self.expired_base_backups: list[str] = []
        self.jobs: list[str] = []


def tick_pitr(rt: Runtime, now: datetime) -> PitrTick:
    report = PitrTick()
    for record in rt.store.pitr_records():  # turned off too: its archive ages out
        project_id = record.project_id
        schedule = rt.store.get_schedule(project_id)
        if schedule is not None and schedule.retention_days:
            cutoff = now - timedelta(days=schedule.retention_days)
            usable = usable_base_backups(rt, record)
            # on: the newest usable one always stays (the window needs a start)
            keep = usable[-1].id if usable and record.enabled else None
            expired = [
                backup.id
                for backup in rt.store.list_base_backups(project_id)
                if backup.ended_at < cutoff
                and backup.id != keep
                and rt.store.expire_base_backup(backup.id)
            ]
            if expired:
                report.expired_base_backups += expired
                with rt.store.transaction() as tx:
                    report.jobs.append(
                        rt.enqueue(
                            tx,
                            JobType.pitr_expire,
                            project_id=project_id,
                            payload={},
                            locked_resource=f"pitr:{project_id}",
                        )
                    )
        current = window(rt, project_id)
        if current is not None:
            report.expired_restore_points += rt.store.expire_pitr_restore_points(
                project_id, current.start, now
            )
    return report


def _log_not_needed(rt: Runtime, project_id: str) -> Callable[[str], bool]:
    """Which archived log files no kept base backup needs: those before the oldest one's
    start (a segment or a piece of one, on its timeline or earlier); all of them once a
    project turned off has none left; none while one is still to come."""
    kept = rt.store.list_base_backups(project_id)
    record = rt.store.get_pitr(project_id)
    if record is not None and record.generations:
        return _sqlite_log_not_needed(record, kept)
    if not kept:
        record = rt.store.get_pitr(project_id)
        off = record is not None and not record.enabled
        return lambda name: off
    oldest = min(kept, key=lambda backup: backup.start_lsn)
    first_needed = segment_name(oldest.timeline, oldest.start_lsn)[8:]

    def before_it(name: str) -> bool:
        base = name[:24]
        return bool(SEGMENT_NAME.match(base)) and base[8:] < first_needed

    return before_it


def _sqlite_log_not_needed(
    record: PitrRecord, kept: list[BaseBackupRecord]
) -> Callable[[str], bool]:
    """SQLite: a segment is needed by a kept snapshot of its generation that starts before
    its end; the current generation's are all kept while it has no snapshot yet."""
    from pulumi_capy.engine.pitr.sqlite_replicate import parse_segment_name, sequence_of

    first: dict[int, int] = {}
    for snapshot in kept:
        start = sequence_of(snapshot.start_lsn)
        first[snapshot.timeline] = min(first.get(snapshot.timeline, start), start)
    current = record.generations[-1].number if record.enabled else None

    def not_needed(name: str) -> bool:
        parsed = parse_segment_name(name)
        if parsed is None:
            return False
        generation, _, end = parsed
        if generation not in first:
            return generation != current
        return end <= first[generation]

    return not_needed


def run_pitr_expire(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    """Remove expired base backups' blobs and the log older than every kept one needs."""
    project_id = job.project_id or ""
    removed_backups = 0
    for backup in rt.store.list_base_backups(project_id, state="expired"):
        if rt.blobs.exists(backup.blob_key):
            rt.blobs.delete(backup.blob_key)
            removed_backups += 1
    removed_segments = 0
    doomed = _log_not_needed(rt, project_id)
    for segment in rt.store.list_wal_segments(project_id):
        if doomed(segment.name):
            lease.check()
            rt.blobs.delete(segment.blob_key)
            rt.store.delete_wal_segment(project_id, segment.name)
            removed_segments += 1
    text = f"removed {removed_backups} expired base backup(s) and {removed_segments} WAL segment(s)"
    return JobDone({"project_id": project_id}, Outcome(summary=text, stdout=text))
