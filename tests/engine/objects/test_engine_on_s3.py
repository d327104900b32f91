"""The engine with its blobs on a real S3-compatible server (``scripts/s3-server``).

Backups stream into the bucket, restores read them back checked, deletion and gc
remove them; the engine directory holds no blob.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from pulumi_capy.api.errors import JobFailed
from pulumi_capy.api.models import CreateProject, RestoreRequest
from pulumi_capy.engine import gc
from pulumi_capy.engine.blob_keys import generate_blob_key
from pulumi_capy.engine.service import Engine
from tests.engine.conftest import (
    change_app_db,
    make_app_db,
    sqlite_url,
    table_contents,
    take_backup,
)


@pytest.fixture
def s3_engine(
    tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    with Engine(tmp_path / ".capy") as engine:
        yield engine


def _names(engine: Engine) -> list[str]:
    return [info.name for info in engine.rt.blobs.objects.list("")]


def test_a_backup_lands_in_the_bucket_and_restores_exactly(
    s3_engine: Engine, tmp_path: Path
) -> None:
    engine = s3_engine
    app = make_app_db(tmp_path / "app.db", rows=3000)
    with sqlite3.connect(app) as db:  # big enough for several multipart parts once compressed
        db.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB)")
        db.executemany(
            "INSERT INTO blobs (data) VALUES (randomblob(100000))", [()] * 150
        )  # ~15 MB of incompressible rows
    project = engine.create_project(CreateProject(name="app", database_url=sqlite_url(app))).project
    at_backup = table_contents(app)
    backup = take_backup(engine, project.id)
    assert backup.verification_state == "verified"
    key = backup.backup_key
    assert key in _names(engine)
    assert f"{key}.manifest.json" in _names(engine)
    assert not (engine.directory / "blobs").exists()
    size = engine.rt.blobs.objects.size(key)
    assert size is not None
    assert size > 10 << 20

    change_app_db(app)
    job = engine.create_restore(project.id, RestoreRequest(backup_key=key))
    done = engine.wait_for_job(job.id)
    assert done.result is not None
    preview = next(p for p in engine.list_preview_databases(project.id) if p.state == "ready")
    assert preview.database_name is not None
    assert table_contents(Path(preview.database_name)) == at_backup

    engine.wait_for_job(engine.delete_preview_database(preview.id).id)
    engine.run_pending()
    engine.delete_backup(project.id, backup.id)
    assert key not in _names(engine)
    assert f"{key}.manifest.json" not in _names(engine)


def test_a_damaged_blob_in_the_bucket_fails_the_restore_and_touches_nothing(
    s3_engine: Engine, tmp_path: Path
) -> None:
    engine = s3_engine
    app = make_app_db(tmp_path / "app.db", rows=500)
    project = engine.create_project(CreateProject(name="app", database_url=sqlite_url(app))).project
    backup = take_backup(engine, project.id)
    objects = engine.rt.blobs.objects
    data = bytearray(objects.get_bytes(backup.backup_key))
    data[len(data) // 2] ^= 0x01
    objects.put_bytes(backup.backup_key, bytes(data))
    change_app_db(app)
    before = app.read_bytes()

    overwrite = RestoreRequest(
        backup_key=backup.backup_key, target_kind="project", confirm_project_overwrite=True
    )
    job = engine.create_restore(project.id, overwrite)
    with pytest.raises(JobFailed, match="checksum mismatch") as raised:
        engine.wait_for_job(job.id)
    assert raised.value.job.attempts == 1  # permanent: not retried
    assert app.read_bytes() == before


def test_gc_finds_objects_no_record_names_in_the_bucket(s3_engine: Engine, tmp_path: Path) -> None:
    engine = s3_engine
    app = make_app_db(tmp_path / "app.db", rows=50)
    project = engine.create_project(CreateProject(name="app", database_url=sqlite_url(app))).project
    backup = take_backup(engine, project.id)
    orphan = f"projects/{project.id}/backups/bk_orphan"
    engine.rt.blobs.commit(engine.rt.blobs.stage(orphan, io.BytesIO(b"lost")), {})

    # the engine's clock is in the past: every object is "young" until min_age is negative
    report = gc.collect_garbage(engine.rt, dry_run=True, min_age=timedelta(days=-3650))
    assert {item.path for item in report.garbage} == {orphan, f"{orphan}.manifest.json"}
    gc.collect_garbage(engine.rt, dry_run=False, min_age=timedelta(days=-3650))
    assert orphan not in _names(engine)
    assert backup.backup_key in _names(engine)


def test_with_a_blob_key_the_bucket_holds_ciphertext_and_no_key_restores_nothing(
    tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CAPY_BLOB_KEY", generate_blob_key())
    app = make_app_db(tmp_path / "app.db", rows=2000)
    with Engine(tmp_path / ".capy") as engine:
        project = engine.create_project(
            CreateProject(name="app", database_url=sqlite_url(app))
        ).project
        at_backup = table_contents(app)
        backup = take_backup(engine, project.id)
        assert backup.verification_state == "verified"
        stored = engine.rt.blobs.objects.get_bytes(backup.backup_key)
        assert stored.startswith(b"CAPYENC1")
        assert b"customer-1" not in stored
        manifest = engine.rt.blobs.objects.get_bytes(f"{backup.backup_key}.manifest.json")
        assert manifest.startswith(b"CAPYENC1")
        job = engine.wait_for_job(
            engine.create_restore(project.id, RestoreRequest(backup_key=backup.backup_key)).id
        )
        assert job.result is not None
        preview = next(p for p in engine.list_preview_databases(project.id) if p.state == "ready")
        assert preview.database_name is not None
        assert table_contents(Path(preview.database_name)) == at_backup

    change_app_db(app)
    before = app.read_bytes()
    monkeypatch.delenv("CAPY_BLOB_KEY")  # a worker without the key
    with Engine(tmp_path / ".capy") as engine:
        overwrite = RestoreRequest(
            backup_key=backup.backup_key, target_kind="project", confirm_project_overwrite=True
        )
        failing = engine.create_restore(project.id, overwrite)
        with pytest.raises(JobFailed, match="CAPY_BLOB_KEY") as raised:
            engine.wait_for_job(failing.id)
        assert raised.value.job.attempts == 1  # permanent: not retried
    assert app.read_bytes() == before
