"""The four dynamic providers, called as the Pulumi engine calls them, on a real engine.

``check``, ``diff``, ``create``, ``read``, ``update`` and ``delete`` run in this
process against an embedded engine in a tmp directory (``CAPY_ENGINE_DIR``);
what they did is checked through another ``Engine`` on the same directory.
Nothing of ours is mocked: two tests wrap a real ``Engine`` method (to count
calls, or to fail at our own boundary). No test sleeps.
"""

from __future__ import annotations

import base64
import pickle
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import dill  # type: ignore[import-untyped]
import grpc  # type: ignore[import-untyped]
import pytest
from pulumi.dynamic import ConfigureRequest
from pulumi.dynamic.config import Config
from pulumi.dynamic.dynamic import serialize_provider
from pulumi.output import Unknown

from pulumi_capy.api.errors import Conflict, NotFound
from pulumi_capy.api.models import (
    Backup,
    CreateProject,
    CreateRestorePoint,
    Project,
    PutScheduledBackup,
    RestorePoint,
    RestoreRequest,
)
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.service import Engine
from pulumi_capy.resources import _provider, get_backups, get_jobs, get_restore_points
from pulumi_capy.resources._provider import UNKNOWN, CapyProvider, CapyResourceError
from pulumi_capy.resources.backup import BackupProvider
from pulumi_capy.resources.project import ProjectProvider
from pulumi_capy.resources.restore import RestoreProvider
from pulumi_capy.resources.restore_point import RestorePointProvider
from tests.engine.conftest import change_app_db, sqlite_url, table_contents, take_backup
from tests.resources.conftest import (
    PROVIDER_KEY,
    backup_inputs,
    project_inputs,
    restore_inputs,
    restore_point_inputs,
)

PRJ = "prj_0123456789"  # a project id where no engine is asked
API_KEY = "capy_live_" + "Zq7" * 8  # well-formed, so configure accepts it
Tables = dict[str, list[tuple[Any, ...]]]


# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Result:
    """What ``create`` or ``read`` answered: an id and outputs, both present."""

    id: str
    outs: dict[str, Any]


def create(provider: CapyProvider, inputs: dict[str, Any]) -> Result:
    result = provider.create(dict(inputs))
    assert result.id, "create must return a non-empty id"
    assert result.outs is not None
    return Result(str(result.id), result.outs)


def read(provider: CapyProvider, id_: str, outputs: dict[str, Any]) -> Result:
    result = provider.read(id_, outputs)
    assert result.outs is not None
    return Result(str(result.id), result.outs)


def update(
    provider: CapyProvider, id_: str, olds: dict[str, Any], news: dict[str, Any]
) -> dict[str, Any]:
    result = provider.update(id_, olds, news)
    assert result.outs is not None
    outs: dict[str, Any] = result.outs
    return outs


def next_operation() -> None:
    """A new Pulumi operation: a new provider process, so no listing is cached."""
    _provider.LISTINGS._entries.clear()


def preview_path(outputs: dict[str, Any]) -> Path:
    url = outputs["preview_database_url"]
    assert isinstance(url, str)
    assert url.startswith("sqlite:///"), url
    return Path(url.removeprefix("sqlite:///"))


def flip_middle_byte(engine_dir: Path, backup_key: str) -> None:
    blob = engine_dir / "blobs" / backup_key
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def parse_timestamp(value: Any) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value)


