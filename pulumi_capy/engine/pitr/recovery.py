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
from pulumi_capy.engine.drivers import Outcome, driver_for
from pulumi_capy.engine.jobs import JobDone, Loaded, PermanentFailure, load_into_target
from pulumi_capy.engine.pitr import archive, server
from pulumi_capy.engine.pitr.control import NO_STREAMER, base_backup_for, streaming
from pulumi_capy.engine.pitr.instance import Instance, instance_space, unpack
from pulumi_capy.engine.pitr.lsn import (
    DEFAULT_SEGMENT_BYTES,
    SEGMENT_NAME,
    format_lsn,
    segment_name,
    segment_number,
)
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
    catalogue = rt.store.list_wal_segments(project_id)  # in name order: X before X.<piece>
    first = segment_name(backup.timeline, backup.start_lsn)
    timeline, first_number = segment_number(first)
    segments: dict[int, WalSegmentRecord] = {}
    for item in catalogue:
        base = item.name[:24]
        if not SEGMENT_NAME.match(base) or segment_number(base)[0] != timeline:
            continue
        # a segment, or the first piece of a partial one standing for all of them
        segments.setdefault(
            segment_number(base)[1],
            item.model_copy(update={"name": base, "size_bytes": DEFAULT_SEGMENT_BYTES}),
        )
    last_number = max((number for number in segments if number >= first_number), default=None)
    if last_number is None:
        raise PermanentFailure(
            f"the log archive of project {project_id} holds no segment from {first} on: "
            "nothing to replay"
        )
    planned: list[WalSegmentRecord] = []
    for number in range(first_number, last_number + 1):
        found = segments.get(number)
        if found is None:
            missing = segment_name(timeline, number * DEFAULT_SEGMENT_BYTES)
            raise PermanentFailure(
                f"the log archive of project {project_id} misses segment {missing} (a gap "
                f"between base backup {backup.id}, which starts in {first}, and the end of "
                "the archive): nothing after the gap can be restored from this base backup"
            )
        planned.append(found)
    _check_pieces(rt, project_id, planned[-1])
    planned += [item for item in catalogue if item.name.endswith(".history")]
    return planned


def _check_pieces(rt: Runtime, project_id: str, last: WalSegmentRecord) -> None:
    """The partial segment at the end of the log must hold what the window promises: a
    recovery that ran out of log before the target would look like one that reached it."""
    record = rt.store.get_pitr(project_id)
    if record is None or record.streamed_lsn is None or not last.partial:
        return
    if rt.store.get_wal_segment(project_id, last.name) is not None:
        return  # kept whole (pushed as .partial), not in pieces
    start = segment_number(last.name)[1] * DEFAULT_SEGMENT_BYTES
    end = start + sum(piece.size_bytes for piece in archive.pieces_of(rt, project_id, last.name))
    if start <= record.streamed_lsn and end < record.streamed_lsn:
        raise PermanentFailure(
            f"the log archive of project {project_id} misses part of segment {last.name} "
            f"(it holds {format_lsn(start)}..{format_lsn(end)}, the window promises "
            f"{format_lsn(record.streamed_lsn)}): a gap"
        )


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
    if project.database_kind == "sqlite":
        from pulumi_capy.engine.pitr.sqlite_recovery import run_sqlite_pitr_restore

        return run_sqlite_pitr_restore(rt, job, lease, project, moment)
    backup = base_backup_for(rt, project.id, moment)
    if backup is None:
        raise PermanentFailure(
            f"no base backup of project {project.id} ended at or before "
            f"{format_timestamp(moment)} any more (retention moved the window)"
        )
    planned = plan_segments(rt, project.id, backup)
    postgres = server.exact_binary("postgres", backup.server_major)

    target = format_timestamp(moment)
    with rt.scratch_space() as extract:
        dump_at = extract / "extract.dump"
        recovery = _Recovery(rt, job, lease, backup, planned, postgres, moment)
        to_end, dumped = recovery.extract(project.database_name or "", dump_at)
        # the instance and its files are gone by now (their dirty pages dropped unwritten,
        # not flushed while the target loads)
        rt.report_progress(job, f"loading the state at {target} into the target")

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


@dataclass
class _Recovery:
    """One recovery instance's life: unpack, replay to the moment, extract the database."""

    rt: Runtime
    job: JobRecord
    lease: Lease
    backup: BaseBackupRecord
    planned: list[WalSegmentRecord]
    postgres: str
    moment: datetime

    def progress(self, step: str) -> None:
        self.rt.report_progress(self.job, step)

    def extract(self, database: str, dump_at: Path) -> tuple[bool, Outcome]:
        """Whether it replayed to the log's end, and the database's dump at ``dump_at``."""
        rt, backup = self.rt, self.backup
        target = format_timestamp(self.moment)
        with instance_space(rt.scratch_dir) as root:
            _check_space(root, backup, self.planned)
            instance = Instance(root, self.postgres, backup.superuser, self.moment)
            self.progress(f"unpacking base backup {backup.id} ({backup.size_bytes // 2**20} MiB)")

            def consume(stream: IO[bytes]) -> None:
                unpack(stream, instance.data)

            rt.blobs.read(backup.blob_key, backup.sha256, consume)
            instance.wal.mkdir()
            fetcher = _Fetcher(rt, backup.project_id, self.planned, instance.wal)
            fetcher.announce()
            thread = threading.Thread(target=fetcher.run, name=f"fetch-{self.job.id}", daemon=True)
            thread.start()
            try:
                self.lease.check()
                to_end = instance.recover(
                    lambda done: self.progress(f"replaying to {target}: {done}"),
                    lambda: fetcher.error,
                )
                fetcher.stop.set()  # what it did not fetch yet is past the moment
                self.lease.check()
                self.progress(f"extracting database {database} as of {target}")
                url = instance.url(database)
                dumped = driver_for(url).dump(url, dump_at)
            finally:
                fetcher.stop.set()
                instance.stop()
                thread.join(timeout=30)
        return to_end, dumped
