"""The object-store contract (``objects``) on S3-compatible storage, with boto3.

Selected by ``CAPY_BLOB_URL=s3://bucket/prefix``; the endpoint and the credentials
come from the usual AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``; or anything else botocore reads: a
profile, an instance role). Objects are named ``<prefix>/<name>``.

- An upload is a multipart upload: the writer's bytes are cut into parts
  (``part_size``) sent by a small pool of threads while the writer goes on
  (compression overlaps the network; at most ``in_flight`` parts are held in
  memory), and nothing is visible until ``CompleteMultipartUpload``. An abort (a
  failed producer, a failed part) calls ``AbortMultipartUpload``. An upload smaller
  than one part is one ``PutObject`` at commit.
- A read is a ``GetObject`` of the range asked for, resumed from where it stopped
  (a new ranged GET) when the connection breaks mid-stream, up to ``READ_RETRIES``
  times; botocore retries each request itself (standard mode).
- Errors name the bucket and the object, never a credential; an unreachable
  endpoint or a 5xx is transient (the job is retried), a refusal (403, a missing
  bucket) is permanent.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, cast
from urllib.parse import urlsplit

from pulumi_capy.api.errors import CapyError, ConfigError, EngineFailure
from pulumi_capy.engine.objects import ObjectInfo, ObjectMissing, ObjectUpload, check_name

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["ObjectStoreFailure", "S3ObjectStore", "parse_s3_url"]

MIB = 1 << 20
PART_SIZE = 16 * MIB  # S3 allows 10 000 parts: 160 GB per blob at this size
IN_FLIGHT = 3  # parts held in memory (being sent or waiting) per upload
READ_RETRIES = 3
READ_SIZE = MIB


class ObjectStoreFailure(EngineFailure):
    """The object store refused or could not be reached; ``permanent`` per instance."""

    def __init__(self, message: str, *, permanent: bool, code: str = "") -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code  # S3's error code, when the server gave one


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes at either end)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(
            f"CAPY_BLOB_URL must look like s3://bucket/prefix, not {url.split('?')[0]!r}"
        )
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(
            "CAPY_BLOB_URL takes a bucket and a prefix only (s3://bucket/prefix); credentials "
            "come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        )
    prefix = parts.path.strip("/")
    if prefix:
        check_name(prefix)
    return parts.netloc, prefix


def _client(environ: Mapping[str, str]) -> S3Client:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ConfigError(
            "CAPY_BLOB_URL=s3://... needs boto3, which this install lacks: "
            "pip install 'pulumi-capy[s3]'"
        ) from None

    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or None
    config = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=16,
        # our SHA-256 covers every byte, checked on every read
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # a self-hosted endpoint (an IP, a name without wildcard DNS) takes path-style
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    session = boto3.session.Session(
        aws_access_key_id=environ.get("AWS_ACCESS_KEY_ID") or None,
        aws_secret_access_key=environ.get("AWS_SECRET_ACCESS_KEY") or None,
        aws_session_token=environ.get("AWS_SESSION_TOKEN") or None,
        region_name=environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )
    return session.client("s3", endpoint_url=endpoint, config=config)


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = error.get("Code") or ""
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return str(code or status or "")
    return ""


class _Upload:
    def __init__(self, store: S3ObjectStore, name: str) -> None:
        self.store = store
        self.name = name
        self.key = store.key(name)
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[Future[dict[str, Any]]] = []
        self.slots = threading.BoundedSemaphore(store.in_flight)
        self.done = False

    def write(self, data: bytes) -> int:
        if self.done:
            raise CapyError(f"object {self.name}: written after commit or abort")
        self.buffer += data
        size = self.store.part_size
        while len(self.buffer) >= size:
            self._send(bytes(self.buffer[:size]))
            del self.buffer[:size]
        return len(data)

    def _send(self, chunk: bytes) -> None:
        store = self.store
        if self.upload_id is None:
            created = store.call(
                "start an upload of", self.name, store.client.create_multipart_upload,
                Bucket=store.bucket, Key=self.key,
            )  # fmt: skip
            self.upload_id = created["UploadId"]
        self._raise_failed_part()
        number = len(self.parts) + 1
        self.slots.acquire()
        try:
            future = store.pool.submit(self._part, number, chunk)
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(lambda _: self.slots.release())
        self.parts.append(future)

    def _part(self, number: int, chunk: bytes) -> dict[str, Any]:
        store = self.store
        assert self.upload_id is not None
        sent = store.call(
            f"send part {number} of", self.name, store.client.upload_part,
            Bucket=store.bucket, Key=self.key, UploadId=self.upload_id,
            PartNumber=number, Body=chunk,
        )  # fmt: skip
        return {"PartNumber": number, "ETag": sent["ETag"]}

    def _raise_failed_part(self) -> None:
        for future in self.parts:
            if future.done() and future.exception() is not None:
                future.result()

    def commit(self) -> None:
        if self.done:
            raise CapyError(f"object {self.name}: committed after commit or abort")
        store = self.store
        try:
            if self.upload_id is None:  # smaller than a part: one PUT
                store.call(
                    "write", self.name, store.client.put_object,
                    Bucket=store.bucket, Key=self.key, Body=bytes(self.buffer),
                )  # fmt: skip
            else:
                if self.buffer:
                    self._send(bytes(self.buffer))
                parts = [future.result() for future in self.parts]
                store.call(
                    "complete the upload of", self.name, store.client.complete_multipart_upload,
                    Bucket=store.bucket, Key=self.key, UploadId=self.upload_id,
                    MultipartUpload={"Parts": parts},
                )  # fmt: skip
        except BaseException:
            self.abort()
            raise
        self.done = True
        self.buffer = bytearray()

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        self.buffer = bytearray()
        for future in self.parts:
            future.cancel()
        for future in self.parts:
            if not future.cancelled():
                with contextlib.suppress(Exception):  # the upload is dropped anyway
                    future.result()
        if self.upload_id is not None:
            store = self.store
            try:
                store.call(
                    "abort the upload of", self.name, store.client.abort_multipart_upload,
                    Bucket=store.bucket, Key=self.key, UploadId=self.upload_id,
                )  # fmt: skip
            except ObjectStoreFailure as exc:
                if exc.code != "NoSuchUpload":  # gone already (gc dropped it): nothing to do
                    raise


class _Reader:
    """Bytes ``start`` to ``end`` of an object, resumed by a new ranged GET after a break."""

    def __init__(self, store: S3ObjectStore, name: str, start: int, end: int | None) -> None:
        self.store = store
        self.name = name
        self.position = start
        self.end = end
        self.retries = READ_RETRIES
        self.body: Any = None
        self._open()

    def _open(self) -> None:
        last = "" if self.end is None else str(self.end - 1)
        try:
            response = self.store.call(
                "read", self.name, self.store.client.get_object,
                Bucket=self.store.bucket, Key=self.store.key(self.name),
                Range=f"bytes={self.position}-{last}",
            )  # fmt: skip
        except ObjectStoreFailure as exc:
            if exc.code != "InvalidRange":
                raise
            self.body = io.BytesIO(b"")  # from the object's end on: nothing
            return
        self.body = response["Body"]

    def read(self, size: int = -1) -> bytes:
        if self.end is not None and self.position >= self.end:
            return b""
        while True:
            try:
                data: bytes = self.body.read(None if size < 0 else size)
            except Exception as exc:
                from botocore.exceptions import (
                    IncompleteReadError,
                    ReadTimeoutError,
                    ResponseStreamingError,
                )

                resumable = (IncompleteReadError, ReadTimeoutError, ResponseStreamingError)
                if not isinstance(exc, resumable) or self.retries == 0:
                    raise ObjectStoreFailure(
                        f"reading {self.name} from {self.store.describe()} broke off at byte "
                        f"{self.position}: {type(exc).__name__}",
                        permanent=False,
                    ) from exc
                self.retries -= 1
                self.close()
                self._open()
                continue
            self.position += len(data)
            return data

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class S3ObjectStore:
    """Objects in ``bucket`` under ``prefix``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        environ: Mapping[str, str] | None = None,
        part_size: int = PART_SIZE,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        import os

        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.client = _client(os.environ if environ is None else environ)
        self.part_size = part_size
        self.in_flight = in_flight
        self.pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="capy-s3")

    @classmethod
    def from_url(cls, url: str, environ: Mapping[str, str] | None = None) -> S3ObjectStore:
        bucket, prefix = parse_s3_url(url)
        return cls(bucket, prefix, environ=environ)

    def __repr__(self) -> str:
        return f"S3ObjectStore({self.describe()!r})"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key(self, name: str) -> str:
        return self.prefix + check_name(name)

    def call(self, doing: str, name: str, method: Any, **kwargs: Any) -> Any:
        """``method(**kwargs)``, its failure said as what was being done to which object."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return method(**kwargs)
        except NoCredentialsError:
            raise ObjectStoreFailure(
                f"cannot {doing} {name} in {self.describe()}: no credentials; set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                permanent=True,
            ) from None
        except ClientError as exc:
            self._client_error(doing, name, exc)
        except BotoCoreError as exc:  # connection refused, DNS, timeouts after retries
            raise ObjectStoreFailure(
                f"cannot {doing} {name} in {self.describe()}: {type(exc).__name__} "
                "(is AWS_ENDPOINT_URL right, and the server up?)",
                permanent=False,
            ) from None

    def _client_error(self, doing: str, name: str, exc: Exception) -> NoReturn:
        code = _code(exc)
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ObjectMissing(f"{name} is missing from {self.describe()}") from None
        transient = code in ("500", "502", "503", "504", "SlowDown", "InternalError")
        hint = {
            "NoSuchBucket": f" (bucket {self.bucket} does not exist)",
            "AccessDenied": " (check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the policy)",
            "InvalidAccessKeyId": " (AWS_ACCESS_KEY_ID is not known to the server)",
            "SignatureDoesNotMatch": " (AWS_SECRET_ACCESS_KEY does not match the key id)",
        }.get(code, "")
        raise ObjectStoreFailure(
            f"cannot {doing} {name} in {self.describe()}: {code or 'refused'}{hint}",
            permanent=not transient,
            code=code,
        ) from None

    def begin(self, name: str) -> ObjectUpload:
        return _Upload(self, check_name(name))

    def put_bytes(self, name: str, data: bytes) -> None:
        self.call(
            "write", name, self.client.put_object,
            Bucket=self.bucket, Key=self.key(name), Body=data,
        )  # fmt: skip

    def get_bytes(self, name: str) -> bytes:
        response = self.call(
            "read", name, self.client.get_object, Bucket=self.bucket, Key=self.key(name)
        )
        body = response["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def open(self, name: str, start: int = 0, end: int | None = None) -> BinaryIO:
        check_name(name)
        if end is not None and end <= start:  # an empty range: S3 serves none
            if self.size(name) is None:
                raise ObjectMissing(f"{name} is missing from {self.describe()}")
            return cast(BinaryIO, io.BytesIO(b""))
        return cast(BinaryIO, _Reader(self, name, start, end))

    def size(self, name: str) -> int | None:
        try:
            head = self.call(
                "look up", name, self.client.head_object, Bucket=self.bucket, Key=self.key(name)
            )
        except ObjectMissing:
            return None
        return int(head["ContentLength"])

    def delete(self, name: str) -> None:
        self.call("delete", name, self.client.delete_object, Bucket=self.bucket, Key=self.key(name))

    def unfinished(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_multipart_uploads")
        pages = self.call(
            "list the uploads of", prefix or "everything", lambda: list(
                paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            ),
        )  # fmt: skip
        found = [
            ObjectInfo(
                item["Key"][len(self.prefix) :], 0, item["Initiated"].timestamp(), item["UploadId"]
            )
            for page in pages
            for item in page.get("Uploads", [])
        ]
        yield from sorted(found, key=lambda info: (info.name, info.modified))

    def drop_unfinished(self, info: ObjectInfo) -> None:
        try:
            self.call(
                "abort the upload of", info.name, self.client.abort_multipart_upload,
                Bucket=self.bucket, Key=self.key(info.name), UploadId=info.upload,
            )  # fmt: skip
        except ObjectStoreFailure as exc:
            if exc.code != "NoSuchUpload":
                raise

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self.call(
            "list", prefix or "everything", lambda: list(
                paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
            ),
        )  # fmt: skip
        for page in pages:
            for item in page.get("Contents", []):
                yield ObjectInfo(
                    item["Key"][len(self.prefix) :],
                    int(item["Size"]),
                    item["LastModified"].timestamp(),
                )
