"""``Project``: registers a database with the restore engine (embedded or ``capy serve``).

Hosted CapyDB creates projects itself (its console, or its Terraform
provider); against it, create fails before sending anything. ``database_url``
is a secret. Delete is refused while the engine holds backups of the project,
unless ``force_destroy`` (which removes its backups, restore points and
previews too) — the convention of storage buckets.

``pitr=True`` turns point-in-time recovery on (PostgreSQL projects, and SQLite
projects whose database is in WAL mode: switch it first, with ``capy pitr enable
--set-wal`` or ``PRAGMA journal_mode=WAL``), ``False`` off, unset leaves it alone;
changing it is an update. Create and update wait for the first base backup when
turning it on started one (PostgreSQL), not for the window (that needs a worker
streaming the log: ``capy worker``). A refresh reads whether it is on.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    ReadResult,
    Resource,
    UpdateResult,
)

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import CapyError, Conflict, NotFound
from pulumi_capy.api.models import CreateProject, PutPitr
from pulumi_capy.api.models import Project as ProjectModel
from pulumi_capy.resources._provider import (
    CapyProvider,
    backend_session,
    check_bool,
    check_model,
    fail,
    is_unknown,
    model_outputs,
    progress,
    report_job,
)

__all__ = ["Project", "ProjectProvider"]

HOSTED_HINT = (
    "hosted CapyDB creates projects itself: create it in CapyDB's console or with CapyDB's "
    "Terraform provider (resource capydb_project), then pass its id as project_id. "
    "capy.Project is for the embedded engine and a self-hosted `capy serve`"
)


# the schemes of the databases the engine's drivers protect (engine.drivers.driver_for)
DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql")
BASE_BACKUP_TIMEOUT = 6 * 3600.0  # a base backup copies the whole cluster


def set_pitr(backend: Backend, project: ProjectModel, *, enabled: bool) -> None:
    """Turn the project's PITR on or off; on, wait for the first base backup it started.

    When that base backup fails, PITR was off before this call: it is turned off again,
    so that a failed create or update leaves it as it was."""
    change = backend.put_pitr(project.id, PutPitr(enabled=enabled))
    state = "on" if change.pitr.enabled else "off"
    progress(f"project {project.name}: point-in-time recovery {state}")
    if change.job is not None:
        try:
            backend.wait_for_job(
                change.job.id,
                BASE_BACKUP_TIMEOUT,
                report_job(f"project {project.name}: first PITR base backup"),
            )
        except CapyError:
            try:
                backend.put_pitr(project.id, PutPitr(enabled=False))
                progress(f"project {project.name}: point-in-time recovery off again")
            except CapyError as cleanup:
                progress(f"project {project.name}: could not turn PITR off again: {cleanup}")
            raise
    for notice in change.pitr.notices:
        progress(f"project {project.name}: {notice}")


class ProjectProvider(CapyProvider):
    input_names = ("name", "database_url", "environment", "force_destroy", "pitr")
    updatable = frozenset({"force_destroy", "pitr"})
    stripped = ("name",)

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        news = self.normalized(news)
        failures: list[CheckFailure] = []
        check_bool(news, "force_destroy", failures)
        check_bool(news, "pitr", failures)
        if news.get("database_url") is None:
            failures.append(CheckFailure("database_url", "database_url: required"))
        check_model(
            CreateProject,
            {name: news.get(name) for name in ("name", "database_url", "environment")},
            failures,
        )
        url = news.get("database_url")
        if isinstance(url, str) and url.strip() and not is_unknown(url):
            scheme = url.strip().split(":", 1)[0] if ":" in url else ""
            if scheme not in DATABASE_SCHEMES:
                # the engine's rule (engine.drivers.driver_for), known without it; the
                # message never repeats the URL, a secret
                failures.append(
                    CheckFailure(
                        "database_url",
                        "database_url: unsupported URL; expected sqlite:////absolute/path.db "
                        "or postgresql://user:password@host:port/database",
                    )
                )
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        with backend_session() as backend:
            try:
                hosted = not backend.get_identity().is_pulumi_capy_server
            except CapyError as exc:
                fail(f"create project {props.get('name')}", exc)
            if hosted:
                fail(f"create project {props.get('name')}", CapyError(HOSTED_HINT))
            try:
                created = backend.create_project(
                    CreateProject(
                        name=props["name"],
                        database_url=props["database_url"],
                        environment=props.get("environment") or "non_production",
                    )
                )
            except CapyError as exc:
                fail(f"create project {props.get('name')}", exc)
            project = created.project
            progress(f"project {project.name} registered as {project.id}")
            if props.get("pitr") is True:
                project = self._turn_pitr_on_or_undo(backend, project)
        return CreateResult(
            project.id, self.inputs_of(props) | model_outputs(project, "project_id")
        )

    @staticmethod
    def _turn_pitr_on_or_undo(backend: Backend, project: ProjectModel) -> ProjectModel:
        """PITR on for a project just created; if that fails, the project goes again, so
        that a failed create leaves nothing Pulumi does not know of."""
        try:
            set_pitr(backend, project, enabled=True)
            return backend.get_project(project.id)
        except CapyError as exc:
            undone = "it was removed again"
            try:
                backend.put_pitr(project.id, PutPitr(enabled=False))
                backend.delete_project(project.id, force=True)
            except CapyError as cleanup:
                undone = (
                    f"it stays registered as {project.id} ({cleanup}); remove it with "
                    f"`capy pitr disable --project {project.id}` and `capy projects delete`"
                )
            fail(f"create project {project.name}: turn point-in-time recovery on ({undone})", exc)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """``pitr`` is turned on or off; ``force_destroy`` is only recorded."""
        outputs = {**olds, **self.inputs_of(news)}
        wanted = news.get("pitr")
        if wanted is None or wanted == self.stored_input(olds, "pitr"):
            return UpdateResult(outputs)
        name = str(news.get("name") or olds.get("name"))
        with backend_session() as backend:
            try:
                project = backend.get_project(id_)
                set_pitr(backend, project, enabled=bool(wanted))
                project = backend.get_project(id_)
            except CapyError as exc:
                state = "on" if wanted else "off"
                fail(f"update project {name}: turn point-in-time recovery {state}", exc)
        return UpdateResult(outputs | model_outputs(project, "project_id"))

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        result = super().diff(id_, olds, news)
        # names are unique: the old project must go before its replacement can exist
        result.delete_before_replace = bool(result.replaces)
        return result

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        outputs = dict(props)
        with backend_session() as backend:
            try:
                project = backend.get_project(id_)
                if props.get("pitr") is not None:  # managed here: show what it is now
                    outputs["pitr"] = backend.get_pitr(id_).enabled
            except NotFound:
                return ReadResult("", {})
            except CapyError as exc:
                fail(f"read project {id_}", exc)
        return ReadResult(id_, {**outputs, **model_outputs(project, "project_id")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        force = bool(props.get("force_destroy"))
        with backend_session() as backend:
            try:
                backend.delete_project(id_, force=force)
            except NotFound:
                return
            except Conflict as exc:
                refusal, _, remedy = exc.detail.partition("; ")
                if force or "force=true" not in remedy:  # busy jobs: force cannot help
                    fail(f"delete project {props.get('name')} ({id_})", exc)
                # the engine's remedy is the API's (force=true); say the Pulumi one, once
                fail(
                    f"delete project {props.get('name')} ({id_})",
                    Conflict(
                        f"{refusal}, which stay safe: to delete them with the project, set "
                        "force_destroy=True on the Project, run `pulumi up`, then destroy"
                    ),
                )
            except CapyError as exc:
                fail(f"delete project {id_}", exc)


class Project(Resource, module="capy", name="Project"):
    """A database the restore engine protects (embedded or self-hosted only)."""

    project_id: pulumi.Output[str]
    name: pulumi.Output[str]
    database_url: pulumi.Output[str]
    force_destroy: pulumi.Output[bool]
    pitr: pulumi.Output[bool | None]
    pitr_window_start: pulumi.Output[str | None]
    pitr_window_end: pulumi.Output[str | None]
    updated_at: pulumi.Output[str | None]
    organization_id: pulumi.Output[str | None]
    environment: pulumi.Output[str]
    state: pulumi.Output[str | None]
    database_kind: pulumi.Output[str | None]
    database_name: pulumi.Output[str | None]
    created_at: pulumi.Output[str | None]

    def __init__(
        self,
        resource_name: str,
        *,
        name: pulumi.Input[str],
        database_url: pulumi.Input[str],
        environment: pulumi.Input[str] = "non_production",
        force_destroy: pulumi.Input[bool] = False,
        pitr: pulumi.Input[bool] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "name": name,
            "database_url": pulumi.Output.secret(database_url),
            "environment": environment,
            "force_destroy": force_destroy,
            "pitr": pitr,
        }
        outputs = dict.fromkeys(
            (
                "project_id",
                "organization_id",
                "state",
                "database_kind",
                "database_name",
                "pitr_window_start",
                "pitr_window_end",
                "created_at",
                "updated_at",
            )
        )
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["database_url"])
        )
        super().__init__(ProjectProvider(), resource_name, {**props, **outputs}, opts)
