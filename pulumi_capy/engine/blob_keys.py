"""The keys that encrypt backup blobs at rest (``engine.blob_crypto``), and where they come from.

A key is 32 random bytes, written as url-safe base64 (``capy blob-key generate``).
Its id is the first 8 bytes of its SHA-256: every encrypted blob names the id of
the key it was written with, so a ring of several keys knows which one opens it,
and the id can be shown (in messages, reprs, logs) where the key never is.

The keys come from ``CAPY_BLOB_KEY`` (comma-separated, newest first) or from the
file ``CAPY_BLOB_KEY_FILE`` names (one key per line, newest first; blank lines
and ``#`` comments are skipped), never both. The newest key encrypts; every
listed key decrypts: that is how a key is rotated. The file is refused unless
it is a regular file owned by this user with no permission for group or others,
and that is checked before it is opened, so a FIFO or a device put in its place
never blocks the process. Messages name the variable or the file, never a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator, Mapping, Sequence

from pulumi_capy.api.errors import ConfigError

__all__ = [
    "ENV_BLOB_KEY",
    "ENV_BLOB_KEY_FILE",
    "KEY_BYTES",
    "KEY_ID_BYTES",
    "BlobKey",
    "BlobKeyRing",
    "generate_blob_key",
    "load_blob_keys",
]

ENV_BLOB_KEY = "CAPY_BLOB_KEY"
ENV_BLOB_KEY_FILE = "CAPY_BLOB_KEY_FILE"
KEY_BYTES = 32
KEY_ID_BYTES = 8
MAX_KEY_FILE_BYTES = 64 * 1024  # thousands of keys; a bigger file is not a key file
HOW_TO_MAKE_A_KEY = "capy blob-key generate"


class BlobKey:
    """One 256-bit key and its id. ``repr`` and ``str`` show the id alone."""

    __slots__ = ("_secret", "key_id")

    def __init__(self, secret: bytes) -> None:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"a blob key is {KEY_BYTES} bytes, not {len(secret)}")
        self._secret = bytes(secret)
        self.key_id = hashlib.sha256(self._secret).digest()[:KEY_ID_BYTES]

    @classmethod
    def from_text(cls, text: str) -> BlobKey:
        """The key written as url-safe base64, padded or not; ``ValueError`` otherwise
        (the message never repeats the text)."""
        stripped = text.strip()
        try:
            secret = base64.b64decode(
                stripped + "=" * (-len(stripped) % 4), altchars=b"-_", validate=True
            )
        except (binascii.Error, ValueError):
            raise ValueError("not url-safe base64") from None
        return cls(secret)

    @property
    def secret(self) -> bytes:
        """The key itself: for the key derivation, nothing else."""
        return self._secret

    @property
    def key_id_hex(self) -> str:
        return self.key_id.hex()

    def to_text(self) -> str:
        return base64.urlsafe_b64encode(self._secret).rstrip(b"=").decode("ascii")

    def __repr__(self) -> str:
        return f"BlobKey(id={self.key_id_hex})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlobKey) and secrets.compare_digest(self._secret, other._secret)

    def __hash__(self) -> int:
        return hash(self.key_id)


class BlobKeyRing:
    """The keys in use, newest first: ``current`` encrypts, ``get`` finds any by id.
    ``source`` says where they came from, for messages (never the keys)."""

    def __init__(self, keys: Sequence[BlobKey], source: str = "the given keys") -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self.source = source
        self._by_id: dict[bytes, BlobKey] = {}
        for key in keys:  # a key listed twice is kept once, where it first appears
            self._by_id.setdefault(key.key_id, key)
        self._keys = list(self._by_id.values())

    @property
    def current(self) -> BlobKey:
        return self._keys[0]

    def get(self, key_id: bytes) -> BlobKey | None:
        return self._by_id.get(bytes(key_id))

    @property
    def key_ids(self) -> list[str]:
        return [key.key_id_hex for key in self._keys]

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[BlobKey]:
        return iter(self._keys)

    def __repr__(self) -> str:
        return f"BlobKeyRing({', '.join(self.key_ids)} from {self.source})"


def generate_blob_key() -> str:
    """A new key, as ``CAPY_BLOB_KEY`` takes it."""
    return BlobKey(secrets.token_bytes(KEY_BYTES)).to_text()


def load_blob_keys(environ: Mapping[str, str]) -> BlobKeyRing | None:
    """The ring of ``CAPY_BLOB_KEY`` or ``CAPY_BLOB_KEY_FILE``; ``None`` when neither is
    set (blobs are then written in the clear). ``ConfigError`` for both set, a malformed
    key, or a key file that is not private."""
    text = environ.get(ENV_BLOB_KEY, "").strip()
    path = environ.get(ENV_BLOB_KEY_FILE, "").strip()
    if text and path:
        raise ConfigError(
            f"both {ENV_BLOB_KEY} and {ENV_BLOB_KEY_FILE} are set: set one of them "
            f"({ENV_BLOB_KEY}: the keys themselves, {ENV_BLOB_KEY_FILE}: a file holding them)"
        )
    if text:
        return _parse(text.split(","), ENV_BLOB_KEY)
    if path:
        source = f"{ENV_BLOB_KEY_FILE} ({path})"
        lines = _read_key_file(path, source).splitlines()
        return _parse([line for line in lines if not line.strip().startswith("#")], source)
    return None


def _parse(parts: Sequence[str], source: str) -> BlobKeyRing:
    texts = [part.strip() for part in parts if part.strip()]
    if not texts:
        raise ConfigError(f"{source} holds no key; make one with `{HOW_TO_MAKE_A_KEY}`")
    keys: list[BlobKey] = []
    for number, text in enumerate(texts, start=1):
        try:
            keys.append(BlobKey.from_text(text))
        except ValueError:
            raise ConfigError(
                f"{source}: key {number} of {len(texts)} is not a blob key ({KEY_BYTES} bytes "
                f"in url-safe base64); make one with `{HOW_TO_MAKE_A_KEY}`"
            ) from None
    return BlobKeyRing(keys, source)


def _refuse_unless_private(status: os.stat_result, source: str) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise ConfigError(
            f"{source} is not a regular file ({_kind(status.st_mode)}); point "
            f"{ENV_BLOB_KEY_FILE} at a file holding the keys"
        )
    if status.st_uid != os.geteuid():
        raise ConfigError(
            f"{source} is owned by uid {status.st_uid}, not by this user (uid {os.geteuid()}); "
            "a key file must be this user's own"
        )
    mode = stat.S_IMODE(status.st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{source} has mode {mode:04o}: others may read the keys; make it private "
            "(chmod 600) and consider the keys in it exposed"
        )


def _read_key_file(path: str, source: str) -> str:
    """The text of the key file, checked before it is opened and again once it is (the
    open does not block even if a FIFO took the file's place in between)."""
    try:
        before = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or type(exc).__name__}") from None
    _refuse_unless_private(before, source)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or type(exc).__name__}") from None
    try:
        opened = os.fstat(descriptor)
        _refuse_unless_private(opened, source)
        if (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise ConfigError(f"{source} was replaced while it was read; try again")
        data = os.read(descriptor, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(descriptor)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_KEY_FILE_BYTES} bytes: not a key file")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise ConfigError(
            f"{source} is not text (url-safe base64 keys, one a line); make a key with "
            f"`{HOW_TO_MAKE_A_KEY}`"
        ) from None


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"
