"""Benchmark: encrypting blobs at rest against compressing them, in one run.

Builds N MB (default 256) of table-like text (ids, names from a skewed
vocabulary, amounts, hex tokens: zstd level 1 shrinks it about as it does a
dump) and times, each fed or read 1 MiB at a time as the blob layer does:

- zstd level 1 compression and decompression on one thread (the blob store compresses
  on 2 by default; per core is the comparison that holds on any machine);
- ``EncryptingWriter`` and ``DecryptingReader`` over the same bytes;
- raw ``AESGCM`` on 64 KiB segments (what the writer costs beyond the cipher);
- the writer over the *compressed* bytes: what a blob actually pays, compressed
  first, then encrypted.

Throughputs are of plaintext bytes (GB/s, 10^9); each figure is the median of
``--rounds`` and is printed with its ratio to zstd measured in the same run
(these machines are noisy).

Run: ``.venv/bin/python bench/blob_crypto.py [--size-mb 256] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable
from typing import IO, cast

import numpy as np
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pulumi_capy.engine.blob_crypto import SEGMENT_SIZE, DecryptingReader, EncryptingWriter
from pulumi_capy.engine.blob_keys import BlobKey, BlobKeyRing

CHUNK = 1 << 20
RECORD = 64


def build_data(size: int, seed: int = 17) -> bytes:
    """``size`` bytes of 64-byte records:
    ``0000012345,<16-letter name>,<8-digit amount>,<12 hex>,<status>\\n``."""
    rng = np.random.default_rng(seed)
    count = size // RECORD + 1
    ids = np.arange(count, dtype=np.int64)
    digits = ((ids[:, None] // 10 ** np.arange(9, -1, -1)) % 10 + 48).astype(np.uint8)
    vocabulary = rng.integers(97, 123, size=(512, 16), dtype=np.uint8)
    names = vocabulary[rng.exponential(40, count).astype(np.int64) % 512]
    amounts = rng.integers(0, 10**8, count)
    amount_digits = ((amounts[:, None] // 10 ** np.arange(7, -1, -1)) % 10 + 48).astype(np.uint8)
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[
        rng.integers(0, 16, size=(count, 12))
    ]
    statuses = np.frombuffer(b"paid_________refunded_____pending______shipped______", np.uint8)
    status = statuses.reshape(4, 13)[rng.integers(0, 4, count)]
    comma = np.full((count, 1), ord(","), dtype=np.uint8)
    records = np.hstack(
        [digits, comma, names, comma, amount_digits, comma, hex_digits, comma, status]
    )
    newline = np.full((count, RECORD - records.shape[1]), ord(" "), dtype=np.uint8)
    newline[:, -1] = ord("\n")
    return np.hstack([records, newline]).tobytes()[:size]


def chunks(data: bytes) -> list[memoryview]:
    view = memoryview(data)
    return [view[start : start + CHUNK] for start in range(0, len(data), CHUNK)]


class Collect:
    """A sink that keeps what it is given (to build the inputs of the reads)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)


class Count:
    """A sink that counts and drops what it is given, as a file's page cache would take it:
    the timed steps pay for their own work, not for growing a buffer in memory."""

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)


def compress_into(data: bytes, sink: Collect | Count) -> None:
    writer = zstandard.ZstdCompressor(level=1).stream_writer(cast(IO[bytes], sink), closefd=False)
    for chunk in chunks(data):
        writer.write(chunk)
    writer.flush(zstandard.FLUSH_FRAME)


def decompress(compressed: bytes) -> int:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(compressed))
    total = 0
    while chunk := reader.read(CHUNK):
        total += len(chunk)
    return total


def encrypt_into(ring: BlobKeyRing, data: bytes, sink: Collect | Count) -> None:
    writer = EncryptingWriter(ring, sink)
    for chunk in chunks(data):
        writer.write(chunk)
    writer.finish()


def collected(write: Callable[[Collect], None]) -> bytes:
    sink = Collect()
    write(sink)
    return b"".join(sink.parts)


def decrypt(ring: BlobKeyRing, stored: bytes) -> int:
    reader = DecryptingReader(ring, io.BytesIO(stored))
    total = 0
    while chunk := reader.read(CHUNK):
        total += len(chunk)
    return total


def raw_aesgcm(data: bytes) -> int:
    """The cipher alone, output dropped as ``Count`` drops it."""
    aead = AESGCM(os.urandom(32))
    view = memoryview(data)
    total = 0
    for number, start in enumerate(range(0, len(data), SEGMENT_SIZE)):
        total += len(
            aead.encrypt(number.to_bytes(12, "big"), view[start : start + SEGMENT_SIZE], b"")
        )
    return total


def timed(step: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=256, help="plaintext MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.size_mb * 1_000_000
    ring = BlobKeyRing([BlobKey(os.urandom(32))])

    started = time.perf_counter()
    data = build_data(size)
    print(f"data: {len(data) / 1e6:.0f} MB built in {time.perf_counter() - started:.1f} s")
    compressed = collected(lambda sink: compress_into(data, sink))
    stored = collected(lambda sink: encrypt_into(ring, data, sink))
    stored_compressed = collected(lambda sink: encrypt_into(ring, compressed, sink))
    assert decrypt(ring, stored) == len(data)
    assert decompress(compressed) == len(data)
    print(
        f"zstd -1: {len(compressed) / 1e6:.1f} MB ({len(data) / len(compressed):.2f}x smaller); "
        f"encrypted: {len(stored) - len(data)} bytes of overhead "
        f"({(len(stored) - len(data)) / len(data):.4%})"
    )

    figures = {
        "zstd -1 compress": timed(lambda: compress_into(data, Count()), args.rounds),
        "zstd decompress": timed(lambda: decompress(compressed), args.rounds),
        "encrypt (EncryptingWriter)": timed(lambda: encrypt_into(ring, data, Count()), args.rounds),
        "decrypt (DecryptingReader)": timed(lambda: decrypt(ring, stored), args.rounds),
        "raw AESGCM, 64 KiB segments": timed(lambda: raw_aesgcm(data), args.rounds),
        "encrypt zstd's output *": timed(
            lambda: encrypt_into(ring, compressed, Count()), args.rounds
        ),
        "decrypt zstd's output *": timed(lambda: decrypt(ring, stored_compressed), args.rounds),
    }
    compress_time = figures["zstd -1 compress"]
    decompress_time = figures["zstd decompress"]
    print(f"\n{'step':32} {'seconds':>8} {'GB/s':>7}  vs zstd")
    for name, seconds in figures.items():
        against = (
            decompress_time if name.startswith(("decrypt", "zstd decompress")) else compress_time
        )
        base = "decompress" if against is decompress_time else "compress"
        print(
            f"{name:32} {seconds:8.3f} {len(data) / seconds / 1e9:7.2f}  "
            f"{seconds / against:.2f}x the {base} time"
        )
    print("* GB/s of the data before compression, as in the other rows")
    backup = compress_time + figures["encrypt zstd's output *"]
    restore = decompress_time + figures["decrypt zstd's output *"]
    print(
        f"\nbackup path (compress, then encrypt zstd's output): {backup:.3f} s, "
        f"{backup / compress_time:.2f}x compression alone"
    )
    print(
        f"restore path (decrypt, then decompress): {restore:.3f} s, "
        f"{restore / decompress_time:.2f}x decompression alone"
    )


if __name__ == "__main__":
    main()
