"""The engine's metadata: one SQLite database in WAL mode, all of its SQL here.

The schema is built by numbered migrations recorded in ``schema_migrations``.
Several processes (a ``pulumi up``, a CLI call, a worker) may open the same
file at once: every write runs in ``BEGIN IMMEDIATE`` with a busy timeout, and
claiming a job is one ``UPDATE … RETURNING`` that also refuses a job whose
``locked_resource`` a running job holds (backed by a partial unique index).

Every write to a claimed job is fenced by ``(id, claimed_by, attempts)``: a
worker whose lease was taken over changes nothing.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pulumi_capy.api.errors import Conflict
from pulumi_capy.api.models import (
    Backup,
    Job,
    PreviewDatabase,
    Project,
    RestorePoint,
    ScheduledBackup,
)

__all__ = [
    "BackupRecord",
    "Fence",
    "JobRecord",
    "ProjectRecord",
    "Store",
    "from_timestamp",
    "to_timestamp",
]

BUSY_TIMEOUT_SECONDS = 30.0

MIGRATIONS: tuple[str, ...] = (
    # 1: the restore surface
    """
    CREATE TABLE organizations (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE projects (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        name TEXT NOT NULL,
        environment TEXT NOT NULL,
        database_url TEXT NOT NULL,
        database_kind TEXT NOT NULL,
        database_name TEXT,
        state TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX projects_name ON projects (organization_id, name);
    CREATE TABLE backups (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        backup_key TEXT NOT NULL UNIQUE,
        label TEXT,
        database_name TEXT,
        size_bytes INTEGER,
        blob_bytes INTEGER,
        sha256 TEXT,
        format TEXT,
        state TEXT NOT NULL,
        verification_state TEXT NOT NULL,
        verification_error TEXT,
        verified_at TEXT,
        created_by_job_id TEXT,
        created_at TEXT NOT NULL,
        expired_at TEXT
    );
    CREATE INDEX backups_project ON backups (project_id, created_at);
    CREATE TABLE restore_points (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        organization_id TEXT NOT NULL,
        label TEXT NOT NULL,
        note TEXT,
        kind TEXT NOT NULL,
        backup_id TEXT,
        backup_key TEXT,
        pitr_time TEXT,
        state TEXT NOT NULL,
        created_by_actor_id TEXT,
        created_by_actor_kind TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX restore_points_project ON restore_points (project_id, created_at);
    CREATE TABLE scheduled_backups (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL UNIQUE,
        organization_id TEXT NOT NULL,
        cron_hour INTEGER NOT NULL,
        cron_minute INTEGER NOT NULL,
        is_active INTEGER NOT NULL,
        label TEXT,
        retention_days INTEGER,
        last_job_id TEXT,
        last_run_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE preview_databases (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        name TEXT NOT NULL,
        mode TEXT NOT NULL,
        state TEXT NOT NULL,
        database_name TEXT,
        role_name TEXT,
        public_host TEXT,
        direct_port INTEGER,
        pooled_port INTEGER,
        ssl_mode TEXT,
        source_kind TEXT,
        source_database TEXT,
        source_backup_key TEXT,
        source_restore_time TEXT,
        ttl_expires_at TEXT,
        last_error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX previews_live_name ON preview_databases (project_id, name)
        WHERE state <> 'deleted';
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        claimed_at TEXT,
        claimed_by TEXT,
        lease_expires_at TEXT,
        cluster_id TEXT,
        started_at TEXT,
        completed_at TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        run_after TEXT NOT NULL,
        error TEXT,
        last_exit_code INTEGER,
        last_stdout TEXT,
        last_stderr TEXT,
        locked_resource TEXT,
        retry_classification TEXT,
        organization_id TEXT,
        project_id TEXT,
        preview_database_id TEXT,
        payload TEXT NOT NULL DEFAULT '{}',
        result TEXT
    );
    -- two jobs holding one lock never run at once
    CREATE UNIQUE INDEX jobs_running_lock ON jobs (locked_resource)
        WHERE state = 'running' AND locked_resource IS NOT NULL;
    CREATE INDEX jobs_claimable ON jobs (state, run_after, created_at);
    CREATE INDEX jobs_project ON jobs (project_id, created_at);
    """,
    # 2: API keys of a self-hosted server: only a SHA-256 of each key is kept
    """
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        scopes TEXT NOT NULL,
        project_id TEXT,
        created_at TEXT NOT NULL,
        expires_at TEXT,
        revoked_at TEXT,
        last_used_at TEXT
    );
    CREATE INDEX api_keys_organization ON api_keys (organization_id, created_at);
    """,
)


def to_timestamp(value: datetime | None) -> str | None:
    """Fixed-width UTC text, so that text order is time order."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_timestamp(value: str | None) -> datetime | None:
    if value is None:
        return None
    # fromisoformat reads our fixed format (Python >= 3.11) several times faster than strptime
    return datetime.fromisoformat(value)


class ProjectRecord(Project):
    database_url: str

    def __repr__(self) -> str:  # the URL may carry a password
        return f"ProjectRecord(id={self.id!r}, name={self.name!r}, kind={self.database_kind!r})"

    __str__ = __repr__

    def public(self) -> Project:
        return Project.model_validate(self.model_dump(exclude={"database_url"}))


class BackupRecord(Backup):
    sha256: str | None = None
    blob_bytes: int | None = None
    format: str | None = None
    created_by_job_id: str | None = None

    def public(self) -> Backup:
        return Backup.model_validate(self.model_dump())


class JobRecord(Job):
    payload: dict[str, Any] = {}
    run_after: datetime | None = None
    lease_expires_at: datetime | None = None

    def public(self) -> Job:
        return Job.model_validate(self.model_dump(exclude={"payload"}))

    @property
    def fence(self) -> Fence:
        return Fence(self.id, self.claimed_by or "", self.attempts)


@dataclass(frozen=True)
class Fence:
    """Who may still write a claimed job: its id, the worker, the attempt."""

    job_id: str
    worker_id: str
    attempt: int


_JSON_COLUMNS = {"payload", "result", "scopes"}
_BOOL_COLUMNS = {"is_active"}


def _json(value: Any) -> Any:
    return json.loads(value)


def _timestamp(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


@functools.cache
def _reader(key: str) -> Callable[[Any], Any] | None:
    """How a column's stored value becomes its model value (``None`` stays ``None``)."""
    if key in _JSON_COLUMNS:
        return _json
    if key in _BOOL_COLUMNS:
        return bool
    if key.endswith(("_at", "_time")):
        return _timestamp
    return None


def _row(row: sqlite3.Row) -> dict[str, Any]:
    return _rows([row])[0]


def _rows(rows: Sequence[sqlite3.Row]) -> list[dict[str, Any]]:
    """Rows of one query as dicts, each column read as :func:`_reader` says (one plan per
    query, not per cell: listing answers are the server's hottest path)."""
    if not rows:
        return []
    plan = [(key, _reader(key)) for key in rows[0].keys()]  # noqa: SIM118 - no __iter__ of keys
    out: list[dict[str, Any]] = []
    for row in rows:
        data: dict[str, Any] = {}
        for (key, reader), value in zip(plan, row, strict=True):
            data[key] = value if reader is None or value is None else reader(value)
        out.append(data)
    return out


def _value(key: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return to_timestamp(value)
    if key in _JSON_COLUMNS and value is not None:
        return json.dumps(value, sort_keys=True)
    if hasattr(value, "value") and isinstance(getattr(value, "value", None), str):
        return value.value  # an enum member
    return value


_IDENT_OK = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _columns(fields: Mapping[str, Any]) -> list[str]:
    names = list(fields)
    for name in names:  # column names come from code, never from users; guard anyway
        if not set(name) <= _IDENT_OK:
            raise ValueError(f"bad column name {name!r}")
    return names


# ---------------------------------------------------------------- queries

CLAIM_JOB = """
UPDATE jobs
SET state = 'running',
    attempts = attempts + 1,
    claimed_by = :worker,
    claimed_at = :now,
    lease_expires_at = :lease_until,
    started_at = COALESCE(started_at, :now),
    updated_at = :now,
    retry_classification = NULL
WHERE id = (
    SELECT candidate.id FROM jobs AS candidate
    WHERE candidate.state = 'pending'
      AND candidate.run_after <= :now
      AND (:only_id IS NULL OR candidate.id = :only_id)
      AND (
        candidate.locked_resource IS NULL
        OR NOT EXISTS (
            SELECT 1 FROM jobs AS holder
            WHERE holder.state = 'running'
              AND holder.locked_resource = candidate.locked_resource
        )
      )
    ORDER BY candidate.created_at, candidate.rowid
    LIMIT 1
)
RETURNING *
"""

RENEW_LEASE = """
UPDATE jobs SET lease_expires_at = :lease_until, updated_at = :now
WHERE id = :id AND claimed_by = :worker AND attempts = :attempt AND state = 'running'
"""

EXPIRED_LEASES = """
SELECT * FROM jobs WHERE state = 'running' AND lease_expires_at < :now ORDER BY created_at
"""

RESCUE_TO_PENDING = """
UPDATE jobs
SET state = 'pending', claimed_by = NULL, claimed_at = NULL, lease_expires_at = NULL,
    run_after = :now, updated_at = :now, retry_classification = 'transient', error = :error
WHERE id = :id AND state = 'running' AND claimed_by = :worker AND attempts = :attempt
"""

RESCUE_TO_FAILED = """
UPDATE jobs
SET state = 'failed', lease_expires_at = NULL, completed_at = :now, updated_at = :now,
    retry_classification = 'transient', error = :error
WHERE id = :id AND state = 'running' AND claimed_by = :worker AND attempts = :attempt
"""

JOBS_USING_RESTORE_POINT = """
SELECT id FROM jobs
WHERE state IN ('pending', 'running')
  AND json_extract(payload, '$.request.restore_point_id') = :restore_point_id
"""

JOBS_USING_BACKUP = """
SELECT id FROM jobs
WHERE state IN ('pending', 'running')
  AND (json_extract(payload, '$.backup_id') = :backup_id
       OR json_extract(payload, '$.request.backup_key') = :backup_key)
"""


class Store:
    """The metadata store of one engine directory. Thread-safe."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # the one writing connection, and reads in its txns
        self._local = threading.local()  # per thread: its reading connection, txn depth
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()  # not _lock: a writer's txn must not stop reads
        self._closed = False
        self._db = sqlite3.connect(
            path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._migrate()

    def close(self) -> None:
        with self._lock, self._readers_lock:
            self._closed = True
            self._db.close()
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    def _reader(self) -> sqlite3.Connection:
        """This thread's reading connection. WAL readers never wait for the writer, nor for
        each other: reads of many threads (the server's) do not queue behind one lock."""
        reader: sqlite3.Connection | None = getattr(self._local, "reader", None)
        if reader is None:
            with self._readers_lock:
                if self._closed:
                    raise sqlite3.ProgrammingError("the store is closed")
                reader = sqlite3.connect(
                    self.path,
                    timeout=BUSY_TIMEOUT_SECONDS,
                    isolation_level=None,
                    check_same_thread=False,  # only this thread uses it; close() may be another
                )
                reader.row_factory = sqlite3.Row
                reader.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
                reader.execute("PRAGMA query_only = ON")
                self._readers.append(reader)
            self._local.reader = reader
        return reader

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """The connection a read uses: inside this thread's transaction, that transaction's
        (to see its own writes); otherwise this thread's reading connection."""
        if getattr(self._local, "depth", 0):
            with self._lock:
                yield self._db
        else:
            yield self._reader()

    # ------------------------------------------------------------ plumbing

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): all or nothing."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._local.depth = getattr(self._local, "depth", 0) + 1
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            finally:
                self._local.depth -= 1
            self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self.transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
            for version, script in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    (version, to_timestamp(datetime.now(UTC))),
                )

    @property
    def schema_version(self) -> int:
        row = self._one("SELECT MAX(version) AS v FROM schema_migrations", {})
        return int(row["v"]) if row else 0

    def _one(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any] | None:
        with self._reading() as db:
            row = db.execute(sql, params).fetchone()
        return _row(row) if row is not None else None

    def _all(self, sql: str, params: Mapping[str, Any] | Sequence[Any]) -> list[dict[str, Any]]:
        with self._reading() as db:
            rows = db.execute(sql, params).fetchall()
        return _rows(rows)

    def _insert(self, db: sqlite3.Connection, table: str, fields: Mapping[str, Any]) -> None:
        names = _columns(fields)
        db.execute(
            f"INSERT INTO {table} ({', '.join(names)}) "  # noqa: S608 - names are checked
            f"VALUES ({', '.join(':' + n for n in names)})",
            {name: _value(name, fields[name]) for name in names},
        )

    def _update(
        self,
        db: sqlite3.Connection,
        table: str,
        key: str,
        fields: Mapping[str, Any],
        where: str = "",
        params: Mapping[str, Any] | None = None,
    ) -> int:
        names = _columns(fields)
        sets = ", ".join(f"{name} = :set_{name}" for name in names)
        values = {f"set_{name}": _value(name, fields[name]) for name in names}
        values.update(params or {})
        values["key"] = key
        cursor = db.execute(
            f"UPDATE {table} SET {sets} WHERE id = :key {where}",  # noqa: S608
            values,
        )
        return cursor.rowcount

    def insert_in(self, db: sqlite3.Connection, table: str, fields: Mapping[str, Any]) -> None:
        """Insert a row inside the caller's transaction."""
        self._insert(db, table, fields)

    def update_in(
        self, db: sqlite3.Connection, table: str, key: str, fields: Mapping[str, Any]
    ) -> int:
        """Update a row by id inside the caller's transaction."""
        return self._update(db, table, key, fields)

    def insert(self, table: str, fields: Mapping[str, Any]) -> None:
        with self.transaction() as db:
            self._insert(db, table, fields)

    def update(self, table: str, key: str, fields: Mapping[str, Any]) -> int:
        with self.transaction() as db:
            return self._update(db, table, key, fields)

    # ------------------------------------------------------------ organizations

    def ensure_organization(self, organization_id: str, name: str, now: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO organizations (id, name, created_at) VALUES (?, ?, ?)",
                (organization_id, name, to_timestamp(now)),
            )

    def get_organization(self, organization_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM organizations WHERE id = ?", (organization_id,))

    # ------------------------------------------------------------ API keys

    def insert_api_key(self, fields: Mapping[str, Any]) -> None:
        self.insert("api_keys", fields)

    def list_api_keys(self, organization_id: str) -> list[dict[str, Any]]:
        return self._all(
            "SELECT * FROM api_keys WHERE organization_id = ? ORDER BY created_at, rowid",
            (organization_id,),
        )

    def get_api_key(self, key_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM api_keys WHERE id = ?", (key_id,))

    def find_api_key(self, key_hash: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,))

    def revoke_api_key(self, key_id: str, now: datetime) -> bool:
        with self.transaction() as db:
            return (
                db.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (to_timestamp(now), key_id),
                ).rowcount
                > 0
            )

    def touch_api_key(self, key_id: str, now: datetime) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", (to_timestamp(now), key_id)
            )

    # ------------------------------------------------------------ projects

    def insert_project(self, fields: Mapping[str, Any]) -> ProjectRecord:
        try:
            self.insert("projects", fields)
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"a project named {fields['name']!r} exists already") from exc
        project = self.get_project(str(fields["id"]))
        assert project is not None
        return project

    def get_project(self, project_id: str) -> ProjectRecord | None:
        row = self._one("SELECT * FROM projects WHERE id = ?", (project_id,))
        return ProjectRecord.model_validate(row) if row else None

    def list_projects(self) -> list[ProjectRecord]:
        rows = self._all("SELECT * FROM projects ORDER BY created_at, id", ())
        return [ProjectRecord.model_validate(row) for row in rows]

    def delete_project(self, project_id: str) -> None:
        """Remove the project and every row that belongs to it."""
        with self.transaction() as db:
            for table in (
                "jobs",
                "restore_points",
                "backups",
                "scheduled_backups",
                "preview_databases",
            ):
                db.execute(f"DELETE FROM {table} WHERE project_id = ?", (project_id,))  # noqa: S608
            db.execute("DELETE FROM projects WHERE id = ?", (project_id,))

    # ------------------------------------------------------------ backups

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
        """Mark a backup and the restore points pinned to it expired; False if it was already."""
        with self.transaction() as db:
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
        with self.transaction() as db:
            db.execute("DELETE FROM backups WHERE id = ?", (backup_id,))

    def jobs_using_backup(self, backup_id: str, backup_key: str) -> list[str]:
        rows = self._all(JOBS_USING_BACKUP, {"backup_id": backup_id, "backup_key": backup_key})
        return [str(row["id"]) for row in rows]

    # ------------------------------------------------------------ restore points

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
        """Delete it unless a pending or running restore uses it (``Conflict``)."""
        with self.transaction() as db:
            users = [
                row["id"]
                for row in db.execute(
                    JOBS_USING_RESTORE_POINT, {"restore_point_id": restore_point_id}
                ).fetchall()
            ]
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

    def put_schedule(self, fields: Mapping[str, Any]) -> ScheduledBackup:
        names = _columns(fields)
        updates = ", ".join(
            f"{n} = excluded.{n}" for n in names if n not in ("id", "project_id", "created_at")
        )
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO scheduled_backups ({', '.join(names)}) "  # noqa: S608
                f"VALUES ({', '.join(':' + n for n in names)}) "
                f"ON CONFLICT (project_id) DO UPDATE SET {updates}",
                {name: _value(name, fields[name]) for name in names},
            )
        schedule = self.get_schedule(str(fields["project_id"]))
        assert schedule is not None
        return schedule

    def active_schedules(self) -> list[ScheduledBackup]:
        rows = self._all("SELECT * FROM scheduled_backups WHERE is_active = 1", ())
        return [ScheduledBackup.model_validate(row) for row in rows]

    def retention_schedules(self) -> list[ScheduledBackup]:
        rows = self._all("SELECT * FROM scheduled_backups WHERE retention_days IS NOT NULL", ())
        return [ScheduledBackup.model_validate(row) for row in rows]

    def mark_schedule_run_in(
        self,
        db: sqlite3.Connection,
        schedule_id: str,
        expected_last_run: datetime | None,
        job_id: str,
        now: datetime,
    ) -> bool:
        """Record a run; False when another process recorded one first."""
        return (
            db.execute(
                "UPDATE scheduled_backups SET last_run_at = :now, last_job_id = :job, "
                "updated_at = :now WHERE id = :id AND last_run_at IS :expected",
                {
                    "now": to_timestamp(now),
                    "job": job_id,
                    "id": schedule_id,
                    "expected": to_timestamp(expected_last_run),
                },
            ).rowcount
            > 0
        )

    # ------------------------------------------------------------ previews

    def insert_preview(self, db: sqlite3.Connection, fields: Mapping[str, Any]) -> None:
        try:
            self._insert(db, "preview_databases", fields)
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"a preview database named {fields['name']!r} exists already in this project; "
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

    # ------------------------------------------------------------ jobs

    def insert_job(self, db: sqlite3.Connection, fields: Mapping[str, Any]) -> None:
        self._insert(db, "jobs", fields)

    def get_job(self, job_id: str) -> JobRecord | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return JobRecord.model_validate(row) if row else None

    def list_jobs(self, project_id: str, limit: int) -> list[JobRecord]:
        rows = self._all(
            "SELECT * FROM jobs WHERE project_id = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (project_id, limit),
        )
        return [JobRecord.model_validate(row) for row in rows]

    def busy_jobs(self, project_id: str) -> list[JobRecord]:
        """Every pending or running job of the project, newest first."""
        rows = self._all(
            "SELECT * FROM jobs WHERE project_id = ? AND state IN ('pending', 'running') "
            "ORDER BY created_at DESC, rowid DESC",
            (project_id,),
        )
        return [JobRecord.model_validate(row) for row in rows]

    def outstanding_jobs(self, job_type: str, payload_key: str, value: str) -> list[JobRecord]:
        rows = self._all(
            "SELECT * FROM jobs WHERE type = :type AND state IN ('pending', 'running') "
            "AND json_extract(payload, :path) = :value",
            {"type": job_type, "path": f"$.{payload_key}", "value": value},
        )
        return [JobRecord.model_validate(row) for row in rows]

    def claim_job(
        self, worker_id: str, now: datetime, lease_until: datetime, only_id: str | None = None
    ) -> JobRecord | None:
        """Claim the oldest runnable job (or ``only_id``) in one statement."""
        with self.transaction() as db:
            row = db.execute(
                CLAIM_JOB,
                {
                    "worker": worker_id,
                    "now": to_timestamp(now),
                    "lease_until": to_timestamp(lease_until),
                    "only_id": only_id,
                },
            ).fetchone()
        return JobRecord.model_validate(_row(row)) if row is not None else None

    def renew_lease(self, fence: Fence, now: datetime, lease_until: datetime) -> bool:
        with self.transaction() as db:
            return (
                db.execute(
                    RENEW_LEASE,
                    {
                        "lease_until": to_timestamp(lease_until),
                        "now": to_timestamp(now),
                        "id": fence.job_id,
                        "worker": fence.worker_id,
                        "attempt": fence.attempt,
                    },
                ).rowcount
                > 0
            )

    def update_claimed_job(self, fence: Fence, fields: Mapping[str, Any]) -> bool:
        """Write a claimed job's fields; False when the lease was taken over."""
        with self.transaction() as db:
            return self.update_claimed_job_in(db, fence, fields)

    def update_claimed_job_in(
        self, db: sqlite3.Connection, fence: Fence, fields: Mapping[str, Any]
    ) -> bool:
        return (
            self._update(
                db,
                "jobs",
                fence.job_id,
                fields,
                "AND claimed_by = :fence_worker AND attempts = :fence_attempt "
                "AND state = 'running'",
                {"fence_worker": fence.worker_id, "fence_attempt": fence.attempt},
            )
            > 0
        )

    def rescue_expired_leases(self, now: datetime, error: str) -> list[tuple[JobRecord, str]]:
        """Return each running job whose lease expired to ``pending`` (or ``failed``
        when it has no attempts left); returns the jobs and their new states."""
        rescued: list[tuple[JobRecord, str]] = []
        with self.transaction() as db:
            for row in db.execute(EXPIRED_LEASES, {"now": to_timestamp(now)}).fetchall():
                job = JobRecord.model_validate(_row(row))
                to_failed = job.attempts >= job.max_attempts
                params = {
                    "now": to_timestamp(now),
                    "id": job.id,
                    "worker": job.claimed_by,
                    "attempt": job.attempts,
                    "error": error.format(worker=job.claimed_by, attempt=job.attempts),
                }
                db.execute(RESCUE_TO_FAILED if to_failed else RESCUE_TO_PENDING, params)
                rescued.append((job, "failed" if to_failed else "pending"))
        return rescued
