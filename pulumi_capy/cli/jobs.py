"""``capy jobs get|list|cancel``."""

from __future__ import annotations

import click

from pulumi_capy.api.models import Job, JobState, JobType
from pulumi_capy.cli.backups import verified
from pulumi_capy.cli.common import (
    CapyGroup,
    backend,
    backend_options,
    describe_job,
    echo,
    embedded,
    emit,
    example,
    json_option,
    note_queued,
    project_option,
    show_table,
    timeout_option,
    wait_for,
)

__all__ = ["jobs"]


@click.group(cls=CapyGroup, epilog=example("capy jobs get --job-id job_a47c19e5038bd26f --wait"))
def jobs() -> None:
    """Follow the asynchronous work: backups, restores, verifications, previews."""


@jobs.command(
    "get",
    epilog=example(
        "capy jobs get --job-id job_a47c19e5038bd26f",
        "capy jobs get --job-id job_a47c19e5038bd26f --wait --json",
    ),
)
@click.option("--job-id", required=True, metavar="ID", help="The job id.")
@click.option(
    "--wait",
    is_flag=True,
    help="Wait until it ends, and a backup until it is verified (exit 1 unless it completed).",
)
@timeout_option
@backend_options
@json_option
def get_(job_id: str, wait: bool, timeout: float) -> None:
    """Show a job; with --wait, follow it to its end (embedded: run it here), and a
    backup's verification too."""
    job = backend().get_job(job_id)
    checked = False
    if wait:
        job = wait_for(job, timeout, "waiting")
        # a backup is done once verified: follow (embedded: run) the verification it queued
        if job.type == JobType.project_backup and job.project_id:
            job = verified(job, job.project_id, timeout)
            checked = True

    def human() -> None:
        echo(describe_job(job))
        if job.result:
            echo("result: " + ", ".join(f"{k}={v}" for k, v in job.result.items()))
        if checked:
            echo(f"backup {(job.result or {}).get('backup_key')} verified")

    emit(job, human)
    if not wait and embedded():
        _note_waiting(job)


def _note_waiting(job: Job) -> None:
    """Embedded, a job (or the verification a backup queued) that waits for a worker."""
    verify_id = (job.result or {}).get("verify_job_id")
    if job.state == JobState.pending:
        note_queued(job)
    elif job.type == JobType.project_backup and isinstance(verify_id, str):
        verification = backend().get_job(verify_id)
        if verification.state == JobState.pending:
            note_queued(verification, f", the verification of backup job {job.id}")


@jobs.command("list", epilog=example("capy jobs list --project prj_5f2c81d04be97a13 --limit 10"))
@project_option
@click.option(
    "--limit",
    type=click.IntRange(1, 1000),
    default=25,
    show_default=True,
    help="At most this many.",
)
@backend_options
@json_option
def list_(project: str, limit: int) -> None:
    """List a project's jobs, newest first."""
    found = backend().list_jobs(project, limit)
    emit(
        found,
        lambda: show_table(
            found,
            [
                ("ID", lambda j: j.id),
                ("TYPE", lambda j: j.type),
                ("STATE", lambda j: j.state),
                ("ATTEMPTS", lambda j: f"{j.attempts}/{j.max_attempts}"),
                ("CREATED", lambda j: j.created_at),
                ("COMPLETED", lambda j: j.completed_at),
                ("ERROR", lambda j: j.error.strip().splitlines()[0] if j.error else None),
            ],
            f"no jobs in project {project}",
        ),
    )


@jobs.command(epilog=example("capy jobs cancel --job-id job_a47c19e5038bd26f"))
@click.option("--job-id", required=True, metavar="ID", help="The job id.")
@backend_options
@json_option
def cancel(job_id: str) -> None:
    """Cancel a job that has not started (it ends failed, "cancelled"). A running job is
    not stopped part way: that is an error, as is a job that ended."""
    job = backend().cancel_job(job_id)
    emit(job, lambda: echo(describe_job(job)))
