"""``capy`` commands against a real embedded engine and a real SQLite application database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pulumi_capy.engine import Engine
from tests.cli.conftest import Capy
from tests.engine.conftest import change_app_db, sqlite_url, table_contents


def _one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("capy: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# ---------------------------------------------------------------- projects


def test_projects_create_and_list(capy: Capy, app_db: Path) -> None:
    created = capy("projects", "create", "--name", "shop", "--database-url", sqlite_url(app_db))
    assert created.stdout.startswith("created project prj_")
    assert str(app_db.resolve()) in created.stdout

    listed = capy.json("projects", "list")
    assert [(p["name"], p["database_kind"]) for p in listed] == [("shop", "sqlite")]
    assert listed[0]["environment"] == "non_production"
    assert "database_url" not in listed[0]  # never echoed: it may carry a password

    table = capy("projects", "list").stdout
    assert listed[0]["id"] in table
    assert "shop" in table


def test_an_empty_list_says_so(capy: Capy) -> None:
    capy.start_engine()
    assert capy("projects", "list").stdout.strip() == "no projects"
    assert capy.json("projects", "list") == []


# ---------------------------------------------------------------- backups


def test_backups_create_wait_and_list(capy: Capy, project_id: str) -> None:
    job = capy.json("backups", "create", "--project", project_id, "--label", "nightly", "--wait")
    assert job["state"] == "completed"
    key = job["result"]["backup_key"]

    backups = capy.json("backups", "list", "--project", project_id)
    assert [(b["backup_key"], b["label"]) for b in backups] == [(key, "nightly")]
    assert backups[0]["verification_state"] == "verified"  # --wait waits for the verification
    assert key in capy("backups", "list", "--project", project_id).stdout


def test_backups_create_without_wait_leaves_a_pending_job(capy: Capy, project_id: str) -> None:
    result = capy("backups", "create", "--project", project_id)
    assert "pending" in result.stdout
    # the command to follow it names the engine it is queued in
    assert f"capy --engine-dir {capy.engine_dir} jobs get --job-id job_" in result.stderr
    assert capy.json("backups", "list", "--project", project_id) == []


def test_a_failed_job_exits_1_with_one_line(capy: Capy, project_id: str, app_db: Path) -> None:
    app_db.unlink()  # a backup of a missing database fails permanently
    result = capy("backups", "create", "--project", project_id, "--wait", "--json", code=1)
    # stderr: the job's status lines (no live line outside a terminal), then the one error line
    *progress, last = result.stderr.splitlines()
    assert all(line.startswith("backup: job ") for line in progress), result.stderr
    line = _one_error_line(last)
    assert "failed" in line
    assert "is missing" in line
    assert json.loads(result.stdout)["state"] == "failed"  # scripts still get the job


def test_backup_schedule_get_set_disable(capy: Capy, project_id: str) -> None:
    assert capy.json("backups", "schedule", "get", "--project", project_id) is None
    assert (
        "no backup schedule" in capy("backups", "schedule", "get", "--project", project_id).stdout
    )

    saved = capy.json(
        "backups",
        "schedule",
        "set",
        "--project",
        project_id,
        "--hour",
        "3",
        "--minute",
        "30",
        "--retention-days",
        "14",
        "--label",
        "daily",
    )
    assert (saved["cron_hour"], saved["cron_minute"], saved["is_active"]) == (3, 30, True)
    assert (
        "03:30 UTC (active, kept 14 days"
        in capy("backups", "schedule", "get", "--project", project_id).stdout
    )

    disabled = capy.json("backups", "schedule", "disable", "--project", project_id)
    assert disabled["is_active"] is False
    assert (disabled["cron_hour"], disabled["retention_days"], disabled["label"]) == (
        3,
        14,
        "daily",
    )

    bad = capy(
        "backups", "schedule", "set", "--project", project_id, "--hour", "24", "--minute", "0",
        code=1,
    )  # fmt: skip
    assert "--hour" in _one_error_line(bad.stderr)  # the option, not the API's cron_hour


# ---------------------------------------------------------------- restore points


def test_restore_points_create_list_delete(capy: Capy, project_id: str) -> None:
    point = capy.json(
        "restore-points", "create", "--project", project_id, "--label", "before-42",
        "--note", "migration 42",
    )  # fmt: skip
    assert (point["label"], point["kind"], point["state"]) == ("before-42", "backup", "active")
    assert point["note"] == "migration 42"
    # a fresh backup was taken, waited for and verified before it was pinned
    backups = capy.json("backups", "list", "--project", project_id)
    assert [b["backup_key"] for b in backups] == [point["backup_key"]]
    assert backups[0]["verification_state"] == "verified"

    # pinning an existing backup takes no new one
    again = capy.json(
        "restore-points", "create", "--project", project_id, "--label", "same",
        "--backup-key", point["backup_key"],
    )  # fmt: skip
    assert again["backup_key"] == point["backup_key"]
    assert len(capy.json("backups", "list", "--project", project_id)) == 1

    listed = capy.json("restore-points", "list", "--project", project_id)
    assert {p["id"] for p in listed} == {point["id"], again["id"]}
    assert "before-42" in capy("restore-points", "list", "--project", project_id).stdout

    deleted = capy.json("restore-points", "delete", "--project", project_id, "--id", point["id"])
    assert deleted == {"deleted": True, "id": point["id"]}
    assert [p["id"] for p in capy.json("restore-points", "list", "--project", project_id)] == [
        again["id"]
    ]
    gone = capy("restore-points", "delete", "--project", project_id, "--id", point["id"], code=1)
    assert "not found" in _one_error_line(gone.stderr)


# ---------------------------------------------------------------- restore and previews


def test_restore_wait_into_a_new_preview_then_delete_it(
    capy: Capy, project_id: str, app_db: Path
) -> None:
    before = table_contents(app_db)
    point = capy.json("restore-points", "create", "--project", project_id, "--label", "before")
    change_app_db(app_db)
    assert table_contents(app_db) != before

    job = capy.json(
        "restore", "--project", project_id, "--restore-point", point["id"],
        "--preview-name", "check", "--ttl-hours", "2", "--wait",
    )  # fmt: skip
    assert job["state"] == "completed"
    preview_id = job["preview_database_id"]

    previews = capy.json("previews", "list", "--project", project_id)
    assert [(p["id"], p["name"], p["state"]) for p in previews] == [(preview_id, "check", "ready")]
    preview_file = Path(previews[0]["database_name"])
    assert table_contents(preview_file) == before  # the restored state, exactly
    assert table_contents(app_db) != before  # the project database is untouched
    assert str(preview_file) in capy("previews", "list", "--project", project_id).stdout

    done = capy.json("previews", "delete", "--id", preview_id, "--wait")
    assert done["state"] == "completed"
    assert capy.json("previews", "list", "--project", project_id) == []
    assert not preview_file.exists()


def test_restore_human_output_names_the_preview(capy: Capy, project_id: str) -> None:
    point = capy.json("restore-points", "create", "--project", project_id, "--label", "p")
    result = capy("restore", "--project", project_id, "--restore-point", point["id"], "--wait")
    assert "completed: preview prv_" in result.stdout
    assert ".db" in result.stdout


def test_restore_into_the_project_needs_confirm(capy: Capy, project_id: str, app_db: Path) -> None:
    point = capy.json("restore-points", "create", "--project", project_id, "--label", "p")
    jobs_before = capy.json("jobs", "list", "--project", project_id)
    change_app_db(app_db)
    changed = table_contents(app_db)

    refused = capy(
        "restore", "--project", project_id, "--restore-point", point["id"],
        "--target-kind", "project", "--wait",
        code=1,
    )  # fmt: skip
    line = _one_error_line(refused.stderr)
    assert "--confirm" in line
    assert "overwrites the database" in line
    assert refused.stdout == ""
    assert capy.json("jobs", "list", "--project", project_id) == jobs_before  # nothing sent
    assert table_contents(app_db) == changed


def test_restore_takes_exactly_one_source(capy: Capy, project_id: str) -> None:
    none = capy("restore", "--project", project_id, code=2)
    assert "exactly one of --backup-key, --restore-time, --restore-point" in none.stderr
    two = capy(
        "restore", "--project", project_id, "--backup-key", "k", "--restore-point", "rp", code=2
    )
    assert "exactly one" in two.stderr


def test_restore_invalid_input_names_the_field(capy: Capy, project_id: str) -> None:
    point = capy.json("restore-points", "create", "--project", project_id, "--label", "p")
    result = capy(
        "restore", "--project", project_id, "--restore-point", point["id"],
        "--ttl-hours", "500",
        code=1,
    )  # fmt: skip
    assert "--ttl-hours" in _one_error_line(result.stderr)


# ---------------------------------------------------------------- jobs


def test_jobs_get_wait_runs_a_pending_job(capy: Capy, project_id: str) -> None:
    pending = capy.json("backups", "create", "--project", project_id)
    assert pending["state"] == "pending"

    done = capy.json("jobs", "get", "--job-id", pending["id"], "--wait")
    assert done["state"] == "completed"
    assert done["result"]["backup_key"]

    shown = capy("jobs", "get", "--job-id", pending["id"]).stdout
    assert f"job {pending['id']} (project.backup): completed, attempt 1/3" in shown
    assert "backup_key=" in shown

    jobs = capy.json("jobs", "list", "--project", project_id, "--limit", "1")
    assert len(jobs) == 1
    assert "project.backup" in capy("jobs", "list", "--project", project_id).stdout


def test_jobs_get_unknown_is_one_line(capy: Capy) -> None:
    capy.start_engine()
    result = capy("jobs", "get", "--job-id", "job_nope", code=1)
    assert result.stdout == ""
    assert "job job_nope not found" in _one_error_line(result.stderr)


# ---------------------------------------------------------------- keys


def test_keys_create_prints_the_key_once(capy: Capy) -> None:
    created = capy("keys", "create", "--name", "admin", "--scopes", "all")
    key = created.stdout.strip()
    assert key.startswith("capy_live_")
    assert len(key) > len("capy_live_") + 40
    assert "\n" not in key  # KEY=$(capy keys create ...) works
    assert "shown once" in created.stderr

    with Engine(capy.engine_dir) as engine:  # the key works against this engine
        principal = engine.authenticate(key)
    assert principal is not None
    assert principal.project_id is None

    listed = capy.json("keys", "list")
    assert [(k["name"], len(k["scopes"])) for k in listed] == [("admin", 10)]
    for output in (capy("keys", "list").stdout, capy("keys", "list", "--json").stdout):
        assert key not in output
        assert key[len("capy_live_") + 4 :] not in output
    assert "admin" in capy("keys", "list").stdout


def test_keys_create_json_scoped_to_a_project_then_revoke(capy: Capy, project_id: str) -> None:
    created = capy.json(
        "keys", "create", "--name", "ci", "--scopes", "backups:read, jobs:read",
        "--project", project_id, "--expires-at", "2099-01-01T00:00:00Z",
    )  # fmt: skip
    key = created["plaintext_api_key"]
    assert key.startswith("capy_live_")
    record = created["api_key"]
    assert (record["scopes"], record["project_id"]) == (["backups:read", "jobs:read"], project_id)
    assert record["expires_at"] == "2099-01-01T00:00:00Z"

    revoked = capy.json("keys", "revoke", "--id", record["id"])
    assert revoked == {"revoked": True, "id": record["id"]}
    assert capy.json("keys", "list")[0]["revoked_at"] is not None
    with Engine(capy.engine_dir) as engine:
        assert engine.authenticate(key) is None

    unknown = capy("keys", "revoke", "--id", "key_nope", code=1)
    assert "not found" in _one_error_line(unknown.stderr)


def test_keys_create_refuses_an_unknown_scope(capy: Capy) -> None:
    result = capy("keys", "create", "--name", "x", "--scopes", "backups:read,root", code=1)
    line = _one_error_line(result.stderr)
    assert "scopes" in line
    assert "root" in line
    assert result.stdout == ""


# ---------------------------------------------------------------- errors and back ends


def test_unknown_project_is_one_line_and_exit_1(capy: Capy) -> None:
    capy.start_engine()
    for args in (
        ("backups", "list", "--project", "prj_nope"),
        ("restore-points", "create", "--project", "prj_nope", "--label", "x"),
        ("jobs", "list", "--project", "prj_nope", "--json"),
    ):
        result = capy(*args, code=1)
        assert result.stdout == "", args
        assert _one_error_line(result.stderr) == "capy: error: project prj_nope not found"


def test_the_environment_selects_the_engine_dir(capy: Capy, project_id: str) -> None:
    result = capy.raw("projects", "list", "--json", env={"CAPY_ENGINE_DIR": str(capy.engine_dir)})
    assert result.exit_code == 0, result.stderr
    assert [p["id"] for p in json.loads(result.stdout)] == [project_id]


def test_group_options_work_before_the_command(capy: Capy, project_id: str) -> None:
    result = capy.raw("--engine-dir", str(capy.engine_dir), "--json", "projects", "list")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["id"] == project_id


def test_api_mode_without_a_key_is_one_line(capy: Capy) -> None:
    result = capy.raw("--api-url", "http://127.0.0.1:9", "projects", "list")
    assert result.exit_code == 1
    assert "CAPYDB_API_KEY" in _one_error_line(result.stderr)


def test_a_malformed_key_is_one_line_without_the_key(capy: Capy) -> None:
    result = capy.raw(
        "--api-url", "http://127.0.0.1:9", "projects", "list", env={"CAPYDB_API_KEY": "hunter2"}
    )
    assert result.exit_code == 1
    line = _one_error_line(result.stderr)
    assert "malformed" in line
    assert "hunter2" not in line


def test_an_unreachable_server_is_one_line(capy: Capy) -> None:
    key = "capy_live_" + "a" * 43
    result = capy.raw(
        "--api-url", "http://127.0.0.1:9", "projects", "list", env={"CAPYDB_API_KEY": key}
    )
    assert result.exit_code == 1
    assert "127.0.0.1:9" in _one_error_line(result.stderr)
    assert key not in result.stderr


def test_api_url_and_engine_dir_together_are_a_usage_error(capy: Capy) -> None:
    result = capy("--api-url", "http://127.0.0.1:9", "projects", "list", code=2)
    assert "--api-url and --engine-dir" in result.stderr


def test_api_url_without_a_key_names_the_option(capy: Capy) -> None:
    result = capy.raw("--api-url", "http://127.0.0.1:9", "projects", "list")
    assert result.exit_code == 1
    assert "--api-url selects mode 'api' but no API key is set" in _one_error_line(result.stderr)


@pytest.mark.parametrize("args", [["--nope"], ["projects", "create", "--name", "x"]])
def test_usage_errors_exit_2(capy: Capy, args: list[str]) -> None:
    assert capy.raw(*args).exit_code == 2
