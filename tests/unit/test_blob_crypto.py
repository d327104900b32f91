"""Encrypted blobs: round trips at every size that matters, every kind of damage refused
(and refused for good), ranged reads that fetch only the segments under the range."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import IO, cast

import pytest
import zstandard

from pulumi_capy.api.errors import EngineFailure
from pulumi_capy.engine.blob_crypto import (
    HEADER_BYTES,
    MAGIC,
    SEGMENT_SIZE,
    TAG_BYTES,
    BlobAuthenticationFailed,
    BlobKeyMissing,
    DecryptingReader,
    EncryptingWriter,
    RangedReader,
    decrypt_bytes,
    encrypt_bytes,
    encrypted_size,
    file_fetch,
    is_encrypted,
)
from pulumi_capy.engine.blob_keys import BlobKey, BlobKeyRing
from pulumi_capy.engine.queue import JobRetryPolicy
from pulumi_capy.engine.worker import Worker

S = SEGMENT_SIZE
SMALL = 256  # a segment size that makes every byte of a many-segment blob cheap to test
KEY_ID_AT = range(12, 20)  # where the header holds the key id


def _key(seed: int) -> BlobKey:
    return BlobKey(random.Random(seed).randbytes(32))


OLD, NEW, OTHER = _key(1), _key(2), _key(3)
RING = BlobKeyRing([OLD])


def _plaintext(size: int, seed: int = 0) -> bytes:
    """Compressible, recognisable bytes: ciphertext that shows them would be obvious."""
    words = [b"capy ", b"restore ", b"point ", b"backup ", bytes(random.Random(seed).randbytes(7))]
    rng = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])


def _encrypt(
    data: bytes, ring: BlobKeyRing = RING, *, segment_size: int = S, chunks: list[int] | None = None
) -> bytes:
    sink = io.BytesIO()
    writer = EncryptingWriter(ring, sink, segment_size=segment_size)
    position = 0
    for chunk in chunks or []:
        piece = data[position : position + chunk]
        assert writer.write(piece) == len(piece)
        position += len(piece)
    writer.write(data[position:])
    writer.finish()
    stored = sink.getvalue()
    assert writer.plaintext_bytes == len(data)
    assert writer.stored_bytes == len(stored) == encrypted_size(len(data), segment_size)
    return stored


class _Trickle:
    """A source that returns at most ``most`` bytes a read, as sockets and HTTP bodies do."""

    def __init__(self, data: bytes, most: int) -> None:
        self._file = io.BytesIO(data)
        self._most = most

    def read(self, size: int) -> bytes:
        return self._file.read(min(size, self._most))


def _read_all(ring: BlobKeyRing, stored: bytes) -> bytes:
    return DecryptingReader(ring, io.BytesIO(stored)).read()


def _ranged_all(ring: BlobKeyRing, stored: bytes) -> bytes:
    return RangedReader(ring, lambda start, end: stored[start:end], len(stored)).open(0).read()


READERS: list[Callable[[BlobKeyRing, bytes], bytes]] = [_read_all, _ranged_all]


def file_fetch_of(stored: bytes) -> Callable[[int, int], bytes]:
    """A ``fetch`` over bytes in memory."""
    return lambda start, end: stored[start:end]


def _segment_start(number: int, segment_size: int = S) -> int:
    return HEADER_BYTES + number * (segment_size + TAG_BYTES)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("size", [0, 1, S - 1, S, S + 1, 2 * S, 3 * 1024 * 1024 + 7])
def test_round_trip(size: int) -> None:
    data = _plaintext(size)
    stored = _encrypt(data)
    assert is_encrypted(stored)
    assert _read_all(RING, stored) == data
    assert _ranged_all(RING, stored) == data
    assert decrypt_bytes(RING, encrypt_bytes(RING, data)) == data
    if size >= 16:
        assert data[:16] not in stored
        assert b"capy restore" not in stored[HEADER_BYTES:]


def test_random_chunked_writes_and_reads() -> None:
    rng = random.Random(7)
    for round_ in range(20):
        data = _plaintext(rng.randrange(0, 5 * S), seed=round_)
        chunks = [rng.choice([0, 1, 7, S - 1, S, S + 1, rng.randrange(3 * S)]) for _ in range(6)]
        stored = _encrypt(data, chunks=chunks)
        reader = DecryptingReader(RING, _Trickle(stored, rng.choice([1000, S, 3 * S])))
        parts = []
        while part := reader.read(rng.choice([1, 100, S - 1, S, 2 * S + 3])):
            parts.append(part)
        assert b"".join(parts) == data
        assert reader.read() == b""
        assert reader.stored_bytes == len(stored)


def test_the_same_plaintext_encrypts_differently_each_time() -> None:
    data = _plaintext(3 * S)
    first, second = _encrypt(data), _encrypt(data)
    assert first[HEADER_BYTES:] != second[HEADER_BYTES:]
    assert first[:20] == second[:20]  # magic, segment size, key id; the salts differ


def test_the_header_names_the_key_and_the_segment_size() -> None:
    stored = _encrypt(b"x", segment_size=SMALL)
    assert stored[:8] == MAGIC
    assert int.from_bytes(stored[8:12], "big") == SMALL
    assert stored[12:20] == OLD.key_id
    assert len(stored) == HEADER_BYTES + 1 + TAG_BYTES


def test_nothing_is_written_after_finish() -> None:
    writer = EncryptingWriter(RING, io.BytesIO())
    writer.finish()
    with pytest.raises(ValueError, match="finished"):
        writer.write(b"more")
    with pytest.raises(ValueError, match="finished"):
        writer.finish()


def test_a_writer_whose_sink_failed_stays_failed() -> None:
    class Failing:
        def write(self, data: bytes) -> int:
            raise OSError("disk full")

    writer = EncryptingWriter(RING, Failing())
    with pytest.raises(OSError, match="disk full") as first:
        writer.write(b"x" * (2 * S))
    with pytest.raises(OSError, match="disk full") as again:
        writer.finish()
    assert again.value is first.value


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        (MAGIC + b"\x00\x01", True),
        (MAGIC, True),
        (MAGIC[:7], False),
        (b"", False),
        (zstandard.ZstdCompressor().compress(b"capy"), False),
        (b"SQLite format 3\x00", False),
    ],
)
def test_is_encrypted(prefix: bytes, expected: bool) -> None:
    assert is_encrypted(prefix) is expected


# ---------------------------------------------------------------- keys


def test_rotation_reads_old_blobs_and_writes_with_the_new_key() -> None:
    data = _plaintext(S + 5)
    old_blob = _encrypt(data, BlobKeyRing([OLD]))
    rotated = BlobKeyRing([NEW, OLD])
    assert _read_all(rotated, old_blob) == data
    assert _ranged_all(rotated, old_blob) == data
    new_blob = _encrypt(data, rotated)
    assert new_blob[12:20] == NEW.key_id
    assert _read_all(rotated, new_blob) == data
    with pytest.raises(BlobKeyMissing):  # a process still on the old list
        _read_all(BlobKeyRing([OLD]), new_blob)


@pytest.mark.parametrize("read", READERS)
def test_a_missing_key_is_named_with_what_to_do(
    read: Callable[[BlobKeyRing, bytes], bytes],
) -> None:
    stored = _encrypt(b"secret", BlobKeyRing([OLD]))
    with pytest.raises(BlobKeyMissing) as caught:
        read(BlobKeyRing([NEW], source="CAPY_BLOB_KEY"), stored)
    message = str(caught.value)
    assert OLD.key_id.hex() in message
    assert NEW.key_id.hex() in message
    assert "CAPY_BLOB_KEY" in message
    assert OLD.to_text() not in message
    assert NEW.to_text() not in message


def test_no_keys_at_all_is_a_missing_key() -> None:
    """As ``load_blob_keys`` answers when neither variable is set."""
    stored = _encrypt(b"secret")
    for read in (
        lambda: DecryptingReader(None, io.BytesIO(stored)).read(),
        lambda: RangedReader(None, file_fetch_of(stored), len(stored)),
        lambda: decrypt_bytes(None, stored),
    ):
        with pytest.raises(BlobKeyMissing, match="no blob key is set: set CAPY_BLOB_KEY") as caught:
            read()
        assert OLD.key_id.hex() in str(caught.value)


@pytest.mark.parametrize("read", READERS)
def test_the_wrong_key_does_not_authenticate(read: Callable[[BlobKeyRing, bytes], bytes]) -> None:
    """A header claiming another listed key: the derived key is wrong, nothing decrypts."""
    stored = bytearray(_encrypt(_plaintext(3 * S)))
    stored[12:20] = OTHER.key_id
    with pytest.raises(BlobAuthenticationFailed, match=f"blob key {OTHER.key_id.hex()}"):
        read(BlobKeyRing([OTHER, OLD]), bytes(stored))


@pytest.mark.parametrize(
    "failure",
    [
        BlobKeyMissing(OLD.key_id, BlobKeyRing([NEW])),
        BlobKeyMissing(OLD.key_id, None),
        BlobAuthenticationFailed("segment 3 does not authenticate"),
    ],
)
def test_failures_are_permanent_for_the_worker(failure: EngineFailure) -> None:
    permanent, outcome = Worker._classify(failure)
    assert permanent
    assert outcome.summary == str(failure)
    decision = JobRetryPolicy().decide(1, 3, permanent=permanent)
    assert (decision.retry, decision.classification) == (False, "permanent")


# ---------------------------------------------------------------- damage


@pytest.mark.parametrize("read", READERS)
def test_a_flipped_byte_anywhere_is_refused(read: Callable[[BlobKeyRing, bytes], bytes]) -> None:
    data = _plaintext(4 * SMALL + 10)
    stored = _encrypt(data, segment_size=SMALL)
    for position in range(len(stored)):
        damaged = bytearray(stored)
        damaged[position] ^= 0x01
        expected = BlobKeyMissing if position in KEY_ID_AT else BlobAuthenticationFailed
        with pytest.raises(expected):
            read(RING, bytes(damaged))


def test_a_flipped_byte_in_a_full_size_blob_is_refused() -> None:
    stored = _encrypt(_plaintext(3 * S + 100))
    rng = random.Random(3)
    positions = [0, 8, 11, 20, 51, HEADER_BYTES, _segment_start(1) - 1, _segment_start(1)]
    positions += [_segment_start(3) + 50, len(stored) - 1]
    positions += [rng.randrange(HEADER_BYTES, len(stored)) for _ in range(20)]
    for position in positions:
        damaged = bytearray(stored)
        damaged[position] ^= 0x80
        for read in READERS:
            with pytest.raises(BlobAuthenticationFailed):
                read(RING, bytes(damaged))


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize("segments_kept", [0, 1, 2, 3])
def test_a_blob_cut_at_a_segment_boundary_is_refused(
    read: Callable[[BlobKeyRing, bytes], bytes], segments_kept: int
) -> None:
    stored = _encrypt(_plaintext(4 * S + 1))
    with pytest.raises(BlobAuthenticationFailed):
        read(RING, stored[: _segment_start(segments_kept)])


@pytest.mark.parametrize("cut_after", [1, 2])
def test_a_ranged_read_to_the_end_finds_a_cut_from_any_offset(cut_after: int) -> None:
    """Even a range that starts past the last byte left reads the (forged) last segment."""
    data = _plaintext(3 * SMALL + 5)
    stored = _encrypt(data, segment_size=SMALL)
    for extra in (0, TAG_BYTES):  # cut at the boundary, or with a tag's length more
        cut = stored[: _segment_start(cut_after, SMALL) + extra]
        blob = RangedReader(RING, file_fetch_of(cut), len(cut))
        for offset in range(blob.plaintext_bytes + 1):
            with pytest.raises(BlobAuthenticationFailed):
                blob.open(offset).read()
        if blob.plaintext_bytes > SMALL:  # a range short of the end reads only its segments
            assert blob.open(0, 1).read() == data[:1]


@pytest.mark.parametrize("read", READERS)
def test_a_blob_cut_anywhere_is_refused(read: Callable[[BlobKeyRing, bytes], bytes]) -> None:
    stored = _encrypt(_plaintext(3 * SMALL + 17), segment_size=SMALL)
    for length in range(len(stored)):
        with pytest.raises(BlobAuthenticationFailed):
            read(RING, stored[:length])


@pytest.mark.parametrize("read", READERS)
def test_a_full_last_segment_cut_off_is_refused(
    read: Callable[[BlobKeyRing, bytes], bytes],
) -> None:
    """Exactly two full segments: without the second, the first is not the last."""
    stored = _encrypt(_plaintext(2 * S))
    assert len(stored) == _segment_start(2)
    with pytest.raises(BlobAuthenticationFailed, match="last segment 0"):
        read(RING, stored[: _segment_start(1)])


@pytest.mark.parametrize("read", READERS)
@pytest.mark.parametrize(
    "tail", [b"\x00", b"x" * TAG_BYTES, b"x" * (S + TAG_BYTES)], ids=["1", "tag", "segment"]
)
def test_a_blob_extended_is_refused(
    read: Callable[[BlobKeyRing, bytes], bytes], tail: bytes
) -> None:
    stored = _encrypt(_plaintext(2 * S))
    with pytest.raises(BlobAuthenticationFailed):
        read(RING, stored + tail)


@pytest.mark.parametrize("read", READERS)
def test_segments_reordered_dropped_or_repeated_are_refused(
    read: Callable[[BlobKeyRing, bytes], bytes],
) -> None:
    stored = _encrypt(_plaintext(3 * S + 9))
    header = stored[:HEADER_BYTES]
    segments = [stored[_segment_start(n) : _segment_start(n + 1)] for n in range(4)]
    for order in ([1, 0, 2, 3], [0, 2, 1, 3], [0, 1, 3], [0, 2, 3], [0, 0, 1, 2, 3], [0, 1, 2, 2]):
        with pytest.raises(BlobAuthenticationFailed):
            read(RING, header + b"".join(segments[n] for n in order))


def test_segments_of_another_blob_are_refused() -> None:
    data = _plaintext(2 * S + 1)
    first, second = _encrypt(data), _encrypt(data)
    spliced = first[: _segment_start(1)] + second[_segment_start(1) :]
    with pytest.raises(BlobAuthenticationFailed):
        _read_all(RING, spliced)


@pytest.mark.parametrize("segment_size", [0, 32 * 1024 * 1024])
def test_a_header_with_a_bogus_segment_size_is_refused(segment_size: int) -> None:
    stored = bytearray(_encrypt(b"abc"))
    stored[8:12] = segment_size.to_bytes(4, "big")
    for read in READERS:
        with pytest.raises(BlobAuthenticationFailed, match="segments of"):
            read(RING, bytes(stored))


def test_bytes_that_are_not_an_encrypted_blob_are_refused() -> None:
    plain = zstandard.ZstdCompressor().compress(_plaintext(1000))
    with pytest.raises(BlobAuthenticationFailed, match="not an encrypted blob"):
        decrypt_bytes(RING, plain)


# ---------------------------------------------------------------- errors stay


def test_a_failed_reader_fails_again_and_never_looks_ended() -> None:
    data = _plaintext(4 * S)
    damaged = bytearray(_encrypt(data))
    damaged[_segment_start(2) + 5] ^= 1
    reader = DecryptingReader(RING, io.BytesIO(bytes(damaged)))
    assert reader.read(S) == data[:S]
    assert reader.read(S) == data[S : 2 * S]
    with pytest.raises(BlobAuthenticationFailed) as first:
        reader.read(S)
    for size in (-1, 1, 0, S):
        with pytest.raises(BlobAuthenticationFailed) as again:
            reader.read(size)
        assert again.value is first.value


def test_a_cut_blob_fails_again_at_its_end() -> None:
    stored = _encrypt(_plaintext(2 * S + 1))
    reader = DecryptingReader(RING, io.BytesIO(stored[: _segment_start(2)]))
    with pytest.raises(BlobAuthenticationFailed) as first:
        reader.read()
    with pytest.raises(BlobAuthenticationFailed) as again:
        reader.read()
    assert again.value is first.value


def test_a_failed_ranged_read_fails_again() -> None:
    stored = bytearray(_encrypt(_plaintext(3 * S)))
    stored[_segment_start(1) + 1] ^= 1
    blob = RangedReader(RING, lambda start, end: bytes(stored[start:end]), len(stored))
    stream = blob.open(10)
    with pytest.raises(BlobAuthenticationFailed) as first:
        stream.read()
    with pytest.raises(BlobAuthenticationFailed) as again:
        stream.read(1)
    assert again.value is first.value
    assert blob.open(0, S).read() == _plaintext(3 * S)[:S]  # segment 0 is sound


def test_a_failing_source_stays_failed() -> None:
    class Broken:
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int) -> bytes:
            self.calls += 1
            raise OSError("connection reset")

    source = Broken()
    reader = DecryptingReader(RING, source)
    with pytest.raises(OSError, match="reset") as first:
        reader.read(1)
    with pytest.raises(OSError, match="reset") as again:
        reader.read(1)
    assert again.value is first.value
    assert source.calls == 1


# ---------------------------------------------------------------- ranged reads


class _Recording:
    """A fetch over stored bytes that remembers what it was asked for."""

    def __init__(self, stored: bytes) -> None:
        self.stored = stored
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, end: int) -> bytes:
        self.calls.append((start, end))
        return self.stored[start:end]

    def segments(self, segment_size: int) -> list[int]:
        """The segments fetched, in order, the header's fetch left out."""
        fetched: list[int] = []
        for start, end in self.calls[1:]:
            first = (start - HEADER_BYTES) // (segment_size + TAG_BYTES)
            last = (end - 1 - HEADER_BYTES) // (segment_size + TAG_BYTES)
            fetched.extend(range(first, last + 1))
        return fetched


