"""``capy new TEMPLATE DIR``: a Pulumi project of one's own, from one of the examples.

The templates are the repository's ``examples/`` (one source of truth):
``pulumi_capy/templates`` is a symlink to them in the source tree, and the wheel
ships them as package data (``pyproject.toml``). A template as it sits in the
repository points its virtualenv at the repository's ``.venv`` and installs this
package from ``../..``; ``capy new`` rewrites both, so the copy works anywhere:

- ``Pulumi.yaml``: ``virtualenv: venv``, a virtualenv inside DIR (``pulumi up``
  creates it and installs ``requirements.txt`` into it on the first run);
- ``requirements.txt``: this package from wherever the running ``capy`` was
  installed from (see ``package_requirement``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

import click

from pulumi_capy._version import __version__
from pulumi_capy.cli.common import Failure, example

__all__ = ["Template", "new", "package_requirement", "render_manifest", "templates"]

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
# the directory holding the running pulumi_capy: a source tree, or site-packages
HOME = Path(__file__).resolve().parents[2]
DISTRIBUTION = "pulumi-capy"
VIRTUALENV = "venv"
# what a template directory holds that is not part of the template: a run's state
SKIP = (".capy", "app.db*", "__pycache__", "Pulumi.*.yaml", "venv", ".venv", "*.pyc")
_REQUIREMENT = re.compile(r"^pulumi-capy(?P<extras>\[[^\]]*\])?\s*(@|==|>=|$)")
_VIRTUALENV = re.compile(r"^(?P<indent>\s*)virtualenv:.*$", re.MULTILINE)
_DESCRIPTION = re.compile(r"^description:\s*(?P<text>.+)$", re.MULTILINE)
_NAME = re.compile(r"^name:.*$", re.MULTILINE)
# the section of an example's README about copying it, untrue of the copy
_COPY_SECTION = "\n## Your own copy\n"


@dataclass(frozen=True)
class Template:
    name: str
    directory: Path
    description: str


def templates(root: Path = TEMPLATES) -> dict[str, Template]:
    """The templates under ``root``: every directory holding a ``Pulumi.yaml``."""
    found: dict[str, Template] = {}
    if not root.is_dir():
        return found
    for directory in sorted(root.iterdir()):
        manifest = directory / "Pulumi.yaml"
        if not manifest.is_file():
            continue
        match = _DESCRIPTION.search(manifest.read_text(encoding="utf-8"))
        description = match.group("text").strip() if match else ""
        found[directory.name] = Template(directory.name, directory, description)
    return found


def _source_tree_url(path: Path) -> str | None:
    """``file:///abs/path`` when ``path`` is a source tree of this package."""
    if (path / "pyproject.toml").is_file() and (path / "pulumi_capy").is_dir():
        return path.resolve().as_uri()
    return None


def package_requirement() -> tuple[str, str]:
    """Where the running package came from, as ``(requirement without name, why)``.

    - this code runs from a source tree (an editable install, ``pip install -e .``, or
      a checkout on PYTHONPATH): `` @ file:///that/tree``, so the new project runs the
      code this ``capy`` runs, unreleased changes included (pip installs a copy of the
      tree in the project's virtualenv, so later changes need a reinstall);
    - installed from a local directory or a wheel/sdist file that still exists:
      `` @ file:///it``;
    - otherwise (a release from an index): ``==<version>``, the same release, from
      whatever index pip uses (PyPI, or ``PIP_INDEX_URL``).
    """
    tree = _source_tree_url(HOME)
    if tree:
        return f" @ {tree}", "this capy runs from that source tree"
    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return f"=={__version__}", "this capy's version"
    direct = dist.read_text("direct_url.json")
    if direct:
        info = json.loads(direct)
        parsed = urlparse(str(info.get("url", "")))
        path = Path(unquote(parsed.path))
        if parsed.scheme == "file" and (
            ("dir_info" in info and _source_tree_url(path)) or path.is_file()
        ):
            return f" @ {path.resolve().as_uri()}", "this capy was installed from there"
    return f"=={dist.version}", "the release this capy is"


