"""``capy new``: templates from the examples, a project that refers to nothing outside
its directory (but the package it installs), refusals, and what the wheel ships."""

from __future__ import annotations

import fnmatch
import subprocess
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from click.testing import CliRunner, Result

from pulumi_capy.cli import new as new_module
from pulumi_capy.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TEMPLATE_NAMES = sorted(p.parent.name for p in EXAMPLES.glob("*/Pulumi.yaml"))


def _capy_new(*args: str) -> Result:
    return CliRunner().invoke(cli, ["new", *args])


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_the_templates_are_the_examples() -> None:
    assert TEMPLATE_NAMES == ["hosted", "pitr", "pre-migration", "quickstart"]
    assert new_module.TEMPLATES.resolve() == EXAMPLES.resolve()
    assert sorted(new_module.templates()) == TEMPLATE_NAMES
    listed = _capy_new("--list")
    assert listed.exit_code == 0, listed.output
    for name in TEMPLATE_NAMES:
        assert name in listed.stdout
    assert "SQLite app database" in listed.stdout  # the quickstart's description


@pytest.mark.parametrize("template", TEMPLATE_NAMES)
def test_the_new_project_refers_to_nothing_outside_its_directory(
    tmp_path: Path, template: str
) -> None:
    directory = tmp_path / "mystack"
    result = _capy_new(template, str(directory))
    assert result.exit_code == 0, result.output

    manifest = yaml.safe_load((directory / "Pulumi.yaml").read_text())
    assert manifest["runtime"]["options"]["virtualenv"] == "venv"
    for value in _strings(manifest):
        assert not value.startswith(("/", "~")), value
        assert ".." not in Path(value).parts, value
        if "/" in value or value.startswith("."):  # a path: it stays inside DIR
            assert (directory / value).resolve().is_relative_to(directory.resolve()), value

    # the package comes from this checkout (an editable install), by absolute URL
    requirements = (directory / "requirements.txt").read_text().splitlines()
    wanted = [line for line in requirements if line.startswith("pulumi-capy")]
    assert len(wanted) == 1, requirements
    assert wanted[0].endswith(f" @ {REPO.as_uri()}"), wanted
    assert "file:../.." not in "\n".join(requirements)
    assert wanted[0].startswith("pulumi-capy @"), wanted
    assert any(line.startswith("pulumi>=") for line in requirements)
    # the program and the rest of the example, and none of a run's leftovers
    assert (directory / "__main__.py").read_text() == (
        EXAMPLES / template / "__main__.py"
    ).read_text()
    assert not (directory / ".capy").exists()
    # the README, without its section about making this very copy
    assert "## Your own copy" in (EXAMPLES / template / "README.md").read_text()
    readme = (directory / "README.md").read_text()
    assert "## Your own copy" not in readme
    assert (EXAMPLES / template / "README.md").read_text().startswith(readme.rstrip())
    assert not list(directory.glob("Pulumi.*.yaml"))

    assert "cd " in result.stdout
    assert "pulumi stack init" in result.stdout
    assert "pulumi up" in result.stdout


def test_a_non_empty_directory_is_refused_unless_forced(tmp_path: Path) -> None:
    directory = tmp_path / "mystack"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    refused = _capy_new("quickstart", str(directory))
    assert refused.exit_code == 1
    assert "not empty" in refused.stderr
    assert not (directory / "Pulumi.yaml").exists()

    forced = _capy_new("quickstart", str(directory), "--force", "--name", "shop")
    assert forced.exit_code == 0, forced.output
    assert (directory / "notes.txt").read_text() == "mine"
    assert yaml.safe_load((directory / "Pulumi.yaml").read_text())["name"] == "shop"

    # an empty directory is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _capy_new("quickstart", str(empty)).exit_code == 0


def test_an_unknown_template_and_missing_arguments_fail(tmp_path: Path) -> None:
    unknown = _capy_new("nope", str(tmp_path / "x"))
    assert unknown.exit_code == 1
    assert "quickstart" in unknown.stderr
    assert not (tmp_path / "x").exists()
    assert _capy_new().exit_code == 2
    assert _capy_new("quickstart").exit_code == 2


def test_a_requirement_given_on_the_command_line(tmp_path: Path) -> None:
    result = _capy_new("quickstart", str(tmp_path / "a"), "--requirement", "==0.1.0")
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "a" / "requirements.txt").read_text().splitlines()
    assert "pulumi-capy==0.1.0" in lines


class _Dist:
    def __init__(self, direct_url: str | None) -> None:
        self.direct_url = direct_url
        self.version = "9.8.7"

    def read_text(self, name: str) -> str | None:
        assert name == "direct_url.json"
        return self.direct_url


def test_where_the_package_is_installed_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # this capy runs from this checkout (an editable install): the checkout, by URL
    spec, why = new_module.package_requirement()
    assert spec == f" @ {REPO.as_uri()}"
    assert "source tree" in why

    # an installed copy (site-packages is no source tree): what its metadata says
    monkeypatch.setattr(new_module, "HOME", tmp_path / "site-packages")

    def installed(direct_url: str | None) -> str:
        monkeypatch.setattr(metadata, "distribution", lambda _name: _Dist(direct_url))
        return new_module.package_requirement()[0]

    # a release from an index (no direct_url.json): the same version
    assert installed(None) == "==9.8.7"
    # `pip install /path/to/checkout`: that checkout
    assert installed(f'{{"url": "{REPO.as_uri()}", "dir_info": {{}}}}') == f" @ {REPO.as_uri()}"
    # a local wheel still on disk: that file; gone: the version
    wheel = tmp_path / "pulumi_capy-9.8.7-py3-none-any.whl"
    wheel.write_bytes(b"")
    archive = f'{{"url": "{wheel.as_uri()}", "archive_info": {{}}}}'
    assert installed(archive) == f" @ {wheel.as_uri()}"
    wheel.unlink()
    assert installed(archive) == "==9.8.7"
    # a directory that is no source tree of this package any more: the version
    assert installed(f'{{"url": "{(tmp_path / "gone").as_uri()}", "dir_info": {{}}}}') == "==9.8.7"


def test_the_wheel_ships_every_file_of_every_template() -> None:
    """pyproject's package data names each file the examples hold in git, so `capy new`
    from an installed wheel copies the same templates."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["pulumi_capy"]
    tracked = subprocess.run(
        ["git", "ls-files", "examples"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in TEMPLATE_NAMES:
        files = [f for f in tracked if f.startswith(f"examples/{name}/")]
        assert files, name
        for file in files:
            shipped = "templates/" + file.removeprefix("examples/")
            assert any(fnmatch.fnmatch(shipped, p) for p in patterns), file
