from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from pulumi_capy import __version__
from pulumi_capy.cli.main import build_parser, main


@pytest.mark.smoke
def test_capy_version_runs_as_a_console_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pulumi_capy.cli.main", "version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == f"pulumi-capy {__version__}"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: capy" in capsys.readouterr().out


def test_every_command_help_has_an_example() -> None:
    parser = build_parser()
    assert "example:" in parser.format_help()
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert commands
    for name, sub in commands[0].choices.items():
        assert "example:" in sub.format_help(), name
