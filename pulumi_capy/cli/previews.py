"""``capy previews list|delete``."""

from __future__ import annotations

import click

from pulumi_capy.cli.common import (
    CapyGroup,
    backend,
    backend_options,
    describe_job,
    echo,
    emit,
    example,
    json_option,
    note_queued,
    project_option,
    show_table,
    timeout_option,
    wait_for,
)
from pulumi_capy.cli.restores import preview_location

__all__ = ["previews"]


@click.group(cls=CapyGroup, epilog=example("capy previews list --project prj_5f2c81d04be97a13"))
def previews() -> None:
    """Preview databases: where restores land by default."""


@previews.command(
    "list", epilog=example("capy previews list --project prj_5f2c81d04be97a13 --json")
)
@project_option
@backend_options
@json_option
def list_(project: str) -> None:
    """List a project's preview databases."""
    found = backend().list_preview_databases(project)
    emit(
        found,
        lambda: show_table(
            found,
            [
                ("ID", lambda p: p.id),
                ("NAME", lambda p: p.name),
                ("STATE", lambda p: p.state),
                ("SOURCE", lambda p: p.source_backup_key or p.source_kind),
                ("WHERE", preview_location),
                ("EXPIRES", lambda p: p.ttl_expires_at),
            ],
            f"no preview databases in project {project}",
        ),
    )


@previews.command(epilog=example("capy previews delete --id prv_6a0f3d92c1e7b854 --wait"))
@click.option("--id", "preview_id", required=True, metavar="ID", help="The preview id.")
@click.option("--wait", is_flag=True, help="Wait until it is dropped (exit 1 otherwise).")
@timeout_option
@backend_options
@json_option
def delete(preview_id: str, wait: bool, timeout: float) -> None:
    """Drop a preview database (a job)."""
    job = backend().delete_preview_database(preview_id)
    if wait:
        done = wait_for(job, timeout, "delete")
        emit(done, lambda: echo(f"deleted preview {preview_id} (job {done.id})"))
        return

    emit(job, lambda: echo(describe_job(job)))
    note_queued(job)
