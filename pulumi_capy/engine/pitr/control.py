"""Turning a project's point-in-time recovery on and off, its status, and its window.

The window is [the end of the oldest usable base backup, the newest moment the archived
log covers]. A base backup is usable once the log up to its end is archived and nothing
is missing between it and the present (it starts at or after ``floor_lsn``, which a gap
in the log moves up).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pulumi_capy.api.errors import FieldError, InvalidInput
from pulumi_capy.api.models import (
    JobType,
    PitrGenerationStatus,
    PitrMethod,
    PitrStatus,
    PitrStreamer,
    PutPitr,
    format_timestamp,
)
from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import (
    BaseBackupRecord,
    PitrRecord,
    ProjectRecord,
    Transaction,
)

__all__ = [
    "NO_STREAMER",
    "Window",
    "base_backup_for",
    "check_time",
    "disable",
    "enable",
    "enqueue_base_backup",
    "status",
    "streaming",
    "window",
    "window_of",
]


CATCH_UP_SECONDS = 5.0  # how far past the window's end a moment may be while the log streams
NO_STREAMER = (
    "nothing streams this project's log yet: no worker holds its lease. A running "
    "`capy worker` (or `capy serve --workers N`) takes it up within seconds; without one "
    "the window does not move"
)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime

    def describe(self) -> str:
        return f"[{format_timestamp(self.start)}, {format_timestamp(self.end)}]"


def usable_base_backups(rt: Runtime, record: PitrRecord) -> list[BaseBackupRecord]:
    """The base backups a recovery can start from now, oldest first."""
    streamed = record.streamed_lsn or 0
    return [
        backup
        for backup in rt.store.list_base_backups(record.project_id)
        if backup.start_lsn >= record.floor_lsn and backup.stop_lsn <= streamed
    ]


def window(rt: Runtime, project_id: str) -> Window | None:
    record = rt.store.get_pitr(project_id)
    return window_of(rt, record) if record is not None else None


def window_of(rt: Runtime, record: PitrRecord) -> Window | None:
    """The window of the project whose PITR row is ``record`` (None: off or not open)."""
    if record.generations:  # SQLite: the parts its generations restore to
        from pulumi_capy.engine.pitr.sqlite_recovery import parts_of

        parts = parts_of(rt, record) if record.enabled else []
        return Window(parts[0].start, parts[-1].end) if parts else None
    if not record.enabled or record.covered_at is None:
        return None
    usable = usable_base_backups(rt, record)
    if not usable or usable[0].ended_at > record.covered_at:
        return None
    return Window(usable[0].ended_at, record.covered_at)


def base_backup_for(rt: Runtime, project_id: str, moment: datetime) -> BaseBackupRecord | None:
    """The newest usable base backup that ended at or before ``moment``."""
    record = rt.store.get_pitr(project_id)
    if record is None:
        return None
    candidates = [b for b in usable_base_backups(rt, record) if b.ended_at <= moment]
    return candidates[-1] if candidates else None


def _server_facts(url: str) -> None:
    """The server can be streamed from, or ``InvalidInput`` on ``database_url`` (also when
    it cannot be reached: the URL is what to look at)."""
    from pulumi_capy.engine.pitr import server  # psycopg: PostgreSQL projects only

    try:
        server.check_streamable(url)
    except DriverFailure as exc:
        raise InvalidInput([FieldError("database_url", str(exc))]) from None


def check_time(rt: Runtime, project: ProjectRecord, moment: datetime, field: str) -> Window:
    """``InvalidInput`` naming the window (or how to turn PITR on) unless ``moment`` is in it."""
    record = rt.store.get_pitr(project.id)
    if record is None or not record.enabled:
        raise InvalidInput(
            [
                FieldError(
                    field,
                    f"point-in-time recovery is off for project {project.name} ({project.id}); "
                    f"turn it on with `capy pitr enable --project {project.id}` (or "
                    "Project(pitr=True)), then restore to a time inside its window",
                )
            ]
        )
    current = window_of(rt, record)
    if current is None:
        raise InvalidInput(
            [
                FieldError(
                    field,
                    f"the PITR window of project {project.id} is not open yet (its first base "
                    "backup and the log after it are not archived); see `capy pitr status "
                    f"--project {project.id}`",
                )
            ]
        )
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    # a moment just past the window's end ("now") while the log streams: restorable in
    # a moment; the restore waits until the archive covers it
    soon = (
        streaming(record, rt.now())
        and moment <= rt.now()
        and moment - current.end <= timedelta(seconds=CATCH_UP_SECONDS)
    )
    if not current.start <= moment <= current.end and not (moment >= current.start and soon):
        raise InvalidInput(
            [
                FieldError(
                    field,
                    f"{format_timestamp(moment)} is outside the PITR window of project "
                    f"{project.id}, {current.describe()}",
                )
            ]
        )
    if record.generations:
        from pulumi_capy.engine.pitr.sqlite_recovery import hole_message, parts_of

        hole = hole_message(parts_of(rt, record), moment)
        if hole is not None:
            raise InvalidInput([FieldError(field, f"{hole} (project {project.id})")])
    return current


def streaming(record: PitrRecord, now: datetime) -> bool:
    """Whether a worker holds the lease on streaming the project's log."""
    return (
        record.streamer_id is not None
        and record.lease_expires_at is not None
        and record.lease_expires_at >= now
    )


