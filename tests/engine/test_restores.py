"""``restores.choose_target``: the three targets of a restore, checked one by one.

The whole path (``Engine.create_restore`` to a restored database) is in
``test_service.py``; these call the choice itself, inside a transaction that
the test opens, to pin what each target locks and what it writes.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from pulumi_capy.api.errors import Forbidden, InvalidInput
from pulumi_capy.api.models import Project, RestoreRequest, TargetKind
from pulumi_capy.engine import projects, restores
from pulumi_capy.engine.service import Engine
from pulumi_capy.engine.stores.contract import BackupRecord, ProjectRecord
from tests.engine.conftest import START, take_backup


def _records(engine: Engine, project: Project) -> tuple[ProjectRecord, BackupRecord]:
    backup = engine.rt.store.get_backup(take_backup(engine, project.id).id)
    assert backup is not None
    return projects.require(engine.rt, project.id), backup


def test_the_project_is_a_target_only_when_confirmed(engine: Engine, project: Project) -> None:
    record, backup = _records(engine, project)
    refused = RestoreRequest(backup_key=backup.backup_key, target_kind=TargetKind.project)
    confirmed = refused.model_copy(update={"confirm_project_overwrite": True})

    with engine.rt.store.transaction() as tx:
        with pytest.raises(Forbidden, match="confirm_project_overwrite"):
            restores.choose_target(engine.rt, tx, record, backup, refused, now=START)
        target = restores.choose_target(engine.rt, tx, record, backup, confirmed, now=START)

    assert target == restores.RestoreTarget(
        locked_resource=f"project:{project.id}", preview_id=None
    )
    assert engine.list_preview_databases(project.id) == []


def test_an_existing_preview_must_exist(engine: Engine, project: Project) -> None:
    record, backup = _records(engine, project)
    request = RestoreRequest(
        backup_key=backup.backup_key, target_kind=TargetKind.preview, preview_id="prv_missing"
    )

    with engine.rt.store.transaction() as tx, pytest.raises(InvalidInput) as raised:
        restores.choose_target(engine.rt, tx, record, backup, request, now=START)

    assert [error.field for error in raised.value.errors] == ["preview_id"]
    assert "no preview database prv_missing" in str(raised.value)


def test_a_new_preview_is_written_in_the_transaction(engine: Engine, project: Project) -> None:
    record, backup = _records(engine, project)
    request = RestoreRequest(backup_key=backup.backup_key)  # target_kind new_preview

    with engine.rt.store.transaction() as tx:
        target = restores.choose_target(engine.rt, tx, record, backup, request, now=START)

    assert target.preview_id is not None
    assert target.locked_resource == f"preview:{target.preview_id}"
    preview = engine.get_preview_database(target.preview_id)
    assert (preview.state, preview.mode, preview.project_id) == ("creating", "restore", project.id)
    assert preview.source_backup_key == backup.backup_key
    assert preview.ttl_expires_at == START + timedelta(hours=restores.PREVIEW_TTL_HOURS)
