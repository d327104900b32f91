"""Looking at a live SQLite database must not drop the locks this process's own
connections hold on it: closing any descriptor of a file drops every POSIX lock the
process holds on that file. Dropped from the database file, another process closing its
connection takes itself for the last one and deletes the log (and the wal-index) under
ours; dropped from the wal-index, a reader's read mark no longer keeps another process
from resetting the log under it (the replicator's read transaction is what keeps a
checkpoint from passing what was shipped)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pulumi_capy.engine.drivers.sqlite import SqliteDriver
from pulumi_capy.engine.pitr.sqlite_wal import WalIndex

# another process's TRUNCATE checkpoint: (busy, log frames, checkpointed frames)
CHECKPOINT = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
print(db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
"""
# another process's connection, used and closed: the last one closing deletes the log
OPEN_AND_CLOSE = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)
db.execute("SELECT count(*) FROM t").fetchone()
db.close()
"""


@pytest.fixture
def reading(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A WAL database with commits in its log, and a connection of this process inside a
    read transaction that uses the log."""
    path = tmp_path / "app.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (x INTEGER)")
    for x in range(20):
        writer.execute("INSERT INTO t VALUES (?)", (x,))
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (20,)
    writer.execute("INSERT INTO t VALUES (20)")  # the reader's snapshot is not the newest
    try:
        yield path, reader
    finally:
        reader.close()
        writer.close()


def _run(script: str, path: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    return done.stdout


def _inspect(path: Path) -> None:
    SqliteDriver().inspect(f"sqlite:///{path}")


def _read_index(path: Path) -> None:
    for _ in range(3):  # again and again, as the replicator does
        assert WalIndex(Path(f"{path}-shm")).read() is not None


@pytest.mark.parametrize("look", [_inspect, _read_index], ids=["inspect", "wal-index"])
def test_looking_at_a_live_database_keeps_this_process_s_read_locks(
    reading: tuple[Path, sqlite3.Connection], look: Callable[[Path], None]
) -> None:
    path, reader = reading
    assert _run(CHECKPOINT, path).strip() == "1"  # the reader's lock holds the log
    look(path)
    _run(OPEN_AND_CLOSE, path)
    assert Path(f"{path}-wal").exists(), "this process's lock on the database was dropped"
    assert _run(CHECKPOINT, path).strip() == "1", "the reader's read mark was dropped"
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (20,)


def test_inspect_still_tells_a_database_from_other_files(tmp_path: Path) -> None:
    from pulumi_capy.api.errors import InvalidInput

    empty = tmp_path / "empty.db"
    empty.touch()
    text = tmp_path / "notes.db"
    text.write_text("not a database, but long enough to have a header's worth of bytes\n")
    for path in (empty, text):
        with pytest.raises(InvalidInput, match="is not a SQLite database"):
            _inspect(path)
    good = tmp_path / "good.db"
    sqlite3.connect(good).execute("CREATE TABLE t (x)").connection.close()
    _inspect(good)
