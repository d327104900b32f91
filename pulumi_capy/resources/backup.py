"""``Backup``: an on-demand backup of a project database.

Create takes the backup (and, with ``wait``, waits for it and its
verification). Delete deletes the backup; against hosted CapyDB, whose API
has no such call, it only forgets it and says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, Resource

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import CapyError, NotFound, NotSupported
from pulumi_capy.api.models import Backup as BackupModel
from pulumi_capy.api.models import CreateBackup, JobState
from pulumi_capy.resources._provider import (
    CapyProvider,
    backend_session,
    cached_listing,
    check_bool,
    check_model,
    check_string,
    fail,
    forget_listing,
    model_outputs,
    progress,
    report_job,
)

__all__ = ["Backup", "BackupProvider"]

BACKUP_TIMEOUT = 3600.0


def list_backups_cached(backend: Backend, project_id: str) -> list[BackupModel]:
    listing: list[BackupModel] = cached_listing(
        "backups", project_id, lambda: backend.list_backups(project_id)
    )
    return listing


class BackupProvider(CapyProvider):
    input_names = ("project_id", "label", "wait")
    updatable = frozenset({"wait"})
    stripped = ("project_id", "label")

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        news = self.normalized(news)
        failures: list[CheckFailure] = []
        check_string(news, "project_id", failures, required=True)
        check_bool(news, "wait", failures)
        check_model(CreateBackup, {"label": news.get("label")}, failures)
        return CheckResult(news, failures)

    def replace_reasons(self, olds: Mapping[str, Any]) -> list[str]:
        return ["state"] if olds.get("state") == "expired" else []

    def create(self, props: dict[str, Any]) -> CreateResult:
        project_id = str(props["project_id"])
        label = props.get("label")
        forget_listing("backups", project_id)
        with backend_session() as backend:
            try:
                job = backend.create_backup(project_id, CreateBackup(label=label))
                if props.get("wait", True) is False:
                    queued = {"job_id": job.id, "state": JobState.pending.value}
                    outputs = self.inputs_of(props) | queued
                    return CreateResult(job.id, outputs)
                done = backend.wait_for_job(job.id, BACKUP_TIMEOUT, report_job("backup"))
                result = done.result or {}
                if result.get("verify_job_id"):
                    backend.wait_for_job(
                        str(result["verify_job_id"]), BACKUP_TIMEOUT, report_job("verify")
                    )
                backup = self._find(
                    backend.list_backups(project_id),
                    result.get("backup_id"),
                    result.get("backup_key"),
                )
            except CapyError as exc:
                fail(f"backup of project {project_id}", exc)
        if backup is None:
            fail(
                f"backup of project {project_id}",
                NotFound(f"job {job.id} completed but its backup is not listed"),
            )
        outputs = self.inputs_of(props) | model_outputs(backup, "backup_id") | {"job_id": job.id}
        outputs["label"] = label
        return CreateResult(backup.id, outputs)

    @staticmethod
    def _find(
        backups: list[BackupModel], backup_id: object, backup_key: object
    ) -> BackupModel | None:
        for backup in backups:
            if backup.id == backup_id or backup.backup_key == backup_key:
                return backup
        return None

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        project_id = str(props.get("project_id"))
        with backend_session() as backend:
            try:
                backups = list_backups_cached(backend, project_id)
            except NotFound:
                return ReadResult("", {})
            except CapyError as exc:
                fail(f"read backup {id_}", exc)
        backup = self._find(backups, id_, props.get("backup_key"))
        if backup is None:
            return ReadResult("", {})
        return ReadResult(
            backup.id, {**props, **model_outputs(backup, "backup_id"), "label": props.get("label")}
        )

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        project_id = str(props.get("project_id"))
        forget_listing("backups", project_id)
        with backend_session() as backend:
            try:
                backend.delete_backup(project_id, id_)
            except NotFound:
                return
            except NotSupported:
                progress(
                    f"backup {props.get('backup_key') or id_} stays in CapyDB, whose API cannot "
                    "delete backups; the stack forgets it (retention_days removes it)"
                )
            except CapyError as exc:
                fail(f"delete backup {id_}", exc)


class Backup(Resource, module="capy", name="Backup"):
    """An on-demand backup of a project database."""

    project_id: pulumi.Output[str]
    label: pulumi.Output[str | None]
    backup_id: pulumi.Output[str]
    backup_key: pulumi.Output[str]
    size_bytes: pulumi.Output[int | None]
    state: pulumi.Output[str]
    verification_state: pulumi.Output[str]
    verification_error: pulumi.Output[str | None]
    verified_at: pulumi.Output[str | None]
    database_name: pulumi.Output[str | None]
    created_at: pulumi.Output[str | None]
    job_id: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        *,
        project_id: pulumi.Input[str],
        label: pulumi.Input[str] | None = None,
        wait: pulumi.Input[bool] = True,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {"project_id": project_id, "label": label, "wait": wait}
        outputs = dict.fromkeys(
            (
                "backup_id",
                "backup_key",
                "size_bytes",
                "state",
                "verification_state",
                "verification_error",
                "verified_at",
                "database_name",
                "created_at",
                "job_id",
            )
        )
        super().__init__(BackupProvider(), resource_name, {**props, **outputs}, opts)
