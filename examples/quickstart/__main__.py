"""Quickstart: protect a SQLite app database, pin a restore point, restore it into a preview.

Runs with no account and nothing installed beyond this package: the restore
engine is embedded (its files live in `.capy/` beside this program). After
`pulumi up`, open the preview to see the restored data:

    sqlite3 "$(pulumi stack output preview_path)" 'select * from customers'
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pulumi

import pulumi_capy as capy

config = pulumi.Config()


def seed(path: Path) -> Path:
    """The app database this stack protects; made with sample data on the first run."""
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


app_db = seed(Path(config.get("databasePath") or "app.db"))

project = capy.Project(
    "app",
    name=f"quickstart-{pulumi.get_stack()}",
    database_url=f"sqlite:///{app_db}",
    force_destroy=config.get_bool("forceDestroy") or False,
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
