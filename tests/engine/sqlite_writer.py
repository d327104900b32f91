"""An application writing to a SQLite database in WAL mode, in a process of its own: one
row per transaction, holding the time taken right before it committed; the time each
commit returned goes to a JSON file when it stops (SIGTERM or ``--seconds``).

Usage: python sqlite_writer.py DB OUT [--seconds S] [--every MS] [--autocheckpoint N]
       [--truncate-every S] [--pad BYTES]

``--truncate-every`` runs the application's own ``PRAGMA wal_checkpoint(TRUNCATE)`` from a
second connection of its own, as an application that manages its log itself would.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from types import FrameType


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=3600.0)
    parser.add_argument("--every", type=float, default=3.0, help="milliseconds between commits")
    parser.add_argument("--autocheckpoint", type=int, default=1000)
    parser.add_argument("--truncate-every", type=float, default=0.0)
    parser.add_argument("--pad", type=int, default=200)
    args = parser.parse_args()

    stop = threading.Event()

    def stopping(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    db = sqlite3.connect(args.db, isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(f"PRAGMA wal_autocheckpoint = {args.autocheckpoint}")
    db.execute(
        "CREATE TABLE IF NOT EXISTS ticks (id INTEGER PRIMARY KEY, before REAL NOT NULL, pad BLOB)"
    )
    truncated = {"done": 0, "busy": 0, "longest": 0.0}

    def truncating() -> None:
        other = sqlite3.connect(args.db, isolation_level=None, timeout=30)
        while not stop.wait(args.truncate_every):
            started = time.monotonic()
            busy = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            took = time.monotonic() - started
            truncated["busy" if busy else "done"] += 1
            truncated["longest"] = max(truncated["longest"], took)
            if took > 1.0:
                print(f"a TRUNCATE checkpoint took {took:.1f} s (busy={busy})", file=sys.stderr)
        other.close()

    if args.truncate_every:
        threading.Thread(target=truncating, daemon=True).start()
    commits: list[list[float]] = []  # [id, before, returned]
    deadline = time.monotonic() + args.seconds
    pad = b"x" * args.pad
    while not stop.is_set() and time.monotonic() < deadline:
        before = time.time()
        # BEGIN IMMEDIATE, as an application that checkpoints from another connection must:
        # a deferred write whose snapshot a TRUNCATE checkpoint reset meanwhile gets
        # SQLITE_BUSY at once, without waiting (SQLite's busy handler is not called)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            waited = time.time() - before
            raise SystemExit(f"BEGIN IMMEDIATE failed after {waited:.1f} s: {error}") from error
        cursor = db.execute("INSERT INTO ticks (before, pad) VALUES (?, ?)", (before, pad))
        db.execute("COMMIT")
        commits.append([float(cursor.lastrowid or 0), before, time.time()])
        stop.wait(args.every / 1000)
    stop.set()
    db.close()
    args.out.write_text(json.dumps({"commits": commits, "truncated": truncated}))


if __name__ == "__main__":
    main()
