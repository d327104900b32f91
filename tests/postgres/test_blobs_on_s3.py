"""PostgreSQL backups and restores with their blobs on a real S3-compatible server.

The restore of a table loaded in two halves reads each half from the blob's frames
by ranged GETs at once; the test is the one of ``test_postgres_engine``, run here on
an engine whose ``CAPY_BLOB_URL`` names a bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.objects_s3 import S3ObjectStore
from pulumi_capy.engine.service import Engine
from tests.postgres.test_postgres_engine import (  # noqa: F401 - collected here, on S3
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