def expire_backups_by_retention(engine_dir: Path, project_id: str) -> list[str]:
    """Retention of one day, seen by an engine whose clock is a month ahead."""
    later = datetime.now(UTC) + timedelta(days=30)
    with Engine(engine_dir, clock=ManualClock(later)) as future:
        future.put_scheduled_backup(
            project_id,
            PutScheduledBackup(cron_hour=0, cron_minute=0, is_active=False, retention_days=1),
        )
        report = future.tick()
        future.run_pending()
    return report.expired_backups


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(0..count-1)`` in ``count`` threads released at the same moment."""
    start = threading.Barrier(count)

    def task(index: int) -> Any:
        start.wait(timeout=60)
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(task, range(count)))


# ---------------------------------------------------------------- check

FUTURE = "2999-01-01T00:00:00Z"  # a moment no PITR window can hold yet

CHECK_FAILURES = [
    # rules the engine enforces too, but only once `up` runs: known at preview
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", target_kind="project"),
        [("confirm_project_overwrite", "must be true when target_kind is 'project'")],
        id="restore-project-unconfirmed",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(
            PRJ, backup_key="bk-1", target_kind="project", confirm_project_overwrite=None
        ),
        [("confirm_project_overwrite", "overwrites the project's database")],
        id="restore-project-confirmation-unset",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, restore_time=FUTURE),
        [("restore_time", "2999-01-01T00:00:00Z is in the future")],
        id="restore-restore_time-future",
    ),
    pytest.param(
        RestorePointProvider,
        restore_point_inputs(PRJ, kind="pitr", pitr_time=FUTURE),
        [("pitr_time", "is in the future")],
        id="restore_point-pitr_time-future",
    ),
    pytest.param(
        ProjectProvider,
        project_inputs("mysql://app:hunter2@db/app"),
        [("database_url", "unsupported URL; expected sqlite:////absolute/path.db")],
        id="project-database_url-mysql",
    ),
    pytest.param(
        RestorePointProvider,
        restore_point_inputs(PRJ, label=""),
        [("label", "at least 1 character")],
        id="restore_point-empty-label",
    ),
    pytest.param(
        RestorePointProvider,
        restore_point_inputs(PRJ, label="x" * 201),
        [("label", "at most 200 characters")],
        id="restore_point-label-201-chars",
    ),
    pytest.param(
        RestorePointProvider,
        restore_point_inputs(PRJ, kind="snapshot"),
        [("kind", "'backup' or 'pitr'")],
        id="restore_point-kind-snapshot",
    ),
    pytest.param(
        RestorePointProvider,
        restore_point_inputs(PRJ, kind="pitr", backup_key="bk-1"),
        [("backup_key", "only allowed when kind is 'backup'")],
        id="restore_point-pitr-with-backup_key",
    ),
    pytest.param(
        RestorePointProvider,
        restore_point_inputs(None),
        [("project_id", "required")],
        id="restore_point-missing-project_id",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", restore_point_id="rp_1"),
        [
            ("backup_key", "exactly one restore source"),
            ("restore_point_id", "exactly one restore source"),
        ],
        id="restore-two-sources",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", preview_id="prv_1"),
        [("preview_id", "only allowed when target_kind is 'preview'")],
        id="restore-preview_id-with-new_preview",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", ttl_hours=0),
        [("ttl_hours", "greater than or equal to 1")],
        id="restore-ttl_hours-0",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", ttl_hours=169),
        [("ttl_hours", "less than or equal to 168")],
        id="restore-ttl_hours-169",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", target_kind="bogus"),
        [("target_kind", "'new_preview', 'preview' or 'project'")],
        id="restore-target_kind-bogus",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", timeout_minutes=0),
        [("timeout_minutes", "from 1 to 10080")],
        id="restore-timeout_minutes-0",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", timeout_minutes="x"),
        [("timeout_minutes", "from 1 to 10080")],
        id="restore-timeout_minutes-x",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", wait="yes"),
        [("wait", "true or false")],
        id="restore-wait-yes",
    ),
    pytest.param(
        BackupProvider,
        backup_inputs(PRJ, label=""),
        [("label", "at least 1 character")],
        id="backup-empty-label",
    ),
    pytest.param(
        ProjectProvider,
        project_inputs(None),
        [("database_url", "required")],
        id="project-missing-database_url",
    ),
    pytest.param(
        ProjectProvider,
        project_inputs("sqlite:////tmp/app.db", environment="staging"),
        [("environment", "'production' or 'non_production'")],
        id="project-environment-staging",
    ),
]


@pytest.mark.parametrize(("provider_class", "inputs", "expected"), CHECK_FAILURES)
def test_check_names_each_bad_property_with_a_reason(
    provider_class: type[CapyProvider],
    inputs: dict[str, Any],
    expected: list[tuple[str, str]],
) -> None:
    result = provider_class().check({}, dict(inputs))

    assert sorted(failure.property for failure in result.failures) == sorted(
        name for name, _ in expected
    )
    for failure, (name, fragment) in zip(
        sorted(result.failures, key=lambda failure: failure.property), sorted(expected), strict=True
    ):
        assert failure.reason.startswith(f"{name}: "), failure.reason
        assert fragment in failure.reason, failure.reason
    assert result.inputs == inputs  # check says what is wrong; it changes nothing


VALID_INPUTS = [
    pytest.param(RestorePointProvider, restore_point_inputs(PRJ), id="restore_point-fresh"),
    pytest.param(
        RestorePointProvider,
        restore_point_inputs(PRJ, backup_key="bk-1", note="before the v2 migration"),
        id="restore_point-pinned",
    ),
    pytest.param(
        RestorePointProvider,
        restore_point_inputs(PRJ, adopt_id="rp_1"),
        id="restore_point-adopt",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", ttl_hours=168, preview_name="pr-42"),
        id="restore-new_preview",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, restore_point_id="rp_1", target_kind="preview", preview_id="prv_1"),
        id="restore-preview",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(
            PRJ,
            backup_key="bk-1",
            target_kind="project",
            confirm_project_overwrite=True,
            wait=False,
            timeout_minutes=1.5,
            triggers={"schema": "v2"},
        ),
        id="restore-project",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, restore_time="2026-11-26T14:32:05.250Z"),
        id="restore-restore_time-past",
    ),
    pytest.param(
        ProjectProvider,
        project_inputs("postgresql://app@db.internal:5432/app"),
        id="project-postgresql",
    ),
    pytest.param(BackupProvider, backup_inputs(PRJ), id="backup"),
    pytest.param(BackupProvider, backup_inputs(PRJ, label=None, wait=False), id="backup-no-label"),
    pytest.param(ProjectProvider, project_inputs("sqlite:////tmp/app.db"), id="project"),
    pytest.param(
        ProjectProvider,
        project_inputs("sqlite:////tmp/app.db", environment="production", force_destroy=True),
        id="project-production",
    ),
]


@pytest.mark.parametrize(("provider_class", "inputs"), VALID_INPUTS)
def test_check_accepts_valid_inputs(
    provider_class: type[CapyProvider], inputs: dict[str, Any]
) -> None:
    result = provider_class().check({}, dict(inputs))

    assert [(failure.property, failure.reason) for failure in result.failures] == []
    assert result.inputs == inputs


UNKNOWN_INPUTS = [
    pytest.param(
        RestorePointProvider, restore_point_inputs(UNKNOWN), id="restore_point-project_id"
    ),
    pytest.param(
        RestorePointProvider, restore_point_inputs(PRJ, backup_key=UNKNOWN), id="restore_point-key"
    ),
    pytest.param(
        RestorePointProvider, restore_point_inputs(PRJ, label=UNKNOWN), id="restore_point-label"
    ),
    pytest.param(
        RestorePointProvider,
        restore_point_inputs(PRJ, kind="pitr", pitr_time=UNKNOWN),
        id="restore_point-pitr_time",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, restore_point_id=UNKNOWN, backup_key=None),
        id="restore-restore_point_id",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(UNKNOWN, backup_key=UNKNOWN, ttl_hours=UNKNOWN, wait=UNKNOWN),
        id="restore-several",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", timeout_minutes=UNKNOWN, triggers=UNKNOWN),
        id="restore-timeout_minutes",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(
            PRJ, backup_key="bk-1", target_kind="project", confirm_project_overwrite=UNKNOWN
        ),
        id="restore-confirm_project_overwrite",
    ),
    pytest.param(
        RestoreProvider,
        restore_inputs(PRJ, backup_key="bk-1", target_kind=UNKNOWN),
        id="restore-target_kind",
    ),
    pytest.param(BackupProvider, backup_inputs(UNKNOWN, label=UNKNOWN), id="backup"),
    pytest.param(ProjectProvider, project_inputs(UNKNOWN), id="project-database_url"),
    pytest.param(
        ProjectProvider,
        project_inputs("sqlite:////tmp/app.db", name=UNKNOWN, environment=UNKNOWN),
        id="project-name-environment",
    ),
]


SDK_UNKNOWN: Any = Unknown()  # type: ignore[no-untyped-call]


def _as_sdk_unknowns(inputs: dict[str, Any]) -> dict[str, Any]:
    """The same inputs as the SDK really hands them over in a preview: pulumi.output.Unknown."""
    return {key: SDK_UNKNOWN if value == UNKNOWN else value for key, value in inputs.items()}


@pytest.mark.parametrize("form", ["sentinel", "sdk"])
@pytest.mark.parametrize(("provider_class", "inputs"), UNKNOWN_INPUTS)
def test_check_lets_unknown_values_through(
    provider_class: type[CapyProvider], inputs: dict[str, Any], form: str
) -> None:
    given = _as_sdk_unknowns(inputs) if form == "sdk" else dict(inputs)
    result = provider_class().check({}, dict(given))

    assert [(failure.property, failure.reason) for failure in result.failures] == []
    assert result.inputs == given  # the unknown markers stay for the engine to resolve


# ---------------------------------------------------------------- diff


def create_kind(
    kind: str, project: Project, backup: Backup, app_db: Path
) -> tuple[CapyProvider, dict[str, Any], str, dict[str, Any]]:
    """Create one resource of ``kind``; return its provider, inputs, id and outputs."""
    provider: CapyProvider
    if kind == "restore_point":
        provider, inputs = RestorePointProvider(), restore_point_inputs(project.id)
    elif kind == "restore_point_pinned":
        provider = RestorePointProvider()
        inputs = restore_point_inputs(project.id, backup_key=backup.backup_key, note="pinned")
    elif kind == "restore":
        provider = RestoreProvider()
        inputs = restore_inputs(
            project.id, backup_key=backup.backup_key, ttl_hours=2, triggers={"deploy": "1"}
        )
    elif kind == "backup":
        provider, inputs = BackupProvider(), backup_inputs(project.id)
    else:
        assert kind == "project"
        provider, inputs = ProjectProvider(), project_inputs(sqlite_url(app_db), name="shop")
    created = create(provider, inputs)
    return provider, inputs, created.id, created.outs


def stored(outputs: dict[str, Any]) -> dict[str, Any]:
    """Outputs as Pulumi keeps them: with the provider the SDK serialized at create."""
    return {**outputs, PROVIDER_KEY: "b2xkIHByb3ZpZGVy"}


KINDS = ["restore_point", "restore_point_pinned", "restore", "backup", "project"]


@pytest.mark.parametrize(
    ("provider_class", "inputs"),
    [
        pytest.param(RestorePointProvider, restore_point_inputs(PRJ), id="restore_point"),
        pytest.param(RestoreProvider, restore_inputs(PRJ, backup_key="bk-1"), id="restore"),
        pytest.param(BackupProvider, backup_inputs(PRJ), id="backup"),
        pytest.param(ProjectProvider, project_inputs("sqlite:////tmp/app.db"), id="project"),
    ],
)
def test_diff_ignores_the_provider_property(
    provider_class: type[CapyProvider], inputs: dict[str, Any]
) -> None:
    olds = {**inputs, PROVIDER_KEY: "one serialized provider"}
    news = {**inputs, PROVIDER_KEY: "another serialized provider"}

    result = provider_class().diff("id-1", olds, news)

    assert (result.changes, result.replaces) == (False, [])


@pytest.mark.parametrize("kind", KINDS)
def test_diff_sees_no_change_after_create_and_after_read(
    kind: str, engine: Engine, project: Project, backup: Backup, app_db: Path
) -> None:
    provider, inputs, id_, outputs = create_kind(kind, project, backup, app_db)

    after_create = provider.diff(id_, stored(outputs), provider.check(outputs, inputs).inputs)
    next_operation()
    reread = read(provider, id_, stored(outputs))
    after_read = provider.diff(id_, reread.outs, provider.check(reread.outs, inputs).inputs)

    assert (after_create.changes, after_create.replaces) == (False, [])
    assert reread.id == id_
    assert (after_read.changes, after_read.replaces) == (False, [])


SPACED_INPUTS = [
    pytest.param("restore_point", "label", id="restore_point-label"),
    pytest.param("restore_point", "note", id="restore_point-note"),
    pytest.param("backup", "label", id="backup-label"),
    pytest.param("project", "name", id="project-name"),
]


@pytest.mark.parametrize(("kind", "name"), SPACED_INPUTS)
def test_diff_sees_no_change_for_an_input_with_surrounding_spaces(
    kind: str, name: str, engine: Engine, project: Project, app_db: Path
) -> None:
    provider: CapyProvider
    if kind == "restore_point":
        provider, inputs = RestorePointProvider(), restore_point_inputs(project.id)
    elif kind == "backup":
        provider, inputs = BackupProvider(), backup_inputs(project.id)
    else:
        provider, inputs = ProjectProvider(), project_inputs(sqlite_url(app_db))
    inputs[name] = " spaced out "
    checked = provider.check({}, dict(inputs))
    assert checked.failures == []
    # Pulumi creates from, and later diffs against, the inputs check returned
    created = create(provider, checked.inputs)
    again = provider.check(stored(created.outs), dict(inputs)).inputs

    result = provider.diff(created.id, stored(created.outs), again)

    # regression: the stripped value stored by the back end must equal the checked input,
    # or every `pulumi up` replaces the object (a Project: delete first)
    assert (result.changes, result.replaces) == (False, [])


RESTORE_POINT_CHANGES = [
    ("label", "after-migration"),
    ("note", "why we keep it"),
    ("kind", "pitr"),
    ("backup_key", "bk-other"),
    ("pitr_time", "2026-01-01T00:00:00Z"),
    ("adopt_id", "rp_other"),
    ("project_id", "prj_other"),
]


@pytest.mark.parametrize(("name", "value"), RESTORE_POINT_CHANGES)
def test_diff_restore_point_replaces_on_any_input_change(
    name: str, value: Any, engine: Engine, project: Project, backup: Backup, app_db: Path
) -> None:
    provider, inputs, id_, outputs = create_kind("restore_point", project, backup, app_db)

    result = provider.diff(id_, stored(outputs), {**inputs, name: value})

    assert (result.changes, result.replaces, result.delete_before_replace) == (True, [name], False)


@pytest.mark.parametrize("provider_class", [RestorePointProvider, BackupProvider])
def test_diff_replaces_an_expired_object(provider_class: type[CapyProvider]) -> None:
    inputs = (
        restore_point_inputs(PRJ) if provider_class is RestorePointProvider else backup_inputs(PRJ)
    )
    provider = provider_class()

    active = provider.diff("id-1", {**inputs, "state": "active"}, inputs)
    expired = provider.diff("id-1", {**inputs, "state": "expired"}, inputs)

    assert (active.changes, active.replaces) == (False, [])
    assert (expired.changes, expired.replaces) == (True, ["state"])


RESTORE_CHANGES = [
    ("project_id", "prj_other"),
    ("backup_key", "bk-other"),
    ("restore_time", "2026-01-01T00:00:00Z"),
    ("restore_point_id", "rp_1"),
    ("target_kind", "project"),
    ("preview_id", "prv_1"),
    ("preview_name", "pr-42"),
    ("ttl_hours", 3),
    ("recreate", True),
    ("allow_unverified_backup", True),
    ("confirm_project_overwrite", True),
    ("triggers", {"deploy": "2"}),
    ("triggers", None),
]
# how create waits, and whether delete keeps the preview, are no reason to restore again
RESTORE_UPDATES = [
    ("retain_preview_on_delete", True),
    ("wait", False),
    ("timeout_minutes", 30),
]


def test_restore_changes_cover_every_input() -> None:
    changes = {name for name, _ in RESTORE_CHANGES}
    updates = {name for name, _ in RESTORE_UPDATES}
    assert changes | updates == set(RestoreProvider.input_names)
    assert updates == RestoreProvider.updatable


@pytest.mark.parametrize(("name", "value"), RESTORE_CHANGES)
def test_diff_restore_runs_a_new_restore_on_any_input_or_trigger_change(
    name: str, value: Any, engine: Engine, project: Project, backup: Backup, app_db: Path
) -> None:
    provider, inputs, id_, outputs = create_kind("restore", project, backup, app_db)

    result = provider.diff(id_, stored(outputs), {**inputs, name: value})

    assert (result.changes, result.replaces, result.delete_before_replace) == (True, [name], False)


@pytest.mark.parametrize(("name", "value"), RESTORE_UPDATES)
def test_restore_update_changes_outputs_without_a_new_restore(
    name: str, value: Any, engine: Engine, project: Project, backup: Backup, app_db: Path
) -> None:
    provider, inputs, id_, outputs = create_kind("restore", project, backup, app_db)
    jobs = engine.list_jobs(project.id, 1000)
    news = {**inputs, name: value}

    result = provider.diff(id_, stored(outputs), news)
    updated = update(provider, id_, stored(outputs), news)

    assert (result.changes, result.replaces) == (True, [])
    assert updated[name] == value
    for output in ("job_id", "state", "preview_database_id", "preview_database_url"):
        assert updated[output] == outputs[output]
    after = provider.diff(id_, updated, news)
    assert (after.changes, after.replaces) == (False, [])
    assert engine.list_jobs(project.id, 1000) == jobs  # no restore ran


def test_restore_delete_after_an_update_to_retain_keeps_the_preview(
    engine: Engine, project: Project, backup: Backup, app_db: Path
) -> None:
    provider, inputs, id_, outputs = create_kind("restore", project, backup, app_db)
    news = {**inputs, "retain_preview_on_delete": True}

    provider.delete(id_, update(provider, id_, stored(outputs), news))

    assert preview_path(outputs).is_file()
    assert [preview.id for preview in engine.list_preview_databases(project.id)] == [
        outputs["preview_database_id"]
    ]


UNKNOWN_CHANGES = [
    pytest.param("restore_point", "label", ["label"], id="restore_point-label"),
    pytest.param("restore_point", "backup_key", ["backup_key"], id="restore_point-backup_key"),
    pytest.param("restore", "triggers", ["triggers"], id="restore-triggers"),
    pytest.param("restore", "retain_preview_on_delete", [], id="restore-retain"),
    pytest.param("backup", "label", ["label"], id="backup-label"),
    pytest.param("project", "database_url", ["database_url"], id="project-database_url"),
    pytest.param("project", "force_destroy", [], id="project-force_destroy"),
    pytest.param("project", "pitr", [], id="project-pitr"),
]


@pytest.mark.parametrize(("kind", "name", "replaces"), UNKNOWN_CHANGES)
def test_diff_counts_an_unknown_new_value_as_a_change(
    kind: str,
    name: str,
    replaces: list[str],
    engine: Engine,
    project: Project,
    backup: Backup,
    app_db: Path,
) -> None:
    provider, inputs, id_, outputs = create_kind(kind, project, backup, app_db)

    result = provider.diff(id_, stored(outputs), {**inputs, name: UNKNOWN})

    assert (result.changes, result.replaces) == (True, replaces)


@pytest.mark.parametrize(
    ("kind", "name", "value", "delete_first"),
    [
        ("restore_point", "label", "renamed", False),
        ("restore", "triggers", {"deploy": "2"}, False),
        ("backup", "label", "renamed", False),
        ("project", "name", "renamed", True),  # names are unique: the old one goes first
        ("project", "force_destroy", True, False),  # an update, not a replacement
        ("project", "pitr", True, False),  # an update, not a replacement
    ],
)
def test_diff_deletes_before_replacing_only_a_project(
    kind: str,
    name: str,
    value: Any,
    delete_first: bool,
    engine: Engine,
    project: Project,
    backup: Backup,
    app_db: Path,
) -> None:
    provider, inputs, id_, outputs = create_kind(kind, project, backup, app_db)

    result = provider.diff(id_, stored(outputs), {**inputs, name: value})

    assert result.changes is True
    assert result.delete_before_replace is delete_first


# ---------------------------------------------------------------- RestorePoint


def test_restore_point_without_backup_key_takes_a_fresh_backup_and_pins_it(
    engine: Engine, project: Project
) -> None:
    created = create(RestorePointProvider(), restore_point_inputs(project.id, note="v2 schema"))

    (taken,) = engine.list_backups(project.id)
    assert taken.verification_state == "verified"
    assert taken.label == "before-migration"
    (point,) = engine.list_restore_points(project.id)
    outputs = created.outs
    assert created.id == point.id == outputs["restore_point_id"]
    assert (outputs["backup_key"], outputs["backup_id"]) == (taken.backup_key, taken.id)
    assert (point.backup_key, point.backup_id) == (taken.backup_key, taken.id)
    assert outputs["state"] == "active"
    assert parse_timestamp(outputs["created_at"]) == point.created_at
    assert (outputs["project_id"], outputs["label"], outputs["note"], outputs["kind"]) == (
        project.id,
        "before-migration",
        "v2 schema",
        "backup",
    )


def test_restore_point_with_backup_key_pins_that_backup(
    engine: Engine, project: Project, backup: Backup
) -> None:
    created = create(
        RestorePointProvider(), restore_point_inputs(project.id, backup_key=backup.backup_key)
    )

    assert [b.id for b in engine.list_backups(project.id)] == [backup.id]  # no new backup
    (point,) = engine.list_restore_points(project.id)
    assert created.id == point.id
    assert (created.outs["backup_key"], created.outs["backup_id"]) == (
        backup.backup_key,
        backup.id,
    )
    assert created.outs["state"] == "active"


def test_restore_point_read_returns_current_outputs(engine: Engine, project: Project) -> None:
    provider = RestorePointProvider()
    created = create(provider, restore_point_inputs(project.id))

    reread = read(provider, created.id, stored(created.outs))

    assert reread.id == created.id
    assert reread.outs == stored(created.outs)


def test_restore_point_deleted_behind_the_providers_back_reads_as_gone(
    engine: Engine, project: Project
) -> None:
    provider = RestorePointProvider()
    created = create(provider, restore_point_inputs(project.id))
    with Engine(engine.directory) as other:
        other.delete_restore_point(project.id, created.id)

    next_operation()
    reread = read(provider, created.id, stored(created.outs))

    assert (reread.id, reread.outs) == ("", {})


def test_restore_point_whose_backup_expired_reads_expired_and_is_replaced(
    engine: Engine, project: Project
) -> None:
    provider = RestorePointProvider()
    inputs = restore_point_inputs(project.id)
    created = create(provider, inputs)

    assert expire_backups_by_retention(engine.directory, project.id) == [created.outs["backup_key"]]
    next_operation()
    reread = read(provider, created.id, stored(created.outs))
    result = provider.diff(created.id, reread.outs, inputs)

    assert reread.id == created.id
    assert reread.outs["state"] == "expired"
    assert (result.changes, result.replaces) == (True, ["state"])


def test_restore_point_delete_keeps_the_backup_and_tolerates_a_second_delete(
    engine: Engine, project: Project
) -> None:
    provider = RestorePointProvider()
    created = create(provider, restore_point_inputs(project.id))

    provider.delete(created.id, stored(created.outs))

    assert engine.list_restore_points(project.id) == []
    (kept,) = engine.list_backups(project.id)
    assert kept.backup_key == created.outs["backup_key"]
    assert (engine.directory / "blobs" / kept.backup_key).is_file()
    provider.delete(created.id, stored(created.outs))  # already gone: nothing to do


def test_restore_point_delete_after_its_project_is_gone_succeeds(
    engine: Engine, project: Project
) -> None:
    provider = RestorePointProvider()
    created = create(provider, restore_point_inputs(project.id))
    engine.delete_project(project.id, force=True)

    provider.delete(created.id, stored(created.outs))
    next_operation()
    reread = read(provider, created.id, stored(created.outs))

    assert (reread.id, reread.outs) == ("", {})


def test_restore_point_create_that_fails_after_its_backup_leaves_no_backup(
    engine: Engine, project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Engine, project_id: str, request: CreateRestorePoint) -> RestorePoint:
        raise Conflict("injected: the restore point cannot be written")

    monkeypatch.setattr(Engine, "create_restore_point", refuse)

    with pytest.raises(CapyResourceError, match="injected") as failure:
        create(RestorePointProvider(), restore_point_inputs(project.id))

    assert "before-migration" in str(failure.value)
    assert engine.list_backups(project.id) == []
    assert engine.list_restore_points(project.id) == []
    blobs = engine.directory / "blobs"
    assert [path.name for path in blobs.rglob("*") if path.is_file()] == []


def test_restore_point_adopts_an_existing_restore_point(
    engine: Engine, project: Project, backup: Backup
) -> None:
    existing = engine.create_restore_point(
        project.id, CreateRestorePoint(label="before-migration", backup_key=backup.backup_key)
    )
    provider = RestorePointProvider()
    inputs = restore_point_inputs(project.id, adopt_id=existing.id)

    created = create(provider, inputs)

    assert created.id == existing.id == created.outs["restore_point_id"]
    assert created.outs["adopt_id"] == existing.id
    assert created.outs["backup_key"] == backup.backup_key
    assert [point.id for point in engine.list_restore_points(project.id)] == [existing.id]
    assert [b.id for b in engine.list_backups(project.id)] == [backup.id]  # no fresh backup
    result = provider.diff(created.id, stored(created.outs), inputs)
    assert (result.changes, result.replaces) == (False, [])


def test_replacing_an_adopted_restore_point_keeps_the_one_the_stack_holds(
    engine: Engine, project: Project, backup: Backup
) -> None:
    existing = engine.create_restore_point(
        project.id, CreateRestorePoint(label="before-migration", backup_key=backup.backup_key)
    )
    provider = RestorePointProvider()
    inputs = restore_point_inputs(project.id, adopt_id=existing.id)
    adopted = create(provider, inputs)
    news = {**inputs, "note": "why we keep it"}
    # replacing would adopt the same object again and then delete it as "the old one":
    # while adopt_id stays, a change is recorded by an update and nothing is replaced
    result = provider.diff(adopted.id, stored(adopted.outs), news)
    assert (result.changes, result.replaces) == (True, [])
    updated = provider.update(adopted.id, stored(adopted.outs), news)
    assert updated.outs is not None
    assert provider.diff(adopted.id, stored(updated.outs), news).changes is False
    assert [point.id for point in engine.list_restore_points(project.id)] == [existing.id]

    # dropping adopt_id hands the object back to capy: a replacement takes a new one
    released = {**news, "adopt_id": None}
    assert "adopt_id" in (provider.diff(adopted.id, stored(updated.outs), released).replaces or [])
    replacement = create(provider, released)
    provider.delete(adopted.id, stored(updated.outs))
    listed = [point.id for point in engine.list_restore_points(project.id)]
    assert listed == [replacement.id]


def test_restore_point_adopting_an_unknown_id_fails_and_creates_nothing(
    engine: Engine, project: Project
) -> None:
    with pytest.raises(CapyResourceError) as failure:
        create(RestorePointProvider(), restore_point_inputs(project.id, adopt_id="rp_nosuchpoint"))

    assert "rp_nosuchpoint" in str(failure.value)
    assert engine.list_restore_points(project.id) == []
    assert engine.list_backups(project.id) == []


def _host_create(provider: CapyProvider, props: dict[str, Any], context: Any) -> Any:
    """What Pulumi's dynamic provider host does for a Create (``pulumi/dynamic/__main__.py``):
    call the provider's ``create`` with the call's gRPC context in its frame."""
    return provider.create(props)


def test_a_failed_call_from_pulumis_host_sets_one_line_grpc_status(
    engine: Engine, project: Project
) -> None:
    context = create_autospec(grpc.ServicerContext, instance=True)
    inputs = restore_point_inputs(project.id, adopt_id="rp_nosuchpoint")

    answered = _host_create(RestorePointProvider(), dict(inputs), context)

    # the status Pulumi shows as ``error: <details>``, with no Python traceback
    context.set_code.assert_called_once_with(grpc.StatusCode.UNKNOWN)
    (details,) = context.set_details.call_args.args
    assert details.startswith("adopt restore point rp_nosuchpoint: ")
    assert "Traceback" not in details
    assert "\n" not in details
    assert answered.id  # a placeholder the host can serialize (the engine ignores it)
    # called by anything else, the error is raised as before
    with pytest.raises(CapyResourceError, match="rp_nosuchpoint"):
        create(RestorePointProvider(), dict(inputs))
    # a bug is not a CapyError: the host's traceback stays, for the report
    with pytest.raises(KeyError):
        _host_create(RestorePointProvider(), {}, context)
    assert context.set_details.call_count == 1


# ---------------------------------------------------------------- Restore


def test_restore_waits_and_returns_completed_outputs(
    engine: Engine,
    project: Project,
    backup: Backup,
    app_db: Path,
    app_contents: Tables,
    capfd: pytest.CaptureFixture[str],
) -> None:
    change_app_db(app_db)  # the project moved on: the preview must hold the backup's rows

    created = create(RestoreProvider(), restore_inputs(project.id, backup_key=backup.backup_key))

    outputs = created.outs
    assert created.id == outputs["job_id"]
    assert (outputs["state"], outputs["attempts"], outputs["last_exit_code"]) == (
        "completed",
        1,
        0,
    )
    (preview,) = engine.list_preview_databases(project.id)
    assert outputs["preview_database_id"] == preview.id
    assert preview.state == "ready"
    path = preview_path(outputs)
    assert path.is_file()
    assert table_contents(path) == app_contents
    assert table_contents(app_db) != app_contents  # the project database is untouched

    err = capfd.readouterr().err
    started = err.index(f"restore job {created.id} started (backup -> new_preview)")
    pending = err.index(f"restore: job {created.id} pending (attempt 0/")
    completed = err.index(f"restore: job {created.id} completed (attempt 1/")
    assert started < pending < completed


def test_a_failed_restore_raises_the_job_error_and_leaves_no_preview(
    engine: Engine, project: Project, backup: Backup
) -> None:
    flip_middle_byte(engine.directory, backup.backup_key)

    with pytest.raises(CapyResourceError) as failure:
        create(RestoreProvider(), restore_inputs(project.id, backup_key=backup.backup_key))

    (job,) = [job for job in engine.list_jobs(project.id) if job.type == "project.restore"]
    assert job.state == "failed"
    assert job.error is not None
    assert "checksum" in job.error.lower()
    message = str(failure.value)
    assert job.id in message
    assert job.error in message
    assert engine.list_preview_databases(project.id) == []
    previews = engine.directory / "previews"
    assert [path for path in previews.rglob("*") if path.is_file()] == []


@pytest.mark.parametrize("retain", [False, True], ids=["delete-preview", "retain-preview"])
def test_restore_delete_of_a_new_preview_deletes_it_unless_retained(
    retain: bool, engine: Engine, project: Project, backup: Backup
) -> None:
    provider = RestoreProvider()
    created = create(
        provider,
        restore_inputs(project.id, backup_key=backup.backup_key, retain_preview_on_delete=retain),
    )
    path = preview_path(created.outs)
    assert path.is_file()

    provider.delete(created.id, stored(created.outs))

    previews = engine.list_preview_databases(project.id)
    if retain:
        assert path.is_file()
        assert [(p.id, p.state) for p in previews] == [
            (created.outs["preview_database_id"], "ready")
        ]
    else:
        assert not path.exists()
        assert previews == []
    provider.delete(created.id, stored(created.outs))  # a second delete finds nothing to do


def test_restore_into_the_project_restores_its_database(
    engine: Engine, project: Project, backup: Backup, app_db: Path, app_contents: Tables
) -> None:
    change_app_db(app_db)

    created = create(
        RestoreProvider(),
        restore_inputs(
            project.id,
            backup_key=backup.backup_key,
            target_kind="project",
            confirm_project_overwrite=True,
        ),
    )

    assert created.outs["state"] == "completed"
    assert table_contents(app_db) == app_contents
    assert created.outs["preview_database_id"] is None
    assert created.outs["preview_database_url"] is None
    assert engine.list_preview_databases(project.id) == []


def test_restore_into_the_project_without_confirmation_fails_naming_it(
    engine: Engine, project: Project, backup: Backup, app_db: Path
) -> None:
    change_app_db(app_db)
    before = table_contents(app_db)

    with pytest.raises(CapyResourceError, match="confirm_project_overwrite"):
        create(
            RestoreProvider(),
            restore_inputs(project.id, backup_key=backup.backup_key, target_kind="project"),
        )

    assert table_contents(app_db) == before


@pytest.mark.parametrize("target_kind", ["project", "preview"])
def test_restore_delete_of_a_restore_into_an_existing_target_only_forgets_it(
    target_kind: str, engine: Engine, project: Project, backup: Backup, app_db: Path
) -> None:
    if target_kind == "project":
        target = app_db
        inputs = restore_inputs(
            project.id,
            backup_key=backup.backup_key,
            target_kind="project",
            confirm_project_overwrite=True,
        )
    else:
        first = engine.wait_for_job(
            engine.create_restore(project.id, RestoreRequest(backup_key=backup.backup_key)).id
        )
        (preview,) = engine.list_preview_databases(project.id)
        assert preview.id == first.preview_database_id
        assert preview.database_name is not None
        target = Path(preview.database_name)
        inputs = restore_inputs(
            project.id, backup_key=backup.backup_key, target_kind="preview", preview_id=preview.id
        )
    provider = RestoreProvider()
    created = create(provider, inputs)
    assert created.outs["state"] == "completed"
    before = table_contents(target)
    jobs = engine.list_jobs(project.id, 1000)
    backups = engine.list_backups(project.id)
    previews = engine.list_preview_databases(project.id)

    provider.delete(created.id, stored(created.outs))

    assert table_contents(target) == before
    assert engine.list_jobs(project.id, 1000) == jobs  # nothing started
    assert engine.list_backups(project.id) == backups
    assert engine.list_preview_databases(project.id) == previews


def test_restore_from_a_restore_point_made_by_the_provider(
    engine: Engine, project: Project, app_db: Path, app_contents: Tables
) -> None:
    point = create(RestorePointProvider(), restore_point_inputs(project.id))
    change_app_db(app_db)

    created = create(RestoreProvider(), restore_inputs(project.id, restore_point_id=point.id))

    assert created.outs["state"] == "completed"
    assert created.outs["restore_point_id"] == point.id
    assert table_contents(preview_path(created.outs)) == app_contents


def test_restore_without_wait_returns_pending_and_read_shows_the_end(
    engine: Engine, project: Project, backup: Backup
) -> None:
    provider = RestoreProvider()

    created = create(provider, restore_inputs(project.id, backup_key=backup.backup_key, wait=False))

    assert (created.outs["state"], created.outs["attempts"]) == ("pending", 0)
    assert engine.get_job(created.id).state == "pending"
    engine.wait_for_job(created.id)  # a worker runs it later
    next_operation()
    reread = read(provider, created.id, stored(created.outs))
    assert reread.id == created.id
    assert (reread.outs["state"], reread.outs["attempts"]) == ("completed", 1)
    assert reread.outs["preview_database_id"] == created.outs["preview_database_id"]


def test_restore_read_after_a_background_restore_gives_the_preview_url(
    engine: Engine, project: Project, backup: Backup, app_contents: Tables
) -> None:
    provider = RestoreProvider()
    created = create(provider, restore_inputs(project.id, backup_key=backup.backup_key, wait=False))
    engine.wait_for_job(created.id)

    next_operation()
    reread = read(provider, created.id, stored(created.outs))

    # regression: a refresh of a restore started with wait=False gives its preview's URL
    assert table_contents(preview_path(reread.outs)) == app_contents


def test_restore_read_of_a_job_that_is_gone_reads_as_gone(
    engine: Engine, project: Project, backup: Backup
) -> None:
    provider = RestoreProvider()
    created = create(provider, restore_inputs(project.id, backup_key=backup.backup_key))
    engine.delete_project(project.id, force=True)

    reread = read(provider, created.id, stored(created.outs))

    assert (reread.id, reread.outs) == ("", {})


def _drop_preview_by_its_ttl(engine_dir: Path) -> None:
    """The engine's tick two days on (its clock ahead): every preview is past its TTL and
    dropped, as a worker's tick drops it."""
    with Engine(engine_dir, clock=ManualClock(datetime.now(UTC) + timedelta(days=2))) as later:
        assert later.tick().deleted_previews
        later.run_pending()


