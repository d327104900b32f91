"""Point-in-time recovery's SQL, shared by the SQLite and the PostgreSQL store: the
streaming lease, the log archive's catalogue and base backups.

The streaming lease works as a job's: one ``UPDATE`` takes it when nobody holds an
unexpired one, and every advance of the durable end of the log is fenced by the holder.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pulumi_capy.api.errors import NotFound
from pulumi_capy.engine.stores.contract import (
    BaseBackupRecord,
    PitrRecord,
    Transaction,
    WalSegmentRecord,
)
from pulumi_capy.engine.stores.sql_base import (
    SqlConnections,
    read_row,
    stored,
    to_timestamp,
)

__all__ = ["SqlPitr"]


class SqlPitr(SqlConnections):
    def get_pitr(self, project_id: str) -> PitrRecord | None:
        row = self._one("SELECT * FROM pitr WHERE project_id = ?", (project_id,))
        return PitrRecord.model_validate(row) if row else None

    def put_pitr(self, record: PitrRecord) -> None:
        with self._writing() as db:
            self._insert(db, "pitr", record.model_dump(), replace=("project_id",))

    def update_pitr(self, project_id: str, fields: Mapping[str, Any]) -> None:
        names = list(fields)
        for name in names:
            if name not in PitrRecord.model_fields:
                raise ValueError(f"bad column name {name!r}")
        sets = ", ".join(f"{name} = :{name}" for name in names)
        with self._writing() as db:
            db.execute(
                f"UPDATE pitr SET {sets} WHERE project_id = :project_id",  # noqa: S608
                {**{name: stored(name, fields[name]) for name in names}, "project_id": project_id},
            )

    def enabled_pitr(self) -> list[PitrRecord]:
        rows = self._all("SELECT * FROM pitr WHERE enabled ORDER BY project_id", ())
        return [PitrRecord.model_validate(row) for row in rows]

    def pitr_records(self) -> list[PitrRecord]:
        rows = self._all("SELECT * FROM pitr ORDER BY project_id", ())
        return [PitrRecord.model_validate(row) for row in rows]

    def claim_streamer(
        self, project_id: str, worker_id: str, now: datetime, lease_until: datetime
    ) -> bool:
        with self._writing() as db:
            cursor = db.execute(
                "UPDATE pitr SET streamer_id = :worker, heartbeat_at = :now, "
                "lease_expires_at = :until "
                "WHERE project_id = :project AND enabled AND ("
                "streamer_id IS NULL OR streamer_id = :worker OR lease_expires_at < :now)",
                {
                    "worker": worker_id,
                    "now": to_timestamp(now),
                    "until": to_timestamp(lease_until),
                    "project": project_id,
                },
            )
            return cursor.rowcount > 0

    def release_streamer(self, project_id: str, worker_id: str) -> None:
        with self._writing() as db:
            db.execute(
                "UPDATE pitr SET streamer_id = NULL, lease_expires_at = NULL "
                "WHERE project_id = ? AND streamer_id = ?",
                (project_id, worker_id),
            )

    def record_streamed(
        self, project_id: str, worker_id: str, streamed_lsn: int, covered_at: datetime
    ) -> bool:
        with self._writing() as db:
            cursor = db.execute(
                "UPDATE pitr SET streamed_lsn = ?, covered_at = ? "
                "WHERE project_id = ? AND streamer_id = ?",
                (streamed_lsn, to_timestamp(covered_at), project_id, worker_id),
            )
            return cursor.rowcount > 0

    def put_wal_segment(self, segment: WalSegmentRecord) -> WalSegmentRecord | None:
        with self._writing() as db:
            if not db.execute(
                "SELECT 1 FROM pitr WHERE project_id = ?", (segment.project_id,)
            ).fetchone():
                raise NotFound(f"project {segment.project_id} has no PITR archive (deleted?)")
            before = db.execute(
                "SELECT * FROM wal_segments WHERE project_id = ? AND name = ?",
                (segment.project_id, segment.name),
            ).fetchone()
            self._insert(db, "wal_segments", segment.model_dump(), replace=("project_id", "name"))
        return WalSegmentRecord.model_validate(read_row(before)) if before else None

    def get_wal_segment(self, project_id: str, name: str) -> WalSegmentRecord | None:
        row = self._one(
            "SELECT * FROM wal_segments WHERE project_id = ? AND name = ?", (project_id, name)
        )
        return WalSegmentRecord.model_validate(row) if row else None

    def list_wal_segments(self, project_id: str, *, prefix: str = "") -> list[WalSegmentRecord]:
        rows = self._all(  # names are hex and dots: no LIKE wildcard in a prefix
            "SELECT * FROM wal_segments WHERE project_id = ? AND name LIKE ? || '%' ORDER BY name",
            (project_id, prefix),
        )
        return [WalSegmentRecord.model_validate(row) for row in rows]

    def delete_wal_segment(self, project_id: str, name: str) -> None:
        with self._writing() as db:
            db.execute(
                "DELETE FROM wal_segments WHERE project_id = ? AND name = ?", (project_id, name)
            )

    def insert_base_backup(self, tx: Transaction, backup: BaseBackupRecord) -> None:
        self._insert(self._connection(tx), "base_backups", backup.model_dump())

    def list_base_backups(
        self, project_id: str, *, state: str | None = "completed"
    ) -> list[BaseBackupRecord]:
        if state is None:
            rows = self._all(
                "SELECT * FROM base_backups WHERE project_id = ? ORDER BY ended_at, id",
                (project_id,),
            )
        else:
            rows = self._all(
                "SELECT * FROM base_backups WHERE project_id = ? AND state = ? "
                "ORDER BY ended_at, id",
                (project_id, state),
            )
        return [BaseBackupRecord.model_validate(row) for row in rows]

    def expire_base_backup(self, backup_id: str) -> bool:
        with self._writing() as db:
            cursor = db.execute(
                "UPDATE base_backups SET state = 'expired' WHERE id = ? AND state <> 'expired'",
                (backup_id,),
            )
            return cursor.rowcount > 0

    def expire_pitr_restore_points(self, project_id: str, before: datetime, now: datetime) -> int:
        with self._writing() as db:
            cursor = db.execute(
                "UPDATE restore_points SET state = 'expired', updated_at = ? "
                "WHERE project_id = ? AND kind = 'pitr' AND state = 'active' AND pitr_time < ?",
                (to_timestamp(now), project_id, to_timestamp(before)),
            )
            return cursor.rowcount
