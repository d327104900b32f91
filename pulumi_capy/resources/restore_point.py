"""``RestorePoint``: a name pinned to a backup (or, with PITR, to a moment).

Kind ``backup`` without ``backup_key`` takes a fresh backup first and pins it:
"a snapshot before the risky thing". Any input change replaces it; delete
removes the restore point, never its backup. A refresh shows one that vanished
as deleted (the next ``up`` recreates it) and one whose backup expired as
``state: expired`` (the next ``up`` replaces it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    UpdateResult,
)

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import CapyError, NotFound, NotSupported
from pulumi_capy.api.models import (
    CreateBackup,
    CreateRestorePoint,
)
from pulumi_capy.api.models import (
    RestorePoint as RestorePointModel,
)
from pulumi_capy.resources._provider import (
    CapyProvider,
    backend_session,
    cached_listing,
    check_model,
    check_past,
    check_string,
    fail,
    forget_listing,
    model_outputs,
    progress,
    report_job,
)

__all__ = ["RestorePoint", "RestorePointProvider"]

BACKUP_TIMEOUT = 3600.0


def list_restore_points_cached(backend: Backend, project_id: str) -> list[RestorePointModel]:
    listing: list[RestorePointModel] = cached_listing(
        "restore-points", project_id, lambda: backend.list_restore_points(project_id)
    )
    return listing


def take_backup(backend: Backend, project_id: str, label: str | None, what: str) -> str:
    """Back up the project, wait for it and its verification; return the backup key."""
    job = backend.create_backup(project_id, CreateBackup(label=label))
    done = backend.wait_for_job(job.id, BACKUP_TIMEOUT, report_job(what))
    result = done.result or {}
    verify_job = result.get("verify_job_id")
    if verify_job:
        backend.wait_for_job(str(verify_job), BACKUP_TIMEOUT, report_job(f"{what} verify"))
    return str(result["backup_key"])


class RestorePointProvider(CapyProvider):
    input_names = ("project_id", "label", "kind", "backup_key", "pitr_time", "note", "adopt_id")
    stripped = ("label", "note", "backup_key", "adopt_id", "project_id")

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        news = self.normalized(news)
        failures: list[CheckFailure] = []
        check_string(news, "project_id", failures, required=True)
        check_string(news, "adopt_id", failures)
        request = {name: news.get(name) for name in ("label", "kind", "pitr_time", "note")}
        # kind backup without a key takes a fresh backup: valid for the resource
        request["backup_key"] = news.get("backup_key") or (
            "fresh" if (news.get("kind") or "backup") == "backup" else None
        )
        checked = check_model(CreateRestorePoint, request, failures)
        if checked is not None:
            check_past(news, "pitr_time", checked.pitr_time, failures)
        return CheckResult(news, failures)

    def replace_reasons(self, olds: Mapping[str, Any]) -> list[str]:
        return ["state"] if olds.get("state") == "expired" else []

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        adopted = olds.get("adopt_id")
        if adopted and news.get("adopt_id") == adopted:
            # Replacing would adopt the same object again and then delete it as the old
            # one: an adopted restore point only records new inputs. Change or remove
            # adopt_id to replace it.
            changed = [
                name for name in self.input_names if self.stored_input(olds, name) != news.get(name)
            ]
            return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)
        return super().diff(id_, olds, news)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Only for an adopted restore point: record the new inputs, change nothing."""
        return UpdateResult({**olds, "requested": self.requested_of(news)})

    def create(self, props: dict[str, Any]) -> CreateResult:
        project_id = str(props["project_id"])
        forget_listing("restore-points", project_id)
        forget_listing("backups", project_id)
        with backend_session() as backend:
            if props.get("adopt_id"):
                point = self._adopt(backend, project_id, str(props["adopt_id"]))
            else:
                point = self._create(backend, project_id, props)
        return CreateResult(point.id, self._outputs(point, props))

    def _adopt(self, backend: Backend, project_id: str, adopt_id: str) -> RestorePointModel:
        try:
            points = backend.list_restore_points(project_id)
        except CapyError as exc:
            fail(f"adopt restore point {adopt_id}", exc)
        for point in points:
            if point.id == adopt_id:
                progress(f"adopted restore point {adopt_id} ({point.label})")
                return point
        return fail(
            f"adopt restore point {adopt_id}",
            NotFound(f"no restore point {adopt_id} in project {project_id}"),
        )

    def _create(
        self, backend: Backend, project_id: str, props: dict[str, Any]
    ) -> RestorePointModel:
        label = str(props["label"])
        backup_key = props.get("backup_key")
        fresh_key: str | None = None
        try:
            if (props.get("kind") or "backup") == "backup" and not backup_key:
                progress(f"restore point {label}: taking a fresh backup")
                fresh_key = backup_key = take_backup(backend, project_id, label, label)
            return backend.create_restore_point(
                project_id,
                CreateRestorePoint(
                    label=label,
                    kind=props.get("kind") or "backup",
                    backup_key=backup_key,
                    pitr_time=props.get("pitr_time"),
                    note=props.get("note"),
                ),
            )
        except CapyError as exc:
            self._undo_backup(backend, project_id, fresh_key)
            fail(f"create restore point {label}", exc)

    @staticmethod
    def _undo_backup(backend: Backend, project_id: str, backup_key: str | None) -> None:
        """Create failed after taking a backup: remove it, so nothing is left unknown."""
        if backup_key is None:
            return
        try:
            for backup in backend.list_backups(project_id):
                if backup.backup_key == backup_key:
                    backend.delete_backup(project_id, backup.id)
                    progress(f"removed backup {backup_key} taken for the failed restore point")
        except NotSupported:
            progress(f"backup {backup_key} stays: this API cannot delete backups")
        except CapyError as exc:
            progress(f"could not remove backup {backup_key}: {exc}")

    def _outputs(self, point: RestorePointModel, props: dict[str, Any]) -> dict[str, Any]:
        outputs = self.inputs_of(props)
        outputs.update(model_outputs(point, "restore_point_id"))
        # the inputs as given: backup_key, pitr_time (and, when adopted, label and note)
        # name what was asked for; the outputs of the same names what exists
        outputs["requested"] = self.requested_of(props)
        outputs["adopt_id"] = props.get("adopt_id")
        return outputs

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        project_id = str(props.get("project_id"))
        with backend_session() as backend:
            try:
                points = list_restore_points_cached(backend, project_id)
            except NotFound:
                return ReadResult("", {})  # the project is gone, and the point with it
            except CapyError as exc:
                fail(f"read restore point {id_}", exc)
        for point in points:
            if point.id == id_:
                outputs = dict(props)
                outputs.update(model_outputs(point, "restore_point_id"))
                return ReadResult(id_, outputs)
        return ReadResult("", {})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        project_id = str(props.get("project_id"))
        forget_listing("restore-points", project_id)
        with backend_session() as backend:
            try:
                backend.delete_restore_point(project_id, id_)
            except NotFound:
                return
            except CapyError as exc:
                fail(f"delete restore point {id_}", exc)


