"""Every command and subcommand of ``capy`` documents itself with an example."""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

from pulumi_capy.cli.main import cli


def _walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


def test_every_command_help_has_an_example() -> None:
    runner = CliRunner()
    paths = list(_walk(cli))
    names = {" ".join(path) for path in paths}
    # the whole surface of issue 6, item 4
    assert {
        "serve",
        "worker",
        "projects create",
        "projects list",
        "keys create",
        "keys list",
        "keys revoke",
        "backups create",
        "backups list",
        "backups schedule get",
        "backups schedule set",
        "backups schedule disable",
        "restore-points create",
        "restore-points list",
        "restore-points delete",
        "restore",
        "jobs get",
        "jobs list",
        "previews list",
        "previews delete",
        "schema",
        "version",
        # issue 14, item 3
        "pitr enable",
        "pitr disable",
        "pitr status",
        "wal-push",
        "wal-fetch",
        # issue 16, item 3
        "doctor",
        # issue 17, item 3
        "blob-key generate",
        # issue 17, item 5
        "workers list",
    } <= names
    for path in paths:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example:" in result.stdout, f"capy {' '.join(path)} --help has no example"
        example = result.stdout.split("Example:", 1)[1]
        assert "capy " + " ".join(path) in example, path


def test_no_api_key_flag_anywhere() -> None:
    """Keys come only from CAPYDB_API_KEY, so they never land in shell history."""
    runner = CliRunner()
    for path in _walk(cli):
        result = runner.invoke(cli, [*path, "--help"])
        assert "--api-key" not in result.stdout, path
    assert "CAPYDB_API_KEY" in runner.invoke(cli, ["--help"]).stdout
    refused = runner.invoke(cli, ["--api-key", "capy_live_x", "projects", "list"])
    assert refused.exit_code == 2
    assert "No such option" in refused.stderr