def status(rt: Runtime, project: ProjectRecord) -> PitrStatus:
    record = rt.store.get_pitr(project.id)
    if record is None or not record.enabled:
        return PitrStatus(enabled=False, method=record.method if record else None)
    now = rt.now()
    current = window_of(rt, record)
    notices = list(record.notices)
    streamer = None
    if streaming(record, now) and record.streamer_id is not None:
        streamer = PitrStreamer(worker_id=record.streamer_id, heartbeat_at=record.heartbeat_at)
    elif record.method == PitrMethod.stream:
        notices.append(NO_STREAMER)
    if current is None:
        notices.append("the window is not open yet: its first base backup and the log after it")
    lag = (now - record.covered_at).total_seconds() if record.covered_at else None
    return PitrStatus(
        enabled=True,
        method=record.method,
        window_start=current.start if current else None,
        window_end=current.end if current else None,
        lag_seconds=None if lag is None else round(max(lag, 0.0), 3),
        streamer=streamer,
        notices=notices,
        generations=_generations(rt, record),
    )


def _generations(rt: Runtime, record: PitrRecord) -> list[PitrGenerationStatus]:
    """[SQLite] each generation of the shipped log, and what of it restores."""
    if not record.generations:
        return []
    from pulumi_capy.engine.pitr.sqlite_recovery import parts_of

    parts = {part.generation: part for part in parts_of(rt, record)}
    shown: list[PitrGenerationStatus] = []
    for generation in record.generations:
        part = parts.get(generation.number)
        shown.append(
            PitrGenerationStatus(
                number=generation.number,
                started_at=generation.started_at,
                reason=generation.reason,
                current=generation.ended_at is None,
                restorable_from=part.start if part else None,
                restorable_to=part.end if part else None,
            )
        )
    return shown


def enqueue_base_backup(rt: Runtime, project_id: str, tx: Transaction | None = None) -> str:
    """Queue a base backup of the project's cluster (in ``tx``, or a transaction of its
    own); the job's id."""
    if tx is None:
        with rt.store.transaction() as own:
            return enqueue_base_backup(rt, project_id, own)
    return rt.enqueue(
        tx,
        JobType.pitr_base_backup,
        project_id=project_id,
        payload={},
        locked_resource=f"pitr:{project_id}",
    )


