"""``Project``: registers a database with the restore engine (embedded or ``capy serve``).

Hosted CapyDB creates projects itself (its console, or its Terraform
provider); against it, create fails before sending anything. ``database_url``
is a secret. Delete is refused while the engine holds backups of the project,
unless ``force_destroy`` (which removes its backups, restore points and
previews too) — the convention of storage buckets.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CheckFailure, CheckResult, CreateResult, ReadResult, Resource

from pulumi_capy.api.errors import CapyError, Conflict, NotFound
from pulumi_capy.api.models import CreateProject
from pulumi_capy.resources._provider import (
    CapyProvider,
    backend_session,
    check_bool,
    check_model,
    fail,
    model_outputs,
    progress,
)

__all__ = ["Project", "ProjectProvider"]

HOSTED_HINT = (
    "hosted CapyDB creates projects itself: create it in CapyDB's console or with CapyDB's "
    "Terraform provider (resource capydb_project), then pass its id as project_id. "
    "capy.Project is for the embedded engine and a self-hosted `capy serve`"
)


class ProjectProvider(CapyProvider):
    input_names = ("name", "database_url", "environment", "force_destroy")
    updatable = frozenset({"force_destroy"})
    stripped = ("name",)

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        news = self.normalized(news)
        failures: list[CheckFailure] = []
        check_bool(news, "force_destroy", failures)
        if news.get("database_url") is None:
            failures.append(CheckFailure("database_url", "database_url: required"))
        check_model(
            CreateProject,
            {name: news.get(name) for name in ("name", "database_url", "environment")},
            failures,
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
        return CreateResult(
            project.id, self.inputs_of(props) | model_outputs(project, "project_id")
        )

    def diff(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
        result = super().diff(id_, olds, news)
        # names are unique: the old project must go before its replacement can exist
        result.delete_before_replace = bool(result.replaces)
        return result

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        with backend_session() as backend:
            try:
                project = backend.get_project(id_)
            except NotFound:
                return ReadResult("", {})
            except CapyError as exc:
                fail(f"read project {id_}", exc)
        return ReadResult(id_, {**props, **model_outputs(project, "project_id")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        force = bool(props.get("force_destroy"))
        with backend_session() as backend:
            try:
                backend.delete_project(id_, force=force)
            except NotFound:
                return
            except Conflict as exc:
                fail(
                    f"delete project {props.get('name')} ({id_})",
                    Conflict(
                        f"{exc.detail}. Its backups stay safe; to delete them with the project, "
                        "set force_destroy=True on the Project, run `pulumi up`, then destroy"
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
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "name": name,
            "database_url": pulumi.Output.secret(database_url),
            "environment": environment,
            "force_destroy": force_destroy,
        }
        outputs = dict.fromkeys(
            (
                "project_id",
                "organization_id",
                "state",
                "database_kind",
                "database_name",
                "created_at",
                "updated_at",
            )
        )
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["database_url"])
        )
        super().__init__(ProjectProvider(), resource_name, {**props, **outputs}, opts)
