"""``capy restore-points create|list|delete`` and ``capy restore``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pulumi_capy.api.models import (
    CreateRestorePoint,
    Job,
    PreviewDatabase,
    RestorePointKind,
    RestoreRequest,
    TargetKind,
    format_timestamp,
)
from pulumi_capy.cli.backups import take_backup
from pulumi_capy.cli.common import (
    CapyGroup,
    Failure,
    backend,
    backend_options,
    describe_job,
    echo,
    emit,
    example,
    json_option,
    note_queued,
    project_option,
    request,
    resolve_preview,
    resolve_restore_point,
    show_table,
    timeout_option,
    wait_for,
)

__all__ = ["preview_location", "restore", "restore_points"]


@click.group(
    "restore-points",
    cls=CapyGroup,
    epilog=example(
        "capy restore-points create --project prj_5f2c81d04be97a13 --label before-migration"
    ),
)
def restore_points() -> None:
    """Named restore points: a label pinned to a backup, or to a moment (PITR)."""


def _fresh_backup_timeout(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--timeout`` of ``restore-points create``, which waits for its backup without --wait."""
    return timeout_option(
        function,
        help="Without --backup-key (kind backup): give up waiting for the fresh backup and "
        "its verification after MIN minutes (the backup job goes on; no point is made).",
    )


@restore_points.command(
    epilog=example(
        "capy restore-points create --project prj_5f2c81d04be97a13 --label before-migration",
        "capy restore-points create --project prj_5f2c81d04be97a13 --label nightly "
        "--backup-key projects/prj_5f2c81d04be97a13/backups/bkp_0e7d5a3f91c2b648.sqlite.zst",
        "capy restore-points create --project prj_5f2c81d04be97a13 --label before-deploy --kind "
        "pitr",
        "capy restore-points create --project prj_5f2c81d04be97a13 --label bad-deploy --kind pitr "
        "--pitr-time 2026-11-26T14:32:00Z",
    )
)
@project_option
@click.option("--label", required=True, help="The restore point's name.")
@click.option(
    "--kind",
    type=click.Choice([kind.value for kind in RestorePointKind]),
    default=RestorePointKind.backup.value,
    show_default=True,
    help="backup: pin a backup; pitr: pin a moment of the PITR window (`capy pitr enable`).",
)
@click.option(
    "--backup-key",
    metavar="KEY",
    help="With --kind backup: pin this backup. Without it a fresh backup is taken, "
    "verified, then pinned.",
)
@click.option(
    "--pitr-time",
    metavar="TIME",
    help="With --kind pitr: the RFC 3339 moment to pin (default: now).",
)
@click.option("--note", help="A note kept with the restore point.")
@click.option(
    "--allow-duplicate",
    is_flag=True,
    help="Create it even if a restore point of the project already has this label.",
)
@_fresh_backup_timeout
@backend_options
@json_option
def create(
    project: str,
    label: str,
    kind: str,
    backup_key: str | None,
    pitr_time: str | None,
    note: str | None,
    allow_duplicate: bool,
    timeout: float,
) -> None:
    """Create a restore point: a backup pinned (a fresh one unless --backup-key is given),
    or with --kind pitr a moment of the point-in-time recovery window.

    A label already used in the project is refused (before any backup is taken) unless
    --allow-duplicate: a label is how the other commands name a restore point."""
    chosen = backend()
    if not allow_duplicate:
        same = [p.id for p in chosen.list_restore_points(project) if p.label == label]
        if same:
            raise Failure(
                f"project {project} already has a restore point labelled {label!r} "
                f"({', '.join(same)}); choose another label, delete it, or add --allow-duplicate"
            )
    if kind == RestorePointKind.pitr.value:
        if backup_key is not None:
            raise click.UsageError("--backup-key is for --kind backup; --kind pitr pins a time")
    elif pitr_time is not None:
        raise click.UsageError("--pitr-time is for --kind pitr")
    elif backup_key is None:
        job = take_backup(project, label, timeout)
        backup_key = (job.result or {}).get("backup_key")
    point = chosen.create_restore_point(
        project,
        request(
            CreateRestorePoint,
            label=label,
            kind=kind,
            backup_key=backup_key,
            pitr_time=pitr_time,
            note=note,
        ),
    )

    def human() -> None:
        if point.kind == RestorePointKind.pitr:
            moment = format_timestamp(point.pitr_time) if point.pitr_time else "-"
            echo(f"restore point {point.id} ({point.label}) pins the moment {moment}")
        else:
            echo(f"restore point {point.id} ({point.label}) pins backup {point.backup_key}")

    emit(point, human)


@restore_points.command(
    "list", epilog=example("capy restore-points list --project prj_5f2c81d04be97a13")
)
@project_option
@backend_options
@json_option
def list_(project: str) -> None:
    """List a project's restore points."""
    found = backend().list_restore_points(project)
    emit(
        found,
        lambda: show_table(
            found,
            [
                ("ID", lambda p: p.id),
                ("LABEL", lambda p: p.label),
                ("KIND", lambda p: p.kind),
                ("BACKUP KEY / TIME", lambda p: p.backup_key or p.pitr_time),
                ("STATE", lambda p: p.state),
                ("CREATED", lambda p: p.created_at),
                ("NOTE", lambda p: p.note),
            ],
            f"no restore points in project {project}",
        ),
    )


