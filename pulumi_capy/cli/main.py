"""``capy``: the command line of pulumi_capy.

Every command works against any back end, chosen like the provider chooses
it: ``--engine-dir`` (embedded), ``--api-url`` (hosted CapyDB or a ``capy
serve``), ``--mode``, else ``CAPY_MODE`` / ``CAPYDB_API_URL`` /
``CAPYDB_API_KEY`` / ``CAPY_ENGINE_DIR``. The API key comes only from
``CAPYDB_API_KEY``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from pulumi_capy._version import __version__
from pulumi_capy.cli import (
    backups,
    blob_key,
    doctor,
    gc,
    jobs,
    keys,
    new,
    pitr,
    previews,
    projects,
    restores,
    server,
    wal,
    workers,
)
from pulumi_capy.cli.common import (
    CapyGroup,
    State,
    backend_options,
    echo,
    emit,
    example,
    json_option,
)

__all__ = ["cli", "main"]

HELP = """Database restore points and restores as code (pulumi_capy).

\b
The back end, as for the Pulumi provider (flags beat the environment):
  --engine-dir DIR   the embedded restore engine in DIR (CAPY_ENGINE_DIR)
  --api-url URL      hosted CapyDB or a `capy serve` (CAPYDB_API_URL)
  --mode MODE        api or embedded (CAPY_MODE); default api when a key is set
The API key is read only from CAPYDB_API_KEY: never a flag, so it stays out
of shell history. Set CAPY_DEBUG=1 to see the traceback of an unexpected error.
"""


@click.group(
    "capy",
    cls=CapyGroup,
    help=HELP,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=example(
        "capy --engine-dir .capy projects list",
        "CAPYDB_API_KEY=capy_live_… capy --api-url http://capy:8080 backups list --project "
        "prj_5f2c81d04be97a13",
    ),
)
@click.version_option(
    __version__, "--version", package_name="pulumi-capy", message="%(package)s %(version)s"
)
@backend_options
@json_option
@click.pass_context
def cli(ctx: click.Context) -> None:
    ctx.ensure_object(State)
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@cli.command(epilog=example("capy version", "capy --json version"))
@json_option
def version() -> None:
    """Print the installed pulumi_capy version (also: capy --version)."""
    emit({"version": __version__}, lambda: echo(f"pulumi-capy {__version__}"))


@cli.command(epilog=example("capy schema -o schema.json"))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
def schema(output: Path | None) -> None:
    """Print the Pulumi package schema of capy (schema.json), generated from the code."""
    from pulumi_capy.schema import render

    text = render()
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


for group in (
    new.new,
    server.serve,
    server.worker,
    workers.workers,
    projects.projects,
    keys.keys,
    blob_key.blob_key,
    backups.backups,
    restores.restore_points,
    restores.restore,
    jobs.jobs,
    previews.previews,
    pitr.pitr,
    wal.wal_push,
    wal.wal_fetch,
    doctor.doctor,
    gc.gc,
):
    cli.add_command(group)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``capy`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="capy")


if __name__ == "__main__":
    main()
