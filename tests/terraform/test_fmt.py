"""The HCL of the example and of the provider's documentation examples is as
``tofu fmt`` writes it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HCL_DIRS = ("examples/terraform", "terraform-provider-capy/examples")


def test_hcl_is_formatted(tofu_bin: Path) -> None:
    # tofu_bin: a missing one fails in CI, skips elsewhere (conftest.py)
    done = subprocess.run(
        [str(tofu_bin), "fmt", "-check", "-diff", "-recursive", *HCL_DIRS],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TF_CLI_CONFIG_FILE": "/dev/null"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        how = f"tofu fmt -recursive {' '.join(HCL_DIRS)}"
        pytest.fail(f"not formatted (run: {how}):\n{done.stdout}{done.stderr}")
