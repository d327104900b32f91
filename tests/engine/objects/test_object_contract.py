"""The object-store contract, on every backend (``conftest.BACKENDS``)."""

from __future__ import annotations

import os

import pytest

from pulumi_capy.api.errors import CapyError
from pulumi_capy.engine.objects import ObjectMissing, ObjectStore

MIB = 1 << 20


def _committed(objects: ObjectStore, name: str, data: bytes, piece: int = MIB) -> None:
    upload = objects.begin(name)
    for start in range(0, len(data), piece):
        upload.write(data[start : start + piece])
    upload.commit()


def test_an_upload_is_invisible_until_committed_then_whole(objects: ObjectStore) -> None:
    data = os.urandom(9 * MIB + 123)  # more than one part of a multipart upload
    upload = objects.begin("projects/p/backups/bk_1")
    for start in range(0, len(data), 300_000):
        upload.write(data[start : start + 300_000])
        assert objects.size("projects/p/backups/bk_1") is None
        assert list(objects.list("projects/")) == []
    upload.commit()
    assert [info.name for info in objects.list("projects/")] == ["projects/p/backups/bk_1"]
    assert objects.size("projects/p/backups/bk_1") == len(data)
    with objects.open("projects/p/backups/bk_1") as stream:
        assert stream.read() == data


def test_an_aborted_upload_leaves_nothing(objects: ObjectStore) -> None:
    upload = objects.begin("projects/p/backups/bk_1")
    upload.write(os.urandom(6 * MIB))
    upload.abort()
    upload.abort()  # twice is fine
    assert objects.size("projects/p/backups/bk_1") is None
    assert list(objects.list("")) == []


def test_a_commit_replaces_what_was_there(objects: ObjectStore) -> None:
    objects.put_bytes("a/b", b"old")
    _committed(objects, "a/b", b"new bytes")
    assert objects.get_bytes("a/b") == b"new bytes"


def test_empty_and_small_objects_round_trip(objects: ObjectStore) -> None:
    objects.put_bytes("a/empty", b"")
    objects.put_bytes("a/small", b"x" * 100)
    _committed(objects, "a/streamed-empty", b"")
    assert objects.get_bytes("a/empty") == b""
    assert objects.get_bytes("a/streamed-empty") == b""
    assert objects.get_bytes("a/small") == b"x" * 100
    assert objects.size("a/empty") == 0


@pytest.mark.parametrize(
    ("start", "end"), [(0, 1), (0, None), (5 * MIB - 1, 5 * MIB + 1), (7, 7), (11 * MIB, None)]
)
def test_ranges_read_exactly_the_bytes_asked_for(
    objects: ObjectStore, start: int, end: int | None
) -> None:
    data = os.urandom(11 * MIB + 5)
    _committed(objects, "r", data, piece=3 * MIB)
    with objects.open("r", start, end) as stream:
        got = b"".join(iter(lambda: stream.read(100_000), b""))
    assert got == data[start:end]


def test_missing_objects_are_named(objects: ObjectStore) -> None:
    with pytest.raises(ObjectMissing, match="nothing/here"):
        objects.get_bytes("nothing/here")
    with pytest.raises(ObjectMissing, match="nothing/here"):
        objects.open("nothing/here")
    assert objects.size("nothing/here") is None
    objects.delete("nothing/here")  # not an error


def test_a_listing_gives_names_sizes_and_times_under_a_prefix(objects: ObjectStore) -> None:
    for name in ("projects/p1/backups/b", "projects/p1/wal/w", "projects/p10/x", "other/y"):
        objects.put_bytes(name, name.encode())
    listed = list(objects.list("projects/p1/"))
    assert [info.name for info in listed] == ["projects/p1/backups/b", "projects/p1/wal/w"]
    assert [info.size for info in listed] == [21, 17]
    assert all(info.modified > 0 for info in listed)
    assert [info.name for info in objects.list("projects/p1")] == [
        "projects/p1/backups/b",
        "projects/p1/wal/w",
        "projects/p10/x",
    ]
    assert len(list(objects.list(""))) == 4


def test_a_delete_removes_only_its_object(objects: ObjectStore) -> None:
    objects.put_bytes("a/b", b"1")
    objects.put_bytes("a/b.manifest.json", b"2")
    objects.delete("a/b")
    assert objects.size("a/b") is None
    assert objects.get_bytes("a/b.manifest.json") == b"2"


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", "./a", "a/."])
def test_names_that_escape_or_are_empty_are_refused(objects: ObjectStore, name: str) -> None:
    with pytest.raises(CapyError, match="invalid backup key"):
        objects.put_bytes(name, b"x")
    with pytest.raises(CapyError, match="invalid backup key"):
        objects.begin(name)


def test_an_upload_neither_committed_nor_aborted_is_found_and_dropped(
    objects: ObjectStore,
) -> None:
    objects.put_bytes("projects/p/backups/done", b"whole")
    killed = objects.begin("projects/p/backups/bk_1")
    killed.write(os.urandom(6 * MIB))  # past a part: a multipart upload has begun
    found = list(objects.unfinished("projects/"))
    assert [info.name for info in found] == ["projects/p/backups/bk_1"]
    assert found[0].upload
    assert list(objects.unfinished("other/")) == []
    objects.drop_unfinished(found[0])
    objects.drop_unfinished(found[0])  # gone already is fine
    assert list(objects.unfinished("projects/")) == []
    assert [info.name for info in objects.list("")] == ["projects/p/backups/done"]
    killed.abort()  # the writer, had it lived, finds nothing to abort
