"""Benchmark: boto3 against obstore as capy's S3 client, on a real S3 server.

Starts versitygw like the tests do (``tests/s3.py``: ``scripts/s3-server`` on a temp
directory; ``scripts/install-s3-server`` builds it), writes an incompressible file
(``os.urandom``) and then, for each client, times:

- upload: a streamed multipart upload from a generator of parts (what a zstd writer
  hands over: no temp file, no known length): boto3 ``upload_fileobj`` over a
  file-like adapter (s3transfer's threads), obstore ``put`` of the iterator, and
  obstore's file-like ``open_writer`` written part by part (``obstore-writer``);
- download: one streamed GET of the whole object, consumed chunk by chunk;
- ranged GETs: ``--ranges`` reads of ``--range-mib`` at random offsets, one at a time
  (the first four are checked against the source, outside the timing);
- abort: an upload whose generator fails after three parts must leave no multipart
  upload behind on the server (counted with ListMultipartUploads).

The floor is ``cp`` of the same file on the same disk (the server's directory). Every
figure is MB/s (10^6 bytes) with its ratio to ``cp``, and the CPU time (user + system,
all threads) this Python process spent per GB moved: on a 2-core machine the CPU the
client burns is taken from the compressor and the database (the server's, versitygw's
CPU per GB, is printed beside it: the same server work for every client). Each step starts after
``os.sync()``; the uploaded object is compared with the source on the server's disk.

Run: ``.venv/bin/python bench/s3_clients.py [--size-mib 512] [--part-mib 8]``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3
import obstore
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from mypy_boto3_s3 import S3Client
from obstore.store import S3Store

from tests.s3 import S3Server, running_s3_server, self_signed_certificate

MIB = 1024 * 1024


@dataclass(frozen=True)
class Measure:
    seconds: float
    cpu_seconds: float  # this process's
    server_cpu_seconds: float  # versitygw's
    size: int

    @property
    def mb_per_second(self) -> float:
        return self.size / 1e6 / self.seconds

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu_seconds / (self.size / 1e9)

    @property
    def server_cpu_per_gb(self) -> float:
        return self.server_cpu_seconds / (self.size / 1e9)


def server_pid(server: S3Server) -> int:
    """The versitygw process serving ``server`` (scripts/s3-server's child)."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"versitygw") and str(server.directory).encode() in argv:
            return int(entry.name)
    raise SystemExit(f"no versitygw process serving {server.directory}")


def process_cpu_seconds(pid: int) -> float:
    # utime and stime, fields 14 and 15 of /proc/PID/stat, after the ")" ending the name
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(size: int, step: Callable[[], object], server: int | None = None) -> Measure:
    os.sync()
    before = resource.getrusage(resource.RUSAGE_SELF)
    server_before = process_cpu_seconds(server) if server else 0.0
    start = time.perf_counter()
    step()
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    server_cpu = process_cpu_seconds(server) - server_before if server else 0.0
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measure(seconds, cpu, server_cpu, size)


def parts(
    source: Path,
    part_size: int,
    *,
    fail_after: int | None = None,
    before_failing: Callable[[], None] | None = None,
) -> Iterator[bytes]:
    """The file as a stream of parts, as a compressor would produce them; with
    ``fail_after``, the producer raises after that many parts."""
    with source.open("rb") as file:
        sent = 0
        while chunk := file.read(part_size):
            if fail_after is not None and sent == fail_after:
                if before_failing is not None:
                    before_failing()
                raise RuntimeError("the producer failed mid-upload")
            yield chunk
            sent += 1


class IteratorReader(io.RawIOBase):
    """A read-only, non-seekable file over an iterator of bytes (what boto3 needs)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


class Boto3:
    name = "boto3"

    def __init__(self, server: S3Server, bucket: str, concurrency: int, part_size: int) -> None:
        self.bucket = bucket
        self.client: S3Client = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name=server.region,
            config=Config(max_pool_connections=concurrency + 2),
            verify=str(server.ca_file) if server.ca_file else None,
        )
        self.transfer = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=concurrency,
        )

    def upload(self, key: str, chunks: Iterator[bytes]) -> None:
        stream = io.BufferedReader(IteratorReader(chunks), buffer_size=MIB)
        self.client.upload_fileobj(stream, self.bucket, key, Config=self.transfer)

    def download(self, key: str) -> int:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return sum(len(chunk) for chunk in body.iter_chunks(chunk_size=MIB))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        rng = f"bytes={start}-{start + length - 1}"
        return self.client.get_object(Bucket=self.bucket, Key=key, Range=rng)["Body"].read()


class Obstore:
    name = "obstore"
    unsigned_payload = False  # obstore hashes every body for SigV4 unless told not to

    def __init__(self, server: S3Server, bucket: str, concurrency: int, part_size: int) -> None:
        # obstore takes no CA file: over https to the self-signed server it trusts any
        self.store = S3Store(
            bucket,
            endpoint=server.endpoint_url,
            access_key_id=server.access_key,
            secret_access_key=server.secret_key,
            region=server.region,
            unsigned_payload=self.unsigned_payload,
            client_options={"allow_http": True, "allow_invalid_certificates": True},
        )
        self.bucket = bucket
        self.concurrency = concurrency
        self.part_size = part_size

    def upload(self, key: str, chunks: Iterator[bytes]) -> None:
        obstore.put(
            self.store,
            key,
            chunks,
            chunk_size=self.part_size,
            max_concurrency=self.concurrency,
        )

    def download(self, key: str) -> int:
        stream = obstore.get(self.store, key).stream(min_chunk_size=MIB)
        return sum(len(memoryview(chunk)) for chunk in stream)

    def get_range(self, key: str, start: int, length: int) -> memoryview:
        # obstore's Bytes is a buffer: a memoryview reads it without a copy
        return memoryview(obstore.get_range(self.store, key, start=start, length=length))


class ObstoreWriter(Obstore):
    """obstore's file-like writer: what a compressor writing into a file would use."""

    name = "obstore-writer"

    def upload(self, key: str, chunks: Iterator[bytes]) -> None:
        with obstore.open_writer(
            self.store, key, buffer_size=self.part_size, max_concurrency=self.concurrency
        ) as writer:
            for chunk in chunks:
                writer.write(chunk)


class ObstoreUnsigned(Obstore):
    """obstore sending UNSIGNED-PAYLOAD, as boto3 does over https (TLS protects the body)."""

    name = "obstore-unsigned"
    unsigned_payload = True


Client = Boto3 | Obstore
CLIENTS: dict[str, type[Boto3] | type[Obstore]] = {
    "boto3": Boto3,
    "obstore": Obstore,
    "obstore-writer": ObstoreWriter,
    "obstore-unsigned": ObstoreUnsigned,
}


@dataclass
class Row:
    step: str
    measure: Measure
    note: str = ""


def bench_client(
    client: Client, source: Path, server: S3Server, lister: S3Client, args: argparse.Namespace
) -> tuple[list[Row], Abort]:
    size = source.stat().st_size
    part_size = args.part_mib * MIB
    key = f"{client.name}/blob"
    pid = server_pid(server)
    upload = timed(size, lambda: client.upload(key, parts(source, part_size)), pid)
    rows = [Row("upload", upload)]
    if sha256_of(server.directory / client.bucket / key) != sha256_of(source):
        raise SystemExit(f"{client.name}: the uploaded object differs from the source")

    got: list[int] = []
    rows.append(Row("download", timed(size, lambda: got.append(client.download(key)), pid)))
    if got != [size]:
        raise SystemExit(f"{client.name}: downloaded {got} bytes of {size}")

    length = args.range_mib * MIB
    offsets = random.Random(args.seed).sample(range(size - length), args.ranges)

    def ranges() -> None:
        for offset in offsets:
            if len(client.get_range(key, offset, length)) != length:
                raise SystemExit(f"{client.name}: a short range at {offset}")

    measure = timed(length * args.ranges, ranges, pid)
    with source.open("rb") as original:  # the content, checked outside the timing
        for offset in offsets[:4]:
            original.seek(offset)
            if bytes(client.get_range(key, offset, length)) != original.read(length):
                raise SystemExit(f"{client.name}: range at {offset} differs from the source")
    latency = measure.seconds / args.ranges * 1000
    rows.append(Row(f"ranged GET {args.range_mib} MiB", measure, f"{latency:.0f} ms each"))
    return rows, abort_after_failure(client, source, part_size, lister)


@dataclass(frozen=True)
class Abort:
    started: int  # multipart uploads in progress when the producer failed
    left: int  # and once the client raised
    left_later: int  # and 2 s later (an abort still on its way)


def abort_after_failure(client: Client, source: Path, part_size: int, lister: S3Client) -> Abort:
    """What an upload whose producer fails mid-way leaves on the server (``lister``: a
    boto3 client, which can list multipart uploads)."""
    key = f"{client.name}/failed"

    def in_progress() -> int:
        listed = lister.list_multipart_uploads(Bucket=client.bucket, Prefix=key)
        return len(listed.get("Uploads", []))

    started: list[int] = []

    def count_started() -> None:
        deadline = time.monotonic() + 5  # the client may still be creating it
        while not in_progress() and time.monotonic() < deadline:
            time.sleep(0.05)
        started.append(in_progress())

    failure: Exception | None = None
    try:
        client.upload(key, parts(source, part_size, fail_after=3, before_failing=count_started))
    except Exception as exc:  # whatever the client wraps the producer's error in
        failure = exc
    if failure is None:
        raise SystemExit(f"{client.name}: an upload whose producer failed succeeded")
    if "Contents" in lister.list_objects_v2(Bucket=client.bucket, Prefix=key):
        raise SystemExit(f"{client.name}: a failed upload left a partial object {key}")
    left = in_progress()
    time.sleep(2)
    return Abort(started[0] if started else -1, left, in_progress())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def write_source(path: Path, size: int) -> None:
    with path.open("wb") as file:
        for _ in range(size // (8 * MIB)):
            file.write(os.urandom(8 * MIB))
        file.write(os.urandom(size % (8 * MIB)))


def report(floor: Measure, results: dict[str, tuple[list[Row], Abort]]) -> None:
    print(
        f"\n{'client':<14} {'step':<17} {'MB/s':>6} {'x cp':>5} {'CPU s/GB':>8} {'server':>6}  note"
    )
    print(f"{'cp':<14} {'copy, same disk':<17} {floor.mb_per_second:>6.0f} {1:>5.2f}")
    for name, (rows, _) in results.items():
        for row in rows:
            m = row.measure
            ratio = m.mb_per_second / floor.mb_per_second
            print(
                f"{name:<14} {row.step:<17} {m.mb_per_second:>6.0f} {ratio:>5.2f} "
                f"{m.cpu_per_gb:>8.2f} {m.server_cpu_per_gb:>6.2f}  {row.note}"
            )
    for name, (_, abort) in results.items():
        print(
            f"{name}: a producer failing after 3 parts: {abort.started} multipart upload(s) "
            f"in progress, {abort.left} left when the client raised, {abort.left_later} "
            "2 s later, no object"
        )
    names = list(results)
    for other in names[1:]:  # each against the first
        for a, b in zip(results[names[0]][0], results[other][0], strict=True):
            speed = b.measure.mb_per_second / a.measure.mb_per_second
            cpu = b.measure.cpu_per_gb / a.measure.cpu_per_gb
            print(f"{other}/{names[0]} {a.step}: {speed:.2f}x the speed, {cpu:.2f}x the CPU")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--part-mib", type=int, default=8, help="multipart part size")
    parser.add_argument("--concurrency", type=int, default=4, help="parts in flight")
    parser.add_argument("--range-mib", type=int, default=8)
    parser.add_argument("--ranges", type=int, default=64)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--clients", default="boto3,obstore,obstore-writer,obstore-unsigned")
    parser.add_argument("--tls", action="store_true", help="https (a self-signed certificate)")
    args = parser.parse_args(argv)

    certificates = Path(tempfile.mkdtemp(prefix="capy-bench-cert-"))
    tls = self_signed_certificate(certificates) if args.tls else None
    try:
        return run(args, tls)
    finally:
        shutil.rmtree(certificates, ignore_errors=True)


def run(args: argparse.Namespace, tls: tuple[Path, Path] | None) -> int:
    with running_s3_server(tls=tls) as server:
        work = Path(tempfile.mkdtemp(prefix="capy-bench-s3-", dir=server.directory.parent))
        try:
            source = work / "source.bin"
            print(f"writing {args.size_mib} MiB of random bytes to {source} ...", flush=True)
            write_source(source, args.size_mib * MIB)
            size = source.stat().st_size
            floor = timed(size, lambda: subprocess.run(["cp", source, work / "copy"], check=True))
            (work / "copy").unlink()

            bucket = server.new_bucket()
            lister = Boto3(server, bucket, args.concurrency, args.part_mib * MIB).client
            results: dict[str, tuple[list[Row], Abort]] = {}
            for name in args.clients.split(","):
                client = CLIENTS[name](server, bucket, args.concurrency, args.part_mib * MIB)
                print(f"{name} ...", flush=True)
                results[name] = bench_client(client, source, server, lister, args)
                shutil.rmtree(server.directory / bucket / name, ignore_errors=True)
            print(
                f"\n{args.size_mib} MiB incompressible, parts of {args.part_mib} MiB, "
                f"{args.concurrency} in flight, versitygw on {server.directory} over "
                f"{'https' if tls else 'http'}; "
                f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
            )
            report(floor, results)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
