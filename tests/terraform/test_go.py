"""The Go tests of ``terraform-provider-capy``, run by the README's test command: its unit
tests, then its acceptance tests (terraform-plugin-testing driving the real ``tofu``)
against a real ``capy serve`` on loopback with real SQLite and PostgreSQL projects.

An acceptance run must run at least one ``TestAcc`` test and pass it (an empty run, or
one where every test skipped, fails here), skip none in CI, and print neither the API
key nor the PostgreSQL password: the provider marks them sensitive, so a leak in tofu's
or the provider's output fails the run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from tests.pg import PostgresServer
from tests.terraform.conftest import PROVIDER_DIR, CapyServe, Environment

UNIT_TIMEOUT = 20 * 60  # a cold build of the provider's modules on 2 cores included
ACCEPTANCE_TIMEOUT = 35 * 60  # go test's own -timeout is 30m
TAIL_LINES = 150
# a top-level test's verdict in `go test -v` output
VERDICT = re.compile(r"^--- (PASS|FAIL|SKIP): (\S+)", re.MULTILINE)


def _redacted(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return text


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _go_test(
    go: Path, arguments: list[str], env: Mapping[str, str], timeout: float
) -> tuple[int, str]:
    """``go test`` in the provider's module: its exit code and its output (stderr folded
    into stdout, in order)."""
    if not (PROVIDER_DIR / "go.mod").is_file():
        pytest.fail(f"{PROVIDER_DIR} holds no Go module (go.mod)")
    # a session of its own: on a timeout the test binary and tofu go with `go test`
    process = subprocess.Popen(
        [str(go), "test", *arguments],
        cwd=PROVIDER_DIR,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return -1, f"{output}\n(go test killed after {timeout} s)"
    finally:
        if process.poll() is None:  # interrupted (Ctrl-C): nothing of it stays behind
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, output


def _go_environment() -> dict[str, str]:
    """Ours without the caller's CAPY*, CAPYDB_* and TF_* variables: no TF_ACC, so the
    acceptance tests skip themselves; the Go caches stay shared."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CAPY_", "CAPYDB_", "TF_"))
    }


def test_go_unit_tests(go_bin: Path) -> None:
    # TestAcc* need tofu and the server, and run in the acceptance test below; skipped
    # here so that a plan-only resource.UnitTest named TestAcc… does not run without them
    arguments = ["-count=1", "-skip", "^TestAcc", "./..."]
    code, output = _go_test(go_bin, arguments, _go_environment(), UNIT_TIMEOUT)
    if code != 0:
        pytest.fail(f"go test ./... exited {code}:\n{_tail(output)}")
    if not re.search(r"^ok\s", output, re.MULTILINE):
        pytest.fail(f"go test ./... tested no package:\n{_tail(output)}")


def _leaked(output: str, secrets: Mapping[str, str]) -> list[str]:
    """The names of the secrets that occur in ``output``."""
    return [name for name, secret in secrets.items() if secret in output]


def test_go_acceptance_tests(
    go_bin: Path,
    acceptance_env: Environment,
    capy_serve: CapyServe,
    debian_postgres: PostgresServer,
) -> None:
    # pytest.fail, not assert, wherever the output is compared: an assertion's
    # introspection would print the compared strings, secrets included
    secrets = {"the API key": capy_serve.key, "the PostgreSQL password": debian_postgres.password}
    arguments = ["-count=1", "-timeout", "30m", "-run", "TestAcc", "-v", "./internal/provider/"]
    code, output = _go_test(go_bin, arguments, acceptance_env, ACCEPTANCE_TIMEOUT)
    context = _redacted(
        f"{_tail(output)}\n--- capy serve (last lines)\n{capy_serve.log_tail()}",
        secrets.values(),
    )

    # anywhere in the output, not just its tail (the failure says which, never what)
    leaked = _leaked(output, secrets)
    if leaked:
        verb = "appears" if len(leaked) == 1 else "appear"
        pytest.fail(f"{' and '.join(leaked)} {verb} in the go test output:\n{context}")
    if code != 0:
        pytest.fail(f"go test -run TestAcc exited {code}:\n{context}")

    verdicts = [
        (verdict, name) for verdict, name in VERDICT.findall(output) if name.startswith("TestAcc")
    ]
    passed = [name for verdict, name in verdicts if verdict == "PASS"]
    skipped = [name for verdict, name in verdicts if verdict == "SKIP"]
    if not passed:
        pytest.fail(f"no TestAcc test ran and passed:\n{context}")
    if skipped and os.environ.get("CI"):
        # in CI every tool and service is there: a skipped acceptance test hides a gap
        pytest.fail(f"acceptance tests skipped in CI: {', '.join(skipped)}\n{context}")
    print(f"acceptance tests passed: {', '.join(passed)}; skipped: {', '.join(skipped) or 'none'}")
