"""Benchmark: the capy provider's own cost under the real ``pulumi``, in one run.

Two stacks of the same size, on one local file state backend:

- no-op: ``--resources`` dynamic resources of a provider whose ``create``, ``read``
  and ``delete`` do nothing (Pulumi's own cost of a dynamic resource), in an
  importable module like capy's (pickled by reference, not by value);
- capy: as many ``RestorePoint`` resources pinned to one backup (``backup_key``) of a
  small SQLite database, on the embedded engine (made before the first round, outside
  Pulumi: the project and its backup are not timed).

Each round times ``pulumi up``, ``pulumi refresh`` and ``pulumi destroy`` of both
stacks, alternating their order (ABBA: no-op first in even rounds, capy first in odd
ones) against drift of a shared, noisy machine. Prints the median seconds of each
step and the capy/no-op ratio (target <= 1.5x for each).

Both are measured as installed: pip compiles a package's bytecode when it installs it,
so the capy package and the no-op module are compiled before the first round (an
editable install under ``PYTHONDONTWRITEBYTECODE`` would otherwise compile capy's
modules again in every process Pulumi starts, ~0.1-0.2 s each, which no user pays).

Run: ``.venv/bin/python bench/provider_overhead.py [--resources 200] [--rounds 2]``
(``pulumi`` from ``.tools/bin`` or PATH).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

from pulumi_capy.api.models import CreateBackup, CreateProject
from pulumi_capy.engine import Engine

REPO = Path(__file__).resolve().parents[1]
PASSPHRASE = "bench-passphrase"  # noqa: S105 - a throwaway local state backend
STEPS = ("up", "refresh", "destroy")
TARGET = 1.5

# The no-op provider lives in a module of its own (on the stacks' PYTHONPATH), so that
# Pulumi pickles it by reference, as it does capy's providers (a class defined in
# ``__main__`` is pickled by value, which makes every call of the baseline dearer).
NOOP_MODULE = """
from pulumi.dynamic import CreateResult, ReadResult, Resource, ResourceProvider


class NoopProvider(ResourceProvider):
    def create(self, props):
        return CreateResult("noop", dict(props))

    def read(self, id_, props):
        return ReadResult(id_, dict(props))

    def delete(self, _id, _props):
        pass


class Noop(Resource):
    def __init__(self, name, index, props):
        super().__init__(NoopProvider(), name, {"index": index, **props})
"""

NOOP_PROGRAM = """
import json

import pulumi
from bench_noop import Noop

config = pulumi.Config()
count = int(config.require("count"))
props = json.loads(config.get("props") or "{}")
for index in range(count):
    Noop(f"noop-{index}", index, props)
"""

CAPY_PROGRAM = """
import pulumi
import pulumi_capy as capy

config = pulumi.Config()
count = int(config.require("count"))
for index in range(count):
    capy.RestorePoint(
        f"point-{index}",
        project_id=config.require("projectId"),
        label=f"point-{index}",
        backup_key=config.require("backupKey"),
    )
