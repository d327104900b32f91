"""The systemd units of examples/systemd use only what the CLI accepts: every ExecStart (the
commented alternatives too) parses with capy's own click parser, and every variable they
set is one the command's --help documents."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from pulumi_capy.cli.main import cli

UNITS = sorted((Path(__file__).resolve().parents[2] / "examples" / "systemd").glob("*.service"))
_SETTING = re.compile(r"^#?(?P<key>ExecStart|Environment)=(?P<value>.*)$")


def _parse(name: str, args: list[str]) -> click.Context:
    group = cli.make_context("capy", [], resilient_parsing=False)
    return cli.commands[name].make_context(name, args, parent=group, resilient_parsing=False)


def _settings(unit: Path, key: str) -> list[str]:
    found = []
    for line in unit.read_text().splitlines():
        match = _SETTING.match(line.strip())
        if match and match.group("key") == key:
            found.append(match.group("value"))
    return found


def test_there_are_units_for_serve_and_worker() -> None:
    assert [unit.name for unit in UNITS] == ["capy-serve.service", "capy-worker.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_every_exec_start_parses_with_the_cli(unit: Path) -> None:
    commands = _settings(unit, "ExecStart")
    assert commands, unit
    for command in commands:
        argv = shlex.split(command)
        assert argv[0].endswith("/capy"), command
        name = unit.stem.removeprefix("capy-")
        assert argv[1] == name, command
        # parses every option and checks its type and range (an unknown flag, a bad
        # --log-level or a negative --workers raises here), without running anything
        parsed = _parse(name, argv[2:])
        assert not parsed.args, f"{command}: unexpected arguments {parsed.args}"


@pytest.mark.parametrize("unit", UNITS, ids=lambda unit: unit.name)
def test_every_variable_set_is_one_the_command_reads(unit: Path) -> None:
    command = unit.stem.removeprefix("capy-")
    shown = CliRunner().invoke(cli, [command, "--help"])
    assert shown.exit_code == 0, shown.output
    help_text = " ".join(shown.stdout.split())
    variables = [value.split("=", 1)[0] for value in _settings(unit, "Environment")]
    assert "CAPY_ENGINE_DIR" in variables
    for variable in variables:
        assert variable in help_text, f"{unit.name}: capy {command} --help never names {variable}"


def test_the_parser_check_catches_a_bad_flag() -> None:
    """The check above is not vacuous: a flag capy does not have is refused."""
    with pytest.raises(click.NoSuchOption):
        _parse("serve", ["--threads", "2"])
    with pytest.raises(click.BadParameter):
        _parse("worker", ["--log-level", "loud"])
    assert _parse("worker", ["--threads", "2"]).params["threads"] == 2
    assert _parse("worker", ["--concurrency", "3"]).params["threads"] == 3
