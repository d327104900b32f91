"""The operations of a SQL store over organizations, keys, projects, backups, restore
points, schedules and previews (the queue's are in ``sql_jobs``, PITR's in ``sql_pitr``),
shared by the SQLite and the PostgreSQL store.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pulumi_capy.api.errors import Conflict
from pulumi_capy.api.models import PreviewDatabase, RestorePoint, ScheduledBackup
from pulumi_capy.engine.secret_keys import SEALED_PREFIX, SecretKeys, is_sealed
from pulumi_capy.engine.stores.contract import (
    PREVIEW_CONNECTION_FIELDS,
    BackupRecord,
    PreviewSource,
    ProjectRecord,
    Transaction,
)
from pulumi_capy.engine.stores.sql_base import Database, stored, to_timestamp
from pulumi_capy.engine.stores.sql_jobs import SqlJobQueue
from pulumi_capy.engine.stores.sql_pitr import SqlPitr
from pulumi_capy.engine.stores.sql_workers import SqlWorkers

__all__ = ["SqlStore"]


class SqlStore(SqlJobQueue, SqlPitr, SqlWorkers):
    """A store's operations in SQL. Projects' ``database_url`` are kept sealed with
    ``secret_keys``; on open, a URL kept in plaintext (a store from before) or sealed by an
    older key is sealed anew (``_reseal``)."""

    secret_keys: SecretKeys
    WHERE = "the store"  # where the URLs are kept, for messages

    def _what(self, project_id: str) -> str:
        return f"the database_url of project {project_id} in {self.WHERE}"

    def _reseal(self, db: Database) -> bool:
        """Seal every URL kept in plaintext or by an older key; whether any was."""
        rows = db.execute("SELECT id, database_url FROM projects ORDER BY id", ()).fetchall()
        stale = [row for row in rows if self.secret_keys.needs_resealing(row["database_url"])]
        # a new key only when no URL needs the old one (a lost key file stays an error)
        may_create = not any(is_sealed(row["database_url"]) for row in rows)
        for row in stale:
            plaintext = self.secret_keys.unseal(row["database_url"], self._what(row["id"]))
            db.execute(
                "UPDATE projects SET database_url = ? WHERE id = ?",
                (self.secret_keys.seal(plaintext, may_create=may_create), row["id"]),
            )
        return bool(stale)

    def _project(self, row: dict[str, Any]) -> ProjectRecord:
        row["database_url"] = self.secret_keys.unseal(row["database_url"], self._what(row["id"]))
        return ProjectRecord.model_validate(row)

    # ------------------------------------------------------------ organizations

    def ensure_organization(self, organization_id: str, name: str, now: datetime) -> None:
        with self._writing() as db:
            db.execute(
                "INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (organization_id, name, to_timestamp(now)),
            )

    def get_organization(self, organization_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM organizations WHERE id = ?", (organization_id,))

    # ------------------------------------------------------------ API keys

    def insert_api_key(self, key: Mapping[str, Any]) -> None:
        with self._writing() as db:
            self._insert(db, "api_keys", key)

    def list_api_keys(self, organization_id: str) -> list[dict[str, Any]]:
        return self._all(
            "SELECT * FROM api_keys WHERE organization_id = ? "  # noqa: S608 - the dialect's column
            f"ORDER BY created_at, {self.ROWID}",
            (organization_id,),
        )

    def get_api_key(self, key_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM api_keys WHERE id = ?", (key_id,))

    def find_api_key(self, key_hash: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,))

    def revoke_api_key(self, key_id: str, now: datetime) -> bool:
        with self._writing() as db:
            return (
                db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (to_timestamp(now), key_id),
                ).rowcount
                > 0
            )

    def touch_api_key(self, key_id: str, now: datetime) -> None:
        with self._writing() as db:
            db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (to_timestamp(now), key_id)
            )

    # ------------------------------------------------------------ projects

    def insert_project(self, project: ProjectRecord) -> ProjectRecord:
        fields = project.model_dump(exclude={"pitr_window_start", "pitr_window_end"})
        try:
            with self._writing() as db:
                sealed = db.execute(
                    "SELECT 1 FROM projects WHERE database_url LIKE ? LIMIT 1",
                    (f"{SEALED_PREFIX}%",),
                ).fetchone()
                fields["database_url"] = self.secret_keys.seal(
                    project.database_url, may_create=sealed is None
                )
                self._insert(db, "projects", fields)
        except self.integrity_errors as exc:
            raise Conflict(f"a project named {project.name!r} exists already") from exc
        stored_project = self.get_project(project.id)
        assert stored_project is not None
        return stored_project

    def get_project(self, project_id: str) -> ProjectRecord | None:
        row = self._one("SELECT * FROM projects WHERE id = ?", (project_id,))
        return self._project(row) if row else None

    def list_projects(self) -> list[ProjectRecord]:
        rows = self._all("SELECT * FROM projects ORDER BY created_at, id", ())
        return [self._project(row) for row in rows]

    def update_project_database(
        self, project_id: str, database_url: str, database_name: str, now: datetime
    ) -> None:
        with self._writing() as db:
            other_sealed = db.execute(
                "SELECT 1 FROM projects WHERE database_url LIKE ? LIMIT 1",
                (f"{SEALED_PREFIX}%",),
            ).fetchone()
            sealed = self.secret_keys.seal(database_url, may_create=other_sealed is None)
            db.execute(
                "UPDATE projects SET database_url = ?, database_name = ?, updated_at = ? "
                "WHERE id = ?",
                (sealed, database_name, to_timestamp(now), project_id),
            )

    def delete_project(self, project_id: str) -> None:
        with self._writing() as db:
            for table in (
                "jobs",
                "restore_points",
                "backups",
                "scheduled_backups",
                "preview_databases",
                "pitr",
                "wal_segments",
                "base_backups",
            ):
                db.execute(f"DELETE FROM {table} WHERE project_id = ?", (project_id,))  # noqa: S608
            db.execute("DELETE FROM projects WHERE id = ?", (project_id,))

    # ------------------------------------------------------------ backups

    def record_backup(self, tx: Transaction, backup: BackupRecord) -> None:
        self._insert(self._connection(tx), "backups", backup.model_dump())

    def mark_backup_verified(self, tx: Transaction, backup_id: str, now: datetime) -> None:
        self._set(
            self._connection(tx),
            "backups",
            backup_id,
            {"verification_state": "verified", "verified_at": now, "verification_error": None},
        )

    def mark_backup_verification_failed(self, tx: Transaction, backup_id: str, error: str) -> None:
        self._set(
            self._connection(tx),
            "backups",
            backup_id,
            {"verification_state": "failed", "verification_error": error[:2000]},
        )

    def get_backup(self, backup_id: str) -> BackupRecord | None:
        row = self._one("SELECT * FROM backups WHERE id = ?", (backup_id,))
        return BackupRecord.model_validate(row) if row else None

    def get_backup_by_key(self, project_id: str, backup_key: str) -> BackupRecord | None:
        row = self._one(
            "SELECT * FROM backups WHERE project_id = ? AND backup_key = ?",
            (project_id, backup_key),
        )
        return BackupRecord.model_validate(row) if row else None

    def list_backups(self, project_id: str, *, state: str | None = None) -> list[BackupRecord]:
        rows = self._all(
            "SELECT * FROM backups WHERE project_id = :project "
            "AND (:state IS NULL OR state = :state) ORDER BY created_at, id",
            {"project": project_id, "state": state},
        )
        return [BackupRecord.model_validate(row) for row in rows]

    def expire_backup(self, backup_id: str, now: datetime) -> bool:
        with self._writing() as db:
            changed = db.execute(
                "UPDATE backups SET state = 'expired', expired_at = ? "
                "WHERE id = ? AND state <> 'expired'",
                (to_timestamp(now), backup_id),
            ).rowcount
            db.execute(
                "UPDATE restore_points SET state = 'expired', updated_at = ? "
                "WHERE backup_id = ? AND state <> 'expired'",
                (to_timestamp(now), backup_id),
            )
        return changed > 0

    def delete_backup(self, backup_id: str) -> None:
        with self._writing() as db:
            db.execute("DELETE FROM backups WHERE id = ?", (backup_id,))

    # ------------------------------------------------------------ restore points

    def insert_restore_point(self, point: RestorePoint) -> RestorePoint:
        with self._writing() as db:
            self._insert(db, "restore_points", point.model_dump())
        kept = self.get_restore_point(point.project_id, point.id)
        assert kept is not None
        return kept

    def get_restore_point(self, project_id: str, restore_point_id: str) -> RestorePoint | None:
        row = self._one(
            "SELECT * FROM restore_points WHERE project_id = ? AND id = ?",
            (project_id, restore_point_id),
        )
        return RestorePoint.model_validate(row) if row else None

    def list_restore_points(
        self, project_id: str, *, backup_id: str | None = None
    ) -> list[RestorePoint]:
        rows = self._all(
            "SELECT * FROM restore_points WHERE project_id = :project "
            "AND (:backup IS NULL OR backup_id = :backup) ORDER BY created_at, id",
            {"project": project_id, "backup": backup_id},
        )
        return [RestorePoint.model_validate(row) for row in rows]

    def delete_restore_point(self, restore_point_id: str) -> bool:
        with self._writing() as db:
            users = self._jobs_using_restore_point(db, restore_point_id)
            if users:
                raise Conflict(
                    f"restore point {restore_point_id} is in use by restore job "
                    f"{', '.join(users)}; wait for it to finish, then delete"
                )
            return (
                db.execute("DELETE FROM restore_points WHERE id = ?", (restore_point_id,)).rowcount
                > 0
            )

    # ------------------------------------------------------------ scheduled backups

    def get_schedule(self, project_id: str) -> ScheduledBackup | None:
        row = self._one("SELECT * FROM scheduled_backups WHERE project_id = ?", (project_id,))
        return ScheduledBackup.model_validate(row) if row else None

    def put_schedule(self, schedule: ScheduledBackup) -> ScheduledBackup:
        fields = schedule.model_dump(exclude={"last_job_id", "last_run_at"})
        names = list(fields)
        updates = ", ".join(
            f"{n} = excluded.{n}" for n in names if n not in ("id", "project_id", "created_at")
        )
        with self._writing() as db:
            db.execute(
                f"INSERT INTO scheduled_backups ({', '.join(names)}) "  # noqa: S608
                f"VALUES ({', '.join(':' + n for n in names)}) "
                f"ON CONFLICT (project_id) DO UPDATE SET {updates}",
                {name: stored(name, fields[name]) for name in names},
            )
        kept = self.get_schedule(schedule.project_id)
        assert kept is not None
        return kept

    def active_schedules(self) -> list[ScheduledBackup]:
        rows = self._all("SELECT * FROM scheduled_backups WHERE is_active", ())
        return [ScheduledBackup.model_validate(row) for row in rows]

    def retention_schedules(self) -> list[ScheduledBackup]:
        rows = self._all("SELECT * FROM scheduled_backups WHERE retention_days IS NOT NULL", ())
        return [ScheduledBackup.model_validate(row) for row in rows]

    def record_schedule_run(
        self,
        tx: Transaction,
        schedule_id: str,
        expected_last_run: datetime | None,
        job_id: str,
        now: datetime,
    ) -> bool:
        return (
            self._connection(tx)
            .execute(
                "UPDATE scheduled_backups SET last_run_at = :now, last_job_id = :job, "  # noqa: S608
                f"updated_at = :now WHERE id = :id AND last_run_at {self.IS} :expected",
                {
                    "now": to_timestamp(now),
                    "job": job_id,
                    "id": schedule_id,
                    "expected": to_timestamp(expected_last_run),
                },
            )
            .rowcount
            > 0
        )

    # ------------------------------------------------------------ previews

    def insert_preview(self, tx: Transaction, preview: PreviewDatabase) -> None:
        try:
            self._insert(self._connection(tx), "preview_databases", preview.model_dump())
        except self.integrity_errors as exc:
            raise Conflict(
                f"a preview database named {preview.name!r} exists already in this project; "
                "choose another preview_name or delete that preview"
            ) from exc

    def get_preview(self, preview_id: str) -> PreviewDatabase | None:
        row = self._one("SELECT * FROM preview_databases WHERE id = ?", (preview_id,))
        return PreviewDatabase.model_validate(row) if row else None

    def list_previews(self, project_id: str) -> list[PreviewDatabase]:
        rows = self._all(
            "SELECT * FROM preview_databases WHERE project_id = ? AND state <> 'deleted' "
            "ORDER BY created_at, id",
            (project_id,),
        )
        return [PreviewDatabase.model_validate(row) for row in rows]

    def previews_past_ttl(self, now: datetime) -> list[PreviewDatabase]:
        rows = self._all(
            "SELECT * FROM preview_databases WHERE state IN ('ready', 'failed', 'creating') "
            "AND ttl_expires_at IS NOT NULL AND ttl_expires_at <= ?",
            (to_timestamp(now),),
        )
        return [PreviewDatabase.model_validate(row) for row in rows]

    def mark_preview_ready(
        self,
        tx: Transaction,
        preview_id: str,
        connection: Mapping[str, Any],
        now: datetime,
        source: PreviewSource | None = None,
    ) -> None:
        unknown = set(connection) - PREVIEW_CONNECTION_FIELDS
        if unknown:
            raise ValueError(f"not a preview's connection field: {', '.join(sorted(unknown))}")
        fields: dict[str, Any] = {
            "state": "ready",
            **connection,
            "last_error": None,
            "updated_at": now,
        }
        if source is not None:
            fields |= {
                "source_kind": source.kind,
                "source_database": source.database,
                "source_backup_key": source.backup_key,
                "source_restore_time": source.restore_time,
            }
        self._preview_state(tx, preview_id, fields)

    def _preview_state(self, tx: Transaction, preview_id: str, fields: Mapping[str, Any]) -> None:
        self._set(self._connection(tx), "preview_databases", preview_id, fields)

    def mark_preview_failed(
        self, tx: Transaction, preview_id: str, error: str, now: datetime
    ) -> None:
        self._preview_state(
            tx, preview_id, {"state": "failed", "last_error": error[:2000], "updated_at": now}
        )

    def mark_preview_deleting(self, tx: Transaction, preview_id: str, now: datetime) -> None:
        self._preview_state(tx, preview_id, {"state": "deleting", "updated_at": now})

    def mark_preview_deleted(self, tx: Transaction, preview_id: str, now: datetime) -> None:
        self._preview_state(tx, preview_id, {"state": "deleted", "updated_at": now})
