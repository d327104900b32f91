"""``capy backups create|list|show|delete`` and ``capy backups schedule get|set|disable``."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from pulumi_capy.api.errors import JobFailed, JobTimeout
from pulumi_capy.api.models import (
    KIB,
    Backup,
    CreateBackup,
    Job,
    PutScheduledBackup,
    ScheduledBackup,
    VerificationState,
    format_bytes,
)
from pulumi_capy.cli.common import (
    CapyGroup,
    Failure,
    backend,
    backend_options,
    describe_job,
    echo,
    embedded,
    emit,
    example,
    fmt,
    json_option,
    note,
    note_queued,
    project_option,
    request,
    show_table,
    timeout_option,
    wait_for,
    worker_command,
)

__all__ = ["backups", "take_backup", "verified"]

VERIFY_POLL = 2.0  # seconds between looks at a backup whose verify job is unknown


@click.group(
    cls=CapyGroup, epilog=example("capy backups create --project prj_5f2c81d04be97a13 --wait")
)
def backups() -> None:
    """Take and list backups; manage the daily backup schedule."""


def take_backup(project: str, label: str | None, timeout_minutes: float) -> Job:
    """Back up ``project`` and wait for the backup and its verification; the backup job."""
    job = backend().create_backup(project, request(CreateBackup, label=label))
    return verified(wait_for(job, timeout_minutes, "backup"), project, timeout_minutes)


def verified(done: Job, project: str, timeout_minutes: float) -> Job:
    """Follow the verification of the backup ``done`` (a completed backup job) to its end
    (embedded: run it here); ``done``, once its backup is verified."""
    chosen = backend()
    result = done.result or {}
    verify_id = result.get("verify_job_id")
    if isinstance(verify_id, str):
        wait_for(chosen.get_job(verify_id), timeout_minutes, "verification")
        return done
    # no verify job named (a server that does not report it): watch the backup itself
    key = result.get("backup_key")
    deadline = time.monotonic() + timeout_minutes * 60
    while key is not None:
        backup = next((b for b in chosen.list_backups(project) if b.backup_key == key), None)
        state = backup.verification_state if backup else None
        if state == VerificationState.verified or backup is None:
            break
        if state == VerificationState.failed:
            raise JobFailed(done.model_copy(update={"error": backup.verification_error}))
        if time.monotonic() >= deadline:
            raise JobTimeout(done, timeout_minutes * 60)
        time.sleep(VERIFY_POLL)
    return done


@backups.command(
    epilog=example(
        "capy backups create --project prj_5f2c81d04be97a13 --label before-migration --wait",
        "capy backups create --project prj_5f2c81d04be97a13 --json",
    )
)
@project_option
@click.option("--label", help="A label for the backup.")
@click.option(
    "--wait", is_flag=True, help="Wait until the backup is taken and verified (exit 1 otherwise)."
)
@timeout_option
@backend_options
@json_option
def create(project: str, label: str | None, wait: bool, timeout: float) -> None:
    """Take a backup of a project (a job)."""
    if wait:
        job = take_backup(project, label, timeout)
        key = (job.result or {}).get("backup_key")
        emit(job, lambda: echo(f"backup {key} completed and verified (job {job.id})"))
        return
    job = backend().create_backup(project, request(CreateBackup, label=label))

    emit(job, lambda: echo(describe_job(job)))
    note_queued(job, ", its verification after it")


@backups.command("list", epilog=example("capy backups list --project prj_5f2c81d04be97a13"))
@project_option
@backend_options
@json_option
def list_(project: str) -> None:
    """List a project's backups, newest first."""
    # back ends list in their own order (the engine: oldest first); stable for equal times
    found = sorted(
        backend().list_backups(project),
        key=lambda found_backup: found_backup.created_at or datetime.min.replace(tzinfo=UTC),
        reverse=True,
    )
    emit(
        found,
        lambda: show_table(
            found,
            [
                ("ID", lambda b: b.id),
                ("BACKUP KEY", lambda b: b.backup_key),
                ("LABEL", lambda b: b.label),
                ("STATE", lambda b: b.state),
                ("VERIFICATION", lambda b: b.verification_state),
                ("SIZE", lambda b: b.size_bytes),
                ("CREATED", lambda b: b.created_at),
            ],
            f"no backups in project {project}",
        ),
    )


