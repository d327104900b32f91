"""A harness per object store: the object and blob contract suites run on each unchanged.

Add a backend by adding its fixture name to ``BACKENDS``.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from pulumi_capy.engine.blob_keys import BlobKey, BlobKeyRing
from pulumi_capy.engine.blobs import BlobStore
from pulumi_capy.engine.objects import LocalObjectStore, ObjectStore
from pulumi_capy.engine.objects_s3 import S3ObjectStore
from tests.s3 import S3Server

BACKENDS = ["local", "s3"]


@pytest.fixture
def local_objects(tmp_path: Path) -> ObjectStore:
    return LocalObjectStore(tmp_path / "blobs")


@pytest.fixture
def s3_objects(s3_server: S3Server) -> ObjectStore:
    """A fresh bucket of the session's S3 server, objects under ``capy/``; parts of 5 MiB
    (S3's least) so that a few MiB make a multipart upload."""
    bucket = s3_server.new_bucket()
    return S3ObjectStore(bucket, "capy", environ=s3_server.env(bucket), part_size=5 << 20)


@pytest.fixture(params=BACKENDS)
def objects(request: pytest.FixtureRequest) -> ObjectStore:
    store: ObjectStore = request.getfixturevalue(f"{request.param}_objects")
    return store


@pytest.fixture(params=["plain", "encrypted"])
def blobs(request: pytest.FixtureRequest, objects: ObjectStore) -> BlobStore:
    """A blob store over each backend, in the clear and with a blob key."""
    if request.param == "plain":
        return BlobStore(objects)
    return BlobStore(objects, keys=BlobKeyRing([BlobKey(secrets.token_bytes(32))]))
