"""Files at rest (issue 16): what the engine keeps on disk is its owner's alone.

Real engine, real SQLite files: after a backup, a restore into a new preview and a
clone preview, no path under the engine directory (the directory included) has a
group or other bit, whatever the umask of the process.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pulumi_capy.api.models import CreatePreview, CreateProject, RestoreRequest
from pulumi_capy.engine.private import loose_paths
from pulumi_capy.engine.service import Engine
from tests.engine.conftest import make_app_db, sqlite_url, take_backup


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    value: int = request.param
    previous = os.umask(value)
    try:
        yield value
    finally:
        os.umask(previous)


def _everything(root: Path) -> list[tuple[str, str]]:
    return [
        (str(path.relative_to(root.parent)), oct(stat.S_IMODE(path.lstat().st_mode)))
        for path in (root, *sorted(root.rglob("*")))
    ]


def test_engine_directory_backup_restore_and_previews_are_private(
    tmp_path: Path, umask: int
) -> None:
    app_db = make_app_db(tmp_path / "app.db")
    directory = tmp_path / "nested" / ".capy"
    with Engine(directory) as engine:
        project = engine.create_project(
            CreateProject(name="shop", database_url=sqlite_url(app_db))
        ).project
        backup = take_backup(engine, project.id)
        restored = engine.create_restore(
            project.id, RestoreRequest(backup_key=backup.backup_key, preview_name="restored")
        )
        assert engine.wait_for_job(restored.id).state == "completed"
        clone = engine.create_preview_database(project.id, CreatePreview(name="clone")).job
        assert clone is not None
        assert engine.wait_for_job(clone.id).state == "completed"
        engine.run_pending()
        names = {Path(name).name for name, _ in _everything(directory)}
        # the files the test is about exist (and are checked while the store is open)
        assert {
            "engine.db",
            "engine.db-wal",
            "engine.db-shm",
            "secret.key",
            "blobs",
            "previews",
        } <= names
        assert any(name.endswith(".manifest.json") for name in names)
        assert len([name for name in names if name.endswith(".db")]) >= 3  # store, 2 previews
        assert list(loose_paths(directory)) == [], _everything(directory)
    assert list(loose_paths(directory)) == [], _everything(directory)
    for path in (directory, *directory.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
