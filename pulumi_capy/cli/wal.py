"""``capy wal-push`` and ``capy wal-fetch``: PostgreSQL's ``archive_command`` and
``restore_command`` over the engine directory's log archive (PITR method ``archive``).

Both work on the engine directory itself (``--engine-dir`` or ``CAPY_ENGINE_DIR``, as
``capy worker`` does), and refuse a directory that holds no engine: PostgreSQL runs
them from its data directory, where a default ``.capy`` would be a new, empty engine.

Exit codes are what PostgreSQL reads. ``wal-push``: 0 once the file is archived (again
with the same bytes too: ``archive_command`` is retried after a crash), 1 otherwise.
``wal-fetch``: 0 once the file is written, 1 when the archive lacks it (the end of the
archive, for a recovery), and ``FATAL_EXIT`` on any other failure, which makes
PostgreSQL stop the recovery instead of taking the archive as ended there.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from pulumi_capy.api.errors import CapyError, NotFound
from pulumi_capy.cli.common import (
    Failure,
    engine_dir_option,
    engine_directory,
    example,
    has_engine,
    note,
)

__all__ = ["FATAL_EXIT", "wal_fetch", "wal_push"]

# PostgreSQL aborts a recovery when restore_command exits above 125 (as for a signal)
FATAL_EXIT = 128
# pg_wal/<segment>.<offset>.backup: written for every base backup, read by nobody in a
# recovery (the base backup carries its own backup_label)
BACKUP_HISTORY = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")


class _Fatal(Failure):
    exit_code = FATAL_EXIT


class _Missing(click.ClickException):
    """The archive lacks the file: one short line, exit 1 (PostgreSQL asks for files
    past the end of the archive as a matter of course)."""

    exit_code = 1

    def show(self, file: object = None) -> None:
        click.echo(f"capy wal-fetch: {self.format_message()}", err=True)


def _engine_dir() -> Path:
    directory = engine_directory()
    if not has_engine(directory):
        raise Failure(
            f"no capy engine in {directory}: give its directory with --engine-dir (or "
            "CAPY_ENGINE_DIR) as an absolute path; PostgreSQL runs this command from its "
            "data directory"
        )
    return directory


@click.command(
    "wal-push",
    epilog=example(
        "capy wal-push --engine-dir /srv/capy --project prj_5f2c81d04be97a13 "
        "pg_wal/000000010000000000000001",
        "# postgresql.conf: archive_command = "
        "'capy wal-push --engine-dir /srv/capy --project prj_5f2c81d04be97a13 %p'",
    ),
)
@click.option("--project", required=True, metavar="ID", help="The project id.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@engine_dir_option
def wal_push(project: str, path: Path) -> None:
    """Archive one WAL file into the project's log archive (for archive_command).

    Pushing the same file again succeeds; another file under an archived name fails
    and names it (two servers archiving into one project?).
    """
    if BACKUP_HISTORY.match(path.name):
        note(f"capy wal-push: {path.name} is a backup history file, not needed by a recovery")
        return
    directory = _engine_dir()
    from pulumi_capy.engine import Engine

    with Engine(directory) as engine:
        try:
            engine.wal_push(project, path)
        except (CapyError, OSError) as exc:
            raise Failure(f"wal-push {path.name}: {exc}") from None


@click.command(
    "wal-fetch",
    epilog=example(
        "capy wal-fetch --engine-dir /srv/capy --project prj_5f2c81d04be97a13 "
        "000000010000000000000001 "
        "/tmp/000000010000000000000001",
        "# restore_command = 'capy wal-fetch --engine-dir /srv/capy --project "
        "prj_5f2c81d04be97a13 %f %p'",
    ),
)
@click.option("--project", required=True, metavar="ID", help="The project id.")
@click.argument("name")
@click.argument("destination", type=click.Path(dir_okay=False, path_type=Path))
@engine_dir_option
def wal_fetch(project: str, name: str, destination: Path) -> None:
    """Write archived WAL file NAME to DESTINATION (for restore_command).

    Exits 1 when the archive lacks NAME, and 128 on any other failure (PostgreSQL then
    stops the recovery rather than end it early).
    """
    try:
        directory = _engine_dir()
    except Failure as exc:
        raise _Fatal(exc.format_message()) from None
    from pulumi_capy.engine import Engine

    try:
        with Engine(directory) as engine:
            engine.get_project(project)  # an unknown project is no end of the archive
            try:
                engine.wal_fetch(project, name, destination)
            except NotFound as exc:
                raise _Missing(str(exc)) from None
    except (CapyError, OSError) as exc:
        raise _Fatal(f"wal-fetch {name}: {exc}") from None
