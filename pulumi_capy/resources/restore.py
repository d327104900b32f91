"""``Restore``: an event. Create starts a restore job and waits for its end.

A failed job fails the resource with the job's error and output tail. Changing
any input, or ``triggers``, runs a new restore (a replacement); it never
replaces or deletes the target database. Deleting a ``new_preview`` restore
deletes the preview it made (unless ``retain_preview_on_delete``); deleting
any other restore only forgets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
)

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import CapyError, JobFailed, JobTimeout, NotFound
from pulumi_capy.api.models import (
    Job,
    JobState,
    PreviewDatabase,
    PreviewState,
    RestoreRequest,
    TargetKind,
    format_timestamp,
)
from pulumi_capy.resources._provider import (
    CapyProvider,
    backend_session,
    cached_listing,
    check_bool,
    check_model,
    check_past,
    check_string,
    fail,
    forget_listing,
    is_unknown,
    job_outputs,
    progress,
    report_job,
)

__all__ = ["Restore", "RestoreProvider", "preview_url"]

REQUEST_FIELDS = (
    "backup_key",
    "restore_time",
    "restore_point_id",
    "target_kind",
    "preview_id",
    "preview_name",
    "ttl_hours",
    "recreate",
    "allow_unverified_backup",
    "confirm_project_overwrite",
)
MAX_TIMEOUT_MINUTES = 7 * 24 * 60
PREVIEW_DELETE_TIMEOUT = 600.0


def preview_url(preview: PreviewDatabase) -> str | None:
    """How to reach a preview: a ``sqlite:///`` path, or a PostgreSQL URL without password."""
    if preview.public_host and preview.database_name:
        port = f":{preview.direct_port}" if preview.direct_port else ""
        user = f"{preview.role_name}@" if preview.role_name else ""
        ssl = f"?sslmode={preview.ssl_mode}" if preview.ssl_mode else ""
        return f"postgresql://{user}{preview.public_host}{port}/{preview.database_name}{ssl}"
    if preview.database_name and preview.database_name.startswith("/"):
        return f"sqlite:///{preview.database_name}"
    return None


# states of a restore's preview that a new restore replaces (``expired``: past its TTL, the
# engine's next tick drops it)
PREVIEW_LOST = frozenset({"expired", PreviewState.deleting, PreviewState.failed})


def preview_status(preview: PreviewDatabase) -> dict[str, Any]:
    """The preview's state (``expired`` once past its TTL) and expiry, as outputs."""
    state = str(preview.state) if preview.state is not None else None
    expires = preview.ttl_expires_at
    if expires is not None and expires <= datetime.now(UTC) and state not in PREVIEW_LOST:
        state = "expired"
    return {
        "preview_state": state,
        "preview_expires_at": format_timestamp(expires) if expires is not None else None,
    }


def list_previews_cached(backend: Backend, project_id: str) -> list[PreviewDatabase]:
    """The project's previews, listed once for all the restores a refresh reads."""
    listing: list[PreviewDatabase] = cached_listing(
        "previews", project_id, lambda: backend.list_preview_databases(project_id)
    )
    return listing


def check_confirmation(props: dict[str, Any], failures: list[CheckFailure]) -> None:
    """A restore into the project overwrites its database: only with the confirmation
    (the engine refuses it too, but only once ``up`` runs)."""
    target = props.get("target_kind")
    confirmed = props.get("confirm_project_overwrite")
    if target == TargetKind.project and not is_unknown(confirmed) and confirmed in (None, False):
        failures.append(
            CheckFailure(
                "confirm_project_overwrite",
                "confirm_project_overwrite: must be true when target_kind is 'project': the "
                "restore overwrites the project's database (a safety backup is taken first)",
            )
        )


def _request(props: dict[str, Any]) -> RestoreRequest:
    data = {name: props.get(name) for name in REQUEST_FIELDS if props.get(name) is not None}
    return RestoreRequest.model_validate(data)


