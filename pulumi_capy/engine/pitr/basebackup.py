"""Base backups of a project's cluster: ``pg_basebackup`` as a tar stream, through the
compressor and the hasher into one blob. The log is not in it (``-X none``): the streamer
archives it, so it is never kept twice. A base backup starts the window once the log up
to its end is archived.

Without the log, ``pg_basebackup`` does not say where the backup's log starts and ends;
the server's insert position read right before it starts and right after it ends bound
both (its checkpoint comes after the first, its end record before the second), which is
all a recovery needs: from where to replay, and when it is consistent."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pulumi_capy.engine.drivers import Outcome
from pulumi_capy.engine.drivers.postgres.failures import command_failure
from pulumi_capy.engine.drivers.postgres.libpq import connect, env
from pulumi_capy.engine.jobs import JobDone, PermanentFailure
from pulumi_capy.engine.pitr import server
from pulumi_capy.engine.pitr.lsn import format_lsn, log_end, parse_lsn
from pulumi_capy.engine.pitr.processes import popen_tied
from pulumi_capy.engine.queue import Lease, new_id
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import BaseBackupRecord, JobRecord, Transaction

__all__ = ["base_backup_key", "run_base_backup"]

BASE_ZSTD_LEVEL = 1
POSITION = (
    "SELECT clock_timestamp(), pg_current_wal_insert_lsn()::text, "
    "pg_walfile_name(pg_current_wal_insert_lsn())"
)


def base_backup_key(project_id: str, backup_id: str) -> str:
    """[ours] ``projects/<project_id>/base/<id>.tar.zst``."""
    return f"projects/{project_id}/base/{backup_id}.tar.zst"


@dataclass(frozen=True)
class _Position:
    at: datetime  # the server's clock
    lsn: int  # its log's insert position
    timeline: int


def _position(url: str) -> _Position:
    with connect(url) as conn:
        row = conn.execute(POSITION).fetchone()
    assert row is not None
    return _Position(row[0], log_end(parse_lsn(str(row[1]))), int(str(row[2])[:8], 16))


def run_base_backup(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    project = rt.store.get_project(job.project_id or "")
    record = rt.store.get_pitr(job.project_id or "")
    if project is None or record is None or not record.enabled:
        raise PermanentFailure("point-in-time recovery is off for this project: no base backup")
    if project.database_kind == "sqlite":
        from pulumi_capy.engine.pitr.sqlite_recovery import run_snapshot

        return run_snapshot(rt, job, lease)
    url = project.database_url
    facts = server.probe(url)
    tool = server.exact_binary("pg_basebackup", facts.major)
    backup_id = new_id("base")
    key = base_backup_key(project.id, backup_id)
    command = [
        tool,
        "--pgdata=-",
        "--format=tar",
        "--wal-method=none",
        "--checkpoint=fast",
        "--no-manifest",
        "--no-password",
        "--verbose",
        f"--label=capy {backup_id}",
    ]
    before = _position(url)
    with tempfile.TemporaryFile() as errors:
        process = popen_tied(command, env=env(url), stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        try:
            staged = rt.blobs.stage(key, process.stdout, level=BASE_ZSTD_LEVEL)
        finally:
            process.stdout.close()
            returncode = process.wait()
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
    try:
        if returncode != 0:
            done = subprocess.CompletedProcess(command, returncode, "", stderr)
            raise command_failure(
                "pg_basebackup (a base backup for point-in-time recovery)", done, url
            )
        after = _position(url)
        lease.check()
    except BaseException:
        rt.blobs.discard(staged)  # nothing of it becomes a blob
        raise
    ended_at = after.at
    info = rt.blobs.commit(
        staged,
        {
            "format": "pg_basebackup.tar",
            "project_id": project.id,
            "base_backup_id": backup_id,
            "job_id": job.id,
            "start_lsn": format_lsn(before.lsn),
            "stop_lsn": format_lsn(after.lsn),
            "timeline": before.timeline,
            "server_major": facts.major,
        },
    )
    backup = BaseBackupRecord(
        id=backup_id,
        project_id=project.id,
        blob_key=key,
        sha256=info.sha256,
        size_bytes=info.source_bytes,
        blob_bytes=info.blob_bytes,
        timeline=before.timeline,
        start_lsn=before.lsn,
        stop_lsn=after.lsn,
        ended_at=ended_at,
        server_major=facts.major,
        superuser=facts.superuser,
        created_by_job_id=job.id,
        created_at=rt.now(),
    )

    def commit(tx: Transaction) -> dict[str, Any] | None:
        rt.store.insert_base_backup(tx, backup)
        return None

    summary = (
        f"base backup {backup_id} of PostgreSQL {facts.major}: log {format_lsn(backup.start_lsn)}"
        f"..{format_lsn(backup.stop_lsn)}, {info.source_bytes} bytes, blob {key}: "
        f"{info.blob_bytes} bytes, sha256 {info.sha256[:16]}"
    )
    result = {"base_backup_id": backup_id, "blob_key": key}
    return JobDone(result, Outcome(summary=summary, stdout=summary, stderr=stderr), commit)
