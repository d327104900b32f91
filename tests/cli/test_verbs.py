"""The verbs of issue 16: delete, show, get, names for ids — through the real CLI, on a
real embedded engine and against a real ``capy serve`` on loopback."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from pulumi_capy.api.models import SCOPES, CreateApiKey
from pulumi_capy.engine import Engine
from pulumi_capy.server import create_app
from tests.cli.conftest import Capy
from tests.engine.conftest import make_app_db, sqlite_url
from tests.server.conftest import serve


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("capy: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _backup(capy: Capy, project: str, label: str) -> str:
    job = capy.json("backups", "create", "--project", project, "--label", label, "--wait")
    return str(job["result"]["backup_key"])


# ---------------------------------------------------------------- names for ids


def test_a_project_is_addressed_by_its_name(capy: Capy, project_id: str) -> None:
    key = _backup(capy, "shop", "by-name")  # the fixture's project is named shop
    assert [b["backup_key"] for b in capy.json("backups", "list", "--project", "shop")] == [key]
    assert capy.json("jobs", "list", "--project", "shop")[0]["project_id"] == project_id


def test_an_unknown_project_name_lists_the_candidates(capy: Capy, project_id: str) -> None:
    result = capy("backups", "list", "--project", "shopp", code=1)
    line = _one_error_line(result.stderr)
    assert "no project has the id or name 'shopp'" in line
    assert f"shop ({project_id})" in line
    assert result.stdout == ""


def test_a_restore_point_is_addressed_by_its_label(
    capy: Capy, project_id: str, tmp_path: Path
) -> None:
    point = capy.json("restore-points", "create", "--project", "shop", "--label", "before")
    job = capy.json("restore", "--project", "shop", "--restore-point", "before", "--wait")
    assert job["state"] == "completed"
    assert job["result"]["backup_key"] == point["backup_key"]

    missing = capy("restore", "--project", "shop", "--restore-point", "befor", "--wait", code=1)
    line = _one_error_line(missing.stderr)
    assert "no restore point has the id or name 'befor'" in line
    assert f"before ({point['id']})" in line

    deleted = capy.json("restore-points", "delete", "--project", "shop", "--id", "before")
    assert deleted == {"deleted": True, "id": point["id"]}


def test_two_restore_points_of_one_label_are_ambiguous(capy: Capy, project_id: str) -> None:
    key = _backup(capy, project_id, "b")
    ids = [
        capy.json(
            "restore-points", "create", "--project", project_id, "--label", "twice",
            "--backup-key", key, "--allow-duplicate",
        )["id"]
        for _ in range(2)
    ]  # fmt: skip
    result = capy("restore-points", "delete", "--project", project_id, "--id", "twice", code=1)
    line = _one_error_line(result.stderr)
    assert "2 restore points are named 'twice'" in line
    assert all(ident in line for ident in ids)
    assert len(capy.json("restore-points", "list", "--project", project_id)) == 2


def test_a_preview_and_a_key_s_project_by_name(capy: Capy, project_id: str) -> None:
    point = capy.json("restore-points", "create", "--project", "shop", "--label", "p")
    capy("restore", "--project", "shop", "--restore-point", "p", "--preview-name", "qa", "--wait")
    again = capy.json(
        "restore", "--project", "shop", "--restore-point", "p", "--target-kind", "preview",
        "--preview-id", "qa", "--wait",
    )  # fmt: skip
    [preview] = capy.json("previews", "list", "--project", project_id)
    assert again["preview_database_id"] == preview["id"]
    assert again["result"]["backup_key"] == point["backup_key"]

    key = capy.json("keys", "create", "--name", "ci", "--scopes", "backups:read",
                    "--project", "shop")  # fmt: skip
    assert key["api_key"]["project_id"] == project_id


# ---------------------------------------------------------------- projects delete


def test_projects_delete_by_name_needs_force_while_backups_exist(
    capy: Capy, project_id: str, app_db: Path
) -> None:
    _backup(capy, project_id, "keep")
    refused = capy("projects", "delete", "shop", code=1)
    line = _one_error_line(refused.stderr)
    assert "still has 1 backup(s); only --force deletes them" in line
    assert [p["id"] for p in capy.json("projects", "list")] == [project_id]

    deleted = capy.json("projects", "delete", "shop", "--force")
    assert deleted == {"deleted": True, "id": project_id}
    assert capy.json("projects", "list") == []
    assert app_db.exists()  # the database itself is not touched

    gone = capy("projects", "delete", project_id, code=1)
    assert "not found" in _one_error_line(gone.stderr)


def test_projects_delete_without_backups(capy: Capy, project_id: str) -> None:
    assert f"deleted project {project_id}" in capy("projects", "delete", project_id).stdout
    assert capy.json("projects", "list") == []


# ---------------------------------------------------------------- projects update

SECRET = "hunter2-rotated"


def test_projects_update_reads_the_url_from_stdin(
    capy: Capy, project_id: str, tmp_path: Path
) -> None:
    moved = make_app_db(tmp_path / "moved" / "app.db")
    result = capy(
        "projects", "update", "shop", "--database-url-stdin", input=sqlite_url(moved) + "\n"
    )
    assert f"updated project {project_id} (shop" in result.stdout
    assert str(moved.resolve()) in result.stdout
    [project] = capy.json("projects", "list")
    assert project["database_name"] == str(moved.resolve())
    key = _backup(capy, "shop", "moved")  # the backups now come from the new database
    assert key.startswith(f"projects/{project_id}/")


def test_projects_update_from_the_environment(capy: Capy, project_id: str, tmp_path: Path) -> None:
    moved = make_app_db(tmp_path / "moved" / "app.db")
    result = capy(
        "projects", "update", project_id, "--json", env={"CAPY_DATABASE_URL": sqlite_url(moved)}
    )
    updated = json.loads(result.stdout)
    assert updated["database_name"] == str(moved.resolve())
    assert "database_url" not in updated


def test_projects_update_never_prints_the_url(capy: Capy, project_id: str) -> None:
    url = f"postgresql://capy:{SECRET}@127.0.0.1:1/shop"
    wrong_kind = capy("projects", "update", "shop", "--database-url-stdin", input=url, code=1)
    line = _one_error_line(wrong_kind.stderr)
    assert "protects a sqlite one" in line
    assert SECRET not in wrong_kind.stdout + wrong_kind.stderr

    bad = f"mysql://capy:{SECRET}@127.0.0.1/shop"
    unsupported = capy("projects", "update", "shop", env={"CAPY_DATABASE_URL": bad}, code=1)
    assert "unsupported URL" in _one_error_line(unsupported.stderr)
    assert SECRET not in unsupported.stdout + unsupported.stderr

    none = capy("projects", "update", "shop", input="", code=2)  # no terminal to ask on
    assert "--database-url-stdin" in none.stderr
    twice = capy(
        "projects", "update", "shop", "--database-url-stdin", "--database-url", "x", code=2
    )
    assert "give the URL once" in twice.stderr
    [project] = capy.json("projects", "list")
    assert project["id"] == project_id


# ---------------------------------------------------------------- backups show


def test_backups_show_by_label(capy: Capy, project_id: str, app_db: Path) -> None:
    key = _backup(capy, project_id, "shown")
    shown = capy.json("backups", "show", "--project", "shop", "shown")
    assert (shown["backup_key"], shown["label"]) == (key, "shown")
    assert shown["verification_state"] == "verified"
    assert shown["size_bytes"] == app_db.stat().st_size
    assert 0 < shown["blob_bytes"] < shown["size_bytes"]
    assert shown["table_count"] >= 1
    assert shown["source_kind"] == "sqlite"

    human = capy("backups", "show", "--project", project_id, key).stdout
    assert f"backup {shown['id']} (shown) of project {project_id}" in human
    assert "verification:  verified at " in human
    assert f"{shown['size_bytes']} bytes" in human.split("source size:")[1].splitlines()[0]
    assert f"{shown['blob_bytes']} bytes" in human.split("blob size:")[1].splitlines()[0]
    assert f"tables:        {shown['table_count']}" in human
    assert shown["sha256"] in human


# ---------------------------------------------------------------- backups verify


def test_backups_verify_on_demand(capy: Capy, project_id: str) -> None:
    key = _backup(capy, project_id, "checked")
    first = capy.json("backups", "verify", "--project", "shop", "checked")
    assert (first["type"], first["state"]) == ("backup.verify", "pending")
    again = capy("backups", "verify", "--project", "shop", key)
    assert f"job {first['id']} (backup.verify): pending" in again.stdout  # the same one
    assert "capy jobs get --job-id" in again.stderr

    done = capy.json("jobs", "get", "--job-id", first["id"], "--wait")
    assert done["state"] == "completed"
    waited = capy("backups", "verify", "--project", project_id, "checked", "--wait")
    assert f"backup {key} verified (job job_" in waited.stdout


def test_backups_verify_finds_a_damaged_blob(capy: Capy, project_id: str) -> None:
    key = _backup(capy, project_id, "damaged")
    blob = capy.engine_dir / "blobs" / key
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))

    failed = capy("backups", "verify", "--project", project_id, "damaged", "--wait", code=1)
    line = failed.stderr.splitlines()[-1]
    assert line.startswith("capy: error: ")
    assert "failed" in line
    shown = capy.json("backups", "show", "--project", project_id, "damaged")
    assert shown["verification_state"] == "failed"
    assert "checksum" in shown["verification_error"].lower()


# ---------------------------------------------------------------- jobs cancel


def test_jobs_cancel_a_pending_backup(capy: Capy, project_id: str) -> None:
    pending = capy.json("backups", "create", "--project", project_id)
    cancelled = capy.json("jobs", "cancel", "--job-id", pending["id"])
    assert (cancelled["state"], cancelled["error"]) == (
        "failed",
        "cancelled by request before it ran",
    )
    assert cancelled["attempts"] == 0
    with Engine(capy.engine_dir) as engine:
        assert engine.run_pending() == 0  # nothing left to run
    assert capy.json("backups", "list", "--project", project_id) == []

    again = capy("jobs", "cancel", "--job-id", pending["id"], code=1)
    assert "is failed already: nothing to cancel" in _one_error_line(again.stderr)
    missing = capy("jobs", "cancel", "--job-id", "job_nope", code=1)
    assert "not found" in _one_error_line(missing.stderr)


def test_jobs_cancel_refuses_a_running_job(capy: Capy, project_id: str) -> None:
    pending = capy.json("backups", "create", "--project", project_id)
    with Engine(capy.engine_dir) as engine:  # a worker claims it, as `capy worker` would
        now = engine.rt.now()
        claimed = engine.rt.store.claim_job(
            "test-worker", now, now + timedelta(minutes=5), only_id=pending["id"]
        )
        assert claimed is not None
    refused = capy("jobs", "cancel", "--job-id", pending["id"], code=1)
    assert "is running; a running job is not stopped part way" in _one_error_line(refused.stderr)
    assert capy.json("jobs", "get", "--job-id", pending["id"])["state"] == "running"


def test_jobs_cancel_a_pending_restore_fails_its_new_preview(capy: Capy, project_id: str) -> None:
    point = capy.json("restore-points", "create", "--project", project_id, "--label", "p")
    job = capy.json("restore", "--project", project_id, "--restore-point", "p",
                    "--preview-name", "never")  # fmt: skip
    assert job["state"] == "pending"
    shown = capy("jobs", "cancel", "--job-id", job["id"]).stdout
    assert f"job {job['id']} (project.restore): failed" in shown
    [preview] = capy.json("previews", "list", "--project", project_id)
    assert (preview["name"], preview["state"]) == ("never", "failed")
    assert point["backup_key"]


# ---------------------------------------------------------------- backups delete


def test_backups_delete_by_label_key_and_id(capy: Capy, project_id: str) -> None:
    first = _backup(capy, project_id, "first")
    second = _backup(capy, project_id, "second")
    third = _backup(capy, project_id, "third")
    blobs = capy.engine_dir / "blobs"
    assert any(blobs.rglob("*.zst"))

    by_label = capy.json("backups", "delete", "--project", project_id, "first")
    assert by_label["backup_key"] == first
    by_key = capy.json("backups", "delete", "--project", project_id, second)
    assert by_key["backup_key"] == second
    [left] = capy.json("backups", "list", "--project", project_id)
    assert left["backup_key"] == third
    assert (
        f"deleted backup {left['id']}"
        in capy("backups", "delete", "--project", project_id, left["id"]).stdout
    )
    assert capy.json("backups", "list", "--project", project_id) == []

    missing = capy("backups", "delete", "--project", project_id, "first", code=1)
    assert "no backup of project" in _one_error_line(missing.stderr)


def test_backups_delete_refuses_a_pinned_backup(capy: Capy, project_id: str) -> None:
    point = capy.json("restore-points", "create", "--project", project_id, "--label", "pin")
    refused = capy("backups", "delete", "--project", project_id, point["backup_key"], code=1)
    line = _one_error_line(refused.stderr)
    assert "pinned" in line
    assert point["id"] in line
    assert len(capy.json("backups", "list", "--project", project_id)) == 1


# ---------------------------------------------------------------- previews get


def test_previews_get_by_name_and_id(capy: Capy, project_id: str) -> None:
    point = capy.json("restore-points", "create", "--project", project_id, "--label", "p")
    job = capy.json(
        "restore", "--project", project_id, "--restore-point", point["id"],
        "--preview-name", "check", "--wait",
    )  # fmt: skip
    preview_id = job["preview_database_id"]

    by_name = capy.json("previews", "get", "--project", "shop", "check")
    by_id = capy.json("previews", "get", "--project", project_id, preview_id)
    assert by_name == by_id
    assert (by_name["id"], by_name["name"], by_name["state"]) == (preview_id, "check", "ready")
    human = capy("previews", "get", "--project", project_id, "check").stdout
    assert f"preview {preview_id} (check): ready" in human
    assert by_name["database_name"] in human

    missing = capy("previews", "get", "--project", project_id, "nope", code=1)
    assert f"check ({preview_id})" in _one_error_line(missing.stderr)

    unnamed = capy("previews", "delete", "--id", "check", code=2)
    assert "give --project too" in unnamed.stderr
    done = capy.json("previews", "delete", "--project", "shop", "--id", "check", "--wait")
    assert done["state"] == "completed"
    assert capy.json("previews", "list", "--project", project_id) == []


# ---------------------------------------------------------------- against capy serve


def test_the_verbs_speak_to_a_capy_server(capy: Capy, project_id: str, tmp_path: Path) -> None:
    other = make_app_db(tmp_path / "other" / "other.db")
    capy("projects", "create", "--name", "other", "--database-url", sqlite_url(other))
    key = _backup(capy, project_id, "served")
    with Engine(capy.engine_dir) as engine:
        api_key = engine.create_api_key(
            "org_default", CreateApiKey(name="cli", scopes=list(SCOPES))
        ).plaintext_api_key.get_secret_value()
    env = {"CAPYDB_API_KEY": api_key}
    with serve(create_app(capy.engine_dir)) as url:  # no worker: jobs stay pending

        def remote(*args: str) -> str:
            result = capy.raw("--api-url", url, "--json", *args, env=env)
            assert result.exit_code == 0, result.stderr
            assert api_key not in result.stdout + result.stderr
            return result.stdout

        listed = json.loads(remote("backups", "list", "--project", "shop"))
        assert [b["backup_key"] for b in listed] == [key]
        pending = json.loads(remote("backups", "create", "--project", "shop"))
        cancelled = json.loads(remote("jobs", "cancel", "--job-id", pending["id"]))
        assert (cancelled["id"], cancelled["state"]) == (pending["id"], "failed")
        verify = json.loads(remote("backups", "verify", "--project", "shop", "served"))
        assert verify["type"] == "backup.verify"
        with Engine(capy.engine_dir) as worker:  # what `capy worker` does beside the server
            worker.run_pending()
        done = json.loads(remote("jobs", "get", "--job-id", verify["id"]))
        assert done["state"] == "completed"
        shown = json.loads(remote("backups", "show", "--project", "shop", "served"))
        assert (shown["backup_key"], shown["source_kind"]) == (key, "sqlite")
        assert shown["blob_bytes"] > 0
        deleted = json.loads(remote("backups", "delete", "--project", "shop", "served"))
        assert deleted["backup_key"] == key
        assert json.loads(remote("backups", "list", "--project", project_id)) == []
        moved = make_app_db(tmp_path / "moved" / "app.db")
        result = capy.raw(
            "--api-url", url, "projects", "update", "other", "--database-url-stdin",
            env=env, input=sqlite_url(moved),
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        assert str(moved.resolve()) in result.stdout
        gone = json.loads(remote("projects", "delete", "other"))
        assert gone["deleted"] is True
        assert [p["name"] for p in json.loads(remote("projects", "list"))] == ["shop"]


# ---------------------------------------------------------------- duplicate labels


def test_a_duplicate_restore_point_label_is_refused_before_any_backup(
    capy: Capy, project_id: str
) -> None:
    first = capy.json("restore-points", "create", "--project", project_id, "--label", "nightly")
    refused = capy(
        "restore-points", "create", "--project", project_id, "--label", "nightly", code=1
    )
    line = _one_error_line(refused.stderr)
    assert "already has a restore point labelled 'nightly'" in line
    assert first["id"] in line
    assert "--allow-duplicate" in line
    assert len(capy.json("backups", "list", "--project", project_id)) == 1  # no backup taken
    assert len(capy.json("restore-points", "list", "--project", project_id)) == 1

    capy("restore-points", "create", "--project", project_id, "--label", "nightly",
         "--allow-duplicate")  # fmt: skip
    assert [p["label"] for p in capy.json("restore-points", "list", "--project", project_id)] == [
        "nightly",
        "nightly",
    ]
