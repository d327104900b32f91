"""What every part of a running engine shares: its directory, store, blobs, clock, hooks."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pulumi_capy.engine.blobs import LocalBlobStore
from pulumi_capy.engine.clock import Clock
from pulumi_capy.engine.queue import RetryPolicy, new_id
from pulumi_capy.engine.store import JobRecord, Store

__all__ = ["DEFAULT_ORGANIZATION_ID", "Hook", "Runtime"]

DEFAULT_ORGANIZATION_ID = "org_default"

# A test seam: called with the job at named points ("restore.before_commit", …).
Hook = Callable[[JobRecord], None]


@dataclass
class Runtime:
    directory: Path
    store: Store
    blobs: LocalBlobStore
    clock: Clock
    retry: RetryPolicy
    lease_seconds: float
    worker_id: str
    hooks: Mapping[str, Hook] = field(default_factory=dict)

    @property
    def previews_dir(self) -> Path:
        return self.directory / "previews"

    @property
    def scratch_dir(self) -> Path:
        path = self.directory / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def hook(self, name: str, job: JobRecord) -> None:
        callback = self.hooks.get(name)
        if callback is not None:
            callback(job)

    def enqueue(
        self,
        db: sqlite3.Connection,
        job_type: str,
        *,
        project_id: str,
        payload: Mapping[str, Any],
        locked_resource: str | None,
        preview_database_id: str | None = None,
        delay: float = 0.0,
        job_id: str | None = None,
    ) -> str:
        """Insert a pending job inside the caller's transaction; return its id."""
        now = self.clock.now()
        job_id = job_id or new_id("job")
        self.store.insert_job(
            db,
            {
                "id": job_id,
                "type": job_type,
                "state": "pending",
                "attempts": 0,
                "max_attempts": self.retry.max_attempts,
                "created_at": now,
                "updated_at": now,
                "run_after": now + timedelta(seconds=delay),
                "locked_resource": locked_resource,
                "organization_id": DEFAULT_ORGANIZATION_ID,
                "project_id": project_id,
                "preview_database_id": preview_database_id,
                "payload": dict(payload),
            },
        )
        return job_id

    def now(self) -> datetime:
        return self.clock.now()
