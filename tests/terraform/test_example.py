"""examples/terraform works as its README says: `run` starts its own `capy serve` on
loopback, applies main.tf with the real `tofu` and the provider built from this
checkout, a second run plans no change, and `run destroy` removes everything; the key
it mints appears in no output and no file it leaves.

The example runs with `--workdir` in a temp directory (its state, engine and app.db
there), never in the checkout.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from tests.terraform.conftest import REPO

RUN = REPO / "examples" / "terraform" / "run"
RUN_TIMEOUT = 15 * 60  # the provider's first build on 2 cores included


def _run(workdir: Path, tofu: Path, go: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TOFU": str(tofu),
        "CAPY_VENV": str(Path(sys.executable).parent.parent),
        "PATH": f"{go.parent}:{os.environ['PATH']}",
    }
    return subprocess.run(
        [str(RUN), "--workdir", str(workdir), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def _outputs(workdir: Path, tofu: Path) -> dict[str, object]:
    shown = subprocess.run(
        [str(tofu), "output", "-json"],
        cwd=workdir,
        env={**os.environ, "TF_CLI_CONFIG_FILE": str(workdir / ".tofu" / "cli.tfrc")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {name: value["value"] for name, value in json.loads(shown.stdout).items()}


def _count(path: str, table: str) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        # table is one of two literals of this test
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def test_the_terraform_example_applies_plans_no_change_and_destroys(
    tmp_path: Path, go_bin: Path, tofu_bin: Path
) -> None:
    # go_bin, tofu_bin: a missing one fails in CI, skips elsewhere (conftest.py)
    workdir = tmp_path / "example"
    runs = []

    applied = _run(workdir, tofu_bin, go_bin)
    runs.append(applied)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Apply complete! Resources: 3 added" in applied.stdout
    outputs = _outputs(workdir, tofu_bin)
    assert outputs["restore_point_state"] == "active"
    assert outputs["restore_state"] == "completed"
    assert outputs["preview_state"] == "ready"
    preview = str(outputs["preview_path"])
    assert preview.startswith(str(workdir / ".capy")), preview
    assert (_count(preview, "customers"), _count(preview, "orders")) == (4, 12)

    planned = _run(workdir, tofu_bin, go_bin, "plan", "-detailed-exitcode")
    runs.append(planned)
    assert planned.returncode == 0, planned.stdout + planned.stderr  # 2 would be a diff
    assert "No changes." in planned.stdout

    for private in ("terraform.tfstate", ".tofu/cli.tfrc", ".tofu/serve.log", "app.db"):
        mode = stat.S_IMODE((workdir / private).stat().st_mode)
        assert mode == 0o600, f"{private} is {oct(mode)}"

    destroyed = _run(workdir, tofu_bin, go_bin, "destroy")
    runs.append(destroyed)
    assert destroyed.returncode == 0, destroyed.stdout + destroyed.stderr
    assert "Destroy complete! Resources: 3 destroyed." in destroyed.stdout
    state = json.loads((workdir / "terraform.tfstate").read_text())
    assert state["resources"] == []

    # the keys it minted (one a run) are nowhere in what it printed or left behind
    for run in runs:
        assert "capy_live_" not in run.stdout + run.stderr
    left = [workdir / "terraform.tfstate", workdir / "terraform.tfstate.backup"]
    left += sorted((workdir / ".tofu").iterdir())
    for path in left:
        assert "capy_live_" not in path.read_text(errors="replace"), path
