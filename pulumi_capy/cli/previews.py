"""``capy previews list|get|delete``."""

from __future__ import annotations

import click

from pulumi_capy.cli.common import (
    CapyGroup,
    Failure,
    backend,
    backend_options,
    describe_job,
    echo,
    emit,
    example,
    fmt,
    json_option,
    note_queued,
    project_option,
    resolve,
    resolve_preview,
    resolve_project,
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


@previews.command(
    "get",
    epilog=example(
        "capy previews get --project shop check",
        "capy previews get --project prj_5f2c81d04be97a13 prv_6a0f3d92c1e7b854 --json",
    ),
)
@project_option
@click.argument("preview", metavar="PREVIEW")
@backend_options
@json_option
def get_(project: str, preview: str) -> None:
    """Show one preview database (by id or name): its state, where it is, when it expires."""
    listed = backend().list_preview_databases(project)  # one list: the name and the preview
    preview_id = resolve("preview database", preview, "prv_", ((p.id, p.name) for p in listed))
    found = next((p for p in listed if p.id == preview_id), None)
    if found is None:
        raise Failure(f"preview database {preview_id} not found in project {project}")

    def human() -> None:
        echo(f"preview {found.id} ({found.name}): {fmt(found.state)}")
        echo(f"  where:    {preview_location(found)}")
        echo(f"  source:   {found.source_backup_key or fmt(found.source_restore_time)}")
        echo(f"  expires:  {fmt(found.ttl_expires_at)}")
        if found.last_error:
            echo(f"  error:    {found.last_error.strip().splitlines()[0]}")

    emit(found, human)


@previews.command(
    epilog=example(
        "capy previews delete --id prv_6a0f3d92c1e7b854 --wait",
        "capy previews delete --project shop --id check --wait",
    )
)
@click.option(
    "--id",
    "preview_id",
    required=True,
    metavar="PREVIEW",
    help="The preview id (or its name, with --project).",
)
@click.option("--project", metavar="PROJECT", help="The project (id or name) of a preview named.")
@click.option("--wait", is_flag=True, help="Wait until it is dropped (exit 1 otherwise).")
@timeout_option
@backend_options
@json_option
def delete(preview_id: str, project: str | None, wait: bool, timeout: float) -> None:
    """Drop a preview database (a job)."""
    if project is not None:
        preview_id = resolve_preview(resolve_project(project), preview_id)
    elif not preview_id.startswith("prv_"):
        raise click.UsageError(f"--id {preview_id!r} is not a preview id; give --project too")
    job = backend().delete_preview_database(preview_id)
    if wait:
        done = wait_for(job, timeout, "delete")
        emit(done, lambda: echo(f"deleted preview {preview_id} (job {done.id})"))
        return

    emit(job, lambda: echo(describe_job(job)))
    note_queued(job)
