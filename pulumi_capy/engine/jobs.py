"""What each job type does. One handler per type, run by the worker.

A handler does its slow work (dump, compress, restore) while holding the
job's lease and returns a ``JobDone``; its ``commit`` runs in the same
transaction that marks the job completed, fenced by the lease, so a worker
that lost its job records nothing. ``on_failed`` runs when the job fails for
good (e.g. the preview it was making becomes ``failed``).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from pulumi_capy._version import __version__
from pulumi_capy.api.errors import EngineFailure
from pulumi_capy.api.models import JobType
from pulumi_capy.engine.blobs import BlobParts, StagedBlob
from pulumi_capy.engine.drivers import Driver, Outcome, StreamsDump, driver_for
from pulumi_capy.engine.drivers.sqlite import SQLITE_VERSION
from pulumi_capy.engine.queue import Deferred, Lease, new_id
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import (
    BackupRecord,
    JobRecord,
    PreviewSource,
    ProjectRecord,
    Transaction,
)
from pulumi_capy.engine.tarstream import TarReader

__all__ = [
    "HANDLERS",
    "Handler",
    "JobDone",
    "Loaded",
    "PermanentFailure",
    "backup_key",
    "load_into_target",
    "safety_label",
]

VERIFY_RETRY_DELAY = 1.0


class PermanentFailure(EngineFailure):
    """The job cannot succeed however often it is tried."""


Commit = Callable[[Transaction], dict[str, Any] | None]


@dataclass
class JobDone:
    result: dict[str, Any]
    outcome: Outcome
    commit: Commit | None = None


@dataclass(frozen=True)
class Handler:
    run: Callable[[Runtime, JobRecord, Lease], JobDone]
    on_failed: Callable[[Runtime, Transaction, JobRecord, str], None] = field(
        default=lambda rt, tx, job, error: None
    )


def backup_key(project_id: str, backup_id: str, driver: Driver) -> str:
    """[ours] ``projects/<project_id>/backups/<backup_id>.<ext>.zst``."""
    return f"projects/{project_id}/backups/{backup_id}.{driver.extension}.zst"


def safety_label(job_id: str) -> str:
    return f"pre-restore-{job_id}"


def _project(rt: Runtime, job: JobRecord) -> ProjectRecord:
    project = rt.store.get_project(job.project_id or "")
    if project is None:
        raise PermanentFailure(f"project {job.project_id} no longer exists")
    return project


def _backup(rt: Runtime, backup_id: str) -> BackupRecord:
    backup = rt.store.get_backup(backup_id)
    if backup is None:
        raise PermanentFailure(f"backup {backup_id} no longer exists")
    if backup.state == "expired":
        raise PermanentFailure(f"backup {backup.backup_key} expired; its blob is gone")
    if not backup.sha256:
        raise PermanentFailure(f"backup {backup.backup_key} has no checksum recorded")
    return backup


def _remove_scratch(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _materialize(
    rt: Runtime,
    driver: Driver,
    backup: BackupRecord,
    path: Path,
    *,
    durable: bool,
    job: JobRecord,
    step: str,
) -> None:
    """The backup's dump at ``path``, checked against the blob's checksum (until then it
    is scratch): a file, or what the driver unpacks the blob's stream into. The job's
    progress is ``step``: bytes decompressed of the dump's size the manifest recorded."""
    meter = rt.meter(job, step, backup.size_bytes)
    if isinstance(driver, StreamsDump):
        rt.blobs.read(
            backup.backup_key,
            backup.sha256 or "",
            lambda stream: driver.unpack(stream, path),
            counted=meter.add,
        )
    else:
        rt.blobs.get_file(
            backup.backup_key, backup.sha256 or "", path, durable=durable, counted=meter.add
        )
    meter.finish()


def _size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size


# ---------------------------------------------------------------- backups


