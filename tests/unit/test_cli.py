from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pulumi_capy import __version__
from pulumi_capy.cli.main import cli
from pulumi_capy.schema import render


@pytest.mark.smoke
def test_capy_version_runs_as_a_console_script() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pulumi_capy.cli.main", "version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == f"pulumi-capy {__version__}"


def test_python_dash_m_pulumi_capy_cli_works() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pulumi_capy.cli", "version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == f"pulumi-capy {__version__}"


def test_no_command_prints_help() -> None:
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0
    assert "Usage: capy" in result.stdout
    assert "restore-points" in result.stdout


def test_schema_writes_the_file(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    result = CliRunner().invoke(cli, ["schema", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert target.read_text(encoding="utf-8") == render()
    assert CliRunner().invoke(cli, ["schema"]).stdout == render()


def test_schema_to_an_unwritable_place_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schema", "-o", str(tmp_path / "missing" / "schema.json")])
    assert result.exit_code == 1
    assert result.stderr.startswith("capy: error: FileNotFoundError")
    assert len(result.stderr.splitlines()) == 1
