"""What point-in-time recovery asks of the project's PostgreSQL server: that it can be
streamed from (a role with REPLICATION, ``wal_level`` replica or logical), a replication
slot of our own, and binaries of its major version on this machine."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from pulumi_capy.api.errors import FieldError, InvalidInput
from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.drivers.postgres import binaries
from pulumi_capy.engine.drivers.postgres.libpq import connect
from pulumi_capy.engine.pitr.lsn import format_lsn, parse_lsn

__all__ = [
    "ServerFacts",
    "advance_slot",
    "check_streamable",
    "create_slot",
    "drop_receiver_slots",
    "drop_slot",
    "exact_binary",
    "probe",
    "receiver_slot_name",
    "slot_name",
    "slot_restart_lsn",
]

# the binaries a PITR runs: streaming, base backups, and the recovery instance itself
PITR_BINARIES = ("pg_receivewal", "pg_basebackup", "postgres")


@dataclass(frozen=True)
class ServerFacts:
    major: int
    role: str
    can_replicate: bool
    wal_level: str
    superuser: str  # the bootstrap superuser, who owns the cluster


def slot_name(project_id: str) -> str:
    """[ours] The project's physical replication slot."""
    return "capy_" + "".join(c if c.isalnum() else "_" for c in project_id.lower())[:58]


def receiver_slot_name(project_id: str, token: str) -> str:
    """[ours] A slot a streamer's ``pg_receivewal`` reports its progress on: the server
    shows the streaming role how far it has received in ``pg_replication_slots`` (in
    ``pg_stat_replication`` only to roles with pg_read_all_stats). One per streamer run."""
    return f"{slot_name(project_id)}_rx_{token}"


def drop_receiver_slots(conn: psycopg.Connection, project_id: str) -> None:
    """Drop the project's receiver slots that nobody streams on (a killed streamer's)."""
    _drop_receivers(conn, slot_name(project_id))


def drop_own_receiver(
    conn: psycopg.Connection, project_id: str, receiver: str, *, timeout: float = 10.0
) -> None:
    """Drop this streamer's receiver slot once the server has let it go (its walsender
    stays active for a moment after ``pg_receivewal`` exits; an active slot cannot be
    dropped and would stay behind), and any other free receiver slot of the project."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (receiver,)
        ).fetchone()
        if row is None or not row[0]:
            break
        time.sleep(0.05)
    drop_receiver_slots(conn, project_id)


def _drop_receivers(conn: psycopg.Connection, slot: str) -> None:
    prefix = f"{slot}_rx_"
    for row in conn.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE starts_with(slot_name::text, %s) "
        "AND NOT active",
        (prefix,),
    ).fetchall():
        with contextlib.suppress(psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
            conn.execute("SELECT pg_drop_replication_slot(%s)", (row[0],))


def probe(url: str) -> ServerFacts:
    with connect(url) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::int / 10000, current_user, "
            "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user), "
            "current_setting('wal_level'), (SELECT rolname FROM pg_roles WHERE oid = 10)"
        ).fetchone()
    assert row is not None
    return ServerFacts(int(row[0]), str(row[1]), bool(row[2]), str(row[3]), str(row[4]))


def exact_binary(name: str, major: int) -> str:
    """``name`` of exactly PostgreSQL ``major`` (a recovery instance must be of the server's
    own major version): ``DriverFailure`` naming both versions and the package otherwise."""
    found = [item for item in binaries.installations() if (item.bindir / name).is_file()]
    for item in found:
        if item.major == major:
            return str(item.bindir / name)
    have = ", ".join(sorted({item.version for item in found})) or "none"
    raise DriverFailure(
        f"the server runs PostgreSQL {major}, and point-in-time recovery needs {name} of "
        f"PostgreSQL {major} exactly on this machine; found: {have}. Install Debian's "
        f"postgresql-{major} package (or put its bin directory on PATH)",
        permanent=True,
    )


def check_streamable(url: str) -> ServerFacts:
    """The server's facts, or ``InvalidInput`` saying what to change."""
    facts = probe(url)
    problems: list[str] = []
    if not facts.can_replicate:
        problems.append(
            f"role {facts.role} lacks the REPLICATION privilege, which streaming the log "
            f"needs: run ALTER ROLE {facts.role} REPLICATION as a superuser"
        )
    if facts.wal_level not in ("replica", "logical"):
        problems.append(
            f"the server's wal_level is {facts.wal_level}; point-in-time recovery needs "
            "wal_level = replica (the default) and a restart"
        )
    try:
        for name in PITR_BINARIES:
            exact_binary(name, facts.major)
    except DriverFailure as exc:
        problems.append(str(exc))
    if problems:
        raise InvalidInput([FieldError("database_url", problem) for problem in problems])
    return facts


def create_slot(url: str, name: str) -> int:
    """Create the slot (reserving the log from now) unless it exists; its restart LSN."""
    with connect(url) as conn:
        existing = slot_restart_lsn_on(conn, name)
        if existing is not None:
            return existing
        with contextlib.suppress(psycopg.errors.DuplicateObject):
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
        created = slot_restart_lsn_on(conn, name)
    if created is None:
        raise DriverFailure(
            f"replication slot {name} vanished right after it was created", permanent=False
        )
    return created


def slot_restart_lsn_on(conn: psycopg.Connection, name: str) -> int | None:
    row = conn.execute(
        "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (name,)
    ).fetchone()
    if row is None:
        return None
    return parse_lsn(str(row[0])) if row[0] is not None else 0


def slot_restart_lsn(url: str, name: str) -> int | None:
    with connect(url) as conn:
        return slot_restart_lsn_on(conn, name)


def advance_slot(conn: psycopg.Connection, name: str, lsn: int) -> None:
    """Let the server recycle the log before ``lsn`` (it is in our blobs)."""
    conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (name, format_lsn(lsn)))


def drop_slot(url: str, name: str) -> bool:
    """Drop the slot if it exists; False when it did not."""
    with connect(url) as conn:
        _drop_receivers(conn, name)  # the project's receiver slots go with it
        if slot_restart_lsn_on(conn, name) is None:
            return False
        conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    return True


def bindir_of(name: str, major: int) -> Path:
    return Path(exact_binary(name, major)).parent


def drop_slot_when_free(url: str, name: str, *, tries: int = 20) -> bool:
    """Drop the slot, waiting out a streamer that is advancing it right now."""
    for attempt in range(tries):
        try:
            return drop_slot(url, name)
        except psycopg.errors.ObjectInUse:
            if attempt == tries - 1:
                raise
            time.sleep(0.25)
    return False
