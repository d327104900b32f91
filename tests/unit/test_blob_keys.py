"""Blob keys: ids that can be shown where keys never are, and the two places keys come
from (``CAPY_BLOB_KEY``, a private ``CAPY_BLOB_KEY_FILE``), refused clearly otherwise."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path

import pytest

from pulumi_capy.api.errors import ConfigError
from pulumi_capy.engine.blob_keys import (
    BlobKey,
    BlobKeyRing,
    generate_blob_key,
    load_blob_keys,
)

FIRST, SECOND = generate_blob_key(), generate_blob_key()


def _private_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="ascii")
    path.chmod(mode)
    return path


def _refused(environ: dict[str, str], *expected: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_blob_keys(environ)
    message = str(caught.value)
    for text in expected:
        assert text in message, message
    for key in (FIRST, SECOND):  # no key, whole or in part, in any message
        assert key[:12] not in message
    return message


# ---------------------------------------------------------------- keys and rings


def test_a_generated_key_is_32_random_bytes_in_url_safe_base64() -> None:
    keys = {generate_blob_key() for _ in range(50)}
    assert len(keys) == 50
    for text in keys:
        assert len(text) == 43
        assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert len(base64.urlsafe_b64decode(text + "=")) == 32
        assert BlobKey.from_text(text).to_text() == text


def test_the_key_id_is_the_start_of_its_sha256() -> None:
    key = BlobKey(bytes(range(32)))
    assert key.key_id == hashlib.sha256(bytes(range(32))).digest()[:8]
    assert key.key_id_hex == key.key_id.hex()


def test_repr_shows_the_id_never_the_key() -> None:
    key = BlobKey.from_text(FIRST)
    ring = BlobKeyRing([key], source="CAPY_BLOB_KEY")
    for shown in (repr(key), str(key), repr(ring), str(ring), repr([key]), f"{key!r}"):
        assert FIRST not in shown
        assert FIRST[:8] not in shown
        assert key.secret.hex()[:16] not in shown
        assert repr(key.secret) not in shown
    assert repr(key) == f"BlobKey(id={key.key_id_hex})"
    assert key.key_id_hex in repr(ring)
    assert "CAPY_BLOB_KEY" in repr(ring)


@pytest.mark.parametrize("text", ["", "abc", "not base64!", "A" * 44 + "==", "A" * 22])
def test_a_malformed_key_is_a_value_error_without_the_text(text: str) -> None:
    with pytest.raises(ValueError, match=r"base64|bytes") as caught:
        BlobKey.from_text(text)
    if text:
        assert text not in str(caught.value)


def test_padded_and_unpadded_keys_are_the_same_key() -> None:
    padded = base64.urlsafe_b64encode(BlobKey.from_text(FIRST).secret).decode()
    assert padded.endswith("=")
    assert BlobKey.from_text(padded) == BlobKey.from_text(FIRST)


def test_a_ring_is_newest_first_and_finds_keys_by_id() -> None:
    first, second = BlobKey.from_text(FIRST), BlobKey.from_text(SECOND)
    ring = BlobKeyRing([first, second, first])
    assert ring.current == first
    assert list(ring) == [first, second]  # a key listed twice is kept once
    assert len(ring) == 2
    assert ring.get(second.key_id) == second
    assert ring.get(b"\x00" * 8) is None
    assert ring.key_ids == [first.key_id_hex, second.key_id_hex]
    with pytest.raises(ValueError, match="at least one key"):
        BlobKeyRing([])


# ---------------------------------------------------------------- CAPY_BLOB_KEY


def test_no_variable_means_no_encryption() -> None:
    assert load_blob_keys({}) is None
    assert load_blob_keys({"CAPY_BLOB_KEY": "  ", "CAPY_BLOB_KEY_FILE": ""}) is None


def test_keys_from_the_variable_newest_first() -> None:
    ring = load_blob_keys({"CAPY_BLOB_KEY": f" {FIRST} , {SECOND},"})
    assert ring is not None
    assert ring.key_ids == [
        BlobKey.from_text(FIRST).key_id_hex,
        BlobKey.from_text(SECOND).key_id_hex,
    ]
    assert ring.current == BlobKey.from_text(FIRST)
    assert ring.source == "CAPY_BLOB_KEY"


def test_a_malformed_key_in_the_variable_is_named_by_its_place() -> None:
    bad = FIRST[:-4]
    _refused({"CAPY_BLOB_KEY": f"{SECOND},{bad}"}, "CAPY_BLOB_KEY", "key 2 of 2", "generate")


def test_a_key_of_the_wrong_length_is_refused() -> None:
    short = base64.urlsafe_b64encode(os.urandom(16)).decode()
    _refused({"CAPY_BLOB_KEY": short}, "CAPY_BLOB_KEY", "key 1 of 1", "32 bytes")


def test_commas_alone_hold_no_key() -> None:
    _refused({"CAPY_BLOB_KEY": " , ,"}, "CAPY_BLOB_KEY holds no key")


def test_both_variables_are_refused(tmp_path: Path) -> None:
    path = _private_file(tmp_path / "keys", FIRST)
    _refused(
        {"CAPY_BLOB_KEY": SECOND, "CAPY_BLOB_KEY_FILE": str(path)},
        "CAPY_BLOB_KEY",
        "CAPY_BLOB_KEY_FILE",
        "set one of them",
    )


# ---------------------------------------------------------------- CAPY_BLOB_KEY_FILE


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_keys_from_a_private_file_one_a_line(tmp_path: Path, mode: int) -> None:
    path = _private_file(tmp_path / "keys", f"# rotated 2026-12\n{SECOND}\n\n  {FIRST}  \n", mode)
    ring = load_blob_keys({"CAPY_BLOB_KEY_FILE": str(path)})
    assert ring is not None
    assert list(ring) == [BlobKey.from_text(SECOND), BlobKey.from_text(FIRST)]
    assert str(path) in ring.source
    assert "CAPY_BLOB_KEY_FILE" in ring.source


def test_a_symbolic_link_to_a_private_file_is_followed(tmp_path: Path) -> None:
    """As secret mounts are (Kubernetes: ``keys -> ..data/keys``)."""
    target = _private_file(tmp_path / "real", FIRST)
    (tmp_path / "link").symlink_to(target)
    ring = load_blob_keys({"CAPY_BLOB_KEY_FILE": str(tmp_path / "link")})
    assert ring is not None
    assert ring.current == BlobKey.from_text(FIRST)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o610])
def test_a_file_others_may_use_is_refused(tmp_path: Path, mode: int) -> None:
    path = _private_file(tmp_path / "keys", FIRST, mode)
    message = _refused({"CAPY_BLOB_KEY_FILE": str(path)}, str(path), f"{mode:04o}", "chmod 600")
    assert "CAPY_BLOB_KEY_FILE" in message


def test_a_file_owned_by_another_user_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _private_file(tmp_path / "keys", FIRST)
    someone_else = path.stat().st_uid + 1
    monkeypatch.setattr(os, "geteuid", lambda: someone_else)
    _refused({"CAPY_BLOB_KEY_FILE": str(path)}, "owned by uid", f"uid {someone_else}")


def _loads_within(environ: dict[str, str], seconds: float) -> BaseException | None:
    """What ``load_blob_keys`` raised, from a thread that must end in time (a daemon: a
    blocked open cannot hang the test session)."""
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_blob_keys(environ)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "load_blob_keys blocked"
    return outcome[0]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "keys"
    os.mkfifo(fifo, 0o600)
    error = _loads_within({"CAPY_BLOB_KEY_FILE": str(fifo)}, 5)
    assert isinstance(error, ConfigError)
    assert "not a regular file (a FIFO)" in str(error)
    (tmp_path / "link").symlink_to(fifo)
    error = _loads_within({"CAPY_BLOB_KEY_FILE": str(tmp_path / "link")}, 5)
    assert isinstance(error, ConfigError)
    assert "a FIFO" in str(error)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    _refused({"CAPY_BLOB_KEY_FILE": str(directory)}, "not a regular file (a directory)")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    _refused(
        {"CAPY_BLOB_KEY_FILE": str(tmp_path / "nope")},
        "cannot read CAPY_BLOB_KEY_FILE",
        "nope",
        "No such file",
    )


def test_a_file_without_keys_or_with_a_bad_one_is_refused(tmp_path: Path) -> None:
    empty = _private_file(tmp_path / "empty", "# nothing yet\n\n")
    _refused({"CAPY_BLOB_KEY_FILE": str(empty)}, "holds no key", "capy blob-key generate")
    bad = _private_file(tmp_path / "bad", f"{FIRST}\n{SECOND[:20]}\n")
    _refused({"CAPY_BLOB_KEY_FILE": str(bad)}, str(bad), "key 2 of 2")


def test_a_binary_or_huge_file_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe" + os.urandom(40))
    binary.chmod(0o600)
    _refused({"CAPY_BLOB_KEY_FILE": str(binary)}, "is not text")
    huge = _private_file(tmp_path / "huge", f"{FIRST}\n" * 2000)
    _refused({"CAPY_BLOB_KEY_FILE": str(huge)}, "not a key file")