def find_backup(project: str, value: str) -> Backup:
    """The backup of ``project`` whose id, backup key or label is ``value`` (one only)."""
    found = backend().list_backups(project)
    for field in ("id", "backup_key", "label"):
        matching = [b for b in found if getattr(b, field) == value]
        if len(matching) == 1:
            return matching[0]
        if matching:
            ids = ", ".join(b.id for b in matching)
            raise Failure(f"{len(matching)} backups have the {field} {value!r}: {ids}; give the id")
    listed = ", ".join(f"{b.id} ({b.label or b.backup_key})" for b in found) or "none"
    raise Failure(
        f"no backup of project {project} has the id, key or label {value!r}; there are: {listed}"
    )


def _size(count: int | None) -> str:
    if count is None:
        return "-"
    return f"{count} bytes" if count < KIB else f"{format_bytes(count)} ({count} bytes)"


@backups.command(
    epilog=example(
        "capy backups show --project shop before-migration",
        "capy backups show --project prj_5f2c81d04be97a13 bkp_0e7d5a3f91c2b648 --json",
    )
)
@project_option
@click.argument("backup", metavar="BACKUP")
@backend_options
@json_option
def show(project: str, backup: str) -> None:
    """Show a backup (by id, backup key or label): its verification, sizes, tables and
    row counts, as its manifest recorded them."""
    found = find_backup(project, backup)
    detail = backend().get_backup(project, found.id)

    def human() -> None:
        echo(f"backup {detail.id} ({detail.label or 'no label'}) of project {detail.project_id}")
        echo(f"  key:           {detail.backup_key}")
        echo(f"  state:         {fmt(detail.state)}, taken {fmt(detail.created_at)}")
        verification = fmt(detail.verification_state)
        if detail.verified_at:
            verification += f" at {fmt(detail.verified_at)}"
        if detail.verification_error:
            verification += f": {detail.verification_error.strip().splitlines()[0]}"
        echo(f"  verification:  {verification}")
        echo(f"  database:      {detail.source_kind or ''} {detail.database_name or '-'}".rstrip())
        echo(f"  source size:   {_size(detail.size_bytes)}")
        ratio = (
            f" ({detail.blob_bytes / detail.size_bytes:.0%} of the source)"
            if detail.blob_bytes is not None and detail.size_bytes
            else ""
        )
        echo(f"  blob size:     {_size(detail.blob_bytes)}{ratio}")
        if detail.sha256:
            echo(f"  sha256:        {detail.sha256}")
        echo(f"  tables:        {fmt(detail.table_count)}")
        if detail.row_counts:
            show_table(
                sorted(detail.row_counts.items()),
                [("TABLE", lambda item: item[0]), ("ROWS", lambda item: item[1])],
                "",
            )

    emit(detail, human)


@backups.command(
    epilog=example(
        "capy backups verify --project shop before-migration --wait",
        "capy backups verify --project prj_5f2c81d04be97a13 bkp_0e7d5a3f91c2b648 --json",
    )
)
@project_option
@click.argument("backup", metavar="BACKUP")
@click.option(
    "--wait", is_flag=True, help="Wait until it is verified (exit 1 if the verification fails)."
)
@timeout_option
@backend_options
@json_option
def verify(project: str, backup: str, wait: bool, timeout: float) -> None:
    """Verify a backup (by id, backup key or label) again, now: restore it into a
    throwaway database and check it (a job; the one already running, if any)."""
    found = find_backup(project, backup)
    job = backend().verify_backup(project, found.id)
    if wait:
        done = wait_for(job, timeout, "verification")
        emit(done, lambda: echo(f"backup {found.backup_key} verified (job {done.id})"))
        return

    def human() -> None:
        echo(describe_job(job))
        note(f"follow it with: capy jobs get --job-id {job.id} --wait")

    emit(job, human)