def render_requirements(text: str, requirement: str, why: str) -> str:
    """The template's ``requirements.txt`` with its ``pulumi-capy`` line replaced (its
    extras kept) and its comments (about the repository's layout) dropped."""
    lines = [f"# written by `capy new` (pulumi-capy {__version__}): pulumi-capy below is"]
    lines.append(f"# {why}; edit it to pin another version or source")
    replaced = False
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _REQUIREMENT.match(stripped)
        if match:
            lines.append(f"{DISTRIBUTION}{match.group('extras') or ''}{requirement}")
            replaced = True
        else:
            lines.append(stripped)
    if not replaced:
        lines.append(f"{DISTRIBUTION}{requirement}")
    return "\n".join(lines) + "\n"


def render_manifest(text: str, name: str | None = None) -> str:
    """The template's ``Pulumi.yaml`` with its virtualenv inside the project (``venv``)."""
    if _VIRTUALENV.search(text):
        text = _VIRTUALENV.sub(lambda m: f"{m.group('indent')}virtualenv: {VIRTUALENV}", text)
    else:
        raise Failure("the template's Pulumi.yaml has no runtime.options.virtualenv to rewrite")
    if name is not None:
        text = _NAME.sub(f"name: {name}", text, count=1)
    return text


def _check_target(directory: Path, *, force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise Failure(f"{directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not force:
        raise Failure(f"{directory} is not empty (use --force to write into it anyway)")


def _list() -> None:
    found = templates()
    if not found:
        raise Failure(f"no templates found in {TEMPLATES} (a broken installation?)")
    width = max(len(name) for name in found)
    for template in found.values():
        click.echo(f"{template.name:<{width}}  {template.description}")


@click.command(
    "new",
    epilog=example(
        "capy new --list",
        "capy new quickstart ~/mystack && cd ~/mystack && pulumi stack init dev && pulumi up",
    ),
)
@click.argument("template", required=False)
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--list", "list_", is_flag=True, help="List the templates and exit.")
@click.option("--force", is_flag=True, help="Write into DIRECTORY even if it is not empty.")
@click.option("--name", help="The Pulumi project name (default: the template's).")
@click.option(
    "--requirement",
    metavar="SPEC",
    help="The pulumi-capy requirement to write, without the name (e.g. '==0.1.0' or "
    "' @ file:///src/pulumi_capy'); default: where this capy is installed from.",
)
def new(
    template: str | None,
    directory: Path | None,
    list_: bool,
    force: bool,
    name: str | None,
    requirement: str | None,
) -> None:
    """Start a Pulumi project of your own in DIRECTORY from TEMPLATE (an example).

    The project keeps its virtualenv inside DIRECTORY (`virtualenv: venv`;
    `pulumi up` creates it and installs requirements.txt on the first run) and
    installs pulumi-capy from where this capy was installed: a local source tree
    as `pulumi-capy @ file:///…` (an editable install: your checkout), a release
    as `pulumi-capy==VERSION`.
    """
    if list_:
        _list()
        return
    if template is None or directory is None:
        raise click.UsageError("TEMPLATE and DIRECTORY are required (or --list)")
    found = templates()
    if template not in found:
        raise Failure(f"no template {template!r}: one of {', '.join(found) or '(none)'}")
    _check_target(directory, force=force)
    source = found[template].directory
    shutil.copytree(source, directory, ignore=shutil.ignore_patterns(*SKIP), dirs_exist_ok=True)
    if requirement is None:
        requirement, why = package_requirement()
    else:
        why = "given to capy new --requirement"
        if requirement.startswith("@"):
            requirement = f" {requirement}"
    manifest = directory / "Pulumi.yaml"
    manifest.write_text(render_manifest(manifest.read_text(encoding="utf-8"), name), "utf-8")
    requirements = directory / "requirements.txt"
    old = requirements.read_text(encoding="utf-8") if requirements.exists() else ""
    requirements.write_text(render_requirements(old, requirement, why), encoding="utf-8")
    readme = directory / "README.md"
    if readme.exists():
        text = readme.read_text(encoding="utf-8")
        readme.write_text(text.split(_COPY_SECTION, 1)[0].rstrip() + "\n", encoding="utf-8")
    where = shlex.quote(str(directory))
    click.echo(f"Created {directory} from the {template} template.")
    click.echo(f"  requirements.txt: {DISTRIBUTION}{requirement}  ({why})")
    click.echo(f"  Pulumi.yaml: virtualenv: {VIRTUALENV} (inside {directory})")
    click.echo("Next:")
    click.echo(f"  cd {where}")
    click.echo("  pulumi stack init dev    # `pulumi login --local` first to keep state on disk")
    click.echo("  pulumi up                # creates ./venv and installs requirements.txt")
