"""Encryption at rest of backup blobs: streaming, authenticated, readable by range.

An encrypted blob is a header and a run of segments::

    header   magic "CAPYENC1" | segment size (4 bytes, big-endian) | key id (8) | salt (32)
    segment  AES-256-GCM of <segment size> bytes of plaintext (the last: 0 to that many) | tag (16)

Each blob has its own key, derived with HKDF-SHA256 from the ring's key and
the blob's random salt, so the nonce can simply be the segment's number
(96 bits, big-endian) and is never reused under one key. A segment's associated
data is the header and a flag saying whether it is the last: the header cannot
be changed, a segment cannot move (its number is its nonce), and a blob cut at
a segment boundary or extended is refused (its last segment then carries the
wrong flag). Segments are full but for the last, so where each begins follows
from the segment size, and ``RangedReader`` reads any plaintext range by
fetching only the segments under it (a ranged GET on an object store).

Every failure to open a blob is permanent (an ``EngineFailure`` with
``permanent``): ``BlobKeyMissing`` when its key is not listed,
``BlobAuthenticationFailed`` for anything else (a wrong key, damaged bytes, a
blob cut short or reordered, bytes that are not an encrypted blob). A reader
that failed raises the same error on every later read: it never looks ended.
"""

from __future__ import annotations

import io
import os
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pulumi_capy.api.errors import EngineFailure
from pulumi_capy.engine.blob_keys import ENV_BLOB_KEY, ENV_BLOB_KEY_FILE, BlobKey, BlobKeyRing

__all__ = [
    "HEADER_BYTES",
    "MAGIC",
    "SEGMENT_SIZE",
    "TAG_BYTES",
    "BlobAuthenticationFailed",
    "BlobKeyMissing",
    "DecryptingReader",
    "EncryptingWriter",
    "RangedReader",
    "decrypt_bytes",
    "encrypt_bytes",
    "encrypted_size",
    "file_fetch",
    "is_encrypted",
]

MAGIC = b"CAPYENC1"
_HEADER = struct.Struct(">8sI8s32s")  # magic, segment size, key id, salt
HEADER_BYTES = _HEADER.size
SALT_BYTES = 32
TAG_BYTES = 16
NONCE_BYTES = 12
SEGMENT_SIZE = 64 * 1024
MAX_SEGMENT_SIZE = 16 * 1024 * 1024  # a header naming more is not one this module wrote
SEGMENTS_PER_FETCH = 16  # a ranged read asks for 1 MiB at a time (64 KiB segments)
_KDF_INFO = b"capy blob encryption v1"
_MORE = b"\x00"
_LAST = b"\x01"


class BlobAuthenticationFailed(EngineFailure):
    """The encrypted blob does not authenticate: the key is wrong, or its bytes were
    damaged, cut short or reordered."""


class BlobKeyMissing(EngineFailure):
    """The blob was encrypted with a key that is not among the blob keys."""

    def __init__(self, key_id: bytes, ring: BlobKeyRing | None) -> None:
        self.key_id = key_id.hex()
        if ring is None:
            super().__init__(
                f"the blob was encrypted with blob key {self.key_id}, but no blob key is set: "
                f"set {ENV_BLOB_KEY} (or {ENV_BLOB_KEY_FILE}) to that key"
            )
            return
        super().__init__(
            f"the blob was encrypted with blob key {self.key_id}, which is not among the "
            f"{len(ring)} key(s) of {ring.source} ({', '.join(ring.key_ids)}); list that key "
            f"in {ENV_BLOB_KEY} (or {ENV_BLOB_KEY_FILE}) after the current one: several keys "
            "are comma-separated, newest first"
        )


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class Source(Protocol):
    def read(self, size: int, /) -> bytes: ...


Fetch = Callable[[int, int], bytes]


def is_encrypted(prefix: bytes) -> bool:
    """Whether bytes beginning with ``prefix`` are an encrypted blob (8 bytes suffice)."""
    return bytes(prefix[: len(MAGIC)]) == MAGIC


