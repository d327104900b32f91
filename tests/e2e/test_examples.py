"""The other examples under the real `pulumi`."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import httpx

from tests.e2e.conftest import REPO, Stack


def _columns(stack: Stack) -> list[str]:
    with closing(sqlite3.connect(stack.directory / "app.db")) as db:
        return [str(row[1]) for row in db.execute("PRAGMA table_info(customers)")]


def test_pre_migration_pins_a_restore_point_before_each_migration_and_rolls_back(
    pre_migration: Stack,
) -> None:
    pre_migration.up()
    first = pre_migration.outputs()
    assert "applied migrations/002_add_email.sql" in first["migration_output"]
    assert "email" in _columns(pre_migration)

    # a changed migration: a new restore point first, then the migration again
    migration = pre_migration.directory / "migrations" / "002_add_email.sql"
    migration.write_text(
        migration.read_text() + "\nCREATE TABLE audit (id INTEGER PRIMARY KEY, note TEXT);\n"
    )
    # the earlier migration already added the column: start this one from a clean database
    with closing(sqlite3.connect(pre_migration.directory / "app.db")) as db, db:
        db.execute("ALTER TABLE customers DROP COLUMN email")
    pre_migration.up()
    second = pre_migration.outputs()
    assert second["restore_point_id"] != first["restore_point_id"]
    assert second["restore_point_label"] != first["restore_point_label"]

    # the one-line rollback: the database as it was before the migration
    pre_migration.config("rollback", "true")
    pre_migration.up()
    assert "email" not in _columns(pre_migration)
    with closing(sqlite3.connect(pre_migration.directory / "app.db")) as db:
        tables = {str(row[0]) for row in db.execute("SELECT name FROM sqlite_master")}
    assert "audit" not in tables
    pre_migration.preview("--expect-no-changes")


def test_hosted_example_against_a_self_hosted_capy_serve(hosted: Stack, tmp_path: Path) -> None:
    """The hosted program, unchanged, against `capy serve` over real HTTP on loopback."""
    capy = [str(REPO / ".venv" / "bin" / "capy")]
    engine_dir = tmp_path / "server-engine"
    app_db = tmp_path / "app.db"
    with closing(sqlite3.connect(app_db)) as db, db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO customers (name) VALUES (?)", [("Ada",), ("Grace",)])
    offline = {k: v for k, v in os.environ.items() if not k.startswith(("CAPY_", "CAPYDB_"))}
    key = subprocess.run(
        [
            *capy,
            "--engine-dir",
            str(engine_dir),
            "keys",
            "create",
            "--name",
            "e2e",
            "--scopes",
            "all",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=offline,
    ).stdout.strip()
    project = json.loads(
        subprocess.run(
            [
                *capy,
                "--engine-dir",
                str(engine_dir),
                "--json",
                "projects",
                "create",
                "--name",
                "shop",
                "--database-url",
                f"sqlite:///{app_db}",
            ],
            capture_output=True,
            text=True,
            check=True,
            env=offline,
        ).stdout
    )
    project_id = project.get("id") or project["project"]["id"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [*capy, "--engine-dir", str(engine_dir), "serve", "--port", str(port), "--workers", "1"],
        stdout=log,
        stderr=log,
        env=offline,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/openapi.json").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "capy serve did not start"
            time.sleep(0.1)
        hosted.env["CAPYDB_API_URL"] = f"http://127.0.0.1:{port}"
        hosted.config("capy:apiKey", key, secret=True)
        hosted.config("projectId", project_id)
        hosted.up()
        outputs = hosted.outputs()
        assert outputs["restore_state"] == "completed"
        assert outputs["preview_database_url"].startswith("sqlite:///")
        assert key not in hosted.export()
        hosted.run("destroy", "--yes")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert server.returncode == 0, (tmp_path / "serve.log").read_text()
