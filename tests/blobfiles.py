"""The files behind a local blob store, for tests that damage or remove them."""

from __future__ import annotations

from pulumi_capy.engine import Engine
from pulumi_capy.engine.blobs import BlobStore, LocalBlobStore


def local_blobs(where: Engine | BlobStore) -> LocalBlobStore:
    """The engine's (or this) blob store, which must keep its blobs as local files."""
    blobs = where.rt.blobs if isinstance(where, Engine) else where
    assert isinstance(blobs, LocalBlobStore), f"blobs in {blobs.describe()}, not local files"
    return blobs
