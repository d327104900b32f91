"""Loading a dump into a database with ``pg_restore``: whole, with two workers
(``restore_whole``), or with the largest table's rows in two halves loaded by two
``COPY … FROM STDIN`` at once (``restore_split``).

``pg_restore`` loads a table with one COPY, so with two workers the largest table's
load and then its indexes are the restore's critical path while the second worker
idles; the halves keep both busy.
"""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import psycopg

from pulumi_capy.engine.drivers import DriverFailure, Outcome
from pulumi_capy.engine.drivers.postgres.admin import terminate
from pulumi_capy.engine.drivers.postgres.failures import command_failure, is_permanent, mask
from pulumi_capy.engine.drivers.postgres.halves import Halves, WriteHalf
from pulumi_capy.engine.drivers.postgres.libpq import connect, env, run, with_database

__all__ = [
    "RESTORE_JOBS",
    "CopyIn",
    "CopyStatement",
    "Load",
    "copy_in",
    "copy_statement",
    "restore_split",
    "restore_whole",
]

RESTORE_JOBS = 2
# where the COPY statement of the largest table is rendered (its data file empty)
RENDER = ".capy-copy"
COPY_END = re.compile(rb"(?:^|\n)\\\.\n*\Z")  # the "\." line closing pg_dump's COPY data


@dataclass(frozen=True)
class Load:
    """``pg_restore`` (the binary for the server) of ``dump`` into ``database`` on
    ``url``'s server; ``doing`` names the step in messages."""

    pg_restore: str
    dump: Path
    url: str
    database: str
    doing: str

    @property
    def target(self) -> str:
        """The URL of the database loaded into."""
        return with_database(self.url, self.database)

    @property
    def options(self) -> list[str]:
        """Every owner and grant as it was: the engine's role gives each object back."""
        return ["--exit-on-error", "--dbname", self.database]


@dataclass(frozen=True)
class CopyStatement:
    """The session settings and the ``COPY … FROM stdin`` pg_restore would run."""

    prelude: tuple[bytes, ...]
    copy: bytes


class CopyIn:
    """A half of pg_dump's COPY data into a ``COPY … FROM STDIN``, without the ``\\.``
    line with which the dump's data ends (holding back the last bytes until ``close``)."""

    HOLD = 64

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy
        self._tail = b""

    def write(self, data: bytes) -> int:
        if len(data) >= self.HOLD:
            if self._tail:
                self._copy.write(self._tail)
            self._copy.write(data[: -self.HOLD])
            self._tail = data[-self.HOLD :]
        else:
            self._tail += data
            if len(self._tail) > self.HOLD:
                self._copy.write(self._tail[: -self.HOLD])
                self._tail = self._tail[-self.HOLD :]
        return len(data)

    def close(self) -> None:
        tail = self._tail
        end = COPY_END.search(tail)
        if end is not None:  # keep the line end of the last row
            tail = tail[: end.start() + (1 if tail[end.start() : end.start() + 1] == b"\n" else 0)]
        if tail:
            self._copy.write(tail)


def restore_whole(load: Load) -> Outcome:
    """The whole dump in one ``pg_restore`` with ``RESTORE_JOBS`` workers."""
    done = run(
        [load.pg_restore, *load.options, f"--jobs={RESTORE_JOBS}", str(load.dump)],
        load.target,
        load.doing,
    )
    return Outcome(f"{load.doing}: done", done.returncode, done.stdout, done.stderr)