"""


# what a RestorePoint's state holds besides its id, in shape (``--fat-noop``)
FAT_PROPS: dict[str, object] = {
    "project_id": "prj_0123456789abcdef",
    "label": "point-0",
    "kind": "backup",
    "pitr_time": None,
    "note": None,
    "adopt_id": None,
    "restore_point_id": "rp_0123456789abcdef",
    "organization_id": "org_default",
    "backup_id": "bkp_0123456789abcdef",
    "state": "active",
    "created_by_actor_id": "embedded",
    "created_by_actor_kind": "engine",
    "created_at": "2026-12-02T01:00:00.000000Z",
    "updated_at": "2026-12-02T01:00:00.000000Z",
    "requested": {"project_id": "prj_0123456789abcdef", "label": "point-0", "kind": "backup"},
}


def find_pulumi() -> str:
    local = REPO / ".tools" / "bin" / "pulumi"
    if local.exists():
        return str(local)
    found = shutil.which("pulumi")
    if found is None:
        sys.exit("pulumi is not installed: run scripts/install-pulumi")
    return found


class Stack:
    def __init__(self, name: str, directory: Path, env: dict[str, str], pulumi: str) -> None:
        self.name = name
        self.directory = directory
        self.env = env
        self.pulumi = pulumi

    def run(self, *args: str) -> float:
        begin = time.perf_counter()
        done = subprocess.run(
            [self.pulumi, *args, "--non-interactive"],
            cwd=self.directory,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - begin
        if done.returncode != 0:
            sys.exit(
                f"{self.name}: pulumi {' '.join(args)} exited {done.returncode}\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return seconds

    def step(self, name: str) -> float:
        return self.run(name, "--yes", "--skip-preview")


def make_stack(name: str, work: Path, program: str, config: dict[str, str], pulumi: str) -> Stack:
    directory = work / name
    directory.mkdir()
    (directory / "Pulumi.yaml").write_text(
        f"name: bench-{name}\nruntime:\n  name: python\n  options:\n"
        f"    toolchain: pip\n    virtualenv: {REPO / '.venv'}\n"
    )
    (directory / "__main__.py").write_text(program)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CAPY_", "CAPYDB_", "PULUMI_"))
    }
    env.update(
        {
            "PATH": os.pathsep.join(
                [str(Path(pulumi).parent), str(REPO / ".venv" / "bin"), env["PATH"]]
            ),
            "PULUMI_BACKEND_URL": f"file://{work / 'state'}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_HOME": str(work / "pulumi-home"),
            "CAPY_ENGINE_DIR": str(work / "engine"),
            "PYTHONPATH": str(work / "lib"),
        }
    )
    stack = Stack(name, directory, env, pulumi)
    stack.run("stack", "init", "bench")
    for key, value in config.items():
        stack.run("config", "set", key, value)
    return stack


def seed_engine(work: Path) -> tuple[str, str]:
    """A small SQLite app database, its project and one verified backup: (project, key)."""
    database = work / "app.db"
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany(
            "INSERT INTO customers (name) VALUES (?)", [(f"customer-{n}",) for n in range(100)]
        )
    with Engine(work / "engine") as engine:
        project = engine.create_project(
            CreateProject(name="bench", database_url=f"sqlite:///{database}")
        ).project
        job = engine.wait_for_job(engine.create_backup(project.id, CreateBackup()).id)
        result = job.result or {}
        if result.get("verify_job_id"):
            engine.wait_for_job(str(result["verify_job_id"]))
        return project.id, str(result["backup_key"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None, help="work directory")
    parser.add_argument(
        "--fat-noop",
        action="store_true",
        help="the no-op resources carry as many properties as a RestorePoint's outputs "
        "(Pulumi's own cost of the state's size, apart from the provider's)",
    )
    args = parser.parse_args(argv)

    pulumi = find_pulumi()
    work = Path(tempfile.mkdtemp(prefix="capy-bench-", dir=args.dir))
    try:
        (work / "state").mkdir()
        (work / "lib").mkdir()
        (work / "lib" / "bench_noop.py").write_text(NOOP_MODULE)
        for package in (REPO / "pulumi_capy", work / "lib"):
            compileall.compile_dir(package, quiet=1)
        project_id, backup_key = seed_engine(work)
        count = str(args.resources)
        noop_config = {"count": count}
        if args.fat_noop:
            noop_config["props"] = json.dumps(FAT_PROPS | {"backup_key": backup_key})
        stacks = [
            make_stack("noop", work, NOOP_PROGRAM, noop_config, pulumi),
            make_stack(
                "capy",
                work,
                CAPY_PROGRAM,
                {"count": count, "projectId": project_id, "backupKey": backup_key},
                pulumi,
            ),
        ]
        samples: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds):
            order = stacks if round_ % 2 == 0 else stacks[::-1]
            for step in STEPS:
                for stack in order:
                    seconds = stack.step(step)
                    samples.setdefault((stack.name, step), []).append(seconds)
                    print(f"round {round_ + 1} {stack.name:5} {step:8} {seconds:6.2f}s", flush=True)

        print(
            f"\n{args.resources} resources per stack; median of {args.rounds} round(s), "
            "stacks alternated (ABBA)\n"
        )
        print(f"{'step':10} {'no-op s':>8} {'capy s':>8} {'capy/no-op':>11}")
        for step in STEPS:
            noop = statistics.median(samples[("noop", step)])
            capy = statistics.median(samples[("capy", step)])
            print(f"{step:10} {noop:8.2f} {capy:8.2f} {capy / noop:10.2f}x  (target <= {TARGET}x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