def _past_its_ttl(engine: Engine, preview_id: str) -> None:
    """The preview's TTL ran out a minute ago; no tick has dropped it yet."""
    past = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with sqlite3.connect(engine.rt.store.path) as db:  # type: ignore[attr-defined]
        db.execute(
            "UPDATE preview_databases SET ttl_expires_at = ? WHERE id = ?", (past, preview_id)
        )
    db.close()


@pytest.mark.parametrize("how", ["deleted", "dropped-by-ttl"])
def test_restore_whose_preview_is_gone_reads_as_gone(
    how: str, engine: Engine, project: Project, backup: Backup
) -> None:
    provider = RestoreProvider()
    created = create(
        provider, restore_inputs(project.id, backup_key=backup.backup_key, ttl_hours=1)
    )
    assert created.outs["preview_state"] == "ready"
    assert parse_timestamp(created.outs["preview_expires_at"]) > datetime.now(UTC)
    fresh = read(provider, created.id, stored(created.outs))
    assert (fresh.id, fresh.outs["preview_state"]) == (created.id, "ready")
    next_operation()
    if how == "deleted":  # `capy previews delete`
        job = engine.delete_preview_database(created.outs["preview_database_id"])
        engine.wait_for_job(job.id)
    else:
        _drop_preview_by_its_ttl(engine.directory)
    assert not preview_path(created.outs).exists()

    reread = read(provider, created.id, stored(created.outs))

    # refresh shows the restore deleted; the next up restores again
    assert (reread.id, reread.outs) == ("", {})


