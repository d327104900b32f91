"""The schema of a SQLite store, built by numbered migrations recorded in ``schema_migrations``.

A migration is applied once, inside the transaction that opens the store; a
store opened again applies only those it has not recorded.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "NewerStore", "migrate"]

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
    # 3: point-in-time recovery: who streams each project's log, the log, base backups
    """
    CREATE TABLE pitr (
        project_id TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL,
        method TEXT NOT NULL,
        slot_name TEXT,
        streamer_id TEXT,
        heartbeat_at TEXT,
        lease_expires_at TEXT,
        streamed_lsn INTEGER,
        covered_at TEXT,
        floor_lsn INTEGER NOT NULL DEFAULT 0,
        notices TEXT NOT NULL DEFAULT '[]',
        enabled_at TEXT,
        updated_at TEXT
    );
    CREATE TABLE wal_segments (
        project_id TEXT NOT NULL,
        name TEXT NOT NULL,
        blob_key TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        blob_bytes INTEGER NOT NULL,
        partial INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (project_id, name)
    );
    CREATE TABLE base_backups (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        blob_key TEXT NOT NULL UNIQUE,
        sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        blob_bytes INTEGER NOT NULL,
        timeline INTEGER NOT NULL,
        start_lsn INTEGER NOT NULL,
        stop_lsn INTEGER NOT NULL,
        ended_at TEXT NOT NULL,
        server_major INTEGER NOT NULL,
        superuser TEXT NOT NULL,
        state TEXT NOT NULL,
        created_by_job_id TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX base_backups_project ON base_backups (project_id, ended_at);
    ALTER TABLE jobs ADD COLUMN progress TEXT;
    """,
    # 4: point-in-time recovery of SQLite: the generations of a project's shipped log
    """
    ALTER TABLE pitr ADD COLUMN generations TEXT NOT NULL DEFAULT '[]';
    """,
    # 5: many workers: the directory of a SQLite project's file on its jobs (who may claim
    # them), and the workers that run (or ran) on this store
    """
    ALTER TABLE jobs ADD COLUMN sqlite_dir TEXT;
    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        thread TEXT NOT NULL,
        sqlite_dirs TEXT,
        started_at TEXT NOT NULL,
        heartbeat_at TEXT NOT NULL,
        stopped_at TEXT
    );
    """,
)


class NewerStore(Exception):
    """The store has migrations this build does not know (it was upgraded since)."""


def migrate(db: sqlite3.Connection, applied_at: str) -> None:
    """Apply the migrations ``db`` has not recorded, inside the caller's transaction."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
    newer = sorted(version for version in done if version > len(MIGRATIONS))
    if newer:
        # a newer capy migrated this store: this build would run blind to what it added
        raise NewerStore(
            f"this engine's store was migrated by a newer capy (schema version {newer[-1]}; "
            f"this capy knows up to {len(MIGRATIONS)}): run that version or newer, or "
            "restore the copy of the engine directory taken before the upgrade"
        )
    for version, script in enumerate(MIGRATIONS, start=1):
        if version in done:
            continue
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
            (version, applied_at),
        )
