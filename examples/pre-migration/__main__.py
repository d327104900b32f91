"""Pre-migration: pin a restore point before each migration, roll back with one line.

The migration runs as a resource that depends on the restore point. When the
migration file changes, the restore point's label (which carries the file's
hash) changes too: `pulumi up` takes a new restore point first, then runs the
migration again. To roll back to the state before the migration:

    pulumi config set rollback true && pulumi up

With internet access, `pulumi_command.local.Command("migrate", create=...,
triggers=[digest])` does what `Migration` does here; this example keeps to a
dynamic resource of its own so that it runs offline (the command provider's
plugin cannot be fetched or built without network).
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, Resource, ResourceProvider

import pulumi_capy as capy

config = pulumi.Config()
migration = Path(config.get("migration") or "migrations/002_add_email.sql")
digest = hashlib.sha256(migration.read_bytes()).hexdigest()[:12]

app_db = Path(config.get("databasePath") or "app.db").resolve()
if not app_db.exists():  # the app's database before any migration
    with closing(sqlite3.connect(app_db)) as db, db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO customers (name) VALUES (?)", [("Ada",), ("Grace",)])


class MigrationProvider(ResourceProvider):
    """Runs `migrate.py DATABASE FILE` once per (database, file, digest)."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        done = subprocess.run(
            [sys.executable, "migrate.py", props["database"], props["migration"]],
            capture_output=True,
            text=True,
            check=True,
        )
        return CreateResult(f"migration-{props['digest']}", {**props, "stdout": done.stdout})


class Migration(Resource):
    stdout: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        database: str,
        migration: str,
        digest: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"database": database, "migration": migration, "digest": digest, "stdout": None}
        super().__init__(MigrationProvider(), name, props, opts)


project = capy.Project(
    "app",
    name=f"pre-migration-{pulumi.get_stack()}",
    database_url=f"sqlite:///{app_db}",
    force_destroy=config.get_bool("forceDestroy") or False,
)

before = capy.RestorePoint(
    "before-migration",
    project_id=project.project_id,
    label=f"before-{migration.stem}-{digest}",
    note=f"taken before {migration}",
)

migrate = Migration(
    "migrate",
    database=str(app_db),
    migration=str(migration),
    digest=digest,  # a new digest replaces the resource: the migration runs again
    opts=pulumi.ResourceOptions(depends_on=[before]),
)

if config.get_bool("rollback"):
    capy.Restore(
        "rollback",
        project_id=project.project_id,
        restore_point_id=before.restore_point_id,
        target_kind="project",
        confirm_project_overwrite=True,
        opts=pulumi.ResourceOptions(depends_on=[migrate]),
    )

pulumi.export("restore_point_id", before.restore_point_id)
pulumi.export("restore_point_label", before.label)
pulumi.export("migration_output", migrate.stdout)