@backups.command(
    epilog=example(
        "capy backups delete --project shop bkp_0e7d5a3f91c2b648",
        "capy backups delete --project shop before-migration --json",
    )
)
@project_option
@click.argument("backup", metavar="BACKUP")
@backend_options
@json_option
def delete(project: str, backup: str) -> None:
    """Delete a backup (by id, backup key or label) and its blob.

    Refused while a restore point pins it or a job uses it."""
    found = find_backup(project, backup)
    backend().delete_backup(project, found.id)
    emit(
        {"deleted": True, "id": found.id, "backup_key": found.backup_key},
        lambda: echo(f"deleted backup {found.id} ({found.backup_key})"),
    )


# ---------------------------------------------------------------- schedule


@backups.group(
    cls=CapyGroup,
    epilog=example("capy backups schedule set --project prj_5f2c81d04be97a13 --hour 3 --minute 30"),
)
def schedule() -> None:
    """The daily backup schedule of a project (UTC)."""


def _schedule_line(found: ScheduledBackup) -> str:
    state = "active" if found.is_active else "disabled"
    retention = f", kept {found.retention_days} days" if found.retention_days else ""
    label = f", label {found.label}" if found.label else ""
    return (
        f"daily backup of {found.project_id} at {found.cron_hour:02d}:{found.cron_minute:02d} "
        f"UTC ({state}{retention}{label}); last run {found.last_run_at or 'never'}"
    )


@schedule.command("get", epilog=example("capy backups schedule get --project prj_5f2c81d04be97a13"))
@project_option
@backend_options
@json_option
def get_(project: str) -> None:
    """Show the schedule (JSON null when there is none)."""
    found = backend().get_scheduled_backup(project)
    emit(
        found,
        lambda: echo(_schedule_line(found) if found else f"no backup schedule for {project}"),
    )


@schedule.command(
    "set",
    epilog=example(
        "capy backups schedule set --project prj_5f2c81d04be97a13 --hour 3 --minute 30 "
        "--retention-days 14"
    ),
)
@project_option
@click.option("--hour", type=int, required=True, help="UTC hour, 0-23.")
@click.option("--minute", type=int, required=True, help="Minute, 0-59.")
@click.option("--label", help="The label of the scheduled backups.")
@click.option("--retention-days", type=int, help="Remove backups older than this (1-365).")
@backend_options
@json_option
def set_(
    project: str, hour: int, minute: int, label: str | None, retention_days: int | None
) -> None:
    """Back up daily at HOUR:MINUTE UTC (creates or replaces the schedule)."""
    saved = backend().put_scheduled_backup(
        project,
        request(
            PutScheduledBackup,
            cron_hour=hour,
            cron_minute=minute,
            is_active=True,
            label=label,
            retention_days=retention_days,
        ),
    )
    emit(saved, lambda: echo(_schedule_line(saved)))
    if embedded():
        note(
            f"the scheduled backups (and their verifications) are taken by a running worker: "
            f"`{worker_command()}` or `capy serve --workers N` on this engine directory; "
            "with none running, nothing is taken at "
            f"{saved.cron_hour:02d}:{saved.cron_minute:02d} UTC"
        )


@schedule.command(epilog=example("capy backups schedule disable --project prj_5f2c81d04be97a13"))
@project_option
@backend_options
@json_option
def disable(project: str) -> None:
    """Stop the scheduled backups (the schedule is kept, inactive)."""
    chosen = backend()
    found = chosen.get_scheduled_backup(project)
    if found is None:
        emit(None, lambda: echo(f"no backup schedule for {project}: nothing to disable"))
        return
    saved = chosen.put_scheduled_backup(
        project,
        request(
            PutScheduledBackup,
            cron_hour=found.cron_hour,
            cron_minute=found.cron_minute,
            is_active=False,
            label=found.label,
            retention_days=found.retention_days,
        ),
    )
    emit(saved, lambda: echo(_schedule_line(saved)))
