"""Fixtures of the Terraform provider's tests (``test_go.py``, ``test_acc_helper.py``), which
run ``go test`` in ``terraform-provider-capy/`` against real things:

- ``go_bin``, ``tofu_bin``: the Go toolchain (PATH) and OpenTofu (``.tools/bin/tofu``,
  built by ``scripts/install-tofu``, else PATH). In CI a missing one fails; elsewhere it skips.
- ``capy_serve`` (session): ``capy serve`` of this virtualenv, a process of its own on a
  free loopback port over an engine directory of the session, with worker threads, and an
  organization key with every scope minted as the README says (``capy keys create``).
  Stopped at the end (SIGTERM, then kill); ``log_tail()`` is what it printed.
- ``helper_env`` (session): the ``CAPY_TF_*`` variables of the contract of
  ``internal/provider/acc_helpers_test.go``, over that server and the session's
  PostgreSQL server (``debian_postgres``, ``tests/pg.py``) for ``acc_helper.py``;
  ``acceptance_env`` adds ``TF_ACC*`` and OpenTofu.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.pg import PostgresServer
from tests.server.conftest import free_socket

REPO = Path(__file__).resolve().parents[2]
PROVIDER_DIR = REPO / "terraform-provider-capy"
TOOLS_BIN = REPO / ".tools" / "bin"
TOFU = TOOLS_BIN / "tofu"
HELPER = Path(__file__).with_name("acc_helper.py")
# the virtualenv's ``capy`` (the one of this interpreter; PYTHONPATH reaches it too)
CAPY = [sys.executable, "-m", "pulumi_capy.cli"]
SERVE_WORKERS = 2  # restores of tests running in parallel do not wait on each other
START_TIMEOUT = 60.0
TOFU_BUILD_WAIT = 45 * 60.0  # a cold build on 2 busy cores took 25 min
STOP_TIMEOUT = 30.0
# uvicorn's access log line of a request answered without error
ANSWERED = re.compile(r'^INFO: +\S+ - ".*" [23]\d\d ')


def _missing(tool: str, how: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{tool} is missing in CI: {how}")
    # never reached in CI (CI=true fails above, and scripts/test installs it): only a
    # developer running pytest by hand without it gets this skip
    pytest.skip(f"{tool} is not installed here: {how}")


@pytest.fixture(scope="session")
def go_bin() -> Path:
    found = shutil.which("go")
    if found is None:
        _missing("go", "install Go 1.26 (https://go.dev/dl/) and put it on PATH")
    return Path(str(found))


def find_tofu() -> Path | None:
    """OpenTofu as ``scripts/install-tofu`` builds it (``.tools/bin``), else on PATH."""
    if TOFU.exists():
        return TOFU
    found = shutil.which("tofu")
    return Path(found) if found else None


def _wait_for_tofu_build() -> None:
    """scripts/test builds OpenTofu in the background while the first tests run: wait
    for its exit status (CAPY_TOFU_BUILD_STATUS), and fail with its log if it failed."""
    status = os.environ.get("CAPY_TOFU_BUILD_STATUS")
    if not status:
        return  # pytest run by hand: tofu is there or not
    path = Path(status)
    log = path.parent / "install-tofu.log"
    deadline = time.monotonic() + TOFU_BUILD_WAIT
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"scripts/install-tofu did not finish in {TOFU_BUILD_WAIT:.0f} s: {log}")
        time.sleep(1)
    code = path.read_text().strip()
    if code != "0":
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
        pytest.fail(f"scripts/install-tofu failed (exit {code}):\n{tail}")


@pytest.fixture(scope="session")
def tofu_bin() -> Path:
    _wait_for_tofu_build()
    found = find_tofu()
    if found is None:
        _missing("tofu", "run scripts/install-tofu (it builds OpenTofu into .tools/bin)")
    return Path(str(found))


@dataclass(frozen=True)
class CapyServe:
    """A running ``capy serve``: where it listens, a key with every scope, its engine
    directory and what it printed."""

    url: str
    key: str
    engine_dir: Path
    log: Path

    def __repr__(self) -> str:  # no key in an assertion's or a traceback's text
        return f"CapyServe(url={self.url!r}, engine_dir={str(self.engine_dir)!r})"

    def log_tail(self, lines: int = 60) -> str:
        """Its last lines, but for the access log's 2xx/3xx answers (what went wrong stays)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        kept = [line for line in text.splitlines() if not ANSWERED.search(line)]
        return "\n".join(kept[-lines:]).replace(self.key, "<api key>")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (running jobs finish), then kill when it does not exit in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)


