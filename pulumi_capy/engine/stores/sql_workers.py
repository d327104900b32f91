"""The worker registry's SQL, shared by the SQLite and the PostgreSQL store: each worker
loop records itself when it starts, heartbeats while it runs, and notes when it stops."""

from __future__ import annotations

from datetime import datetime

from pulumi_capy.engine.stores.contract import WorkerRecord
from pulumi_capy.engine.stores.sql_base import SqlConnections, to_timestamp

__all__ = ["SqlWorkers"]

HEARTBEAT = "UPDATE workers SET heartbeat_at = :now WHERE id = :id AND stopped_at IS NULL"

STOP = "UPDATE workers SET stopped_at = :now, heartbeat_at = :now WHERE id = :id"

# a stopped worker's heartbeat_at is when it stopped: one column says when it was last heard of
FORGET = "DELETE FROM workers WHERE heartbeat_at < :before"

LIST = "SELECT * FROM workers {where} ORDER BY started_at, id"


class SqlWorkers(SqlConnections):
    """The worker registry's operations of a SQL store."""

    def record_worker(self, worker: WorkerRecord) -> None:
        with self._writing() as db:
            self._insert(db, "workers", worker.model_dump(), replace=["id"])

    def heartbeat_worker(self, worker_id: str, now: datetime) -> bool:
        with self._statement() as db:
            cursor = db.execute(HEARTBEAT, {"now": to_timestamp(now), "id": worker_id})
            return cursor.rowcount > 0

    def stop_worker(self, worker_id: str, now: datetime) -> None:
        with self._statement() as db:
            db.execute(STOP, {"now": to_timestamp(now), "id": worker_id})

    def list_workers(self, *, include_stopped: bool = True) -> list[WorkerRecord]:
        where = "" if include_stopped else "WHERE stopped_at IS NULL"
        rows = self._all(LIST.format(where=where), {})
        return [WorkerRecord.model_validate(row) for row in rows]

    def forget_workers(self, before: datetime) -> int:
        with self._statement() as db:
            return db.execute(FORGET, {"before": to_timestamp(before)}).rowcount