def snapshot(
    rt: Runtime,
    project: ProjectRecord,
    backup_id: str,
    label: str | None,
    job: JobRecord,
    *,
    steps: str = "",
) -> tuple[dict[str, Any], Outcome]:
    """Dump the project, compress and hash it into a blob; return the backup row. The
    job's progress names each step (after ``steps``, e.g. ``"safety backup: "``)."""
    driver = driver_for(project.database_url)
    key = backup_key(project.id, backup_id, driver)
    source_size = driver.source_size(project.database_url)

    def manifest(dumped: Outcome, now: datetime) -> dict[str, Any]:
        return {
            "format": driver.format,
            "source": {"kind": driver.kind, "database_name": project.database_name},
            "project_id": project.id,
            "backup_id": backup_id,
            "job_id": job.id,
            "created_at": now.isoformat(),
            "versions": {
                "pulumi_capy": __version__,
                "python": sys.version.split()[0],
                "sqlite": SQLITE_VERSION,
            },
            "details": dumped.details,
        }

    if isinstance(driver, StreamsDump):  # the dump goes into the blob as it comes
        staged: list[StagedBlob] = []
        # the dump's bytes as they come, against the database's size on the server (a dump
        # holds no indexes, so it may end short of that total)
        meter = rt.meter(job, f"{steps}dumping and compressing", source_size)

        def consume(stream: IO[bytes]) -> None:
            frames = stream.frames if isinstance(stream, TarReader) else ()
            staged.append(
                rt.blobs.stage(
                    key, stream, level=driver.zstd_level, frames=frames, counted=meter.add
                )
            )

        try:
            with rt.scratch_space() as where:
                dumped = driver.dump_streamed(project.database_url, consume, where)
            meter.finish()
            rt.hook("backup.after_dump", job)
            now = rt.now()
            info = rt.blobs.commit(staged[0], manifest(dumped, now))
        except BaseException:
            for blob in staged:
                rt.blobs.discard(blob)
            raise
    else:
        with rt.scratch_space() as where:
            scratch = where / f"{job.id}-{backup_id}.dump"
            # the copy is made in one step (a consistent one while writers run): its bytes
            # are known when it is done
            meter = rt.meter(job, f"{steps}dumping", source_size)
            dumped = driver.dump(project.database_url, scratch)
            copied = _size_on_disk(scratch)
            meter.set(copied)
            meter.finish()
            rt.hook("backup.after_dump", job)
            now = rt.now()
            meter = rt.meter(job, f"{steps}compressing", copied)
            info = rt.blobs.put_file(
                key,
                scratch,
                manifest=manifest(dumped, now),
                level=driver.zstd_level,
                counted=meter.add,
            )
            meter.finish()

    row = {
        "id": backup_id,
        "project_id": project.id,
        "backup_key": key,
        "label": label,
        "database_name": project.database_name,
        "size_bytes": info.source_bytes,
        "blob_bytes": info.blob_bytes,
        "sha256": info.sha256,
        "format": driver.format,
        "state": "completed",
        "verification_state": "pending",
        "created_by_job_id": job.id,
        "created_at": now,
    }
    summary = (
        f"{dumped.summary}; blob {key}: {info.blob_bytes} bytes "
        f"({info.blob_bytes / max(info.source_bytes, 1):.0%}), sha256 {info.sha256[:16]}"
    )
    outcome = Outcome(
        summary=summary,
        exit_code=dumped.exit_code,
        stdout=f"{dumped.stdout}\n{summary}".strip()
        if dumped.stdout != dumped.summary
        else summary,
        stderr=dumped.stderr,  # pg_dump's warnings, kept for whoever reads the job
        details=dumped.details,
    )
    return row, outcome


def record_backup(rt: Runtime, tx: Transaction, row: dict[str, Any]) -> str:
    """Record the backup and queue its verification; return the verify job id."""
    rt.store.record_backup(tx, BackupRecord.model_validate(row))
    return rt.enqueue(
        tx,
        JobType.backup_verify,
        project_id=str(row["project_id"]),
        payload={"backup_id": row["id"]},
        locked_resource=f"backup:{row['id']}",
    )


