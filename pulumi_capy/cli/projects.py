"""``capy projects create|list|delete``."""

from __future__ import annotations

import click

from pulumi_capy.api.errors import Conflict
from pulumi_capy.api.models import CreateProject, Environment, Project
from pulumi_capy.cli.common import (
    CapyGroup,
    Failure,
    backend,
    backend_options,
    echo,
    emit,
    example,
    json_option,
    request,
    resolve_project,
    show_table,
)

__all__ = ["projects"]


@click.group(cls=CapyGroup, epilog=example("capy projects list"))
def projects() -> None:
    """Register databases to protect, list them, remove them."""


def _line(project: Project) -> str:
    return (
        f"project {project.id} ({project.name}, {project.environment}): "
        f"{project.database_kind or 'database'} {project.database_name or ''}".rstrip()
    )


@projects.command(
    epilog=example("capy projects create --name shop --database-url sqlite:////srv/shop/app.db")
)
@click.option("--name", required=True, help="The project's name.")
@click.option(
    "--database-url",
    required=True,
    metavar="URL",
    help="The database to protect (embedded engine and `capy serve` only).",
)
@click.option(
    "--environment",
    type=click.Choice([item.value for item in Environment]),
    default=Environment.non_production.value,
    show_default=True,
)
@backend_options
@json_option
def create(name: str, database_url: str, environment: str) -> None:
    """Register a database with the restore engine."""
    created = backend(start=True).create_project(
        request(CreateProject, name=name, database_url=database_url, environment=environment)
    )
    emit(created, lambda: echo(f"created {_line(created.project)}"))


@projects.command("list", epilog=example("capy projects list --json"))
@backend_options
@json_option
def list_() -> None:
    """List the projects."""
    found = backend().list_projects()
    emit(
        found,
        lambda: show_table(
            found,
            [
                ("ID", lambda p: p.id),
                ("NAME", lambda p: p.name),
                ("ENVIRONMENT", lambda p: p.environment),
                ("DATABASE", lambda p: p.database_kind),
                ("DATABASE NAME", lambda p: p.database_name),
                ("CREATED", lambda p: p.created_at),
            ],
            "no projects",
        ),
    )


@projects.command(
    epilog=example("capy projects delete shop", "capy projects delete prj_5f2c81d04be97a13 --force")
)
@click.argument("project", metavar="PROJECT")
@click.option(
    "--force",
    is_flag=True,
    help="Also remove its backups, restore points and previews (refused without it "
    "while backups exist).",
)
@backend_options
@json_option
def delete(project: str, force: bool) -> None:
    """Remove a project (by id or name); its database itself is not touched."""
    project_id = resolve_project(project)
    try:
        backend().delete_project(project_id, force=force)
    except Conflict as exc:  # the API's words for the API's flag: the CLI's is --force
        raise Failure(str(exc).replace("a forced delete (force=true)", "--force")) from None
    emit({"deleted": True, "id": project_id}, lambda: echo(f"deleted project {project_id}"))
