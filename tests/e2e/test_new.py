"""A stack of one's own, exactly as a user starts it (issue 16): `capy new quickstart DIR`
in a directory outside the repository, then `pulumi stack init` and `pulumi up`, which
create the project's own virtualenv in DIR and pip-install its requirements.txt there."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.e2e.conftest import CAPY, REPO, TIMEOUT, Stack, pulumi_env


def test_capy_new_quickstart_then_pulumi_up_outside_the_repository(
    tmp_path: Path, pulumi_bin: Path
) -> None:
    directory = tmp_path / "mystack"
    assert not directory.resolve().is_relative_to(REPO)
    # a user's shell: the Pulumi CLI on PATH, not this repository's .venv
    env = pulumi_env(tmp_path)
    created = subprocess.run(
        [CAPY, "new", "quickstart", str(directory)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert "pulumi stack init" in created.stdout
    assert "pulumi up" in created.stdout

    stack = Stack(directory=directory, env=env, pulumi=pulumi_bin, name="dev")
    stack.run("stack", "init", "dev")
    stack.up()
    outputs = stack.outputs()

    assert outputs["restore_state"] == "completed"
    assert outputs["restore_point_state"] == "active"
    assert outputs["preview_row_counts"] == outputs["app_row_counts"]
    assert outputs["preview_row_counts"] == {"customers": 4, "orders": 12}
    assert Path(outputs["preview_path"]).is_relative_to(directory)

    # the program ran in DIR's own virtualenv, with this package installed into it
    python = directory / "venv" / "bin" / "python"
    assert python.exists(), "pulumi did not create the virtualenv inside DIR"
    where = subprocess.run(
        [str(python), "-c", "import pulumi_capy; print(pulumi_capy.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(directory / "venv"), where
