"""PostgreSQL backups and restores with their blobs on a real S3-compatible server.

The restore of a table loaded in two halves reads each half from the blob's frames
at once; the test is the one of ``test_postgres_engine``, run here on an engine whose
``CAPY_BLOB_URL`` names a bucket. From a bucket, the blob is downloaded once, checked
as it comes, and the halves read from that copy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from pulumi_capy.api.models import Project
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.objects_s3 import S3ObjectStore
from pulumi_capy.engine.service import Engine
from tests.postgres.conftest import PgNamespace, checksums
from tests.postgres.test_postgres_engine import (  # noqa: F401 - collected here, on S3
    _backup,
    _new_preview,
    halved,
    test_the_largest_table_loads_in_two_halves_and_every_restore_is_whole,
)


@pytest.fixture
def engine(
    engine_dir: Path, clock: ManualClock, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Engine]:
    for name, value in s3_env.items():
        monkeypatch.setenv(name, value)
    with Engine(engine_dir, clock=clock) as instance:
        assert isinstance(instance.rt.blobs.objects, S3ObjectStore)
        yield instance
    assert not (engine_dir / "blobs").exists()


class _Counted:
    """A stream from the bucket, counting the bytes read from it."""

    def __init__(self, stream: BinaryIO, counts: list[int]) -> None:
        self.stream = stream
        self.counts = counts

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.counts.append(len(data))
        return data

    def close(self) -> None:
        self.stream.close()

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.mark.usefixtures("halved")
def test_a_restore_in_halves_reads_the_blob_from_the_bucket_once(
    engine: Engine,
    project: Project,
    pg: PgNamespace,
    source_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked whole before any of it is used, then read by ranges: from a bucket that
    was two downloads of the blob; the check's download is now kept (in the restore's
    scratch directory) and the ranges read from it."""
    backup, _, _ = _backup(engine, project.id)
    stored = engine.rt.blobs.objects.size(backup.backup_key)
    assert stored
    read: list[int] = []
    opened = S3ObjectStore.open

    def counting(self: S3ObjectStore, name: str, start: int = 0, end: int | None = None) -> Any:
        stream = opened(self, name, start, end)
        return _Counted(stream, read) if name == backup.backup_key else stream

    monkeypatch.setattr(S3ObjectStore, "open", counting)
    _, preview = _new_preview(engine, project.id, backup.backup_key)
    assert preview.database_name
    assert checksums(pg.server.url(preview.database_name)) == checksums(source_url)
    assert sum(read) == stored  # once (it was 2x, and more: frames overlap the ranges)
    assert not list(engine.rt.scratch_dir.rglob("*.blob"))  # the copy went with the restore