def _offsets(size: int, segment_size: int) -> list[int]:
    interesting = {0, 1, size}
    for boundary in range(0, size + 1, segment_size):
        interesting |= {boundary - 1, boundary, boundary + 1}
    return sorted(offset for offset in interesting if 0 <= offset <= size)


def _needed(offset: int, end: int, size: int, segment_size: int) -> list[int]:
    """The segments under ``[offset, end)``; the last one too when the range reaches the end
    (that is how a blob cut at a segment boundary is found)."""
    if end == size:
        segments = max(1, -(-size // segment_size))
        return list(range(min(offset // segment_size, segments - 1), segments))
    if end == offset:
        return []
    return list(range(offset // segment_size, -(-end // segment_size)))


@pytest.mark.parametrize("segment_size", [SMALL, S])
@pytest.mark.parametrize("size", [0, 1, 5 * SMALL, 3 * SMALL + 100])
def test_ranged_reads_equal_the_slice_and_fetch_only_their_segments(
    segment_size: int, size: int
) -> None:
    data = _plaintext(size)
    stored = _encrypt(data, segment_size=segment_size)
    offsets = _offsets(size, segment_size)
    for offset in offsets:
        for end in [None, *(end for end in offsets if end >= offset)]:
            fetch = _Recording(stored)
            blob = RangedReader(RING, fetch, len(stored), segments_per_fetch=1)
            assert blob.plaintext_bytes == size
            assert fetch.calls == [(0, HEADER_BYTES)]
            stop = size if end is None else end
            assert blob.open(offset, end).read() == data[offset:stop]
            assert fetch.segments(segment_size) == _needed(offset, stop, size, segment_size)


def test_a_ranged_read_fetches_in_batches_and_no_further_than_asked() -> None:
    data = _plaintext(40 * SMALL + 3)
    stored = _encrypt(data, segment_size=SMALL)
    fetch = _Recording(stored)
    blob = RangedReader(RING, fetch, len(stored), segments_per_fetch=16)
    stream = blob.open(5 * SMALL + 7)
    assert stream.read(10) == data[5 * SMALL + 7 : 5 * SMALL + 17]
    assert fetch.segments(SMALL) == list(range(5, 21))  # one fetch of 16 segments
    assert len(fetch.calls) == 2
    rest = stream.read()
    assert rest == data[5 * SMALL + 17 :]
    assert fetch.segments(SMALL) == list(range(5, 41))
    assert len(fetch.calls) == 4  # 16, 16, then the last 4

    fetch = _Recording(stored)
    blob = RangedReader(RING, fetch, len(stored), segments_per_fetch=16)
    assert blob.open(3 * SMALL, 4 * SMALL + 1).read() == data[3 * SMALL : 4 * SMALL + 1]
    assert fetch.segments(SMALL) == [3, 4]


def test_ranged_reads_in_small_pieces() -> None:
    data = _plaintext(3 * S + 11)
    stored = _encrypt(data)
    stream = RangedReader(RING, lambda start, end: stored[start:end], len(stored)).open(S - 3)
    parts = []
    while part := stream.read(4099):
        parts.append(part)
    assert b"".join(parts) == data[S - 3 :]


def test_a_range_outside_the_blob_is_a_caller_error() -> None:
    stored = _encrypt(b"12345")
    blob = RangedReader(RING, lambda start, end: stored[start:end], len(stored))
    for offset, end in [(6, None), (-1, None), (3, 2), (0, 6)]:
        with pytest.raises(ValueError, match="outside"):
            blob.open(offset, end)


def test_a_stored_size_no_blob_has_is_refused() -> None:
    stored = _encrypt(_plaintext(S + 100))
    fetch = _Recording(stored)
    for wrong in (HEADER_BYTES, HEADER_BYTES + 15, _segment_start(1) + 3):
        with pytest.raises(BlobAuthenticationFailed, match="cannot end there"):
            RangedReader(RING, fetch, wrong)


def test_a_blob_shorter_than_its_stored_size_is_refused() -> None:
    stored = _encrypt(_plaintext(2 * S + 100))

    def short(start: int, end: int) -> bytes:
        return stored[start : end - 1] if end > HEADER_BYTES else stored[start:end]

    blob = RangedReader(RING, short, len(stored))
    with pytest.raises(BlobAuthenticationFailed, match="cut short"):
        blob.open(0).read()


def test_file_fetch_reads_ranges_of_a_file(tmp_path: Path) -> None:
    data = _plaintext(2 * S + 3)
    path = tmp_path / "blob"
    path.write_bytes(_encrypt(data))
    blob = RangedReader(RING, file_fetch(path), path.stat().st_size)
    assert blob.open(S + 1, 2 * S + 2).read() == data[S + 1 : 2 * S + 2]
    assert file_fetch(path)(0, 8) == MAGIC


# ---------------------------------------------------------------- with zstd, as blobs will be


def test_zstd_streams_through_the_writer_and_the_reader() -> None:
    data = _plaintext(3 * S + 123)
    sink = io.BytesIO()
    encrypting = EncryptingWriter(RING, sink)
    compressor = zstandard.ZstdCompressor(level=1).stream_writer(
        cast(IO[bytes], encrypting), closefd=False
    )
    for start in range(0, len(data), 10_000):
        compressor.write(data[start : start + 10_000])
    compressor.flush(zstandard.FLUSH_FRAME)
    encrypting.finish()
    stored = sink.getvalue()
    assert is_encrypted(stored)
    assert encrypting.stored_bytes == len(stored)
    reader = DecryptingReader(RING, io.BytesIO(stored))
    decompressed = zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], reader))
    assert decompressed.read() == data
    assert decrypt_bytes(RING, stored)[:4] == b"\x28\xb5\x2f\xfd"  # a zstd frame inside