@restore_points.command(
    epilog=example(
        "capy restore-points delete --project prj_5f2c81d04be97a13 --id rp_3c9e07a1d25b48f6"
    )
)
@project_option
@click.option(
    "--id", "point_id", required=True, metavar="POINT", help="The restore point: id or label."
)
@backend_options
@json_option
def delete(project: str, point_id: str) -> None:
    """Delete a restore point (its backup stays)."""
    point_id = resolve_restore_point(project, point_id)
    backend().delete_restore_point(project, point_id)
    emit({"deleted": True, "id": point_id}, lambda: echo(f"deleted restore point {point_id}"))


# ---------------------------------------------------------------- restore


def preview_location(preview: PreviewDatabase) -> str:
    """Where a preview lives: its SQLite file, or host:port/database."""
    if preview.public_host:
        port = f":{preview.direct_port}" if preview.direct_port else ""
        return f"{preview.public_host}{port}/{preview.database_name or ''}"
    return preview.database_name or "-"


def _restored(project: str, job: Job) -> str:
    result = job.result or {}
    preview_id = job.preview_database_id or result.get("preview_database_id")
    target = str(result.get("target_kind") or "the target")
    text = f"restore job {job.id} completed: restored into {target}"
    if preview_id:
        preview = next(
            (p for p in backend().list_preview_databases(project) if p.id == preview_id), None
        )
        where = f" at {preview_location(preview)}" if preview else ""
        name = f" ({preview.name})" if preview else ""
        text = f"restore job {job.id} completed: preview {preview_id}{name}{where}"
    if result.get("safety_backup_key"):
        text += f"; the previous state is in backup {result['safety_backup_key']}"
    return text


@click.command(
    epilog=example(
        "capy restore --project prj_5f2c81d04be97a13 --restore-point rp_3c9e07a1d25b48f6 --wait",
        "capy restore --project prj_5f2c81d04be97a13 "
        "--backup-key projects/prj_5f2c81d04be97a13/backups/bkp_0e7d5a3f91c2b648.sqlite.zst "
        "--preview-name check --ttl-hours 4",
        "capy restore --project prj_5f2c81d04be97a13 --restore-time 2026-11-26T14:32:00Z --wait "
        "--json",
        "capy restore --project prj_5f2c81d04be97a13 --restore-point rp_3c9e07a1d25b48f6 "
        "--target-kind project --confirm --wait",
    )
)
@project_option
@click.option("--backup-key", metavar="KEY", help="Restore this backup.")
@click.option(
    "--restore-time",
    metavar="TIME",
    help="Restore to this RFC 3339 time of the PITR window (`capy pitr status`).",
)
@click.option("--restore-point", metavar="POINT", help="Restore this restore point (id or label).")
@click.option(
    "--target-kind",
    type=click.Choice([kind.value for kind in TargetKind]),
    default=TargetKind.new_preview.value,
    show_default=True,
    help="A new preview, an existing preview (--preview-id), or the project database.",
)
@click.option(
    "--preview-id", metavar="PREVIEW", help="With --target-kind preview: which one (id or name)."
)
@click.option("--preview-name", help="With new_preview: its name (default: generated).")
@click.option("--ttl-hours", type=int, help="With new_preview: hours it lives (1-168).")
@click.option("--recreate", is_flag=True, help="Drop and recreate the target first.")
@click.option(
    "--confirm",
    is_flag=True,
    help="Required with --target-kind project: yes, overwrite the project database.",
)
@click.option("--allow-unverified", is_flag=True, help="Accept a backup that failed verification.")
@click.option("--wait", is_flag=True, help="Wait until the restore ends (exit 1 unless completed).")
@timeout_option
@backend_options
@json_option
def restore(
    project: str,
    backup_key: str | None,
    restore_time: str | None,
    restore_point: str | None,
    target_kind: str,
    preview_id: str | None,
    preview_name: str | None,
    ttl_hours: int | None,
    recreate: bool,
    confirm: bool,
    allow_unverified: bool,
    wait: bool,
    timeout: float,
) -> None:
    """Restore a backup, a time or a restore point into a preview or the project."""
    sources = [s for s in (backup_key, restore_time, restore_point) if s is not None]
    if len(sources) != 1:
        raise click.UsageError("give exactly one of --backup-key, --restore-time, --restore-point")
    if target_kind == TargetKind.project.value and not confirm:
        raise Failure(
            f"--target-kind project overwrites the database of project {project}; "
            "add --confirm to do it"
        )
    if restore_point is not None:
        restore_point = resolve_restore_point(project, restore_point)
    if preview_id is not None:
        preview_id = resolve_preview(project, preview_id)
    job = backend().create_restore(
        project,
        request(
            RestoreRequest,
            backup_key=backup_key,
            restore_time=restore_time,
            restore_point_id=restore_point,
            target_kind=target_kind,
            preview_id=preview_id,
            preview_name=preview_name,
            ttl_hours=ttl_hours,
            recreate=recreate,
            allow_unverified_backup=allow_unverified,
            confirm_project_overwrite=confirm,
        ),
    )
    if wait:
        done = wait_for(job, timeout, "restore")
        emit(done, lambda: echo(_restored(project, done)))
        return

    emit(job, lambda: echo(describe_job(job)))
    note_queued(job)
