"""The engine's secret keys: what keeps the passwords of projects' URLs out of ``engine.db``.

A project's ``database_url`` is stored sealed: ``capy-sealed:v1:`` and a Fernet
token (AES-128-CBC and HMAC-SHA256, from the ``cryptography`` library) of the
whole URL. The keys come from ``CAPY_SECRET_KEY`` when it is set (servers: the
key then lives with the deployment's other secrets, not beside the data), else
from ``<engine dir>/secret.key`` (0600), which is created, with one new key, the
first time a URL is sealed and no key exists.

Either holds one or more keys, separated by commas or line breaks, newest first:
the newest seals, every one opens (``MultiFernet``). That is how a key is
rotated: put a new key in front, and the store re-seals every URL with it the
next time it is opened; then the old key can go.

A value without the prefix is a URL of a store written before URLs were sealed;
it opens as itself (and the store seals it on open). Messages name the variable
or the file the keys came from, never a key.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from pulumi_capy.api.errors import ConfigError
from pulumi_capy.engine.blobs import fsync_directory
from pulumi_capy.engine.private import private_directory

__all__ = ["ENV_SECRET_KEY", "KEY_FILE_NAME", "SEALED_PREFIX", "SecretKeys", "is_sealed"]

ENV_SECRET_KEY = "CAPY_SECRET_KEY"  # noqa: S105 - the name of the variable, not a key
KEY_FILE_NAME = "secret.key"
SEALED_PREFIX = "capy-sealed:v1:"
OPENED_KEPT = 4096  # the plaintexts a process keeps of the values it opened
HOW_TO_MAKE_A_KEY = (
    'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
)


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


class _Ring:
    """The keys, loaded: the newest alone (does a value need re-sealing?) and all of them."""

    def __init__(self, keys: list[Fernet]) -> None:
        self.newest = keys[0]
        self.all = MultiFernet(keys)
        self.count = len(keys)


class SecretKeys:
    """The keys of one engine directory (or of ``CAPY_SECRET_KEY``), loaded on first need.
    Thread-safe."""

    def __init__(self, key_file: Path, environ: Mapping[str, str] | None = None) -> None:
        self.key_file = key_file
        self._environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._ring: _Ring | None = None
        # sealed value -> plaintext: a token is never reused, and opening one costs ~20 us,
        # which a listing of many projects (the server's hot path) would pay per row
        self._opened: dict[str, str] = {}

    @classmethod
    def beside(cls, store: Path, environ: Mapping[str, str] | None = None) -> SecretKeys:
        """The keys of the store at ``store``: ``secret.key`` in its directory."""
        return cls(store.parent / KEY_FILE_NAME, environ)

    @property
    def from_environment(self) -> bool:
        return bool(self._environ.get(ENV_SECRET_KEY, "").strip())

    @property
    def source(self) -> str:
        """Where the keys come from, for messages."""
        if self.from_environment:
            return ENV_SECRET_KEY
        return f"the key file {self.key_file}"

    def __repr__(self) -> str:
        return f"SecretKeys(from {self.source})"

    # ------------------------------------------------------------ sealing

    def seal(self, plaintext: str, *, may_create: bool) -> str:
        """``plaintext`` sealed with the newest key. With no key anywhere, ``may_create``
        makes the key file (the caller says whether values sealed before would then be
        lost: they would need the key that is missing)."""
        ring = self._load(create=may_create)
        if ring is None:
            raise ConfigError(
                f"the engine's URLs are encrypted, but no key was found: set {ENV_SECRET_KEY} "
                f"to the engine's key, or put back the key file {self.key_file}"
            )
        return SEALED_PREFIX + ring.all.encrypt(plaintext.encode()).decode("ascii")

    def unseal(self, stored: str, what: str) -> str:
        """The plaintext of ``stored`` (``what`` names it in errors); a value never sealed is
        its own plaintext."""
        if not is_sealed(stored):
            return stored
        known = self._opened.get(stored)
        if known is not None:
            return known
        ring = self._load(create=False)
        if ring is None:
            raise ConfigError(
                f"{what} is encrypted, but no key was found to decrypt it: set "
                f"{ENV_SECRET_KEY} to the engine's key, or put back the key file {self.key_file}"
            )
        try:
            plaintext = ring.all.decrypt(stored.removeprefix(SEALED_PREFIX).encode("ascii"))
            opened = plaintext.decode()
        except (InvalidToken, UnicodeError):
            raise ConfigError(
                f"{what} cannot be decrypted with the {ring.count} key(s) of {self.source}: "
                f"the key it was encrypted with is not among them; set {ENV_SECRET_KEY} to "
                "that key (several keys: comma-separated, newest first)"
            ) from None
        with self._lock:
            if len(self._opened) >= OPENED_KEPT:
                self._opened.clear()
            self._opened[stored] = opened
        return opened

    def needs_resealing(self, stored: str) -> bool:
        """Whether ``stored`` is plaintext, or sealed by a key other than the newest. A sealed
        value no key opens is left alone here (reading it says why it cannot be opened)."""
        if not is_sealed(stored):
            return True
        ring = self._load(create=False)
        if ring is None or ring.count == 1:
            return False
        token = stored.removeprefix(SEALED_PREFIX).encode("ascii")
        try:
            ring.newest.decrypt(token)
        except InvalidToken:
            try:
                ring.all.decrypt(token)
            except InvalidToken:
                return False
            return True
        return False

    # ------------------------------------------------------------ keys

    def _load(self, *, create: bool) -> _Ring | None:
        with self._lock:
            if self._ring is None:
                self._ring = self._read(create=create)
            return self._ring

    def _read(self, *, create: bool) -> _Ring | None:
        text = self._environ.get(ENV_SECRET_KEY, "").strip()
        if text:
            return _parse(text, ENV_SECRET_KEY)
        try:
            text = self.key_file.read_text(encoding="ascii")
        except FileNotFoundError:
            if not create:
                return None
            text = self._create()
        except (OSError, UnicodeError) as exc:
            raise ConfigError(
                f"cannot read the key file {self.key_file} ({type(exc).__name__}); "
                f"fix its owner or mode (chmod 600), or set {ENV_SECRET_KEY}"
            ) from None
        return _parse(text, f"the key file {self.key_file}")

    def _create(self) -> str:
        """A new key in the key file (0600), written whole under a temporary name and linked
        into place: if another process made one first, its key is the one used."""
        directory = private_directory(self.key_file.parent)
        key = Fernet.generate_key().decode("ascii")
        descriptor, scratch = tempfile.mkstemp(prefix=f".{KEY_FILE_NAME}.", dir=directory)
        try:
            try:
                os.write(descriptor, f"{key}\n".encode("ascii"))
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            try:
                os.link(scratch, self.key_file)
            except FileExistsError:
                return self.key_file.read_text(encoding="ascii")
            fsync_directory(directory)
        finally:
            os.unlink(scratch)
        return key


def _parse(text: str, source: str) -> _Ring:
    """The keys of ``text`` (comma- or line-separated, newest first)."""
    parts = [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"{source} holds no key; make one with: {HOW_TO_MAKE_A_KEY}")
    keys: list[Fernet] = []
    for number, part in enumerate(parts, start=1):
        try:
            keys.append(Fernet(part))
        except (ValueError, TypeError):
            raise ConfigError(
                f"{source}: key {number} of {len(parts)} is not a Fernet key (32 url-safe "
                f"base64-encoded bytes); make one with: {HOW_TO_MAKE_A_KEY}"
            ) from None
    return _Ring(keys)
