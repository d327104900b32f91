from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pulumi_capy.api.errors import InvalidInput
from pulumi_capy.api.models import (
    Backup,
    CreateApiKey,
    CreateBackup,
    CreatePreview,
    CreateProject,
    CreateRestorePoint,
    Job,
    JobProgress,
    JobState,
    JobType,
    PreviewDatabase,
    PutScheduledBackup,
    RestorePoint,
    RestorePointKind,
    RestoreRequest,
    TargetKind,
    format_timestamp,
)
from pulumi_capy.api.validation import parse_request


def invalid(model: type[Any], data: dict[str, Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_request(model, data)
    return caught.value


# ---------------------------------------------------------------- responses


def test_unknown_enum_values_stay_strings() -> None:
    point = RestorePoint.model_validate(
        {"id": "rp_1", "project_id": "p", "label": "x", "kind": "snapshot", "state": "frozen"}
    )
    assert point.kind == "snapshot"
    assert not isinstance(point.kind, RestorePointKind)
    assert point.state == "frozen"


def test_known_enum_values_become_members() -> None:
    job = Job.model_validate({"id": "j", "type": "project.restore", "state": "running"})
    assert job.type is JobType.project_restore
    assert job.state is JobState.running
    assert not job.is_terminal


def test_unknown_fields_are_ignored() -> None:
    backup = Backup.model_validate(
        {"id": "b", "project_id": "p", "backup_key": "k", "brand_new_field": {"x": 1}}
    )
    assert backup.backup_key == "k"
    assert "brand_new_field" not in backup.model_dump()


def test_response_timestamps_are_utc_and_serialize_with_z() -> None:
    preview = PreviewDatabase.model_validate(
        {
            "id": "pv",
            "project_id": "p",
            "name": "n",
            "ttl_expires_at": "2026-11-26T07:00:00+02:00",
            "created_at": "2026-11-26T05:00:00",
        }
    )
    assert preview.ttl_expires_at == datetime(2026, 11, 26, 5, 0, tzinfo=UTC)
    assert preview.created_at is not None
    assert preview.created_at.tzinfo is UTC
    assert preview.model_dump(mode="json")["ttl_expires_at"] == "2026-11-26T05:00:00Z"


def test_format_timestamp() -> None:
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"


# ---------------------------------------------------------------- restore requests


def test_two_sources_fail_naming_both_fields() -> None:
    error = invalid(
        RestoreRequest, {"backup_key": "k", "restore_point_id": "rp_1", "target_kind": "project"}
    )
    assert error.fields == ["backup_key", "restore_point_id"]
    assert "backup_key" in str(error)
    assert "restore_point_id" in str(error)
    assert "exactly one" in str(error)


def test_no_source_names_all_three() -> None:
    error = invalid(RestoreRequest, {})
    assert error.fields == ["backup_key", "restore_time", "restore_point_id"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"backup_key": "k", "target_kind": "preview"}, "preview_id"),
        ({"backup_key": "k", "preview_id": "pv_1"}, "preview_id"),
        ({"backup_key": "k", "target_kind": "project", "preview_id": "pv_1"}, "preview_id"),
        ({"backup_key": "k", "target_kind": "project", "preview_name": "n"}, "preview_name"),
        (
            {"backup_key": "k", "target_kind": "preview", "preview_id": "x", "ttl_hours": 2},
            "ttl_hours",
        ),
        ({"backup_key": "k", "ttl_hours": 0}, "ttl_hours"),
        ({"backup_key": "k", "ttl_hours": 169}, "ttl_hours"),
        ({"backup_key": "k", "target_kind": "elsewhere"}, "target_kind"),
        ({"backup_key": "k", "surprise": True}, "surprise"),
        ({"restore_time": "yesterday"}, "restore_time"),
        ({"restore_time": "2026-11-26T05:00:00"}, "restore_time"),
    ],
)
def test_restore_request_rules_name_the_field(data: dict[str, Any], field: str) -> None:
    error = invalid(RestoreRequest, data)
    assert field in error.fields
    assert str(error).startswith(field) or f"; {field}" in str(error) or f", {field}" in str(error)


def test_restore_time_is_made_utc() -> None:
    request = parse_request(RestoreRequest, {"restore_time": "2026-11-26T07:00:00+02:00"})
    assert request.restore_time == datetime(2026, 11, 26, 5, tzinfo=UTC)
    assert request.to_wire()["restore_time"] == "2026-11-26T05:00:00Z"


def test_restore_request_wire_always_has_target_kind() -> None:
    wire = parse_request(RestoreRequest, {"restore_point_id": "rp_1"}).to_wire()
    assert wire["target_kind"] == "new_preview"
    assert "preview_id" not in wire
    assert "ttl_hours" not in wire


def test_valid_targets() -> None:
    preview = parse_request(
        RestoreRequest, {"backup_key": "k", "target_kind": "preview", "preview_id": "pv"}
    )
    assert preview.target_kind is TargetKind.preview
    project = parse_request(
        RestoreRequest,
        {"backup_key": "k", "target_kind": "project", "confirm_project_overwrite": True},
    )
    assert project.confirm_project_overwrite
    new = parse_request(RestoreRequest, {"backup_key": "k", "preview_name": "n", "ttl_hours": 168})
    assert new.ttl_hours == 168


