"""Benchmark: restore points through OpenTofu and through the Pulumi package, in one run.

Both against the same ``capy serve`` on loopback (an engine directory in a temp
directory, a key minted with ``capy keys create``), over a SQLite project with one
verified backup made before the first round (not timed):

- tofu: ``--points`` (200) ``capy_restore_point`` resources pinned to that backup's
  ``backup_key``, with the provider built by ``scripts/build-terraform-provider`` and
  installed by a CLI config of its own (``dev_overrides``; no ``tofu init``);
- pulumi: as many ``RestorePoint`` resources of the Pulumi package, local file
  backend, in API mode (``CAPYDB_API_URL``/``CAPYDB_API_KEY``: the same server).

Each round times ``tofu apply`` / ``pulumi up``, ``tofu plan -refresh-only`` /
``pulumi refresh`` and ``tofu destroy`` / ``pulumi destroy``, alternating which tool goes
first (ABBA: tofu first in even rounds, pulumi in odd ones) against the drift of a shared
machine, and checks through the API that each apply made its points and each destroy
removed them. Prints the median seconds of each operation and the ratio tofu/pulumi.

It also counts, from the server's access log (uvicorn's, one line per answered
request), the HTTP calls of each refresh. The plugin framework calls a resource's Read
once per resource, each its own RPC (tofu runs -parallelism=10 of them at once), and has
no batch read; but one provider process serves a whole plan, so the provider lists a
project's restore points once and answers every Read of that plan from that one
listing (``internal/provider/listcache.go``): one list call per project, not one call
per restore point. The count is printed as "list calls per project during refresh".

Run: ``.venv/bin/python bench/terraform.py [--points 200] [--rounds 2]``
(``tofu`` and ``pulumi`` from ``.tools/bin`` or PATH: ``scripts/install-tofu``,
``scripts/install-pulumi``; Go to build the provider).
"""

from __future__ import annotations

import argparse
import compileall
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import httpx

from pulumi_capy.api.client import CapyClient
from pulumi_capy.api.models import CreateBackup, CreateProject

REPO = Path(__file__).resolve().parents[1]
CAPY = [sys.executable, "-m", "pulumi_capy.cli"]
PASSPHRASE = "bench-passphrase"  # noqa: S105 - a throwaway local state backend
OPERATIONS = ("apply", "refresh", "destroy")
PULUMI_STEP = {"apply": "up", "refresh": "refresh", "destroy": "destroy"}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0

TOFU_PROGRAM = """
terraform {
  required_providers {
    capy = { source = "capy/capy" }
  }
}

# api_url and api_key: CAPYDB_API_URL and CAPYDB_API_KEY
provider "capy" {}

variable "points" { type = number }
variable "project_id" { type = string }
variable "backup_key" { type = string }

resource "capy_restore_point" "point" {
  count      = var.points
  project_id = var.project_id
  label      = "tofu-${count.index}"
  backup_key = var.backup_key
}
"""

PULUMI_PROGRAM = """
import pulumi
import pulumi_capy as capy

config = pulumi.Config()
for index in range(int(config.require("points"))):
    capy.RestorePoint(
        f"point-{index}",
        project_id=config.require("projectId"),
        label=f"pulumi-{index}",
        backup_key=config.require("backupKey"),
    )
"""

# uvicorn's access log: INFO:     127.0.0.1:48416 - "GET /v1/projects HTTP/1.1" 200 OK
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3})')
AN_ID = re.compile(r"^[a-z]+_[0-9A-Za-z]+$")


def find_tool(name: str, how: str) -> str:
    local = REPO / ".tools" / "bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        sys.exit(f"{name} is not installed: {how}")
    return found


