"""CAPY_BLOB_URL picks the blob store; a wrong one is refused naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from pulumi_capy.api.errors import ConfigError
from pulumi_capy.engine.blobs import LocalBlobStore, open_blob_store
from pulumi_capy.engine.objects_s3 import S3ObjectStore


def test_unset_keeps_blobs_in_the_engine_directory(tmp_path: Path) -> None:
    blobs = open_blob_store(tmp_path, {})
    assert isinstance(blobs, LocalBlobStore)
    assert blobs.root == tmp_path / "blobs"


def test_an_s3_url_names_the_bucket_and_prefix(tmp_path: Path) -> None:
    environ = {
        "CAPY_BLOB_URL": "s3://backups/team-a/capy/",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
    }
    blobs = open_blob_store(tmp_path, environ)
    assert isinstance(blobs.objects, S3ObjectStore)
    assert blobs.describe() == "s3://backups/team-a/capy/"
    assert blobs.objects.key("projects/p/backups/b") == "team-a/capy/projects/p/backups/b"
    assert "s3cr3t" not in repr(blobs.objects)
    assert not (tmp_path / "blobs").exists()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("file:///srv/blobs", "'file' URL"),
        ("gs://bucket", "'gs' URL"),
        ("s3://", "s3://bucket/prefix"),
        ("s3://bucket/a/../b", "invalid backup key"),
        ("s3://key:s3cr3t-value@bucket/p", "credentials come from AWS_ACCESS_KEY_ID"),
    ],
)
def test_a_wrong_url_is_refused_naming_the_variable(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(Exception, match=r"CAPY_BLOB_URL|invalid backup key") as raised:
        open_blob_store(tmp_path, {"CAPY_BLOB_URL": url})
    assert says in str(raised.value)
    assert "s3cr3t" not in str(raised.value)


def test_an_unreachable_endpoint_is_a_transient_failure_naming_the_object(
    tmp_path: Path,
) -> None:
    environ = {
        "CAPY_BLOB_URL": "s3://backups/p",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # discard: nothing listens
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t-value",
    }
    blobs = open_blob_store(tmp_path, environ)
    with pytest.raises(Exception, match=r"cannot write projects/p/x\.manifest\.json") as raised:
        blobs.objects.put_bytes("projects/p/x.manifest.json", b"{}")
    assert getattr(raised.value, "permanent", True) is False
    assert "s3cr3t" not in str(raised.value)
    assert "AWS_ENDPOINT_URL" in str(raised.value)


def test_config_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        open_blob_store(tmp_path, {"CAPY_BLOB_URL": "ftp://x"})