def restore_split(load: Load, halves: Halves) -> Outcome:
    """The restore in three steps, each begun when the one before has ended:

    1. the schema (``pg_restore --section=pre-data``);
    2. the two halves, by two ``COPY … FROM STDIN`` at once (the statement and
       session settings pg_restore itself would use), which keeps both cores busy;
    3. everything else (``--section=data --section=post-data`` with ``-j2``, that
       table's data left out): the other tables' rows, then every index,
       constraint, trigger and grant, as pg_restore orders them; the largest
       table's indexes are built while the other tables load.

    The halves never pass through pg_restore, which (from 15.20 and the other
    branches' releases of the same day) reads only regular files.
    """
    item = halves.name.removesuffix(".dat")  # the data item's dump id
    statement = copy_statement(load, halves.name, item)
    rest = _rest_list(load, item)
    steps = [
        run(
            [load.pg_restore, *load.options, "--section=pre-data", str(load.dump)],
            load.target,
            load.doing,
        )
    ]
    _load_halves(load, halves, statement)
    if halves.rest is not None:
        halves.rest.result()
    steps.append(
        run(
            [
                load.pg_restore,
                *load.options,
                f"--jobs={RESTORE_JOBS}",
                "--section=data",
                "--section=post-data",
                f"--use-list={rest}",
                str(load.dump),
            ],
            load.target,
            load.doing,
        )
    )
    return Outcome(
        f"{load.doing}: done",
        0,
        "".join(step.stdout for step in steps),
        "".join(step.stderr for step in steps),
    )


def _rest_list(load: Load, item: str) -> Path:
    """A ``--use-list`` of every item of the dump but the largest table's data."""
    listed = run(
        [load.pg_restore, "--list", str(load.dump)], load.target, f"{load.doing} (the contents)"
    )
    rest = load.dump / RENDER / "rest.list"
    rest.write_text(
        "".join(
            line
            for line in listed.stdout.splitlines(keepends=True)
            if line.partition(";")[0].strip() != item
        )
    )
    return rest


def _load_halves(load: Load, halves: Halves, statement: CopyStatement) -> None:
    """Both halves at once; when one fails, the other is stopped."""
    with ThreadPoolExecutor(2) as pool:
        loads = [
            pool.submit(copy_in, load.target, statement, write, load.doing)
            for write in halves.write
        ]
        wait(loads, return_when=FIRST_EXCEPTION)
        failed = [done for done in loads if done.done() and done.exception() is not None]
        if failed:
            terminate(load.url, load.database)  # stops the other half
            wait(loads)
            failed[0].result()


def copy_statement(load: Load, name: str, item: str) -> CopyStatement:
    """The session settings and the ``COPY … FROM stdin`` that pg_restore would run
    for data item ``item``, rendered by pg_restore from the dump's table of contents
    (in a directory where that item's data file, ``name``, is empty)."""
    render = load.dump / RENDER
    render.mkdir(mode=0o700, exist_ok=True)
    if not (render / "toc.dat").exists():
        os.link(load.dump / "toc.dat", render / "toc.dat")
    (render / name).write_bytes(b"")
    (render / "only.list").write_text(f"{item}\n")
    done = subprocess.run(
        [
            load.pg_restore,
            "--data-only",
            f"--use-list={render / 'only.list'}",
            "-f",
            "-",
            str(render),
        ],
        env=env(load.target),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        text = subprocess.CompletedProcess(
            done.args, done.returncode, "", done.stderr.decode(errors="replace")
        )
        raise command_failure(
            f"{load.doing} (the largest table's COPY statement)", text, load.target
        )
    prelude: list[bytes] = []
    for line in done.stdout.splitlines():
        if line.startswith(b"COPY "):
            return CopyStatement(tuple(prelude), line.rstrip(b";"))
        if line.startswith((b"SET ", b"SELECT pg_catalog.set_config(")):
            prelude.append(line)
    raise DriverFailure(
        f"{load.doing}: pg_restore gave no COPY statement for the largest table", permanent=True
    )


def copy_in(target: str, statement: CopyStatement, write: WriteHalf, doing: str) -> None:
    """One half of the largest table's rows, loaded with ``COPY … FROM STDIN``."""
    with connect(target) as conn:
        try:
            for setting in statement.prelude:
                conn.execute(setting)
            with conn.cursor() as cursor, cursor.copy(statement.copy) as into:
                stream = CopyIn(into)
                write(cast(IO[bytes], stream))
                stream.close()
        except psycopg.Error as exc:
            text = mask(str(exc).strip(), target)
            message = f"{doing} (the largest table, in two halves): {text.splitlines()[0]}"
            raise DriverFailure(
                message, permanent=is_permanent(text), outcome=Outcome(message, 1, "", text)
            ) from None