# ---------------------------------------------------------------- other requests


@pytest.mark.parametrize(
    ("model", "data", "field"),
    [
        (CreateRestorePoint, {"label": "", "backup_key": "k"}, "label"),
        (CreateRestorePoint, {"label": "x" * 201, "backup_key": "k"}, "label"),
        (CreateRestorePoint, {"label": "ok"}, "backup_key"),
        (CreateRestorePoint, {"label": "ok", "kind": "pitr", "backup_key": "k"}, "backup_key"),
        (
            CreateRestorePoint,
            {"label": "ok", "backup_key": "k", "pitr_time": "2026-01-01T00:00:00Z"},
            "pitr_time",
        ),
        (CreateRestorePoint, {"label": "ok", "kind": "snapshot"}, "kind"),
        (CreateBackup, {"label": ""}, "label"),
        (PutScheduledBackup, {"cron_hour": 24, "cron_minute": 0, "is_active": True}, "cron_hour"),
        (PutScheduledBackup, {"cron_hour": 0, "cron_minute": 60, "is_active": True}, "cron_minute"),
        (PutScheduledBackup, {"cron_hour": 0, "cron_minute": 0}, "is_active"),
        (
            PutScheduledBackup,
            {"cron_hour": 1, "cron_minute": 0, "is_active": True, "retention_days": 0},
            "retention_days",
        ),
        (
            PutScheduledBackup,
            {"cron_hour": 1, "cron_minute": 0, "is_active": True, "retention_days": 366},
            "retention_days",
        ),
        (CreatePreview, {"name": "n", "ttl_hours": 169}, "ttl_hours"),
        (CreatePreview, {"name": "n", "mode": "restore-ish"}, "mode"),
        (CreateProject, {"name": "n", "environment": "staging"}, "environment"),
        (CreateProject, {"name": "n", "database_url": "  "}, "database_url"),
        (CreateApiKey, {"name": "n", "scopes": []}, "scopes"),
        (CreateApiKey, {"name": "n", "scopes": ["backups:read", "root"]}, "scopes"),
    ],
)
def test_request_rules_name_the_field(model: type[Any], data: dict[str, Any], field: str) -> None:
    assert field in invalid(model, data).fields


def test_valid_requests_round_trip() -> None:
    point = parse_request(CreateRestorePoint, {"label": " pre-migration ", "backup_key": "k"})
    assert point.label == "pre-migration"
    assert point.to_wire() == {"label": "pre-migration", "kind": "backup", "backup_key": "k"}
    pitr = parse_request(
        CreateRestorePoint, {"label": "t", "kind": "pitr", "pitr_time": "2026-11-26T05:00:00Z"}
    )
    assert pitr.to_wire()["pitr_time"] == "2026-11-26T05:00:00Z"
    schedule = parse_request(
        PutScheduledBackup,
        {"cron_hour": 23, "cron_minute": 59, "is_active": False, "retention_days": 365},
    )
    assert schedule.to_wire()["retention_days"] == 365
    key = parse_request(
        CreateApiKey, {"name": "ci", "scopes": ["backups:read", "backups:read", "jobs:read"]}
    )
    assert key.scopes == ["backups:read", "jobs:read"]


def test_database_url_is_secret_until_sent() -> None:
    project = parse_request(
        CreateProject, {"name": "shop", "database_url": "postgresql://u:hunter2@db/shop"}
    )
    assert "hunter2" not in repr(project)
    assert "hunter2" not in str(project.model_dump())
    assert "hunter2" not in project.model_dump_json()
    assert project.to_wire()["database_url"] == "postgresql://u:hunter2@db/shop"


def test_invalid_input_never_echoes_a_secret_value() -> None:
    error = invalid(CreateProject, {"name": "", "database_url": "postgresql://u:hunter2@db/x"})
    assert "hunter2" not in str(error)


def test_a_job_without_progress_is_valid_and_ours_is_read() -> None:
    """Hosted CapyDB answers no ``progress`` (ours); an older engine wrote it as text."""
    hosted = Job.model_validate({"id": "job_1", "type": "project.backup", "state": "running"})
    assert hosted.progress is None
    older = Job.model_validate(
        {"id": "job_1", "type": "pitr.base_backup", "state": "running", "progress": "replaying"}
    )
    assert older.progress == JobProgress(step="replaying")
    assert older.progress.describe() == "replaying"
    ours = Job.model_validate(
        {
            "id": "job_1",
            "type": "project.backup",
            "state": "running",
            "progress": {"step": "compressing", "bytes_done": 3 << 20, "bytes_total": 12 << 20},
        }
    )
    assert ours.progress is not None
    assert ours.progress.fraction == 0.25
    assert ours.progress.describe() == "compressing: 3.0 MiB of 12.0 MiB (25%)"
    assert JobProgress(step="dumping", bytes_done=532).describe() == "dumping: 532 B"
