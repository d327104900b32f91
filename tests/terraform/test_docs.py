"""The provider's generated documentation is current: terraform-provider-capy/docs/ is
exactly what `scripts/terraform-docs` renders from today's schema and examples/.

The render goes into a copy (docs/, examples/, templates/) in a temp directory, with the
real provider built from this checkout, the real `tofu` printing its schema and the
pinned tfplugindocs (`go tool`), so the checkout is never modified by the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.terraform.conftest import PROVIDER_DIR as PROVIDER
from tests.terraform.conftest import REPO

RENDER_TIMEOUT = 15 * 60  # a first build of the provider and of tfplugindocs on 2 cores


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_docs_are_what_tfplugindocs_renders(tmp_path: Path, go_bin: Path, tofu_bin: Path) -> None:
    # go_bin, tofu_bin: a missing one fails in CI, skips elsewhere (conftest.py)
    copy = tmp_path / "terraform-provider-capy"
    copy.mkdir()
    for name in ("docs", "examples", "templates"):
        if (PROVIDER / name).is_dir():
            shutil.copytree(PROVIDER / name, copy / name)
    rendered = subprocess.run(
        [str(REPO / "scripts" / "terraform-docs"), "--provider-dir", str(copy)],
        env={**os.environ, "TOFU": str(tofu_bin), "PATH": f"{go_bin.parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=RENDER_TIMEOUT,
        check=False,
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr

    committed = _files(PROVIDER / "docs") if (PROVIDER / "docs").is_dir() else {}
    fresh = _files(copy / "docs")
    assert fresh, f"scripts/terraform-docs rendered nothing:\n{rendered.stderr}"
    problems = [
        f"{name} (differs)"
        for name in fresh
        if name in committed and fresh[name] != committed[name]
    ]
    problems += [f"{name} (missing)" for name in fresh if name not in committed]
    problems += [f"{name} (not rendered any more)" for name in committed if name not in fresh]
    if problems:
        pytest.fail(
            "terraform-provider-capy/docs/ is out of date: "
            + ", ".join(sorted(problems))
            + "; run scripts/terraform-docs"
        )


def test_every_resource_and_data_source_has_an_example() -> None:
    """tfplugindocs renders a page without an example silently; the examples are what
    readers copy, so each resource has resource.tf and import.sh, each data source
    data-source.tf (the names: internal/provider's resources and data sources)."""
    docs = PROVIDER / "docs"
    resources = sorted(page.stem for page in (docs / "resources").glob("*.md"))
    data_sources = sorted(page.stem for page in (docs / "data-sources").glob("*.md"))
    assert resources, f"no resource pages in {docs}/resources"
    examples = PROVIDER / "examples"
    missing = [str(examples / "provider" / "provider.tf")]
    missing += [
        str(examples / "resources" / f"capy_{name}" / file)
        for name in resources
        for file in ("resource.tf", "import.sh")
    ]
    missing += [
        str(examples / "data-sources" / f"capy_{name}" / "data-source.tf") for name in data_sources
    ]
    missing = [path for path in missing if not Path(path).is_file()]
    assert not missing, f"examples missing: {', '.join(missing)}"
