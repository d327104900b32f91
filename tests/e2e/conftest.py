"""End-to-end: the real `pulumi` CLI runs the examples against a local state backend.

`pulumi` comes from `scripts/install-pulumi` (`.tools/bin`) or PATH. In CI a
missing `pulumi` fails these tests (the README's test command builds it);
elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
PASSPHRASE = "e2e-passphrase"
TIMEOUT = 600
WINDOW_TIMEOUT = 60.0
CAPY = str(REPO / ".venv" / "bin" / "capy")


def find_pulumi() -> Path | None:
    local = TOOLS_BIN / "pulumi"
    if local.exists():
        return local
    found = shutil.which("pulumi")
    return Path(found) if found else None


@pytest.fixture(scope="session")
def pulumi_bin() -> Path:
    found = find_pulumi()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("pulumi is missing in CI: scripts/install-pulumi must build it")
        # never reached in CI (CI=true fails above, and scripts/test builds pulumi): only
        # a developer running pytest by hand before scripts/install-pulumi gets this skip
        pytest.skip("pulumi is not installed here: run scripts/install-pulumi")
    return found


@dataclass
class Stack:
    """One example project copied to a temp dir, with its own state backend."""

    directory: Path
    env: dict[str, str]
    pulumi: Path
    name: str = "e2e"
    log: list[str] = field(default_factory=list)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.pulumi), *args, "--non-interactive"],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        # what pulumi printed (not the arguments, which may carry a secret being set)
        self.log.append(f"$ pulumi {args[0]} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
        if check and done.returncode != 0:
            raise AssertionError(
                f"pulumi {' '.join(args)} exited {done.returncode}\n"
                f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            )
        return done

    def up(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("up", "--yes", "--skip-preview", *args, check=check)

    def preview(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("preview", *args, check=check)

    def config(self, key: str, value: str, *, secret: bool = False) -> None:
        self.run("config", "set", *(["--secret"] if secret else []), key, value)

    def outputs(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(
            self.run("stack", "output", "--json", "--show-secrets").stdout
        )
        return data

    def export(self) -> str:
        return self.run("stack", "export").stdout

    @property
    def engine_dir(self) -> Path:
        return self.directory / ".capy"


def make_stack(example: str, tmp_path: Path, pulumi: Path) -> Stack:
    directory = tmp_path / example
    shutil.copytree(
        REPO / "examples" / example,
        directory,
        ignore=shutil.ignore_patterns(".capy", "app.db*", "__pycache__", "Pulumi.*.yaml"),
    )
    manifest = directory / "Pulumi.yaml"
    manifest.write_text(
        manifest.read_text().replace("virtualenv: ../../.venv", f"virtualenv: {REPO / '.venv'}")
    )
    env = pulumi_env(tmp_path, REPO / ".venv" / "bin")
    stack = Stack(directory=directory, env=env, pulumi=pulumi)
    stack.run("stack", "init", stack.name)
    return stack


def pulumi_env(tmp_path: Path, *path: Path) -> dict[str, str]:
    """The environment of a `pulumi` run with its own file state backend and home in
    ``tmp_path``: no CAPY_/PULUMI_ variable of ours leaks in; ``path`` (after the Pulumi
    CLI's directory) goes before PATH."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CAPY_", "CAPYDB_", "PULUMI_"))
    }
    env.update(
        {
            "PATH": os.pathsep.join([str(TOOLS_BIN), *map(str, path), env["PATH"]]),
            "PULUMI_BACKEND_URL": f"file://{state}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_HOME": str(tmp_path / "pulumi-home"),
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        }
    )
    return env


@pytest.fixture
def quickstart(tmp_path: Path, pulumi_bin: Path) -> Stack:
    return make_stack("quickstart", tmp_path, pulumi_bin)


@pytest.fixture
def pre_migration(tmp_path: Path, pulumi_bin: Path) -> Stack:
    return make_stack("pre-migration", tmp_path, pulumi_bin)


@pytest.fixture
def hosted(tmp_path: Path, pulumi_bin: Path) -> Stack:
    return make_stack("hosted", tmp_path, pulumi_bin)


@pytest.fixture
def pitr(tmp_path: Path, pulumi_bin: Path) -> Stack:
    return make_stack("pitr", tmp_path, pulumi_bin)


@contextmanager
def worker_process(stack: Stack, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`capy worker` on the stack's engine directory (CAPY_ENGINE_DIR of its env), stopped
    at the end whatever happened: SIGTERM first (it exits 0 once its jobs end), else kill."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [CAPY, "worker", "--poll-interval", "0.05"],
            cwd=stack.directory,
            env={**stack.env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGUSR1)  # its threads' stacks, into the log
                time.sleep(1)
                process.kill()
                process.wait(30)


def pitr_status(stack: Stack, project_id: str) -> dict[str, Any]:
    done = subprocess.run(
        [CAPY, "pitr", "status", "--project", project_id, "--json"],
        cwd=stack.directory,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"capy pitr status: {done.stdout}\n{done.stderr}"
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def wait_for_window(
    stack: Stack, project_id: str, log: Path, covering: datetime | None = None
) -> dict[str, Any]:
    """The status once the window is open (and its end reaches ``covering``, if given)."""
    deadline = time.monotonic() + WINDOW_TIMEOUT
    while True:
        status = pitr_status(stack, project_id)
        start, end = status["window_start"], status["window_end"]
        if start is not None and (
            covering is None or (end is not None and datetime.fromisoformat(end) >= covering)
        ):
            return status
        assert time.monotonic() < deadline, (
            f"the window never {'opened' if covering is None else f'reached {covering}'}: "
            f"{status}\n--- worker\n{log.read_text()}"
        )
        time.sleep(0.2)