def clean_environment() -> dict[str, str]:
    """This environment without the caller's capy, Pulumi and Terraform settings (a
    CAPY_ENGINE_DIR, PULUMI_BACKEND_URL or TF_CLI_CONFIG_FILE would change what runs)."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CAPY_", "CAPYDB_", "PULUMI_", "TF_"))
    }


# ---------------------------------------------------------------- the server


@dataclass
class Server:
    """A running ``capy serve`` and its log (stdout and stderr: the access log too)."""

    url: str
    key: str
    log: Path
    process: subprocess.Popen[bytes]

    def __repr__(self) -> str:  # never the key
        return f"Server(url={self.url!r})"

    def log_size(self) -> int:
        return self.log.stat().st_size

    def calls_since(self, offset: int) -> list[tuple[str, str]]:
        """(method, path) of each request answered since ``offset`` of the log."""
        time.sleep(0.2)  # the last lines of a finished command, written unbuffered
        with self.log.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        return [
            (match["method"], match["path"].split("?")[0]) for match in ACCESS_LINE.finditer(text)
        ]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)


def start_server(work: Path) -> Server:
    engine_dir, log = work / "engine", work / "serve.log"
    env = clean_environment() | {"PYTHONUNBUFFERED": "1"}
    mint = [*CAPY, "--engine-dir", str(engine_dir), "keys", "create", "--name", "bench"]
    minted = subprocess.run(
        [*mint, "--scopes", "all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if minted.returncode != 0:  # stdout would be the key: only stderr is shown
        sys.exit(f"capy keys create exited {minted.returncode}:\n{minted.stderr}")
    key = minted.stdout.strip()
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    command = [*CAPY, "--engine-dir", str(engine_dir), "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--log-level", "info"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
        )
    server = Server(url=url, key=key, log=log, process=process)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            sys.exit(f"capy serve exited {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/v1/openapi.json", timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            sys.exit(f"capy serve did not answer within {START_TIMEOUT} s")
        time.sleep(0.1)


def seed(client: CapyClient, work: Path) -> tuple[str, str]:
    """A small SQLite app database, its project and one verified backup: (project, key)."""
    database = work / "app.db"
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany(
            "INSERT INTO customers (name) VALUES (?)", [(f"customer-{n}",) for n in range(100)]
        )
    created = client.create_project(
        CreateProject(name="bench", database_url=f"sqlite:///{database}")
    )
    if created.job is not None:
        client.wait_for_job(created.job.id)
    project_id = created.project.id
    job = client.wait_for_job(client.create_backup(project_id, CreateBackup()).id)
    result = job.result or {}
    if result.get("verify_job_id"):
        client.wait_for_job(str(result["verify_job_id"]))
    return project_id, str(result["backup_key"])


# ---------------------------------------------------------------- the two tools


def build_provider(env: dict[str, str]) -> Path:
    """The directory that holds ``terraform-provider-capy``, as the script builds it."""
    script = REPO / "scripts" / "build-terraform-provider"
    done = subprocess.run(
        [str(script)], env=env, capture_output=True, text=True, check=False, cwd=REPO
    )
    if done.returncode != 0:
        sys.exit(f"{script} exited {done.returncode}:\n{done.stderr[-4000:]}")
    directory = Path(done.stdout.strip())
    if not (directory / "terraform-provider-capy").exists():
        sys.exit(f"{script} printed {directory}, which holds no terraform-provider-capy")
    return directory


class Tool:
    """One tool's working directory and how it runs each operation."""

    def __init__(self, name: str, directory: Path, env: dict[str, str]) -> None:
        self.name = name
        self.directory = directory
        self.env = env

    def command(self, operation: str) -> list[str]:
        raise NotImplementedError

    def run(self, args: list[str], ok: tuple[int, ...] = (0,)) -> float:
        begin = time.perf_counter()
        done = subprocess.run(
            args, cwd=self.directory, env=self.env, capture_output=True, text=True, check=False
        )
        seconds = time.perf_counter() - begin
        if done.returncode not in ok:
            sys.exit(
                f"{self.name}: {' '.join(args[1:])} exited {done.returncode}\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return seconds

    def step(self, operation: str) -> float:
        return self.run(self.command(operation))


class Tofu(Tool):
    def __init__(self, tofu: str, work: Path, env: dict[str, str], provider_dir: Path) -> None:
        directory = work / "tofu"
        directory.mkdir()
        (directory / "main.tf").write_text(TOFU_PROGRAM)
        config = work / "tofu.rc"
        config.write_text(
            "provider_installation {\n"
            f'  dev_overrides {{ "capy/capy" = "{provider_dir}" }}\n'
            "  direct {}\n"
            "}\n"
        )
        super().__init__(
            "tofu",
            directory,
            env
            | {
                "TF_CLI_CONFIG_FILE": str(config),
                "TF_IN_AUTOMATION": "1",
                "CHECKPOINT_DISABLE": "1",
            },
        )
        self.tofu = tofu

    def command(self, operation: str) -> list[str]:
        common = ["-input=false", "-no-color"]
        if operation == "refresh":
            # exit 0: nothing drifted (2 would be a change: a failure here)
            return [self.tofu, "plan", "-refresh-only", "-detailed-exitcode", *common]
        return [self.tofu, operation, "-auto-approve", *common]


class Pulumi(Tool):
    def __init__(self, pulumi: str, work: Path, env: dict[str, str]) -> None:
        directory = work / "pulumi"
        directory.mkdir()
        (directory / "Pulumi.yaml").write_text(
            "name: bench-terraform\nruntime:\n  name: python\n  options:\n"
            f"    toolchain: pip\n    virtualenv: {sys.prefix}\n"
        )
        (directory / "__main__.py").write_text(PULUMI_PROGRAM)
        (work / "state").mkdir()
        super().__init__(
            "pulumi",
            directory,
            env
            | {
                "PULUMI_BACKEND_URL": f"file://{work / 'state'}",
                "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
                "PULUMI_SKIP_UPDATE_CHECK": "true",
                "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
                "PULUMI_HOME": str(work / "pulumi-home"),
            },
        )
        self.pulumi = pulumi

    def setup(self, config: dict[str, str]) -> None:
        self.run([self.pulumi, "stack", "init", "bench", "--non-interactive"])
        for key, value in config.items():
            self.run([self.pulumi, "config", "set", key, value, "--non-interactive"])

    def command(self, operation: str) -> list[str]:
        step = PULUMI_STEP[operation]
        return [self.pulumi, step, "--yes", "--skip-preview", "--non-interactive"]


# ---------------------------------------------------------------- the run


def route(path: str) -> str:
    """A path with its ids as ``{id}``: calls of one kind counted together."""
    return "/".join("{id}" if AN_ID.match(part) else part for part in path.split("/"))


def count_points(client: CapyClient, project_id: str, prefix: str) -> int:
    return sum(point.label.startswith(prefix) for point in client.list_restore_points(project_id))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--points", type=int, default=200, help="restore points per tool")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="work directory")
    args = parser.parse_args(argv)

    tofu_bin = find_tool("tofu", "run scripts/install-tofu")
    pulumi_bin = find_tool("pulumi", "run scripts/install-pulumi")
    work = Path(tempfile.mkdtemp(prefix="capy-bench-tf-", dir=args.dir))
    server: Server | None = None
    try:
        env = clean_environment()
        env["PATH"] = os.pathsep.join(
            [str(Path(pulumi_bin).parent), str(Path(sys.executable).parent), env["PATH"]]
        )
        provider_dir = build_provider(env)
        # the Pulumi program imports this checkout's package, compiled as pip would
        compileall.compile_dir(REPO / "pulumi_capy", quiet=1)
        env["PYTHONPATH"] = str(REPO)

        server = start_server(work)
        env |= {"CAPYDB_API_URL": server.url, "CAPYDB_API_KEY": server.key}
        with CapyClient(server.url, server.key) as client:
            project_id, backup_key = seed(client, work)
            tofu = Tofu(
                tofu_bin,
                work,
                env
                | {
                    "TF_VAR_points": str(args.points),
                    "TF_VAR_project_id": project_id,
                    "TF_VAR_backup_key": backup_key,
                },
                provider_dir,
            )
            pulumi = Pulumi(pulumi_bin, work, env)
            pulumi.setup(
                {"points": str(args.points), "projectId": project_id, "backupKey": backup_key}
            )
            tools: list[Tool] = [tofu, pulumi]
            prefix = {"tofu": "tofu-", "pulumi": "pulumi-"}
            samples: dict[tuple[str, str], list[float]] = {}
            refresh_calls: dict[str, list[Counter[str]]] = {"tofu": [], "pulumi": []}
            for round_ in range(args.rounds):
                order = tools if round_ % 2 == 0 else tools[::-1]
                for operation in OPERATIONS:
                    for tool in order:
                        offset = server.log_size()
                        seconds = tool.step(operation)
                        samples.setdefault((tool.name, operation), []).append(seconds)
                        calls = Counter(
                            f"{method} {route(path)}" for method, path in server.calls_since(offset)
                        )
                        if operation == "refresh":
                            refresh_calls[tool.name].append(calls)
                        made = count_points(client, project_id, prefix[tool.name])
                        want = 0 if operation == "destroy" else args.points
                        if made != want:
                            sys.exit(f"{tool.name} {operation}: {made} restore points, want {want}")
                        print(
                            f"round {round_ + 1} {tool.name:6} {operation:8} {seconds:7.2f}s "
                            f"({sum(calls.values())} HTTP calls)",
                            flush=True,
                        )

        print(
            f"\n{args.points} restore points per tool, one capy serve; median of "
            f"{args.rounds} round(s), tools alternated (ABBA)\n"
        )
        print(f"{'operation':30} {'tofu s':>8} {'pulumi s':>9} {'tofu/pulumi':>12}")
        for operation in OPERATIONS:
            tofu_s = statistics.median(samples[("tofu", operation)])
            pulumi_s = statistics.median(samples[("pulumi", operation)])
            label = f"{operation} / {PULUMI_STEP[operation]}"
            if operation == "refresh":
                label = "plan -refresh-only / refresh"
            print(f"{label:30} {tofu_s:8.2f} {pulumi_s:9.2f} {tofu_s / pulumi_s:11.2f}x")

        list_route = "GET /v1/projects/{id}/restore-points"
        for name in ("tofu", "pulumi"):
            last = refresh_calls[name][-1]
            print(f"\n{name} refresh, HTTP calls answered by the server ({sum(last.values())}):")
            for call, count in last.most_common():
                print(f"  {count:5}  {call}")
        lists = max(calls[list_route] for calls in refresh_calls["tofu"])
        print(f"\nlist calls per project during refresh: {lists} (restore points: {args.points})")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
