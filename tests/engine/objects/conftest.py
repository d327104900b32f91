"""A harness per object store: the object and blob contract suites run on each unchanged.

Add a backend by adding its fixture name to ``BACKENDS``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pulumi_capy.engine.blobs import BlobStore
from pulumi_capy.engine.objects import LocalObjectStore, ObjectStore

BACKENDS = ["local"]


@pytest.fixture
def local_objects(tmp_path: Path) -> ObjectStore:
    return LocalObjectStore(tmp_path / "blobs")


@pytest.fixture(params=BACKENDS)
def objects(request: pytest.FixtureRequest) -> ObjectStore:
    store: ObjectStore = request.getfixturevalue(f"{request.param}_objects")
    return store


@pytest.fixture
def blobs(objects: ObjectStore) -> BlobStore:
    return BlobStore(objects)
