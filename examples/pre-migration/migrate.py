"""Apply one SQL migration file to a SQLite database, in one transaction."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing
from pathlib import Path


def main(database: str, migration: str) -> None:
    script = Path(migration).read_text()
    with closing(sqlite3.connect(database, isolation_level=None)) as db:
        db.executescript(f"BEGIN;\n{script}\nCOMMIT;")
    print(f"applied {migration} to {database}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