class RestorePoint(Resource, module="capy", name="RestorePoint"):
    """A restore point: a named, pinned backup of a project database."""

    restore_point_id: pulumi.Output[str]
    project_id: pulumi.Output[str]
    organization_id: pulumi.Output[str | None]
    label: pulumi.Output[str]
    note: pulumi.Output[str | None]
    kind: pulumi.Output[str]
    backup_id: pulumi.Output[str | None]
    backup_key: pulumi.Output[str | None]
    pitr_time: pulumi.Output[str | None]
    state: pulumi.Output[str]
    created_by_actor_id: pulumi.Output[str | None]
    created_by_actor_kind: pulumi.Output[str | None]
    created_at: pulumi.Output[str | None]
    updated_at: pulumi.Output[str | None]

    def __init__(
        self,
        resource_name: str,
        *,
        project_id: pulumi.Input[str],
        label: pulumi.Input[str],
        kind: pulumi.Input[str] = "backup",
        backup_key: pulumi.Input[str] | None = None,
        pitr_time: pulumi.Input[str] | None = None,
        note: pulumi.Input[str] | None = None,
        adopt_id: pulumi.Input[str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "project_id": project_id,
            "label": label,
            "kind": kind,
            "backup_key": backup_key,
            "pitr_time": pitr_time,
            "note": note,
            "adopt_id": adopt_id,
        }
        outputs = dict.fromkeys(
            (
                "restore_point_id",
                "organization_id",
                "backup_id",
                "state",
                "created_by_actor_id",
                "created_by_actor_kind",
                "created_at",
                "updated_at",
                "requested",
            )
        )
        super().__init__(RestorePointProvider(), resource_name, {**props, **outputs}, opts)
