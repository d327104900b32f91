"""The store's reads: each thread reads through its own WAL connection; a thread inside a
write transaction reads through that transaction (and sees its own writes)."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pulumi_capy.engine.store import Store


def project_fields(project_id: str, name: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": project_id,
        "organization_id": "org_default",
        "name": name,
        "environment": "production",
        "database_url": "sqlite:////tmp/app.db",
        "database_kind": "sqlite",
        "database_name": "app",
        "state": "active",
        "created_at": now,
        "updated_at": now,
    }


def test_a_read_inside_a_transaction_sees_its_own_writes(tmp_path: Path) -> None:
    with contextlib.closing(Store(tmp_path / "engine.db")) as store:
        with store.transaction() as db:
            store.insert_in(db, "projects", project_fields("prj_1", "shop"))
            inside = store.get_project("prj_1")
        assert inside is not None
        assert inside.name == "shop"


def test_another_thread_reads_the_committed_state_without_waiting_for_the_writer(
    tmp_path: Path,
) -> None:
    with contextlib.closing(Store(tmp_path / "engine.db")) as store:
        store.insert_project(project_fields("prj_1", "shop"))
        seen: list[Any] = []
        with store.transaction() as db:
            store.update_in(db, "projects", "prj_1", {"name": "renamed"})

            def read() -> None:
                project = store.get_project("prj_1")
                seen.append(project.name if project else None)

            reader = threading.Thread(target=read)
            reader.start()
            reader.join(timeout=5)
            # it finished while this transaction was still open, and saw the last commit
            assert not reader.is_alive()
            assert seen == ["shop"]
        after = store.get_project("prj_1")
        assert after is not None
        assert after.name == "renamed"


def test_a_commit_is_seen_by_the_next_read_of_every_thread(tmp_path: Path) -> None:
    with contextlib.closing(Store(tmp_path / "engine.db")) as store:
        names: list[Any] = []

        def read() -> None:
            names.append([project.name for project in store.list_projects()])

        first = threading.Thread(target=read)
        first.start()
        first.join()
        store.insert_project(project_fields("prj_1", "shop"))
        second = threading.Thread(target=read)
        second.start()
        second.join()
        assert names == [[], ["shop"]]


def test_close_closes_every_reading_connection(tmp_path: Path) -> None:
    store = Store(tmp_path / "engine.db")
    store.list_projects()
    thread = threading.Thread(target=store.list_projects)
    thread.start()
    thread.join()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.list_projects()