class RestoreProvider(CapyProvider):
    input_names = (
        "project_id",
        *REQUEST_FIELDS,
        "retain_preview_on_delete",
        "wait",
        "timeout_minutes",
        "triggers",
    )
    # how create waits, and whether delete keeps the preview, are no reason to restore again
    updatable = frozenset({"retain_preview_on_delete", "wait", "timeout_minutes"})

    stripped = ("project_id", "backup_key", "restore_point_id", "preview_id", "preview_name")

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        news = self.normalized(news)
        failures: list[CheckFailure] = []
        check_string(news, "project_id", failures, required=True)
        request = check_model(
            RestoreRequest, {name: news.get(name) for name in REQUEST_FIELDS}, failures
        )
        if request is not None:
            check_past(news, "restore_time", request.restore_time, failures)
        check_confirmation(news, failures)
        for name in ("retain_preview_on_delete", "wait"):
            check_bool(news, name, failures)
        timeout = news.get("timeout_minutes")
        if (
            timeout is not None
            and not is_unknown(timeout)
            and (
                isinstance(timeout, bool)
                or not isinstance(timeout, int | float)
                or not 1 <= timeout <= MAX_TIMEOUT_MINUTES
            )
        ):
            failures.append(
                CheckFailure(
                    "timeout_minutes",
                    f"timeout_minutes: must be a number of minutes from 1 to {MAX_TIMEOUT_MINUTES}",
                )
            )
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        project_id = str(props["project_id"])
        request = _request(props)
        timeout = float(props.get("timeout_minutes") or 60) * 60
        with backend_session() as backend:
            try:
                job = backend.create_restore(project_id, request)
            except CapyError as exc:
                fail(f"restore into {request.target_kind}", exc)
            progress(
                f"restore job {job.id} started ({request.source_kind} -> {request.target_kind})"
            )
            if props.get("wait", True) is not False:
                job = self._wait(backend, job, timeout, request)
            outputs = self._outputs(backend, project_id, job, props)
        return CreateResult(job.id, outputs)

    def _wait(self, backend: Backend, job: Job, timeout: float, request: RestoreRequest) -> Job:
        try:
            return backend.wait_for_job(job.id, timeout, report_job("restore"))
        except JobFailed as exc:
            # the job made a preview the stack will not know about: remove it
            if request.target_kind == "new_preview" and exc.job.preview_database_id:
                self._drop_preview(backend, exc.job.preview_database_id)
            fail("restore", exc)  # the error names the job and says it failed
        except JobTimeout as exc:
            fail(f"restore job {job.id} did not finish in {timeout / 60:g} minutes", exc)
        except CapyError as exc:
            fail(f"waiting for restore job {job.id}", exc)

    @staticmethod
    def _drop_preview(backend: Backend, preview_id: str) -> None:
        try:
            job = backend.delete_preview_database(preview_id)
            backend.wait_for_job(job.id, PREVIEW_DELETE_TIMEOUT)
            progress(f"deleted preview {preview_id}")
        except NotFound:
            return
        except CapyError as exc:
            progress(f"could not delete preview {preview_id}: {exc}")

    def _outputs(
        self, backend: Backend, project_id: str, job: Job, props: dict[str, Any]
    ) -> dict[str, Any]:
        outputs = self.inputs_of(props)
        outputs.update(job_outputs(job))
        outputs.update(self._preview_outputs(backend, project_id, job))
        return outputs

    @staticmethod
    def _preview_outputs(backend: Backend, project_id: str, job: Job) -> dict[str, Any]:
        """The preview a completed restore made: its id, name, URL, state and expiry."""
        preview_id = job.preview_database_id or (job.result or {}).get("preview_database_id")
        outputs: dict[str, Any] = {
            "preview_database_id": preview_id,
            "preview_database_url": None,
            "preview_database_name": None,
        }
        if preview_id and job.state == JobState.completed:
            forget_listing("previews", project_id)
            try:
                previews = backend.list_preview_databases(project_id)
            except CapyError as exc:
                progress(f"could not read preview {preview_id}: {exc}")
                previews = []
            for preview in previews:
                if preview.id == preview_id:
                    outputs["preview_database_url"] = preview_url(preview)
                    outputs["preview_database_name"] = preview.database_name
                    outputs.update(preview_status(preview))
        return outputs

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        result = super().diff(id_, olds, news)
        named = news.get("preview_name")
        if (
            result.replaces
            and (news.get("target_kind") or "new_preview") == "new_preview"
            and named is not None
            and named == olds.get("preview_name")
            and not olds.get("retain_preview_on_delete")
        ):
            # the new restore's preview takes the old one's name: the old must go first
            result.delete_before_replace = True
        return result

    def replace_reasons(self, olds: Mapping[str, Any]) -> list[str]:
        # the preview this restore made expired or is going: the next up restores again
        return ["preview_state"] if olds.get("preview_state") in PREVIEW_LOST else []

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        project_id = str(props["project_id"])
        with backend_session() as backend:
            try:
                job = backend.get_job(id_)
            except NotFound:
                return ReadResult("", {})
            except CapyError as exc:
                fail(f"read restore job {id_}", exc)
            outputs = dict(props)
            outputs.update(job_outputs(job))
            if job.state != JobState.completed:
                return ReadResult(id_, outputs)
            if not props.get("preview_database_url"):
                # a restore started with wait=False: its preview is known only now
                outputs.update(self._preview_outputs(backend, project_id, job))
            preview_id = outputs.get("preview_database_id")
            if (props.get("target_kind") or "new_preview") != "new_preview" or not preview_id:
                return ReadResult(id_, outputs)
            try:
                previews = list_previews_cached(backend, project_id)
            except NotFound:
                return ReadResult("", {})  # the project is gone, and its previews with it
            except CapyError as exc:
                fail(f"read preview {preview_id} of restore {id_}", exc)
        preview = next((p for p in previews if p.id == preview_id), None)
        if preview is None or preview.state == PreviewState.deleted:
            # deleted behind the stack's back (or by its TTL): the restore's result is
            # gone, so refresh shows the restore as deleted and the next up restores again
            progress(f"restore {id_}: its preview {preview_id} is gone")
            return ReadResult("", {})
        outputs.update(preview_status(preview))
        return ReadResult(id_, outputs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        preview_id = props.get("preview_database_id")
        # an unset target_kind is the contract's default, as it was at create
        if (props.get("target_kind") or "new_preview") != "new_preview" or not preview_id:
            return  # a restore into an existing target is only forgotten
        if props.get("retain_preview_on_delete"):
            progress(f"keeping preview {preview_id} (retain_preview_on_delete)")
            return
        forget_listing("previews", str(props.get("project_id")))
        with backend_session() as backend:
            try:
                job = backend.delete_preview_database(str(preview_id))
                backend.wait_for_job(job.id, PREVIEW_DELETE_TIMEOUT, report_job("delete preview"))
            except NotFound:
                return
            except CapyError as exc:
                fail(f"delete preview {preview_id} of restore {id_}", exc)


class Restore(Resource, module="capy", name="Restore"):
    """A restore: a backup, restore point or moment restored into a preview or the project."""

    project_id: pulumi.Output[str]
    backup_key: pulumi.Output[str | None]
    restore_time: pulumi.Output[str | None]
    restore_point_id: pulumi.Output[str | None]
    target_kind: pulumi.Output[str]
    preview_id: pulumi.Output[str | None]
    preview_name: pulumi.Output[str | None]
    ttl_hours: pulumi.Output[int | None]
    triggers: pulumi.Output[Any]
    job_id: pulumi.Output[str]
    state: pulumi.Output[str]
    attempts: pulumi.Output[int]
    error: pulumi.Output[str | None]
    last_exit_code: pulumi.Output[int | None]
    last_stdout: pulumi.Output[str | None]
    last_stderr: pulumi.Output[str | None]
    started_at: pulumi.Output[str | None]
    completed_at: pulumi.Output[str | None]
    preview_database_id: pulumi.Output[str | None]
    preview_database_name: pulumi.Output[str | None]
    preview_database_url: pulumi.Output[str | None]
    preview_state: pulumi.Output[str | None]
    preview_expires_at: pulumi.Output[str | None]
    result: pulumi.Output[dict[str, Any]]

    def __init__(
        self,
        resource_name: str,
        *,
        project_id: pulumi.Input[str],
        backup_key: pulumi.Input[str] | None = None,
        restore_time: pulumi.Input[str] | None = None,
        restore_point_id: pulumi.Input[str] | None = None,
        target_kind: pulumi.Input[str] = "new_preview",
        preview_id: pulumi.Input[str] | None = None,
        preview_name: pulumi.Input[str] | None = None,
        ttl_hours: pulumi.Input[int] | None = None,
        recreate: pulumi.Input[bool] = False,
        allow_unverified_backup: pulumi.Input[bool] = False,
        confirm_project_overwrite: pulumi.Input[bool] = False,
        retain_preview_on_delete: pulumi.Input[bool] = False,
        wait: pulumi.Input[bool] = True,
        timeout_minutes: pulumi.Input[float] = 60,
        triggers: pulumi.Input[Any] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "project_id": project_id,
            "backup_key": backup_key,
            "restore_time": restore_time,
            "restore_point_id": restore_point_id,
            "target_kind": target_kind,
            "preview_id": preview_id,
            "preview_name": preview_name,
            "ttl_hours": ttl_hours,
            "recreate": recreate,
            "allow_unverified_backup": allow_unverified_backup,
            "confirm_project_overwrite": confirm_project_overwrite,
            "retain_preview_on_delete": retain_preview_on_delete,
            "wait": wait,
            "timeout_minutes": timeout_minutes,
            "triggers": triggers,
        }
        outputs = dict.fromkeys(
            (
                "job_id",
                "type",
                "state",
                "attempts",
                "max_attempts",
                "error",
                "last_exit_code",
                "last_stdout",
                "last_stderr",
                "locked_resource",
                "retry_classification",
                "claimed_by",
                "claimed_at",
                "started_at",
                "completed_at",
                "created_at",
                "updated_at",
                "preview_database_id",
                "preview_database_name",
                "preview_database_url",
                "preview_state",
                "preview_expires_at",
                "result",
            )
        )
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["preview_database_url"])
        )
        super().__init__(RestoreProvider(), resource_name, {**props, **outputs}, opts)