def _die_with_parent() -> None:
    """Run in the child before exec: SIGTERM when pytest dies (a run killed from outside
    skips the fixture's teardown, and would leave the server running)."""
    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"capy serve exited {process.returncode}:\n{log.read_text(errors='replace')}"
            )
        try:
            if httpx.get(f"{url}/v1/openapi.json", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"capy serve did not answer within {START_TIMEOUT} s:\n"
                f"{log.read_text(errors='replace')}"
            )
        time.sleep(0.1)


def _capy_environment() -> dict[str, str]:
    """This environment without the caller's CAPY*/CAPYDB_* settings (a CAPY_STORE_URL or
    CAPY_BLOB_URL would move the server's metadata or blobs elsewhere)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CAPY_", "CAPYDB_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def capy_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CapyServe]:
    base = tmp_path_factory.mktemp("capy-serve")
    engine_dir, log = base / ".capy", base / "serve.log"
    env = _capy_environment()
    mint = [*CAPY, "--engine-dir", str(engine_dir), "keys", "create"]
    mint += ["--name", "terraform-acceptance", "--scopes", "all"]
    minted = subprocess.run(
        mint,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if minted.returncode != 0:  # stdout would be the key: only stderr is shown
        pytest.fail(f"capy keys create exited {minted.returncode}:\n{minted.stderr}")
    key = minted.stdout.strip()
    assert key.startswith("capy_live_"), "capy keys create printed no key"
    with free_socket() as probe:
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [*CAPY, "--engine-dir", str(engine_dir), "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(SERVE_WORKERS)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    try:
        _wait_until_serving(process, url, log)
        yield CapyServe(url=url, key=key, engine_dir=engine_dir, log=log)
    finally:
        _stop(process)


class Environment(dict[str, str]):
    """Environment variables whose repr names them without their values (secrets)."""

    def __repr__(self) -> str:
        return f"Environment({sorted(self)})"


@pytest.fixture(scope="session")
def helper_env(
    capy_serve: CapyServe,
    debian_postgres: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Environment:
    """Ours without any CAPY*, CAPYDB_* or TF_* variable of the caller (a
    TF_PLUGIN_CACHE_DIR or TF_CLI_CONFIG_FILE would change what tofu does), plus what
    ``acc_helper.py`` and the Go tests read of the contract (``CAPY_TF_*``)."""
    env = Environment(
        (name, value)
        for name, value in os.environ.items()
        if not name.startswith(("CAPY_", "CAPYDB_", "TF_"))
    )
    env.update(
        {
            "CAPY_TF_API_URL": capy_serve.url,
            "CAPY_TF_API_KEY": capy_serve.key,
            "CAPY_TF_HELPER": json.dumps([sys.executable, str(HELPER)]),
            "CAPY_TF_WORKDIR": str(tmp_path_factory.mktemp("terraform-work")),
            # read by acc_helper.py only
            "CAPY_TF_ENGINE_DIR": str(capy_serve.engine_dir),
            "CAPY_TF_POSTGRES_ADMIN_URL": debian_postgres.url("postgres"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture(scope="session")
def acceptance_env(helper_env: Environment, tofu_bin: Path) -> Environment:
    """The environment of ``go test`` for the acceptance tests: ``helper_env`` plus
    OpenTofu for terraform-plugin-testing. The Go build caches stay the caller's (GOCACHE,
    GOMODCACHE untouched): a second run builds nothing."""
    env = Environment(helper_env)
    env["PATH"] = os.pathsep.join([str(tofu_bin.parent), env.get("PATH", "")])
    cli_config = Path(env["CAPY_TF_WORKDIR"]) / "tofu.rc"  # no ~/.tofurc of the caller's
    cli_config.write_text("")
    env.update(
        {
            "TF_ACC": "1",
            "TF_ACC_TERRAFORM_PATH": str(tofu_bin),
            "TF_ACC_PROVIDER_NAMESPACE": "capy",
            "TF_ACC_PROVIDER_HOST": "registry.opentofu.org",
            "TF_CLI_CONFIG_FILE": str(cli_config),
            "TF_IN_AUTOMATION": "1",
            "CHECKPOINT_DISABLE": "1",
        }
    )
    return env