def test_restore_whose_preview_is_past_its_ttl_reads_expired_and_is_replaced(
    engine: Engine, project: Project, backup: Backup
) -> None:
    provider = RestoreProvider()
    inputs = restore_inputs(
        project.id, backup_key=backup.backup_key, ttl_hours=1, preview_name="inspect"
    )
    created = create(provider, inputs)
    _past_its_ttl(engine, created.outs["preview_database_id"])
    next_operation()

    reread = read(provider, created.id, stored(created.outs))
    result = provider.diff(created.id, stored(reread.outs), dict(inputs))

    assert reread.id == created.id
    assert reread.outs["preview_state"] == "expired"
    # a new restore whose preview takes the name: the expired one goes first
    assert (result.changes, result.replaces, result.delete_before_replace) == (
        True,
        ["preview_state"],
        True,
    )
    provider.delete(created.id, stored(reread.outs))
    again = create(provider, dict(inputs))
    (preview,) = engine.list_preview_databases(project.id)
    assert (preview.id, preview.name) == (again.outs["preview_database_id"], "inspect")
    assert again.outs["preview_state"] == "ready"


# ---------------------------------------------------------------- Backup


def test_backup_create_read_delete(engine: Engine, project: Project) -> None:
    provider = BackupProvider()

    created = create(provider, backup_inputs(project.id))

    outputs = created.outs
    (listed,) = engine.list_backups(project.id)
    assert created.id == listed.id == outputs["backup_id"]
    assert outputs["backup_key"] == listed.backup_key
    assert outputs["size_bytes"] > 0
    assert outputs["verification_state"] == "verified"
    assert outputs["label"] == "on-demand"
    assert engine.get_job(outputs["job_id"]).type == "project.backup"

    reread = read(provider, created.id, stored(outputs))
    assert (reread.id, reread.outs) == (created.id, stored(outputs))

    provider.delete(created.id, stored(outputs))
    assert engine.list_backups(project.id) == []
    assert not (engine.directory / "blobs" / listed.backup_key).exists()
    next_operation()
    gone = read(provider, created.id, stored(outputs))
    assert (gone.id, gone.outs) == ("", {})
    provider.delete(created.id, stored(outputs))  # already gone: nothing to do