def encrypted_size(plaintext_bytes: int, segment_size: int = SEGMENT_SIZE) -> int:
    """The stored size of ``plaintext_bytes`` encrypted (there is always a last segment)."""
    segments = max(1, -(-plaintext_bytes // segment_size))
    return HEADER_BYTES + plaintext_bytes + segments * TAG_BYTES


@dataclass(frozen=True)
class _Cipher:
    """One blob's header and derived key: what encrypts or decrypts its segments."""

    header: bytes
    segment_size: int
    key_id: bytes
    aead: AESGCM

    @classmethod
    def new(cls, key: BlobKey, segment_size: int) -> _Cipher:
        if not 0 < segment_size <= MAX_SEGMENT_SIZE:
            raise ValueError(f"segment size must be 1 to {MAX_SEGMENT_SIZE} bytes")
        salt = secrets.token_bytes(SALT_BYTES)
        header = _HEADER.pack(MAGIC, segment_size, key.key_id, salt)
        return cls(header, segment_size, key.key_id, AESGCM(_derive(key, salt)))

    @classmethod
    def parse(cls, ring: BlobKeyRing | None, header: bytes) -> _Cipher:
        if len(header) < HEADER_BYTES:
            raise BlobAuthenticationFailed(
                f"the blob is {len(header)} bytes long, shorter than the {HEADER_BYTES}-byte "
                "header of an encrypted blob: it was cut short, or it is not one"
            )
        magic, segment_size, key_id, salt = _HEADER.unpack(header)
        if magic != MAGIC:
            raise BlobAuthenticationFailed(
                f"the blob does not begin with {MAGIC.decode()}: it is not an encrypted blob, "
                "or its header was damaged"
            )
        if not 0 < segment_size <= MAX_SEGMENT_SIZE:
            raise BlobAuthenticationFailed(
                f"the blob's header names segments of {segment_size} bytes: it was damaged"
            )
        key = ring.get(key_id) if ring is not None else None
        if key is None:
            raise BlobKeyMissing(key_id, ring)
        return cls(bytes(header), segment_size, key_id, AESGCM(_derive(key, salt)))

    def seal(self, number: int, plaintext: bytes | memoryview, *, last: bool) -> bytes:
        return self.aead.encrypt(
            _nonce(number), plaintext, self.header + (_LAST if last else _MORE)
        )

    def open(self, number: int, stored: bytes | memoryview, *, last: bool) -> bytes:
        try:
            return self.aead.decrypt(
                _nonce(number), stored, self.header + (_LAST if last else _MORE)
            )
        except InvalidTag:
            where = "last segment" if last else "segment"
            raise BlobAuthenticationFailed(
                f"{where} {number} of the blob does not authenticate with blob key "
                f"{self.key_id.hex()}: the key is wrong, or the blob was damaged, cut short or "
                "reordered"
            ) from None


def _derive(key: BlobKey, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_KDF_INFO).derive(key.secret)


def _nonce(number: int) -> bytes:
    return number.to_bytes(NONCE_BYTES, "big")


def _read_exact(source: Source, size: int) -> bytes:
    """``size`` bytes of ``source``, fewer only at its end (a stream may return less)."""
    first = source.read(size)
    if len(first) == size or not first:
        return first
    parts = [first]
    missing = size - len(first)
    while missing:
        more = source.read(missing)
        if not more:
            break
        parts.append(more)
        missing -= len(more)
    return b"".join(parts)


class EncryptingWriter:
    """Encrypts what is written to it into ``sink`` with the ring's current key;
    ``finish`` writes the last segment (a blob without it does not authenticate).
    ``plaintext_bytes`` counts what was written, ``stored_bytes`` what reached ``sink``."""

    def __init__(self, ring: BlobKeyRing, sink: Sink, *, segment_size: int = SEGMENT_SIZE) -> None:
        self._sink = sink
        self._cipher = _Cipher.new(ring.current, segment_size)
        self._pending = bytearray()
        self._next_segment = 0
        self._finished = False
        self._error: Exception | None = None
        self.plaintext_bytes = 0
        self.stored_bytes = 0

    @property
    def key_id(self) -> str:
        """The id of the key the blob is encrypted with, in hex."""
        return self._cipher.key_id.hex()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        view = memoryview(data).cast("B")
        written = len(view)
        size = self._cipher.segment_size
        try:
            # a full segment is held back until more follows: the last one must carry its flag
            if self._pending:
                room = size - len(self._pending)
                self._pending += view[:room]
                view = view[room:]
                if not view:
                    self.plaintext_bytes += written
                    return written
                self._emit(self._pending, last=False)
                self._pending.clear()
            while len(view) > size:
                self._emit(view[:size], last=False)
                view = view[size:]
            self._pending += view
        except Exception as exc:
            self._error = exc
            raise
        self.plaintext_bytes += written
        return written

    def finish(self) -> None:
        """Write the last segment; nothing can be written after."""
        self._check_open()
        try:
            self._emit(self._pending, last=True)
        except Exception as exc:
            self._error = exc
            raise
        self._pending.clear()
        self._finished = True

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._finished:
            raise ValueError("the encrypted blob is finished: nothing more can be written")

    def _emit(self, plaintext: bytes | bytearray | memoryview, *, last: bool) -> None:
        if self._next_segment == 0:
            self._sink.write(self._cipher.header)
            self.stored_bytes += len(self._cipher.header)
        with memoryview(plaintext) as view:  # released at once: the buffer is cleared next
            stored = self._cipher.seal(self._next_segment, view, last=last)
        self._sink.write(stored)
        self.stored_bytes += len(stored)
        self._next_segment += 1


class _Reader:
    """What both readers share: the segment being read out, and errors that stay."""

    def __init__(self) -> None:
        self._plaintext = b""  # of the segment being read out, from ``_position`` on
        self._position = 0
        self._ended = False
        self._error: Exception | None = None

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes of plaintext (all that is left if ``size`` is negative or
        ``None``); ``b""`` only at the end of a blob that authenticated to its end."""
        if self._error is not None:
            raise self._error
        try:
            return self._read(-1 if size is None else size)
        except Exception as exc:
            self._error = exc
            raise

    def readable(self) -> bool:
        return True

    def _read(self, size: int) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted:
            if self._position == len(self._plaintext):
                if self._ended:
                    break
                self._plaintext, self._position = self._next_plaintext(), 0
                continue
            end = len(self._plaintext) if wanted < 0 else self._position + wanted
            part = self._plaintext[self._position : end]  # a whole segment is not copied
            self._position += len(part)
            wanted = wanted - len(part) if wanted > 0 else wanted
            parts.append(part)
        return b"".join(parts)

    def _next_plaintext(self) -> bytes:
        """The plaintext of the next segment; sets ``_ended`` at the last."""
        raise NotImplementedError


class DecryptingReader(_Reader):
    """Reads the plaintext of the encrypted blob ``source`` holds, with the key of the
    ring whose id its header names (no ring: ``BlobKeyMissing``, as ``load_blob_keys``
    answers when no key is set). A blob cut short ends in ``BlobAuthenticationFailed``,
    never in an early ``b""``."""

    def __init__(self, ring: BlobKeyRing | None, source: Source) -> None:
        super().__init__()
        self._ring = ring
        self._source = source
        self._cipher: _Cipher | None = None
        self._ahead: bytes | None = None  # the stored segment after the one being opened
        self._next_segment = 0
        self.stored_bytes = 0

    def _next_plaintext(self) -> bytes:
        if self._cipher is None:
            header = _read_exact(self._source, HEADER_BYTES)
            self.stored_bytes += len(header)
            self._cipher = _Cipher.parse(self._ring, header)
        stored_segment = self._cipher.segment_size + TAG_BYTES
        current = self._ahead if self._ahead is not None else self._take(stored_segment)
        self._ahead = None
        last = True
        if len(current) == stored_segment:  # the last only if nothing follows
            following = self._take(stored_segment)
            if following:
                self._ahead, last = following, False
        if len(current) < TAG_BYTES:
            raise BlobAuthenticationFailed(
                f"the blob ends before its segment {self._next_segment} is whole: it was cut short"
            )
        plaintext = self._cipher.open(self._next_segment, current, last=last)
        self._next_segment += 1
        self._ended = last
        return plaintext

    def _take(self, size: int) -> bytes:
        stored = _read_exact(self._source, size)
        self.stored_bytes += len(stored)
        return stored


@dataclass(frozen=True)
class _Layout:
    """Where a blob's segments lie, from its stored size and segment size."""

    stored_bytes: int
    segment_size: int
    segments: int
    plaintext_bytes: int

    @classmethod
    def of(cls, stored_bytes: int, segment_size: int) -> _Layout:
        stored_segment = segment_size + TAG_BYTES
        full, rest = divmod(stored_bytes - HEADER_BYTES, stored_segment)
        if stored_bytes - HEADER_BYTES < TAG_BYTES or 0 < rest < TAG_BYTES:
            raise BlobAuthenticationFailed(
                f"an encrypted blob of {stored_bytes} bytes cannot end there (segments of "
                f"{segment_size} bytes): it was cut short or extended"
            )
        if rest == 0:
            return cls(stored_bytes, segment_size, full, full * segment_size)
        return cls(stored_bytes, segment_size, full + 1, full * segment_size + rest - TAG_BYTES)

    def start(self, segment: int) -> int:
        return HEADER_BYTES + segment * (self.segment_size + TAG_BYTES)

    def end(self, segment: int) -> int:
        return min(self.start(segment + 1), self.stored_bytes)


class RangedReader:
    """Reads any range of an encrypted blob's plaintext through ``fetch(start, end)``
    (stored bytes ``[start, end)``, e.g. a ranged GET), fetching only the segments under
    the range, ``segments_per_fetch`` at most at a time. ``stored_bytes`` is the blob's
    size as stored: a blob shorter than that fails, and a range that reaches the end reads
    the last segment, so a blob cut (or extended) at a segment boundary fails there too.
    A range that ends earlier authenticates only its own segments."""

    def __init__(
        self,
        ring: BlobKeyRing | None,
        fetch: Fetch,
        stored_bytes: int,
        *,
        segments_per_fetch: int = SEGMENTS_PER_FETCH,
    ) -> None:
        if segments_per_fetch < 1:
            raise ValueError("segments_per_fetch must be at least 1")
        self._fetch = fetch
        self._segments_per_fetch = segments_per_fetch
        header = fetch(0, min(HEADER_BYTES, stored_bytes))
        self._cipher = _Cipher.parse(ring, header)
        self._layout = _Layout.of(stored_bytes, self._cipher.segment_size)

    @property
    def plaintext_bytes(self) -> int:
        return self._layout.plaintext_bytes

    def open(self, plaintext_offset: int, plaintext_end: int | None = None) -> _RangeStream:
        """A reader of the plaintext from ``plaintext_offset`` to ``plaintext_end`` (the
        end of the blob when ``None``)."""
        end = self.plaintext_bytes if plaintext_end is None else plaintext_end
        if not 0 <= plaintext_offset <= end <= self.plaintext_bytes:
            raise ValueError(
                f"range [{plaintext_offset}, {end}) is outside the blob's "
                f"{self.plaintext_bytes} bytes of plaintext"
            )
        return _RangeStream(self, plaintext_offset, end)

    def _segments(self, first: int, stop: int) -> list[bytes]:
        """The plaintext of segments ``[first, stop)``, fetched in one call."""
        layout = self._layout
        start, end = layout.start(first), layout.end(stop - 1)
        stored = self._fetch(start, end)
        if len(stored) != end - start:
            raise BlobAuthenticationFailed(
                f"fetching bytes {start} to {end} of an encrypted blob of {layout.stored_bytes} "
                f"bytes returned {len(stored)}: the blob was cut short"
            )
        view = memoryview(stored)
        return [
            self._cipher.open(
                segment,
                view[layout.start(segment) - start : layout.end(segment) - start],
                last=segment == layout.segments - 1,
            )
            for segment in range(first, stop)
        ]


class _RangeStream(_Reader):
    """The plaintext of ``[offset, end)``. A range that reaches the blob's end reads its last
    segment whatever the offset, even an empty one: reading to the end proves the blob was
    not cut at a segment boundary."""

    def __init__(self, blob: RangedReader, offset: int, end: int) -> None:
        super().__init__()
        layout = blob._layout
        self._blob = blob
        if end == layout.plaintext_bytes:
            self._stop = layout.segments
            self._next_segment = min(offset // layout.segment_size, layout.segments - 1)
        else:  # past the segment holding the range's last byte
            self._stop = -(-end // layout.segment_size) if end > offset else 0
            self._next_segment = min(offset // layout.segment_size, self._stop)
        self._skip = offset - self._next_segment * layout.segment_size  # of the first segment
        self._left = end - offset
        self._ready: list[bytes] = []
        self._ended = self._next_segment >= self._stop

    def _next_plaintext(self) -> bytes:
        if not self._ready:
            stop = min(self._next_segment + self._blob._segments_per_fetch, self._stop)
            self._ready = self._blob._segments(self._next_segment, stop)
            self._ready.reverse()
            self._next_segment = stop
        plaintext = self._ready.pop()
        if self._skip:
            plaintext, self._skip = plaintext[self._skip :], 0
        plaintext = plaintext[: self._left]
        self._left -= len(plaintext)
        self._ended = not self._ready and self._next_segment >= self._stop
        return plaintext


def file_fetch(path: str | os.PathLike[str]) -> Fetch:
    """A ``fetch`` for ``RangedReader`` over a local file."""

    def fetch(start: int, end: int) -> bytes:
        with open(path, "rb") as file:
            file.seek(start)
            return file.read(end - start)

    return fetch


def encrypt_bytes(ring: BlobKeyRing, data: bytes) -> bytes:
    """``data`` encrypted whole (manifests and other small objects)."""
    sink = io.BytesIO()
    writer = EncryptingWriter(ring, sink)
    writer.write(data)
    writer.finish()
    return sink.getvalue()


def decrypt_bytes(ring: BlobKeyRing | None, data: bytes) -> bytes:
    """The plaintext of ``encrypt_bytes``'s output."""
    return DecryptingReader(ring, io.BytesIO(data)).read()
