"""The check of a database replayed to a moment: ``PRAGMA quick_check`` of the whole file,
and ``integrity_check``'s comparison of each index with its table for the tables the log
changed (the others are, page for page, the snapshot's)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from pulumi_capy.engine.jobs import PermanentFailure
from pulumi_capy.engine.pitr.sqlite_recovery import _integrity, _schema


def _root(path: Path, name: str) -> int:
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT rootpage FROM sqlite_schema WHERE name = ?", (name,)).fetchone()
    finally:
        db.close()
    return int(row[0])


def _schema_of(path: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return _schema(db)
    finally:
        db.close()


@pytest.fixture
def stale_index(tmp_path: Path) -> Path:
    """A database whose index ``a_x`` lacks half of table ``a``'s rows (its page an older
    image than the table's): sound b-trees, so ``quick_check`` says ok."""
    path = tmp_path / "replayed.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE a (x INTEGER)")
        db.execute("CREATE INDEX a_x ON a (x)")
        db.execute("CREATE TABLE b (y INTEGER)")
        db.execute("CREATE INDEX b_y ON b (y)")
        db.executemany("INSERT INTO a VALUES (?)", [(x,) for x in range(50)])
        db.executemany("INSERT INTO b VALUES (?)", [(y,) for y in range(50)])
    older = tmp_path / "older.db"
    shutil.copyfile(path, older)
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO a VALUES (?)", [(x,) for x in range(50, 100)])
    page = _root(path, "a_x")
    size = 4096
    with older.open("rb") as source, path.open("r+b") as target:
        source.seek((page - 1) * size)
        target.seek((page - 1) * size)
        target.write(source.read(size))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA integrity_check").fetchall() != [("ok",)]
    return path


def test_a_table_the_log_changed_gets_its_indexes_compared_with_it(stale_index: Path) -> None:
    written = np.array([_root(stale_index, "a_x")], dtype=np.uint32)
    with pytest.raises(PermanentFailure, match=r"integrity_check\(a\).*a_x"):
        _integrity(stale_index, written, _schema_of(stale_index))


def test_a_page_of_a_table_counts_for_its_indexes_too(stale_index: Path) -> None:
    written = np.array([_root(stale_index, "a")], dtype=np.uint32)
    with pytest.raises(PermanentFailure, match=r"integrity_check\(a\)"):
        _integrity(stale_index, written, _schema_of(stale_index))


def test_tables_the_log_did_not_change_are_taken_as_the_snapshot_s(stale_index: Path) -> None:
    written = np.array([_root(stale_index, "b")], dtype=np.uint32)
    done = _integrity(stale_index, written, _schema_of(stale_index))
    assert done == "PRAGMA quick_check, PRAGMA integrity_check of 1 table(s) the log changed"


def test_a_schema_other_than_the_snapshot_s_gets_the_full_check(stale_index: Path) -> None:
    written = np.array([_root(stale_index, "b")], dtype=np.uint32)
    snapshot = _schema_of(stale_index)[:-1]  # a schema one index short
    with pytest.raises(PermanentFailure, match=r"fails PRAGMA integrity_check: .*a_x"):
        _integrity(stale_index, written, snapshot)


def test_damage_anywhere_in_the_file_fails_the_quick_check(tmp_path: Path) -> None:
    path = tmp_path / "replayed.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE a (x TEXT)")
        db.executemany("INSERT INTO a VALUES (?)", [("x" * 100,) for _ in range(200)])
        db.execute("CREATE TABLE b (y INTEGER)")
    schema = _schema_of(path)
    page = _root(path, "a")
    with path.open("r+b") as handle:  # the root's cell count: the b-tree no longer adds up
        handle.seek((page - 1) * 4096 + 3)
        handle.write(b"\xff\xff")
    with pytest.raises(PermanentFailure, match="quick_check"):
        _integrity(path, np.array([_root(path, "b")], dtype=np.uint32), schema)
