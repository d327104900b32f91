"""Quickstart: protect a SQLite app database, pin a restore point, restore it into a preview.

Runs with no account and nothing installed beyond this package: the restore
engine is embedded (its files live in `.capy/` beside this program). After
`pulumi up`, open the preview to see the restored data:

    sqlite3 "$(pulumi stack output preview_path)" 'select * from customers'

Point-in-time recovery (optional): `pulumi config set pitr true && pulumi up` puts the
app database in WAL mode and turns PITR on; a `capy worker` running here ships its log
from then on. Then `pulumi config set restoreTime 2026-11-26T14:32:05.250Z && pulumi up`
lands the database as it was at that moment in a second preview (`moment_path`).
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pulumi

import pulumi_capy as capy

config = pulumi.Config()


def seed(path: Path, *, wal: bool) -> Path:
    """The app database this stack protects; made with sample data on the first run (and
    switched to WAL mode, which PITR needs, when ``wal``)."""
    if not path.exists():
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, plan TEXT)")
            db.execute(
                "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, cents INTEGER)"
            )
            db.executemany(
                "INSERT INTO customers (name, plan) VALUES (?, ?)",
                [("Ada", "pro"), ("Grace", "team"), ("Linus", "free"), ("Barbara", "pro")],
            )
            db.executemany(
                "INSERT INTO orders (customer_id, cents) VALUES (?, ?)",
                [(1 + n % 4, 500 + 125 * n) for n in range(12)],
            )
    if wal:
        with closing(sqlite3.connect(path)) as db:
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
    return path.resolve()


def row_counts(path: str | None) -> dict[str, int]:
    if not path:
        return {}
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        query = "SELECT name FROM sqlite_master WHERE type = 'table'"
        tables = [str(row[0]) for row in db.execute(query)]
        # table names come from the database itself, quoted as identifiers
        return {
            table: int(db.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])  # noqa: S608
            for table in tables
        }


pitr = config.get_bool("pitr") or False
app_db = seed(Path(config.get("databasePath") or "app.db"), wal=pitr)

project = capy.Project(
    "app",
    name=f"quickstart-{pulumi.get_stack()}",
    database_url=f"sqlite:///{app_db}",
    force_destroy=config.get_bool("forceDestroy") or False,
    pitr=pitr,
)

# a fresh backup of the app database, verified and pinned
before_change = capy.RestorePoint(
    "before-change",
    project_id=project.project_id,
    label=config.get("label") or "before-change",
)

# that state, restored into a new preview database
inspect = capy.Restore(
    "inspect",
    project_id=project.project_id,
    restore_point_id=before_change.restore_point_id,
    preview_name=f"quickstart-{pulumi.get_stack()}-inspect",
    ttl_hours=24,
    triggers=[config.get("restoreTrigger") or "1"],
)

pulumi.export("project_id", project.project_id)
pulumi.export("restore_point_id", before_change.restore_point_id)
pulumi.export("restore_point_state", before_change.state)
pulumi.export("backup_key", before_change.backup_key)
pulumi.export("restore_state", inspect.state)
pulumi.export("preview_path", inspect.preview_database_name)
pulumi.export("app_row_counts", row_counts(str(app_db)))
pulumi.export("preview_row_counts", inspect.preview_database_name.apply(row_counts))
pulumi.export("pitr_window_start", project.pitr_window_start)
pulumi.export("pitr_window_end", project.pitr_window_end)

restore_time = config.get("restoreTime")
if restore_time:
    # the app database as it was at that moment (inside the PITR window), in a new preview;
    # it runs again only when restoreTime changes
    moment = capy.Restore(
        "moment",
        project_id=project.project_id,
        restore_time=restore_time,
        preview_name=f"quickstart-{pulumi.get_stack()}-moment",
        ttl_hours=24,
    )
    pulumi.export("moment_state", moment.state)
    pulumi.export("moment_path", moment.preview_database_name)
    pulumi.export("moment_row_counts", moment.preview_database_name.apply(row_counts))
