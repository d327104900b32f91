"""Pre-migration: pin a restore point before each migration, roll back with one line.

The migration runs as a `pulumi_command.local.Command` that depends on the
restore point. When the migration file changes, the restore point's label
(which carries the file's hash) changes too: `pulumi up` takes a new restore
point first, then runs the migration again. To roll back to the state before
the migration:

    pulumi config set rollback true && pulumi up
"""

from __future__ import annotations

import hashlib
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pulumi
import pulumi_command as command

import pulumi_capy as capy

config = pulumi.Config()
migration = Path(config.get("migration") or "migrations/002_add_email.sql")
digest = hashlib.sha256(migration.read_bytes()).hexdigest()[:12]

app_db = Path(config.get("databasePath") or "app.db").resolve()
if not app_db.exists():  # the app's database before any migration
    with closing(sqlite3.connect(app_db)) as db, db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO customers (name) VALUES (?)", [("Ada",), ("Grace",)])

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

migrate = command.local.Command(
    "migrate",
    create=f"{sys.executable} migrate.py {app_db} {migration}",
    triggers=[digest],
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
