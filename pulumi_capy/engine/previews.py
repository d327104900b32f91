"""Preview databases: throwaway copies of a project's database, made by a job.

A preview lives until it is deleted or its TTL passes (``ticks``); deleting one
marks it ``deleting`` and queues the ``preview.delete`` job that drops it.
Previews made by a restore are created in ``restores``.
"""

from __future__ import annotations

from datetime import timedelta

from pulumi_capy.api.errors import NotFound
from pulumi_capy.api.models import CreatePreview, JobType, PreviewDatabase
from pulumi_capy.engine import projects
from pulumi_capy.engine.queue import new_id
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import Transaction

__all__ = [
    "create_preview",
    "delete_preview",
    "enqueue_preview_delete",
    "get_preview",
    "list_previews",
]


def list_previews(rt: Runtime, project_id: str) -> list[PreviewDatabase]:
    projects.require(rt, project_id)
    return rt.store.list_previews(project_id)


def get_preview(rt: Runtime, preview_id: str) -> PreviewDatabase:
    """The preview, or ``NotFound`` (a deleted one is not found either)."""
    preview = rt.store.get_preview(preview_id)
    if preview is None or preview.state == "deleted":
        raise NotFound(f"preview database {preview_id} not found")
    return preview


def create_preview(
    rt: Runtime, project_id: str, request: CreatePreview
) -> tuple[str, PreviewDatabase]:
    """Insert the preview ``creating`` and queue the job that makes it; the job's id and
    the preview."""
    projects.require(rt, project_id)
    now = rt.now()
    preview_id = new_id("prv")
    with rt.store.transaction() as tx:
        rt.store.insert_preview(
            tx,
            PreviewDatabase(
                id=preview_id,
                project_id=project_id,
                name=request.name,
                mode=request.mode.value,
                state="creating",
                source_kind=request.mode.value,
                ttl_expires_at=now + timedelta(hours=request.ttl_hours),
                created_at=now,
                updated_at=now,
            ),
        )
        job_id = rt.enqueue(
            tx,
            JobType.preview_create,
            project_id=project_id,
            payload={"mode": request.mode.value, "request": {"target_kind": "new_preview"}},
            locked_resource=f"preview:{preview_id}",
            preview_database_id=preview_id,
        )
    preview = rt.store.get_preview(preview_id)
    assert preview is not None
    return job_id, preview


def delete_preview(rt: Runtime, preview_id: str) -> str:
    """Start deleting the preview; the id of the job that drops it."""
    preview = get_preview(rt, preview_id)
    with rt.store.transaction() as tx:
        return enqueue_preview_delete(rt, tx, preview)


def enqueue_preview_delete(rt: Runtime, tx: Transaction, preview: PreviewDatabase) -> str:
    """Mark the preview ``deleting`` and queue the job that drops it, in ``tx``; the job
    already pending or running for it, if there is one. Returns the job's id."""
    outstanding = rt.store.outstanding_preview_deletion(preview.id)
    if outstanding is not None:
        return outstanding
    rt.store.mark_preview_deleting(tx, preview.id, rt.now())
    return rt.enqueue(
        tx,
        JobType.preview_delete,
        project_id=preview.project_id,
        payload={"preview_id": preview.id, "request": {"target_kind": "preview"}},
        locked_resource=f"preview:{preview.id}",
        preview_database_id=preview.id,
    )
