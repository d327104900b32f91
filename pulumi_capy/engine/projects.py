"""Projects: the databases the engine protects, each registered by its URL.

Deleting a project drops its previews and the blobs of its backups; it is
refused while backups exist (unless forced) or while any of its jobs is
pending or running.
"""

from __future__ import annotations

from pulumi_capy.api.errors import Conflict, FieldError, InvalidInput, NotFound
from pulumi_capy.api.models import CreateProject, Project, ProjectCreated, UpdateProject
from pulumi_capy.engine.drivers import driver_for
from pulumi_capy.engine.pitr import control
from pulumi_capy.engine.queue import new_id
from pulumi_capy.engine.runtime import DEFAULT_ORGANIZATION_ID, Runtime
from pulumi_capy.engine.stores.contract import PitrRecord, ProjectRecord

__all__ = [
    "create_project",
    "delete_project",
    "get_project",
    "list_projects",
    "require",
    "update_project",
]


def require(rt: Runtime, project_id: str) -> ProjectRecord:
    """The project, or ``NotFound``: the first check of every call about a project."""
    project = rt.store.get_project(project_id)
    if project is None:
        raise NotFound(f"project {project_id} not found")
    return project


def _public(rt: Runtime, project: ProjectRecord, pitr: PitrRecord | None) -> Project:
    """The project as the API shows it, with its PITR window (null when off)."""
    public = project.public()
    current = control.window_of(rt, pitr) if pitr is not None else None
    if current is not None:
        public.pitr_window_start, public.pitr_window_end = current.start, current.end
    return public


def list_projects(rt: Runtime) -> list[Project]:
    pitr = {record.project_id: record for record in rt.store.enabled_pitr()}  # one query
    return [_public(rt, project, pitr.get(project.id)) for project in rt.store.list_projects()]


def get_project(rt: Runtime, project_id: str) -> Project:
    return _public(rt, require(rt, project_id), rt.store.get_pitr(project_id))


def create_project(rt: Runtime, request: CreateProject) -> ProjectCreated:
    """Register the database at ``request.database_url``, which its driver inspects first."""
    if request.database_url is None:
        raise InvalidInput(
            [
                FieldError(
                    "database_url", "required by the engine: the database this project protects"
                )
            ]
        )
    url = request.database_url.get_secret_value()
    info = driver_for(url).inspect(url)
    now = rt.now()
    project = rt.store.insert_project(
        ProjectRecord(
            id=new_id("prj"),
            organization_id=DEFAULT_ORGANIZATION_ID,
            name=request.name,
            environment=request.environment.value,
            database_url=info.url,
            database_kind=info.kind,
            database_name=info.database_name,
            state="active",
            created_at=now,
            updated_at=now,
        )
    )
    return ProjectCreated(project=project.public(), job=None)


def update_project(rt: Runtime, project_id: str, request: UpdateProject) -> Project:
    """Point the project at a new URL (a rotated password, a moved database), which its
    driver inspects first. The kind of database may not change: the backups are its dumps."""
    project = require(rt, project_id)
    url = request.database_url.get_secret_value()
    driver = driver_for(url)
    if driver.kind != project.database_kind:
        raise InvalidInput(
            [
                FieldError(
                    "database_url",
                    f"is a {driver.kind} database; project {project_id} protects a "
                    f"{project.database_kind} one (its backups are {project.database_kind} dumps)",
                )
            ]
        )
    info = driver.inspect(url)
    rt.store.update_project_database(project_id, info.url, info.database_name, rt.now())
    return get_project(rt, project_id)


def delete_project(rt: Runtime, project_id: str, *, force: bool) -> None:
    project = require(rt, project_id)
    backups = rt.store.list_backups(project_id, state="completed")
    if backups and not force:
        raise Conflict(
            f"project {project.name} ({project_id}) still has {len(backups)} backup(s); "
            "only a forced delete (force=true) deletes them with the project"
        )
    base_backups = rt.store.list_base_backups(project_id, state=None)
    if base_backups and not force:
        raise Conflict(
            f"project {project.name} ({project_id}) still has {len(base_backups)} base "
            "backup(s) for point-in-time recovery; only a forced delete (force=true) deletes "
            "them and its archived log with the project"
        )
    busy = rt.store.busy_jobs(project_id)
    if busy:
        raise Conflict(
            f"project {project_id} has {len(busy)} job(s) pending or running "
            f"({', '.join(job.id for job in busy[:5])}); wait for them, then delete"
        )
    driver = driver_for(project.database_url)
    for preview in rt.store.list_previews(project_id):
        driver.drop(
            driver.preview_url(project.database_url, preview.id, rt.previews_dir / project_id)
        )
    for backup in rt.store.list_backups(project_id):
        rt.blobs.delete(backup.backup_key)
    control.disable(rt, project)  # its replication slot would keep the server's log
    for base in base_backups:
        rt.blobs.delete(base.blob_key)
    for segment in rt.store.list_wal_segments(project_id):
        rt.blobs.delete(segment.blob_key)
    rt.store.delete_project(project_id)
