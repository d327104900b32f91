"""Preview databases: what deleting one starts, shared by ``Engine`` and ``ticks``."""

from __future__ import annotations

from pulumi_capy.api.models import JobType, PreviewDatabase
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import Transaction

__all__ = ["enqueue_preview_delete"]


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
