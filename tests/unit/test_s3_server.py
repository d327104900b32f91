"""The S3 server the tests use (scripts/s3-server, versitygw) is a real S3: the calls
capy's blob store needs work against it through boto3, a wrong secret is refused, and
the script refuses to start without credentials."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import boto3
import obstore
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from mypy_boto3_s3 import S3Client
from obstore.store import S3Store

from tests.s3 import SCRIPT, S3Server, free_port, running_s3_server, self_signed_certificate

MIB = 1024 * 1024


def client(server: S3Server, *, secret_key: str | None = None) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key if secret_key is None else secret_key,
        region_name=server.region,
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def s3(s3_server: S3Server) -> S3Client:
    return client(s3_server)


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


def test_put_get_list_delete(s3: S3Client, bucket: str, s3_server: S3Server) -> None:
    s3.put_object(Bucket=bucket, Key="backups/b1.zst", Body=b"first")
    s3.put_object(Bucket=bucket, Key="backups/b2.zst", Body=b"second")
    s3.put_object(Bucket=bucket, Key="other/x", Body=b"x")

    assert s3.get_object(Bucket=bucket, Key="backups/b2.zst")["Body"].read() == b"second"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="backups/")
    assert [item["Key"] for item in listed["Contents"]] == ["backups/b1.zst", "backups/b2.zst"]
    # the POSIX backend keeps an object as a plain file under its bucket's directory
    assert (s3_server.directory / bucket / "backups" / "b1.zst").read_bytes() == b"first"

    s3.delete_object(Bucket=bucket, Key="backups/b1.zst")
    with pytest.raises(ClientError) as missing:
        s3.get_object(Bucket=bucket, Key="backups/b1.zst")
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="backups/")
    assert [item["Key"] for item in listed["Contents"]] == ["backups/b2.zst"]


def test_multipart_upload_and_abort(s3: S3Client, bucket: str) -> None:
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), b"tail"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")
    etags = [
        s3.upload_part(
            Bucket=bucket, Key="big", UploadId=upload["UploadId"], PartNumber=number, Body=data
        )["ETag"]
        for number, data in enumerate(parts, start=1)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=upload["UploadId"],
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
        },
    )
    body = s3.get_object(Bucket=bucket, Key="big")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(b"".join(parts)).digest()

    aborted = s3.create_multipart_upload(Bucket=bucket, Key="abandoned")
    s3.upload_part(
        Bucket=bucket, Key="abandoned", UploadId=aborted["UploadId"], PartNumber=1, Body=b"p"
    )
    s3.abort_multipart_upload(Bucket=bucket, Key="abandoned", UploadId=aborted["UploadId"])
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="abandoned")


def test_ranged_get(s3: S3Client, bucket: str) -> None:
    data = os.urandom(3 * MIB)
    s3.put_object(Bucket=bucket, Key="blob", Body=data)
    start = MIB + 17
    got = s3.get_object(Bucket=bucket, Key="blob", Range=f"bytes={start}-{start + 999}")
    assert got["ContentRange"] == f"bytes {start}-{start + 999}/{len(data)}"
    assert got["Body"].read() == data[start : start + 1000]
    tail = s3.get_object(Bucket=bucket, Key="blob", Range="bytes=-10")["Body"].read()
    assert tail == data[-10:]


def test_each_test_gets_a_fresh_bucket(s3_server: S3Server, s3: S3Client) -> None:
    first, second = s3_server.new_bucket(), s3_server.new_bucket()
    assert first != second
    assert "Contents" not in s3.list_objects_v2(Bucket=second)


def test_env_points_a_process_at_a_bucket_and_prefix(s3_server: S3Server) -> None:
    env = s3_server.env("backups", "team/a/")
    assert env == {
        "CAPY_BLOB_URL": "s3://backups/team/a",
        "AWS_ENDPOINT_URL": s3_server.endpoint_url,
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    assert s3_server.env("backups")["CAPY_BLOB_URL"] == "s3://backups"


def test_obstore_and_boto3_find_the_server_from_env(
    s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env(bucket, "team/a").items():
        monkeypatch.setenv(name, value)
    store = S3Store.from_url(os.environ["CAPY_BLOB_URL"])
    obstore.put(store, "blob", b"from obstore")
    s3 = boto3.client("s3")  # endpoint, credentials and region from the environment
    got = s3.get_object(Bucket=bucket, Key="team/a/blob")["Body"].read()
    assert got == b"from obstore"


def test_a_wrong_secret_is_refused(s3_server: S3Server, bucket: str) -> None:
    assert s3_server.signed_request("GET", f"/{bucket}").status_code == 200
    assert s3_server.signed_request("GET", f"/{bucket}", secret_key="wrong").status_code == 403
    with pytest.raises(ClientError) as refused:
        client(s3_server, secret_key="wrong").list_objects_v2(Bucket=bucket)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_the_secret_is_never_printed(s3_server: S3Server, s3: S3Client, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    printed = s3_server.log.read_text()
    assert "s3-server: serving " in printed
    assert s3_server.access_key in printed
    assert s3_server.secret_key not in printed


@pytest.fixture(scope="module")
def server_with_bucket(s3_server: S3Server) -> Iterator[S3Server]:
    # s3_server first: it skips (or fails in CI) when versitygw is missing
    with running_s3_server(bucket="made-by-script") as server:
        yield server


def test_the_bucket_option_creates_it_through_the_api(server_with_bucket: S3Server) -> None:
    s3 = client(server_with_bucket)
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["made-by-script"]
    assert (server_with_bucket.directory / "made-by-script").is_dir()
    # created through S3, not a mkdir: the owner holds the grant a created bucket has
    grants = s3.get_bucket_acl(Bucket="made-by-script")["Grants"]
    assert [grant["Permission"] for grant in grants] == ["FULL_CONTROL"]
    s3.put_object(Bucket="made-by-script", Key="k", Body=b"v")
    assert s3.get_object(Bucket="made-by-script", Key="k")["Body"].read() == b"v"


@pytest.mark.parametrize("missing", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_the_script_refuses_missing_credentials(
    missing: str, tmp_path: Path, s3_server: S3Server
) -> None:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "capy", "AWS_SECRET_ACCESS_KEY": "s3cr3t-value"}
    del env[missing]
    done = subprocess.run(
        [str(SCRIPT), "--dir", str(tmp_path), "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"{missing} is not set" in done.stderr
    assert "s3cr3t-value" not in done.stdout + done.stderr
    assert "serving" not in done.stdout


def test_https_with_a_certificate(s3_server: S3Server, tmp_path: Path) -> None:
    # s3_server first: it skips (or fails in CI) when versitygw is missing
    cert, key = self_signed_certificate(tmp_path)
    with running_s3_server(bucket="over-tls", tls=(cert, key)) as server:
        assert server.endpoint_url.startswith("https://127.0.0.1:")
        s3 = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name=server.region,
            verify=str(cert),
        )
        s3.put_object(Bucket="over-tls", Key="k", Body=b"sealed in transit")
        assert s3.get_object(Bucket="over-tls", Key="k")["Body"].read() == b"sealed in transit"
        assert server.signed_request("GET", f"/{server.new_bucket()}").status_code == 200