def test_backup_without_wait_returns_its_job_at_once(engine: Engine, project: Project) -> None:
    created = create(BackupProvider(), backup_inputs(project.id, wait=False))

    assert created.outs["state"] == "pending"
    assert engine.get_job(created.outs["job_id"]).state == "pending"


# ---------------------------------------------------------------- Project


def test_project_create_read_and_guarded_delete(engine: Engine, app_db: Path) -> None:
    provider = ProjectProvider()
    inputs = project_inputs(sqlite_url(app_db))

    created = create(provider, inputs)

    outputs = created.outs
    registered = engine.get_project(created.id)
    assert outputs["project_id"] == created.id
    assert (registered.name, registered.environment) == ("shop", "non_production")
    assert outputs["database_url"] == sqlite_url(app_db)
    reread = read(provider, created.id, stored(outputs))
    assert (reread.id, reread.outs) == (created.id, stored(outputs))

    kept = take_backup(engine, created.id)
    with pytest.raises(CapyResourceError, match="force_destroy") as refused:
        provider.delete(created.id, stored(outputs))
    # issue 16: the remedy said once, in Pulumi's words (not also the API's force=true)
    assert str(refused.value) == (
        f"delete project shop ({created.id}): project shop ({created.id}) still has 1 "
        "backup(s), which stay safe: to delete them with the project, set "
        "force_destroy=True on the Project, run `pulumi up`, then destroy"
    )
    assert engine.get_project(created.id).id == created.id
    assert [b.id for b in engine.list_backups(created.id)] == [kept.id]

    # set force_destroy (an update), then destroy
    news = {**inputs, "force_destroy": True}
    result = provider.diff(created.id, stored(outputs), news)
    assert (result.changes, result.replaces) == (True, [])
    updated = update(provider, created.id, stored(outputs), news)
    provider.delete(created.id, updated)

    with pytest.raises(NotFound):
        engine.get_project(created.id)
    assert not (engine.directory / "blobs" / kept.backup_key).exists()
    gone = read(provider, created.id, stored(outputs))
    assert (gone.id, gone.outs) == ("", {})
    provider.delete(created.id, updated)  # already gone: nothing to do


