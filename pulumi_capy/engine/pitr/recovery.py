"""A restore to a moment (``restore_time``): as CapyDB does it, a recovery instance from
the newest base backup that ended before the moment, the log replayed to it, and the one
project database extracted and loaded into the target exactly as a backup restore loads
a backup (new preview by default, a safety backup before a project overwrite, a swap).

Every check that can fail without touching anything comes first: the base backup, every
log segment from its start to the end of the archive (a missing one is a gap, named),
the disk space under the instance. The target is only touched by the final load.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO

from pulumi_capy.api.errors import CapyError
from pulumi_capy.api.models import format_timestamp
from pulumi_capy.engine.drivers import driver_for
from pulumi_capy.engine.jobs import JobDone, Loaded, PermanentFailure, load_into_target
from pulumi_capy.engine.pitr import archive, server
from pulumi_capy.engine.pitr.control import NO_STREAMER, base_backup_for, streaming
from pulumi_capy.engine.pitr.instance import Instance, instance_space, unpack
from pulumi_capy.engine.pitr.lsn import SEGMENT_NAME, segment_name, segment_number
from pulumi_capy.engine.queue import Deferred, Lease
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import (
    BaseBackupRecord,
    JobRecord,
    PreviewSource,
    WalSegmentRecord,
)

__all__ = ["plan_segments", "run_pitr_restore"]

SPACE_MARGIN = 64 * 1024 * 1024  # bytes kept free beyond what the instance needs
LOG_WAIT = 0.25  # seconds before a restore to a moment the log does not reach yet looks again


def plan_segments(rt: Runtime, project_id: str, backup: BaseBackupRecord) -> list[WalSegmentRecord]:
    """The archived log a recovery from ``backup`` replays: every segment from the one
    its log starts in to the newest one, with no gap, and the timeline history files.
    ``PermanentFailure`` naming the first missing segment otherwise."""
    catalogue = rt.store.list_wal_segments(project_id)
    first = segment_name(backup.timeline, backup.start_lsn)
    timeline, first_number = segment_number(first)
    segments = {
        segment_number(item.name)[1]: item
        for item in catalogue
        if SEGMENT_NAME.match(item.name) and segment_number(item.name)[0] == timeline
    }
    last_number = max((number for number in segments if number >= first_number), default=None)
    if last_number is None:
        raise PermanentFailure(
            f"the log archive of project {project_id} holds no segment from {first} on: "
            "nothing to replay"
        )
    planned: list[WalSegmentRecord] = []
    for number in range(first_number, last_number + 1):
        item = segments.get(number)
        if item is None:
            missing = segment_name(timeline, number * 16 * 1024 * 1024)
            raise PermanentFailure(
                f"the log archive of project {project_id} misses segment {missing} (a gap "
                f"between base backup {backup.id}, which starts in {first}, and the end of "
                "the archive): nothing after the gap can be restored from this base backup"
            )
        planned.append(item)
    planned += [item for item in catalogue if item.name.endswith(".history")]
    return planned


@dataclass
class _Fetcher:
    """Writes the planned log files into the instance's ``wal`` directory, in order."""

    rt: Runtime
    project_id: str
    planned: list[WalSegmentRecord]
    directory: Path
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def announce(self) -> None:
        for item in self.planned:
            (self.directory / f"{item.name}.planned").touch()

    def run(self) -> None:
        try:
            for item in self.planned:
                if self.stop.is_set():
                    return
                scratch = self.directory / f".{item.name}.tmp"
                archive.fetch(self.rt, self.project_id, item.name, scratch)
                scratch.chmod(0o644)
                scratch.rename(self.directory / item.name)
        except (CapyError, OSError) as exc:
            self.error = f"reading the log archive failed: {exc}"
            (self.directory / ".failed").touch()


def _check_space(where: Path, backup: BaseBackupRecord, planned: list[WalSegmentRecord]) -> None:
    needed = backup.size_bytes + sum(item.size_bytes for item in planned) + SPACE_MARGIN
    free = shutil.disk_usage(where).free
    if free < needed:
        raise PermanentFailure(
            f"not enough disk space for the recovery instance under {where}: it needs "
            f"{needed // 2**20} MiB (base backup {backup.size_bytes // 2**20} MiB and "
            f"{len(planned)} log segment(s)), {free // 2**20} MiB are free"
        )


def _wait_for_log(rt: Runtime, project_id: str, moment: datetime) -> None:
    """A moment the archive does not cover yet (``now``, a second ago): wait while a
    worker streams; fail when nobody does."""
    record = rt.store.get_pitr(project_id)
    if record is None or not record.enabled:
        raise PermanentFailure(f"point-in-time recovery was turned off for project {project_id}")
    if record.covered_at is not None and record.covered_at >= moment:
        return
    if not streaming(record, rt.now()):
        raise PermanentFailure(
            f"the archived log does not reach {format_timestamp(moment)} and {NO_STREAMER}"
        )
    raise Deferred(f"the archived log does not reach {format_timestamp(moment)} yet", LOG_WAIT)


def run_pitr_restore(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    project = rt.store.get_project(job.project_id or "")
    if project is None:
        raise PermanentFailure(f"project {job.project_id} no longer exists")
    moment = datetime.fromisoformat(str(job.payload["restore_time"]))
    _wait_for_log(rt, project.id, moment)
    backup = base_backup_for(rt, project.id, moment)
    if backup is None:
        raise PermanentFailure(
            f"no base backup of project {project.id} ended at or before "
            f"{format_timestamp(moment)} any more (retention moved the window)"
        )
    planned = plan_segments(rt, project.id, backup)
    postgres = server.exact_binary("postgres", backup.server_major)
    driver = driver_for(project.database_url)

    def progress(step: str) -> None:
        rt.report_progress(job, step)

    with instance_space(rt.scratch_dir) as root:
        _check_space(root, backup, planned)
        instance = Instance(root, postgres, backup.superuser, moment)
        progress(f"unpacking base backup {backup.id} ({backup.size_bytes // 2**20} MiB)")

        def consume(stream: IO[bytes]) -> None:
            unpack(stream, instance.data)

        rt.blobs.read(backup.blob_key, backup.sha256, consume)
        instance.wal.mkdir()
        fetcher = _Fetcher(rt, project.id, planned, instance.wal)
        fetcher.announce()
        thread = threading.Thread(target=fetcher.run, name=f"fetch-{job.id}", daemon=True)
        thread.start()
        target = format_timestamp(moment)
        try:
            lease.check()
            to_end = instance.recover(
                lambda done: progress(f"replaying to {target}: {done} of {len(planned)}"),
                lambda: fetcher.error,
            )
            lease.check()
            progress(f"extracting database {project.database_name} as of {target}")
            dump_at = root / "extract.dump"
            dumped = driver.dump(instance.url(project.database_name or ""), dump_at)
        finally:
            fetcher.stop.set()
            instance.stop()
            thread.join(timeout=30)
        progress(f"loading the state at {target} into the target")

        def materialize(path: Path) -> None:
            shutil.move(dump_at, path)

        loaded = Loaded(
            materialize,
            dumped.details,
            None,
            PreviewSource(
                kind=job.payload.get("source_kind") or "restore_time",
                database=project.database_name,
                backup_key=None,
                restore_time=moment,
            ),
            f"the state at {target} (base backup {backup.id}, log replayed "
            f"{'to its end, no commit after the target' if to_end else 'to the target'})",
        )
        return load_into_target(
            rt,
            job,
            lease,
            project,
            loaded,
            result={"restore_time": target, "base_backup_id": backup.id},
        )
