"""The schema of a PostgreSQL store: the migrations of ``sqlite_migrations`` in PostgreSQL's
dialect, numbered alike and recorded in ``schema_migrations``.

Times are ``timestamptz``, flags ``boolean``, JSON ``jsonb``; the queue's tables and the API
keys carry ``seq``, the order rows were inserted in (SQLite's ``rowid``). Several processes
may open a store at once: the migrations run under a transaction-wide advisory lock, so one
applies them and the others find them applied.
"""

from __future__ import annotations

from typing import Any

from pulumi_capy.engine.stores.sqlite_migrations import NewerStore

__all__ = ["MIGRATIONS", "NewerStore", "migrate"]

# pg_advisory_xact_lock's key for the migrations ("capy" in ASCII)
MIGRATION_LOCK = 0x63617079

MIGRATIONS: tuple[str, ...] = (
    # 1: the restore surface
    """
    CREATE TABLE organizations (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
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
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE UNIQUE INDEX projects_name ON projects (organization_id, name);
    CREATE TABLE backups (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        backup_key TEXT NOT NULL UNIQUE,
        label TEXT,
        database_name TEXT,
        size_bytes BIGINT,
        blob_bytes BIGINT,
        sha256 TEXT,
        format TEXT,
        state TEXT NOT NULL,
        verification_state TEXT NOT NULL,
        verification_error TEXT,
        verified_at TIMESTAMPTZ,
        created_by_job_id TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        expired_at TIMESTAMPTZ
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
        pitr_time TIMESTAMPTZ,
        state TEXT NOT NULL,
        created_by_actor_id TEXT,
        created_by_actor_kind TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX restore_points_project ON restore_points (project_id, created_at);
    CREATE TABLE scheduled_backups (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL UNIQUE,
        organization_id TEXT NOT NULL,
        cron_hour INTEGER NOT NULL,
        cron_minute INTEGER NOT NULL,
        is_active BOOLEAN NOT NULL,
        label TEXT,
        retention_days INTEGER,
        last_job_id TEXT,
        last_run_at TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
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
        source_restore_time TIMESTAMPTZ,
        ttl_expires_at TIMESTAMPTZ,
        last_error TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE UNIQUE INDEX previews_live_name ON preview_databases (project_id, name)
        WHERE state <> 'deleted';
    CREATE TABLE jobs (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        claimed_at TIMESTAMPTZ,
        claimed_by TEXT,
        lease_expires_at TIMESTAMPTZ,
        cluster_id TEXT,
        started_at TIMESTAMPTZ,
        completed_at TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        run_after TIMESTAMPTZ NOT NULL,
        error TEXT,
        last_exit_code INTEGER,
        last_stdout TEXT,
        last_stderr TEXT,
        locked_resource TEXT,
        retry_classification TEXT,
        organization_id TEXT,
        project_id TEXT,
        preview_database_id TEXT,
        payload JSONB NOT NULL DEFAULT '{}',
        result JSONB
    );
    -- two jobs holding one lock never run at once
    CREATE UNIQUE INDEX jobs_running_lock ON jobs (locked_resource)
        WHERE state = 'running' AND locked_resource IS NOT NULL;
    -- a claim walks the pending jobs in its order and stops at the first it may take
    -- (SQLite's (state, run_after, created_at) would have PostgreSQL sort them all)
    CREATE INDEX jobs_claimable ON jobs (created_at, seq) WHERE state = 'pending';
    CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'running';
    CREATE INDEX jobs_project ON jobs (project_id, created_at);
    """,
    # 2: API keys of a self-hosted server: only a SHA-256 of each key is kept
    """
    CREATE TABLE api_keys (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        organization_id TEXT NOT NULL,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        scopes JSONB NOT NULL,
        project_id TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ,
        revoked_at TIMESTAMPTZ,
        last_used_at TIMESTAMPTZ
    );
    CREATE INDEX api_keys_organization ON api_keys (organization_id, created_at);
    """,
    # 3: point-in-time recovery: who streams each project's log, the log, base backups
    """
    CREATE TABLE pitr (
        project_id TEXT PRIMARY KEY,
        enabled BOOLEAN NOT NULL,
        method TEXT NOT NULL,
        slot_name TEXT,
        streamer_id TEXT,
        heartbeat_at TIMESTAMPTZ,
        lease_expires_at TIMESTAMPTZ,
        streamed_lsn BIGINT,
        covered_at TIMESTAMPTZ,
        floor_lsn BIGINT NOT NULL DEFAULT 0,
        notices JSONB NOT NULL DEFAULT '[]',
        enabled_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ
    );
    CREATE TABLE wal_segments (
        project_id TEXT NOT NULL,
        name TEXT NOT NULL,
        blob_key TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        blob_bytes BIGINT NOT NULL,
        partial BOOLEAN NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (project_id, name)
    );
    CREATE TABLE base_backups (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL,
        blob_key TEXT NOT NULL UNIQUE,
        sha256 TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        blob_bytes BIGINT NOT NULL,
        timeline INTEGER NOT NULL,
        start_lsn BIGINT NOT NULL,
        stop_lsn BIGINT NOT NULL,
        ended_at TIMESTAMPTZ NOT NULL,
        server_major INTEGER NOT NULL,
        superuser TEXT NOT NULL,
        state TEXT NOT NULL,
        created_by_job_id TEXT,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX base_backups_project ON base_backups (project_id, ended_at);
    ALTER TABLE jobs ADD COLUMN progress JSONB;
    """,
    # 4: point-in-time recovery of SQLite: the generations of a project's shipped log
    """
    ALTER TABLE pitr ADD COLUMN generations JSONB NOT NULL DEFAULT '[]';
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
        sqlite_dirs JSONB,
        started_at TIMESTAMPTZ NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL,
        stopped_at TIMESTAMPTZ
    );
    """,
)


def migrate(db: Any, applied_at: str) -> None:
    """Apply the migrations ``db`` (a psycopg connection in a transaction) has not recorded."""
    db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL)"
    )
    done = {row["version"] for row in db.execute("SELECT version FROM schema_migrations")}
    newer = sorted(version for version in done if version > len(MIGRATIONS))
    if newer:
        # a newer capy migrated this store: this build would run blind to what it added
        raise NewerStore(
            f"this store was migrated by a newer capy (schema version {newer[-1]}; "
            f"this capy knows up to {len(MIGRATIONS)}): run that version or newer"
        )
    for version, script in enumerate(MIGRATIONS, start=1):
        if version in done:
            continue
        db.execute(script)
        db.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
            (version, applied_at),
        )
