"""``capy gc``: remove the blobs of an engine directory that no record refers to."""

from __future__ import annotations

from datetime import timedelta

import click

from pulumi_capy.cli.common import (
    Failure,
    echo,
    emit,
    engine_dir_option,
    engine_directory,
    example,
    has_engine,
    json_option,
    note,
    show_table,
)

__all__ = ["gc"]


@click.command(
    "gc",
    epilog=example(
        "capy gc --engine-dir /srv/capy --dry-run",
        "capy gc --engine-dir /srv/capy --min-age-hours 48 --json",
    ),
)
@click.option("--dry-run", is_flag=True, help="List what would be removed, and remove nothing.")
@click.option(
    "--min-age-hours",
    type=click.FloatRange(min=1),
    default=24.0,
    show_default=True,
    metavar="HOURS",
    help="Keep every file younger than this (work in flight writes its blob first).",
)
@engine_dir_option
@json_option
def gc(dry_run: bool, min_age_hours: float) -> None:
    """Remove blobs no backup, restore point, preview, PITR base backup or snapshot, or
    archived log segment refers to (left by interrupted work), with their manifests.

    Embedded engine only: it works on the engine directory (run it on the machine that
    holds it; a running `capy serve` or `capy worker` may go on meanwhile). Projects
    with pending or running jobs are skipped whole."""
    from pulumi_capy.engine import Engine

    directory = engine_directory()
    if not has_engine(directory):
        raise Failure(
            f"no capy engine in {directory}: give its directory with --engine-dir "
            "(or CAPY_ENGINE_DIR)"
        )
    with Engine(directory) as engine:
        report = engine.collect_garbage(dry_run=dry_run, min_age=timedelta(hours=min_age_hours))
    data = {
        "dry_run": report.dry_run,
        "removed" if not dry_run else "would_remove": [
            {"path": item.path, "size_bytes": item.size_bytes, "why": item.why}
            for item in report.garbage
        ],
        "total_bytes": report.total_bytes,
        "skipped_busy_projects": report.busy_projects,
        "kept_young_files": report.young_files,
    }

    def human() -> None:
        verb = "would remove" if dry_run else "removed"
        show_table(
            report.garbage,
            [
                ("PATH", lambda g: g.path),
                ("BYTES", lambda g: g.size_bytes),
                ("WHY", lambda g: g.why),
            ],
            "no garbage: every blob is referred to",
        )
        if report.garbage:
            echo(f"{verb} {len(report.garbage)} file(s), {report.total_bytes} bytes")
        if report.busy_projects:
            busy = ", ".join(report.busy_projects)
            note(f"skipped project(s) with jobs pending or running: {busy}")
        if report.young_files:
            note(
                f"kept {report.young_files} unreferenced file(s) younger than "
                f"{min_age_hours:g} h (--min-age-hours)"
            )

    emit(data, human)