def enable(rt: Runtime, project: ProjectRecord, request: PutPitr) -> str | None:
    """Turn PITR on (idempotent): check the server, create the slot, queue the first base
    backup; the job's id, or None when PITR was on already."""
    project_id = project.id
    if project.database_kind == "sqlite":
        return _enable_sqlite(rt, project, request)
    if project.database_kind != "postgresql":
        raise InvalidInput(
            [
                FieldError(
                    "enabled",
                    f"point-in-time recovery of {project.database_kind} projects is not "
                    "available; it is for PostgreSQL and SQLite projects",
                )
            ]
        )
    record = rt.store.get_pitr(project_id)
    if record is not None and record.enabled:
        if record.method != request.method:
            raise InvalidInput(
                [
                    FieldError(
                        "method",
                        f"PITR is on with method {record.method}; turn it off first to change",
                    )
                ]
            )
        return _no_base_backup_yet(rt, record)
    _server_facts(project.database_url)
    from pulumi_capy.engine.pitr import server

    slot = server.slot_name(project_id) if request.method is PitrMethod.stream else None
    floor = server.create_slot(project.database_url, slot) if slot else 0
    now = rt.now()
    notices = list(record.notices) if record else []
    rt.store.put_pitr(
        PitrRecord(
            project_id=project_id,
            enabled=True,
            method=request.method.value,
            slot_name=slot,
            # the log before the slot is not ours to have: older base backups cannot reach on
            floor_lsn=max(floor, (record.streamed_lsn or 0) if record else 0),
            streamed_lsn=None,
            covered_at=None,
            notices=notices,
            enabled_at=now,
            updated_at=now,
        )
    )
    return enqueue_base_backup(rt, project_id)


def _enable_sqlite(rt: Runtime, project: ProjectRecord, request: PutPitr) -> str | None:
    """SQLite: check the database is in WAL mode (or switch it); the replicator of a
    worker starts the first generation and queues its snapshot. No job here."""
    from pulumi_capy.engine.drivers.sqlite import sqlite_path
    from pulumi_capy.engine.pitr.sqlite_recovery import mode_of, set_wal

    if request.method is not PitrMethod.stream:
        raise InvalidInput(
            [
                FieldError(
                    "method",
                    "a SQLite project's log is shipped by a worker's replicator (method "
                    "stream); method archive is for PostgreSQL's archive_command",
                )
            ]
        )
    record = rt.store.get_pitr(project.id)
    if record is not None and record.enabled:
        return None
    path = sqlite_path(project.database_url)
    if not path.is_file():
        raise InvalidInput([FieldError("database_url", f"no SQLite file at {path}")])
    mode = mode_of(path)
    if mode != "wal":
        if not request.set_wal:
            raise InvalidInput(
                [
                    FieldError(
                        "database_url",
                        f"{path} is in journal_mode={mode}; point-in-time recovery ships its "
                        "write-ahead log, so it must be in WAL mode: run PRAGMA "
                        "journal_mode=WAL on it (no other connection open), or turn PITR on "
                        "with `capy pitr enable --set-wal` (API: set_wal) to let the engine "
                        "switch it",
                    )
                ]
            )
        set_wal(path)
    now = rt.now()
    rt.store.put_pitr(
        PitrRecord(
            project_id=project.id,
            enabled=True,
            method=PitrMethod.stream.value,
            notices=list(record.notices) if record else [],
            generations=list(record.generations) if record else [],
            enabled_at=now,
            updated_at=now,
        )
    )
    return None


def _no_base_backup_yet(rt: Runtime, record: PitrRecord) -> str | None:
    """PITR is on, but its first base backup failed and none is queued: queue one (turning
    it on again is how a user retries); its job id, else None."""
    if rt.store.list_base_backups(record.project_id):
        return None
    if any(job.type == JobType.pitr_base_backup for job in rt.store.busy_jobs(record.project_id)):
        return None
    return enqueue_base_backup(rt, record.project_id)


def disable(rt: Runtime, project: ProjectRecord) -> None:
    """Stop streaming and drop the slot; what is archived stays until retention."""
    project_id = project.id
    record = rt.store.get_pitr(project_id)
    if record is None or not record.enabled:
        return
    changes: dict[str, object] = {
        "enabled": False,
        "streamer_id": None,
        "lease_expires_at": None,
        "updated_at": rt.now(),
    }
    if record.generations and record.generations[-1].ended_at is None:  # SQLite: it ends
        ended = record.generations[-1].model_copy(
            update={
                "ended_at": record.covered_at or record.generations[-1].started_at,
                "end_position": record.streamed_lsn,
            }
        )
        changes["generations"] = [*record.generations[:-1], ended]
    rt.store.update_pitr(project_id, changes)
    if record.slot_name:
        from pulumi_capy.engine.pitr import server

        server.drop_slot_when_free(project.database_url, record.slot_name)
