"""Benchmark: backups and restores with blobs on S3 against the raw client, in one run.

Builds a SQLite database (``bench/sqlite_backup.py``'s mixed rows), starts the
S3 server the tests use (``scripts/s3-server``; or ``--endpoint`` names a
running one), and times, ABBA-alternated over ``--rounds``:

- ours, backup: ``BlobStore.put_file`` — read, zstd, SHA-256, multipart upload;
- ours, restore: ``BlobStore.get_file`` — ranged GET stream, SHA-256, unzstd, file;
- raw: boto3's managed transfer (``upload_file``/``download_file``, its default
  ten threads) moving the same database file unchanged (what a user without us
  would do: ``aws s3 cp app.db s3://…``), and moving our blob's bytes (the
  network part alone of what we do).

Ratios are raw time / our time (>= 1: we are faster). Throughputs are MB of the
database per second. CPU is the seconds of this process (user + system) per
run: the machine has two cores.

Run: ``.venv/bin/python bench/s3_blobs.py [--size-mb 512] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlite_backup import build_database

from pulumi_capy.engine.blobs import BlobStore
from pulumi_capy.engine.objects_s3 import S3ObjectStore

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "bench"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def s3_server(workdir: Path, endpoint: str | None) -> Iterator[dict[str, str]]:
    if endpoint:
        yield {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": os.environ["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": os.environ["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": os.environ.get("AWS_REGION", "us-east-1"),
        }
        return
    port = _free_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench" + secrets.token_hex(4),
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24),
    }
    command = [str(ROOT / "scripts/s3-server"), "--dir", str(workdir / "s3")]
    command += ["--port", str(port), "--bucket", BUCKET]
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("scripts/s3-server did not start")
            time.sleep(0.1)
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": "us-east-1",
        }
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def timed(step: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``step``, after a sync."""
    os.sync()
    cpu, wall = time.process_time(), time.perf_counter()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--endpoint", help="a running S3 server (AWS_* variables give the keys)")
    parser.add_argument("--dir", type=Path, help="where to build (default: a temp dir)")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        workdir = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        environ = stack.enter_context(s3_server(workdir, args.endpoint))
        measure(workdir, args.size_mb, args.rounds, environ)


def measure(workdir: Path, size_mb_asked: int, rounds: int, environ: dict[str, str]) -> None:
    """Build (or reuse) ``workdir/app.db``, time every step against the S3 server of
    ``environ`` (its bucket ``BUCKET`` exists), print the table and the ratios."""
    source = workdir / "app.db"
    if not source.exists():
        print(f"building a {size_mb_asked} MB database…", flush=True)
        build_database(source, size_mb_asked)
    size_mb = source.stat().st_size / 1e6
    objects = S3ObjectStore(BUCKET, f"run-{secrets.token_hex(4)}", environ=environ)
    blobs = BlobStore(objects)
    client = objects.client
    blob_file, out = workdir / "blob.zst", workdir / "restored.db"

    info = blobs.put_file("warm/blob", source, {})
    with open(blob_file, "wb") as handle, objects.open("warm/blob") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            handle.write(chunk)
    blob_mb = info.blob_bytes / 1e6
    client.upload_file(str(source), BUCKET, objects.key("raw/source"))
    client.upload_file(str(blob_file), BUCKET, objects.key("raw/blob"))

    steps: dict[str, Callable[[], object]] = {
        "ours: backup (zstd + sha256 + multipart)": lambda: blobs.put_file(
            "bench/blob", source, {}
        ),
        "raw: upload the database": lambda: client.upload_file(
            str(source), BUCKET, objects.key("raw/source")
        ),
        "raw: upload our blob's bytes": lambda: client.upload_file(
            str(blob_file), BUCKET, objects.key("raw/blob")
        ),
        "ours: restore (ranged GET + sha256 + unzstd)": lambda: blobs.get_file(
            "warm/blob", info.sha256, out.with_suffix(f".{secrets.token_hex(2)}"), durable=False
        ),
        "raw: download the database": lambda: client.download_file(
            BUCKET, objects.key("raw/source"), str(workdir / "raw-source")
        ),
        "raw: download our blob's bytes": lambda: client.download_file(
            BUCKET, objects.key("raw/blob"), str(workdir / "raw-blob")
        ),
    }
    walls: dict[str, list[float]] = {name: [] for name in steps}
    cpus: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else list(reversed(names)):
            wall, cpu = timed(steps[name])
            walls[name].append(wall)
            cpus[name].append(cpu)
            for leftover in workdir.glob("restored.*"):
                leftover.unlink()
    best = {name: min(values) for name, values in walls.items()}

    print(f"\ndatabase {size_mb:.0f} MB, blob {blob_mb:.0f} MB ({blob_mb / size_mb:.2f}x)")
    print(f"{'step':48} {'best s':>7} {'MB/s':>7} {'CPU s':>6}")
    for name in names:
        print(
            f"{name:48} {best[name]:7.2f} {size_mb / best[name]:7.0f} "
            f"{statistics.median(cpus[name]):6.2f}"
        )
    backup, restore = best[names[0]], best[names[3]]
    print("\nratios (raw time / ours; target >= 0.8):")
    print(f"  backup  vs uploading the database:   {best[names[1]] / backup:.2f}x")
    print(f"  backup  vs uploading our blob:       {best[names[2]] / backup:.2f}x")
    print(f"  restore vs downloading the database: {best[names[4]] / restore:.2f}x")
    print(f"  restore vs downloading our blob:     {best[names[5]] / restore:.2f}x")


if __name__ == "__main__":
    main()
