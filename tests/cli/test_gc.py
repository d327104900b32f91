"""``capy gc``: the blobs no record refers to go; everything referred to, everything a
busy project holds and everything young stays — on a real engine, with a running
SQLite PITR setup (its snapshot and archived log) among the blobs."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

from pulumi_capy.engine import Engine
from tests.cli.conftest import Capy
from tests.cli.test_pitr_sqlite import Served, commit, served  # noqa: F401
from tests.engine.conftest import table_contents

DAY = 24 * 3600


def _age(path: Path, seconds: float = 2 * DAY) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _age_all(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            _age(path)


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _orphans(blobs: Path, project_id: str, template: Path) -> dict[str, int]:
    """Garbage of every kind, aged; ``{relative path: bytes}``."""
    made: dict[str, Path] = {}
    lost = blobs / "projects" / project_id / "backups" / "bkp_00000000000000aa.sqlite.zst"
    shutil.copy(template, lost)  # a committed blob its job never recorded
    shutil.copy(template.with_name(template.name + ".manifest.json"),
                lost.with_name(lost.name + ".manifest.json"))  # fmt: skip
    made["lost"] = lost
    made["lost manifest"] = lost.with_name(lost.name + ".manifest.json")
    torn = blobs / "projects" / project_id / "backups" / "bkp_00000000000000bb.sqlite.zst.tmp"
    torn.write_bytes(b"x" * 1000)
    made["torn"] = torn
    alone = blobs / "projects" / project_id / "backups" / "bkp_00000000000000cc.zst.manifest.json"
    alone.write_text("{}")
    made["alone"] = alone
    gone = blobs / "projects" / "prj_00000000000000dd" / "wal" / "000000010000000000000001.zst"
    gone.parent.mkdir(parents=True)
    gone.write_bytes(b"y" * 777)
    made["gone"] = gone
    for path in made.values():
        _age(path)
    return {p.relative_to(blobs).as_posix(): p.stat().st_size for p in made.values()}


def test_gc_dry_run_then_remove(capy: Capy, project_id: str, app_db: Path) -> None:
    point = capy.json("restore-points", "create", "--project", project_id, "--label", "pin")
    free = capy.json("backups", "create", "--project", project_id, "--label", "free", "--wait")
    blobs = capy.engine_dir / "blobs"
    template = blobs / point["backup_key"]
    _age_all(blobs)
    kept = _files(blobs)
    garbage = _orphans(blobs, project_id, template)
    unknown = blobs / "elsewhere" / "not-ours.bin"  # outside the layout: never touched
    unknown.parent.mkdir()
    unknown.write_bytes(b"z")
    _age(unknown)
    young = blobs / "projects" / project_id / "backups" / "bkp_00000000000000ee.sqlite.zst"
    young.write_bytes(b"fresh")  # a blob whose job is about to record it

    dry = capy.json("gc", "--dry-run")
    assert dry["dry_run"] is True
    assert {g["path"]: g["size_bytes"] for g in dry["would_remove"]} == garbage
    assert dry["total_bytes"] == sum(garbage.values())
    assert dry["kept_young_files"] == 1
    assert _files(blobs) >= kept | set(garbage)  # nothing removed
    human = capy("gc", "--dry-run").stdout
    assert f"would remove {len(garbage)} file(s), {sum(garbage.values())} bytes" in human
    assert "project prj_00000000000000dd is gone" in human

    done = capy.json("gc")
    assert {g["path"] for g in done["removed"]} == set(garbage)
    left = _files(blobs)
    assert left == kept | {"elsewhere/not-ours.bin", young.relative_to(blobs).as_posix()}
    assert capy.json("gc", "--dry-run")["would_remove"] == []
    assert "no garbage" in capy("gc").stdout

    # what is referred to still works: the pinned backup and the free one restore
    for key in (point["backup_key"], free["result"]["backup_key"]):
        restored = capy.json("restore", "--project", project_id, "--backup-key", key, "--wait")
        assert restored["state"] == "completed"
    assert capy.json("backups", "verify", "--project", project_id, "free", "--json")


def test_gc_skips_a_project_with_jobs_in_flight(capy: Capy, project_id: str) -> None:
    point = capy.json("restore-points", "create", "--project", project_id, "--label", "pin")
    blobs = capy.engine_dir / "blobs"
    garbage = _orphans(blobs, project_id, blobs / point["backup_key"])
    pending = capy.json("backups", "create", "--project", project_id)  # not run yet
    report = capy.json("gc")
    assert report["skipped_busy_projects"] == [project_id]
    # only the gone project's blob went; the busy project's are all there
    assert [g["path"] for g in report["removed"]] == [
        path for path in garbage if "prj_00000000000000dd" in path
    ]
    assert all((blobs / path).exists() for path in garbage if project_id in path)
    assert "skipped project(s) with jobs pending or running" in capy("gc", "--dry-run").stderr

    done = capy.json("jobs", "get", "--job-id", pending["id"], "--wait")
    capy("jobs", "get", "--job-id", done["result"]["verify_job_id"], "--wait")  # idle now
    assert len(capy.json("gc")["removed"]) == len(garbage) - 1


def test_gc_needs_an_engine(capy: Capy) -> None:
    result = capy("gc", code=1)
    assert "no capy engine in" in result.stderr
    assert not capy.engine_dir.exists()


def test_gc_keeps_a_running_pitr_setups_blobs(served: Served) -> None:  # noqa: F811
    served.turn_on()
    moment: datetime = commit(served.app_db, "first")
    served.wait_covered(moment)
    capy = served.capy
    blobs = capy.engine_dir / "blobs"
    pitr_files = {p for p in _files(blobs) if "/base/" in p or "/wal/" in p}
    assert any("/base/" in p for p in pitr_files)
    assert any("/wal/" in p for p in pitr_files)
    served.worker.halt()  # no job in flight, the log no longer shipped: all of it is at rest
    _age_all(blobs)
    with Engine(capy.engine_dir) as engine:
        assert engine.list_jobs(served.project_id, 100)
    stray = blobs / "projects" / served.project_id / "wal" / "stray.zst"
    stray.write_bytes(b"s" * 10)  # so that the project is seen to be examined
    _age(stray)
    report = json.loads(capy("gc", "--json").stdout)
    assert report["skipped_busy_projects"] == []
    assert [g["path"] for g in report["removed"]] == [stray.relative_to(blobs).as_posix()]
    assert _files(blobs) >= pitr_files
    before = table_contents(served.app_db)
    # the window still restores
    served.worker.start()
    done = served.json(
        "restore", "--project", served.project_id, "--restore-time", moment.isoformat(),
        "--wait", "--timeout", "1",
    )  # fmt: skip
    assert done["state"] == "completed"
    assert table_contents(served.app_db) == before