def run_backup(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    project = _project(rt, job)
    backup_id = str(job.payload["backup_id"])
    row, outcome = snapshot(rt, project, backup_id, job.payload.get("label"), job)
    lease.check()

    def commit(tx: Transaction) -> dict[str, Any]:
        return {"verify_job_id": record_backup(rt, tx, row)}

    return JobDone({"backup_id": backup_id, "backup_key": row["backup_key"]}, outcome, commit)


def run_verify(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    backup = _backup(rt, str(job.payload["backup_id"]))
    project = _project(rt, job)
    driver = driver_for(project.database_url)
    scratch = rt.scratch_dir / f"{job.id}.verify"
    _remove_scratch(scratch)  # what a killed attempt left (named after the job, as below)
    try:
        _materialize(
            rt, driver, backup, scratch, durable=False, job=job, step="verifying: decompressing"
        )
        details = rt.blobs.read_manifest(backup.backup_key).get("details") or {}
        rt.report_progress(job, "verifying: checking the throwaway copy")
        checked = driver.check(scratch, project.database_url, details)
    finally:
        _remove_scratch(scratch)
    lease.check()
    now = rt.now()

    def commit(tx: Transaction) -> None:
        rt.store.mark_backup_verified(tx, backup.id, now)

    summary = f"backup {backup.backup_key}: restored into a throwaway copy; {checked.summary}"
    return JobDone(
        {"backup_id": backup.id, "backup_key": backup.backup_key},
        Outcome(summary=summary, stdout=summary),
        commit,
    )


def verify_failed(rt: Runtime, tx: Transaction, job: JobRecord, error: str) -> None:
    rt.store.mark_backup_verification_failed(tx, str(job.payload["backup_id"]), error)


# ---------------------------------------------------------------- restores


def _target_url(rt: Runtime, job: JobRecord, project: ProjectRecord, driver: Driver) -> str:
    target_kind = job.payload["request"]["target_kind"]
    if target_kind == "project":
        return project.database_url
    preview_id = job.preview_database_id or ""
    return driver.preview_url(project.database_url, preview_id, rt.previews_dir / project.id)


def _check_verification(rt: Runtime, backup: BackupRecord, *, allow_unverified: bool) -> None:
    if backup.verification_state == "verified" or allow_unverified:
        return
    if backup.verification_state == "pending" and rt.store.verification_outstanding(backup.id):
        raise Deferred(f"backup {backup.backup_key} is being verified", VERIFY_RETRY_DELAY)
    detail = f": {backup.verification_error}" if backup.verification_error else ""
    raise PermanentFailure(
        f"backup {backup.backup_key} is not verified (verification_state "
        f"{backup.verification_state}{detail}); set allow_unverified_backup to restore it anyway"
    )


def run_restore(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    project = _project(rt, job)
    request = job.payload["request"]
    backup = _backup(rt, str(job.payload["backup_id"]))
    _check_verification(rt, backup, allow_unverified=bool(request.get("allow_unverified_backup")))
    driver = driver_for(project.database_url)

    def materialize(path: Path) -> None:
        _materialize(
            rt,
            driver,
            backup,
            path,
            durable=driver.dump_becomes_database,
            job=job,
            step="loading: decompressing the backup",
        )
        rt.report_progress(job, "loading into the target")

    parts = (
        rt.blobs.parts(backup.backup_key, backup.sha256 or "")
        if isinstance(driver, StreamsDump)
        else None
    )
    # what the dump recorded of its source (PostgreSQL: the database's encoding, owner, …)
    details = (
        parts.details
        if parts is not None
        else rt.blobs.read_manifest(backup.backup_key).get("details") or {}
    )
    loaded = Loaded(
        materialize,
        details,
        parts,
        PreviewSource(
            kind=job.payload.get("source_kind"),
            database=project.database_name,
            backup_key=backup.backup_key,
        ),
        f"backup {backup.backup_key}",
    )
    # bytes follow when the dump is materialized (not when the driver reads the blob by ranges)
    rt.report_progress(job, "loading")
    return load_into_target(
        rt, job, lease, project, loaded, result={"backup_key": backup.backup_key}
    )


@dataclass(frozen=True)
class Loaded:
    """What a restore loads into its target: a dump to materialize, what it recorded of
    its source, its blob's parts (when read by ranges) and where it came from."""

    materialize: Callable[[Path], None]
    details: dict[str, Any]
    parts: BlobParts | None
    source: PreviewSource
    described: str  # "backup <key>", "the state at <time>"


def load_into_target(
    rt: Runtime,
    job: JobRecord,
    lease: Lease,
    project: ProjectRecord,
    loaded: Loaded,
    *,
    result: dict[str, Any],
) -> JobDone:
    """Load a dump into the restore job's target, as every restore does: a new preview
    (made here), an existing preview, or the project after a safety backup; swapped in
    whole, so that a failure leaves the target as it was."""
    request = job.payload["request"]
    driver = driver_for(project.database_url)
    target_kind = request["target_kind"]
    target_url = _target_url(rt, job, project, driver)
    result = {**result, "target_kind": target_kind}
    safety: dict[str, Any] = {}

    if target_kind == "new_preview":
        # an earlier attempt may have created it before losing its lease: it is ours
        driver.drop(target_url)
        result["preview_database_id"] = job.preview_database_id
    elif target_kind == "preview":
        result["preview_database_id"] = job.preview_database_id

    def before_commit() -> None:
        if target_kind == "project":
            safety.update(_safety_backup(rt, project, job))
        lease.check()
        rt.hook("restore.before_commit", job)
        lease.check()
        if target_kind == "project":
            rt.report_progress(job, "swapping in the restored database")

    with rt.scratch_space() as where:
        restore = driver.restore_new if target_kind == "new_preview" else driver.restore_over
        outcome = restore(
            loaded.materialize,
            target_url,
            before_commit=before_commit,
            workdir=where,
            parts=loaded.parts,
            details=loaded.details,
        )
    now = rt.now()
    if safety:
        result["safety_backup_key"] = safety["row"]["backup_key"]
        result["safety_backup_id"] = safety["row"]["id"]

    def commit(tx: Transaction) -> None:
        if target_kind in ("new_preview", "preview"):
            rt.store.mark_preview_ready(
                tx,
                job.preview_database_id or "",
                driver.connection_fields(target_url),
                now,
                loaded.source,
            )

    text = f"{outcome.summary} from {loaded.described}"
    if safety:
        text = f"safety backup {safety['row']['backup_key']}; {text}"
    return JobDone(
        result,
        Outcome(summary=text, exit_code=outcome.exit_code, stdout=text, stderr=outcome.stderr),
        commit,
    )


def _safety_backup(rt: Runtime, project: ProjectRecord, job: JobRecord) -> dict[str, Any]:
    """Back up the project right before it is overwritten.

    Every attempt takes its own: an earlier attempt's backup misses whatever was
    written since, and reusing it would lose those writes.
    """
    row, _ = snapshot(
        rt, project, new_id("bkp"), safety_label(job.id), job, steps="safety backup: "
    )
    with rt.store.transaction() as tx:  # kept even if the restore then fails
        record_backup(rt, tx, row)
    return {"row": row}


def new_preview_failed(rt: Runtime, tx: Transaction, job: JobRecord, error: str) -> None:
    """A job that was making a new preview failed for good: the preview is ``failed``."""
    if job.payload.get("request", {}).get("target_kind") == "new_preview":
        rt.store.mark_preview_failed(tx, job.preview_database_id or "", error, rt.now())


# ---------------------------------------------------------------- previews


def run_preview_create(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    project = _project(rt, job)
    driver = driver_for(project.database_url)
    target_url = _target_url(rt, job, project, driver)
    mode = job.payload["mode"]
    driver.drop(target_url)  # an earlier attempt's leftovers are ours

    with rt.scratch_space() as where:
        # dumped first: the restore needs what the dump recorded of its source
        dumped_at = where / f"{job.id}.dump"
        if mode == "empty":
            dumped = driver.empty_dump(project.database_url, dumped_at)
        else:
            dumped = driver.dump(project.database_url, dumped_at)

        def materialize(path: Path) -> None:
            shutil.move(dumped_at, path)

        outcome = driver.restore_new(
            materialize,
            target_url,
            before_commit=lease.check,
            workdir=where,
            details=dumped.details,
        )
    now = rt.now()

    def commit(tx: Transaction) -> None:
        rt.store.mark_preview_ready(
            tx, job.preview_database_id or "", driver.connection_fields(target_url), now
        )

    return JobDone({"preview_database_id": job.preview_database_id}, outcome, commit)


def run_preview_delete(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    project = _project(rt, job)
    driver = driver_for(project.database_url)
    target_url = _target_url(rt, job, project, driver)
    driver.drop(target_url)
    lease.check()
    now = rt.now()

    def commit(tx: Transaction) -> None:
        rt.store.mark_preview_deleted(tx, job.preview_database_id or "", now)

    text = f"dropped preview {job.preview_database_id} ({driver.database_name(target_url)})"
    return JobDone(
        {"preview_database_id": job.preview_database_id}, Outcome(summary=text, stdout=text), commit
    )


# ---------------------------------------------------------------- expiry


def run_backup_expire(rt: Runtime, job: JobRecord, lease: Lease) -> JobDone:
    backup = rt.store.get_backup(str(job.payload["backup_id"]))
    if backup is None:
        text = f"backup {job.payload['backup_id']} is gone already"
        return JobDone({}, Outcome(summary=text, stdout=text))
    rt.blobs.delete(backup.backup_key)
    text = f"removed the blob of expired backup {backup.backup_key}"
    return JobDone(
        {"backup_id": backup.id, "backup_key": backup.backup_key},
        Outcome(summary=text, stdout=text),
    )


HANDLERS: dict[str, Handler] = {
    JobType.project_backup: Handler(run_backup),
    JobType.backup_verify: Handler(run_verify, verify_failed),
    JobType.project_restore: Handler(run_restore, new_preview_failed),
    JobType.preview_create: Handler(run_preview_create, new_preview_failed),
    JobType.preview_delete: Handler(run_preview_delete),
    JobType.backup_expire: Handler(run_backup_expire),
}
