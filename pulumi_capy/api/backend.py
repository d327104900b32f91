"""The ``Backend`` protocol: the CapyDB restore surface as Python calls.

Three implementations speak it — ``CapyClient`` (HTTP to hosted CapyDB or to a
self-hosted ``capy serve``) and ``Engine`` (the restore engine in-process) —
and one conformance suite checks them all alike. Every method takes and
returns the models of ``pulumi_capy.api.models`` and raises the errors of
``pulumi_capy.api.errors``; a caller cannot tell the implementations apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from pulumi_capy.api.models import (
    ApiKey,
    Backup,
    BackupDetail,
    CreateApiKey,
    CreateBackup,
    CreatedApiKey,
    CreatePreview,
    CreateProject,
    CreateRestorePoint,
    Identity,
    Job,
    PitrChange,
    PitrStatus,
    PreviewCreated,
    PreviewDatabase,
    Project,
    ProjectCreated,
    PutPitr,
    PutScheduledBackup,
    RestorePoint,
    RestoreRequest,
    ScheduledBackup,
    UpdateProject,
)

__all__ = ["DEFAULT_JOB_TIMEOUT", "Backend", "JobCallback"]

JobCallback = Callable[[Job], None]

DEFAULT_JOB_TIMEOUT = 3600.0


@runtime_checkable
class Backend(Protocol):
    """One method per operation of the contract (``shared/capydb-api.md``)."""

    # restore points
    def list_restore_points(self, project_id: str) -> list[RestorePoint]: ...

    def create_restore_point(
        self, project_id: str, request: CreateRestorePoint
    ) -> RestorePoint: ...

    def delete_restore_point(self, project_id: str, restore_point_id: str) -> None: ...

    # restores
    def create_restore(self, project_id: str, request: RestoreRequest) -> Job: ...

    # backups
    def list_backups(self, project_id: str) -> list[Backup]: ...

    def create_backup(self, project_id: str, request: CreateBackup | None = None) -> Job: ...

    def get_backup(self, project_id: str, backup_id: str) -> BackupDetail:
        """[ours] One backup with its manifest's record (tables, row counts, blob size).

        Hosted CapyDB has no such call: the client finds it in the list, without them."""
        ...

    def verify_backup(self, project_id: str, backup_id: str) -> Job:
        """[ours] Verify the backup again (a ``backup.verify`` job; the outstanding one if
        it is being verified already). Hosted CapyDB raises ``NotSupported``."""
        ...

    def delete_backup(self, project_id: str, backup_id: str) -> None:
        """[ours] The engine removes the backup; hosted CapyDB raises ``NotSupported``."""
        ...

    def get_scheduled_backup(self, project_id: str) -> ScheduledBackup | None: ...

    def put_scheduled_backup(
        self, project_id: str, request: PutScheduledBackup
    ) -> ScheduledBackup: ...

    # point-in-time recovery [ours]
    def get_pitr(self, project_id: str) -> PitrStatus:
        """The project's PITR: on or off, how, its window, who streams its log.

        Hosted CapyDB has PITR always on and no such call: there it is
        ``enabled`` with ``method`` and window unknown (``None``) and a notice saying so.
        """
        ...

    def put_pitr(self, project_id: str, request: PutPitr) -> PitrChange:
        """Turn PITR on (``job`` is its first base backup when that started one) or off.

        Turning it on again is a no-op (``job`` is ``None``). Hosted CapyDB has it
        always on: turning it on changes nothing there, turning it off is ``NotSupported``.
        """
        ...

    # jobs
    def list_jobs(self, project_id: str, limit: int = 25) -> list[Job]: ...

    def get_job(self, job_id: str) -> Job: ...

    def cancel_job(self, job_id: str) -> Job:
        """[ours] Fail a job that is still pending; a running or ended one is a
        ``Conflict``. Hosted CapyDB raises ``NotSupported``."""
        ...

    def wait_for_job(
        self,
        job_id: str,
        timeout: float = DEFAULT_JOB_TIMEOUT,
        on_update: JobCallback | None = None,
    ) -> Job:
        """Return the job once ``completed``; raise ``JobFailed`` or ``JobTimeout``.

        ``on_update`` is called with the job whenever its state or attempt changes.
        """
        ...

    # preview databases
    def list_preview_databases(self, project_id: str) -> list[PreviewDatabase]: ...

    def create_preview_database(
        self, project_id: str, request: CreatePreview
    ) -> PreviewCreated: ...

    def delete_preview_database(self, preview_id: str) -> Job: ...

    # projects
    def list_projects(self) -> list[Project]: ...

    def get_project(self, project_id: str) -> Project: ...

    def create_project(self, request: CreateProject) -> ProjectCreated: ...

    def update_project(self, project_id: str, request: UpdateProject) -> Project:
        """[ours] A new ``database_url`` (same kind of database), inspected first.

        Hosted CapyDB raises ``NotSupported``."""
        ...

    def delete_project(self, project_id: str, *, force: bool = False) -> None:
        """[ours] Remove a project the engine protects.

        Without ``force`` a project that still has backups is a ``Conflict``;
        with it, its backups, restore points and previews go too. Hosted
        CapyDB raises ``NotSupported``.
        """
        ...

    # identity and keys
    def get_identity(self) -> Identity:
        """``GET /v1/me``."""
        ...

    def create_api_key(self, organization_id: str, request: CreateApiKey) -> CreatedApiKey: ...

    def list_api_keys(self, organization_id: str) -> list[ApiKey]: ...

    def delete_api_key(self, organization_id: str, key_id: str) -> None: ...

    def close(self) -> None:
        """Release connections and files; the object is not used afterwards."""
        ...
