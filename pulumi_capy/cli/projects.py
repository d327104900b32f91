"""``capy projects create|list|update|delete``."""

from __future__ import annotations

import sys

import click

from pulumi_capy.api.errors import Conflict
from pulumi_capy.api.models import CreateProject, Environment, Project, UpdateProject
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


DATABASE_URL_ENV = "CAPY_DATABASE_URL"


def _new_database_url(given: str | None, from_stdin: bool) -> str:
    """The new URL, from --database-url-stdin, --database-url / CAPY_DATABASE_URL, or a
    prompt that does not echo (on a terminal only)."""
    if from_stdin:
        if given is not None:
            raise click.UsageError(
                f"give the URL once: --database-url-stdin, or --database-url / {DATABASE_URL_ENV}"
            )
        line = sys.stdin.readline().strip()
        if not line:
            raise click.UsageError("--database-url-stdin: stdin had no URL on its first line")
        return line
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise click.UsageError(
            f"no URL: give --database-url-stdin, {DATABASE_URL_ENV} or --database-url"
        )
    entered: str = click.prompt("new database URL", hide_input=True, err=True)
    return entered


@projects.command(
    epilog=example(
        "printf '%s\\n' \"$NEW_URL\" | capy projects update shop --database-url-stdin",
        f"{DATABASE_URL_ENV}=postgresql://… capy projects update prj_5f2c81d04be97a13",
        "capy projects update shop   # on a terminal: asks for it, without echoing",
    )
)
@click.argument("project", metavar="PROJECT")
@click.option(
    "--database-url",
    envvar=DATABASE_URL_ENV,
    show_envvar=True,
    metavar="URL",
    help="The new URL. A flag lands in shell history and the process list: prefer "
    f"--database-url-stdin or {DATABASE_URL_ENV}.",
)
@click.option(
    "--database-url-stdin", is_flag=True, help="Read the new URL from the first line of stdin."
)
@backend_options
@json_option
def update(project: str, database_url: str | None, database_url_stdin: bool) -> None:
    """Point a project (by id or name) at a new database URL: a rotated password, a moved
    database. The URL is checked first (same kind of database) and never printed."""
    url = _new_database_url(database_url, database_url_stdin)
    project_id = resolve_project(project)
    updated = backend().update_project(project_id, request(UpdateProject, database_url=url))
    emit(updated, lambda: echo(f"updated {_line(updated)}"))
