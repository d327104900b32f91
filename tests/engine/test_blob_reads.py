"""Reading a blob back into a file: checked always, fsynced only when the file is kept."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pulumi_capy.engine.blobs import ChecksumMismatch, LocalBlobStore
from pulumi_capy.engine.drivers.postgres import PostgresDriver
from pulumi_capy.engine.drivers.sqlite import SqliteDriver


@pytest.fixture
def stored(tmp_path: Path) -> tuple[LocalBlobStore, str, bytes]:
    store = LocalBlobStore(tmp_path / "blobs")
    data = os.urandom(1 << 16) * 8
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    info = store.put_file("bk_1", source, {"format": "test"})
    return store, info.sha256, data


def fsyncs_during(monkeypatch: pytest.MonkeyPatch, action: object) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    assert callable(action)
    action()
    return calls


@pytest.mark.parametrize("durable", [True, False])
def test_a_read_is_checked_and_fsynced_only_when_durable(
    durable: bool,
    stored: tuple[LocalBlobStore, str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, sha256, data = stored
    out = tmp_path / f"out-{durable}"
    calls = fsyncs_during(monkeypatch, lambda: store.get_file("bk_1", sha256, out, durable=durable))
    assert out.read_bytes() == data
    assert bool(calls) is durable


def test_a_throwaway_read_still_refuses_a_damaged_blob(
    stored: tuple[LocalBlobStore, str, bytes], tmp_path: Path
) -> None:
    store, sha256, _ = stored
    path = store.path("bk_1")
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    out = tmp_path / "out"
    with pytest.raises(ChecksumMismatch):
        store.get_file("bk_1", sha256, out, durable=False)
    assert not out.exists()


def test_only_a_driver_that_keeps_the_file_as_its_database_needs_it_durable() -> None:
    # SQLite links a new preview's materialized file into place; pg_restore reads and drops it
    assert SqliteDriver.dump_becomes_database is True
    assert PostgresDriver.dump_becomes_database is False