# ---------------------------------------------------------------- concurrency


def test_refresh_of_many_restore_points_lists_the_project_once(
    engine: Engine, project: Project, backup: Backup, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = [
        engine.create_restore_point(
            project.id, CreateRestorePoint(label=f"point-{index}", backup_key=backup.backup_key)
        )
        for index in range(8)
    ]
    provider = RestorePointProvider()
    created = [
        {
            **restore_point_inputs(project.id, label=point.label),
            "restore_point_id": point.id,
            "state": "active",
        }
        for point in points
    ]
    calls: list[str] = []
    list_restore_points = Engine.list_restore_points

    def counting(self: Engine, project_id: str) -> list[RestorePoint]:
        calls.append(project_id)
        return list_restore_points(self, project_id)

    monkeypatch.setattr(Engine, "list_restore_points", counting)

    start = threading.Barrier(4)

    def read_point(index: int) -> tuple[str, str]:
        if index < 4:
            start.wait(timeout=60)  # the first four reads start together
        result = read(provider, points[index].id, created[index])
        return str(result.id), result.outs["label"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(read_point, range(8)))

    assert results == [(point.id, point.label) for point in points]
    assert calls == [project.id]


def test_restore_point_creates_in_four_threads_all_succeed(
    engine: Engine, project: Project
) -> None:
    provider = RestorePointProvider()

    results = in_threads(
        4, lambda index: create(provider, restore_point_inputs(project.id, label=f"point-{index}"))
    )

    ids = [result.id for result in results]
    assert len(set(ids)) == 4
    listed = engine.list_restore_points(project.id)
    assert sorted(point.id for point in listed) == sorted(ids)
    assert len({point.backup_key for point in listed}) == 4  # each pinned its own backup
    assert all(b.verification_state == "verified" for b in engine.list_backups(project.id))


# ---------------------------------------------------------------- configure


def configure(provider: CapyProvider, values: dict[str, str]) -> None:
    provider.configure(ConfigureRequest(Config(values, "shop-infra")))


def test_configure_engine_dir_beats_the_environment(
    engine: Engine, app_db: Path, tmp_path: Path
) -> None:
    configured = tmp_path / "configured-engine"
    provider = ProjectProvider()
    configure(provider, {"capy:engineDir": str(configured)})

    created = create(provider, project_inputs(sqlite_url(app_db)))

    with Engine(configured) as chosen:
        assert [p.id for p in chosen.list_projects()] == [created.id]
    assert engine.list_projects() == []  # CAPY_ENGINE_DIR is not used


@pytest.mark.parametrize(
    "provider_class", [RestorePointProvider, RestoreProvider, BackupProvider, ProjectProvider]
)
def test_configure_stores_no_credential_on_the_provider(
    provider_class: type[CapyProvider],
) -> None:
    provider = provider_class()
    configure(provider, {"capy:apiKey": API_KEY, "capy:apiUrl": "https://api.capydb.test"})

    key = API_KEY.encode()
    assert vars(provider) == {}
    assert key not in pickle.dumps(provider)
    assert key not in dill.dumps(provider, recurse=True)
    assert key not in base64.b64decode(serialize_provider(provider))
    assert _provider.current_settings().mode == "api"  # the key is in effect all the same


# ---------------------------------------------------------------- functions


def test_functions_return_the_engines_objects(
    engine: Engine, project: Project, backup: Backup
) -> None:
    engine.create_restore_point(
        project.id, CreateRestorePoint(label="before-migration", backup_key=backup.backup_key)
    )

    assert get_restore_points(project.id) == engine.list_restore_points(project.id)
    assert get_backups(project.id) == engine.list_backups(project.id) == [backup]
    jobs = get_jobs(project.id)
    assert jobs == engine.list_jobs(project.id)
    assert {job.type for job in jobs} == {"project.backup", "backup.verify"}
    assert get_jobs(project.id, limit=1) == jobs[:1]


def test_functions_use_the_engine_dir_of_the_environment(
    engine_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app_db: Path
) -> None:
    other = tmp_path / "other-engine"
    with Engine(other) as elsewhere:
        project = elsewhere.create_project(
            CreateProject(name="elsewhere", database_url=sqlite_url(app_db))
        ).project
        take_backup(elsewhere, project.id)

    with pytest.raises(NotFound):  # CAPY_ENGINE_DIR names the engine the project is not in
        get_backups(project.id)
    monkeypatch.setenv("CAPY_ENGINE_DIR", str(other))
    assert [b.project_id for b in get_backups(project.id)] == [project.id]
