"""A real S3-compatible server for the tests: ``scripts/s3-server`` (versitygw on its
POSIX backend) on a free loopback port, a temp directory and random root credentials,
stopped at the end of the session. No Docker, no mock.

``scripts/install-s3-server`` builds versitygw into ``.tools/bin`` (``scripts/test``
runs it). Buckets are made through the S3 API with a minimal SigV4 signer over httpx,
so this module needs no S3 client library.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import itertools
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "s3-server"
TOOLS_BIN = REPO / ".tools" / "bin"
REGION = "us-east-1"
START_TIMEOUT = 30.0
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def find_versitygw() -> Path | None:
    """The server binary ``scripts/s3-server`` runs: ``.tools/bin`` first, then PATH."""
    local = TOOLS_BIN / "versitygw"
    if local.exists():
        return local
    found = shutil.which("versitygw")
    return Path(found) if found else None


@dataclass
class S3Server:
    """A running server: where it listens and the root credentials it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    directory: Path  # the POSIX backend's root: one directory per bucket
    log: Path  # what scripts/s3-server and versitygw printed
    ca_file: Path | None = None  # the certificate to trust when it serves https
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def new_bucket(self) -> str:
        """Creates a bucket no other test uses and returns its name."""
        name = f"test-{next(self._names)}-{secrets.token_hex(4)}"
        response = self.signed_request("PUT", f"/{name}")
        if response.status_code != 200:
            raise RuntimeError(f"create bucket {name}: HTTP {response.status_code} {response.text}")
        return name

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The environment a capy process reads to keep its blobs in ``bucket/prefix``.
        ``AWS_ALLOW_HTTP``: obstore (Rust's object_store) refuses a plain-http endpoint
        without it; boto3 ignores it."""
        url = f"s3://{bucket}/{prefix.strip('/')}" if prefix.strip("/") else f"s3://{bucket}"
        return {
            "CAPY_BLOB_URL": url,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
            "AWS_ALLOW_HTTP": "true",
        }

    def signed_request(
        self, method: str, path: str, *, secret_key: str | None = None
    ) -> httpx.Response:
        """An S3 request without a body, signed with SigV4 (``secret_key`` overrides
        the server's, to be refused)."""
        return httpx.request(
            method,
            self.endpoint_url + path,
            headers=sign_v4(
                method,
                self.endpoint_url,
                path,
                access_key=self.access_key,
                secret_key=self.secret_key if secret_key is None else secret_key,
                region=self.region,
            ),
            timeout=10.0,
            verify=ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True,
        )


def sign_v4(
    method: str, endpoint_url: str, path: str, *, access_key: str, secret_key: str, region: str
) -> dict[str, str]:
    """The headers of a SigV4-signed S3 request with an empty body and no query string."""
    now = datetime.datetime.now(datetime.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    host = httpx.URL(endpoint_url).netloc.decode()
    headers = {"host": host, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            quote(path, safe="/~"),
            "",
            *(f"{name}:{headers[name]}" for name in sorted(headers)),
            "",
            signed,
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret_key}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={signed}, Signature={signature}"
    )
    del headers["host"]  # httpx sends the same one
    return headers


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by ``openssl`` in ``directory``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        command,
        check=True,
        capture_output=True,
    )
    return cert, key


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)  # the script and versitygw, its child
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def running_s3_server(
    *, bucket: str | None = None, tls: tuple[Path, Path] | None = None
) -> Iterator[S3Server]:
    """``scripts/s3-server`` in a temp directory until the block ends (``bucket``: its
    ``--bucket``; ``tls``: a certificate and key, to serve https). Raises
    ``RuntimeError`` with the server's output when it does not come up within
    ``START_TIMEOUT`` seconds."""
    base = Path(tempfile.mkdtemp(prefix="capy-s3-"))
    scheme = "https" if tls else "http"
    server = S3Server(
        endpoint_url=f"{scheme}://127.0.0.1:{free_port()}",
        access_key=f"capy{secrets.token_hex(6)}",
        secret_key=secrets.token_urlsafe(30),
        region=REGION,
        directory=base / "data",
        log=base / "server.log",
        ca_file=tls[0] if tls else None,
    )
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_REGION": server.region,
    }
    command = [str(SCRIPT), "--dir", str(server.directory)]
    command += ["--port", server.endpoint_url.rsplit(":", 1)[1]]
    if bucket is not None:
        command += ["--bucket", bucket]
    if tls is not None:
        command += ["--cert", str(tls[0]), "--key", str(tls[1])]
    with server.log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_until_serving(process, server.log, bucket=bucket)
        yield server
    finally:
        _stop(process)
        shutil.rmtree(base, ignore_errors=True)


def _wait_until_serving(process: subprocess.Popen[bytes], log: Path, *, bucket: str | None) -> None:
    # the script says "serving" once versitygw answers and the bucket exists
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"scripts/s3-server exited {process.returncode}:\n{log.read_text()}")
        if "s3-server: serving " in log.read_text():
            return
        time.sleep(0.05)
    raise RuntimeError(
        f"scripts/s3-server did not serve within {START_TIMEOUT} s"
        f"{f' (bucket {bucket})' if bucket else ''}:\n{log.read_text()}"
    )
