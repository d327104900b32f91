"""A dump loaded into a database: always into a scratch database first, created from
``template0`` with the right encoding and locale, keeping every owner and grant; only
when all of that succeeded does the scratch database take the target's name (a new
database: renamed; over an existing one: swapped in, see ``admin.swap``). A failure at
any step leaves the target as it was. Also the verification of a dump (``check``):
restored into a throwaway database, its row counts compared."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from pulumi_capy.engine.blobs import BlobParts
from pulumi_capy.engine.drivers import DriverFailure, Materialize, Outcome
from pulumi_capy.engine.drivers.postgres import admin, halves, loading, roles
from pulumi_capy.engine.drivers.postgres.binaries import binary
from pulumi_capy.engine.drivers.postgres.dump import row_counts
from pulumi_capy.engine.drivers.postgres.halves import Halves
from pulumi_capy.engine.drivers.postgres.libpq import connect, database_of
from pulumi_capy.engine.drivers.postgres.properties import DatabaseProperties

__all__ = ["check", "restore_into", "restore_new", "restore_over"]

# puts a loaded scratch database in the target's place: (server URL, scratch, target)
PutInPlace = Callable[[str, str, str], None]


def recorded(details: Mapping[str, Any]) -> DatabaseProperties | None:
    """The source database's properties as the backup recorded them (None when it
    recorded none)."""
    properties = details.get("database")
    return DatabaseProperties.from_json(dict(properties)) if properties else None


def restore_into(
    dump: Path, url: str, database: str, doing: str, largest: Halves | None = None
) -> Outcome:
    """``pg_restore`` of ``dump`` into ``database`` on ``url``'s server; the largest
    table in halves when they were given or an unpacking wrote them."""
    load = loading.Load(binary("pg_restore", admin.server_major(url)), dump, url, database, doing)
    largest = largest or halves.unpacked(dump)
    if largest is not None:
        return loading.restore_split(load, largest)
    return loading.restore_whole(load)


def check(dump: Path, url: str, details: Mapping[str, Any]) -> Outcome:
    """Restore ``dump`` into a throwaway database on ``url``'s server, compare its row
    counts with the ones ``details`` recorded, and drop it."""
    roles.check(url, details)
    # named after the dump file, which is named after the job: a retry drops it first,
    # on whichever host (engine directory) it runs
    throwaway = admin.scratch_name(database_of(url), "verify", dump.name)
    admin.drop(url, throwaway)
    admin.create(url, throwaway, recorded(details))
    try:
        restore_into(dump, url, throwaway, "restore into a throwaway database")
        with connect(url, throwaway) as conn:
            counts = row_counts(conn)
    finally:
        admin.drop(url, throwaway)
    expected = details.get("row_counts")
    if expected is not None and dict(expected) != counts:
        differing = sorted(
            name for name in set(expected) | set(counts) if expected.get(name) != counts.get(name)
        )
        raise DriverFailure(
            f"row counts differ after restore in {', '.join(differing[:5])}", permanent=True
        )
    return Outcome(f"restored and counted {len(counts)} tables ({sum(counts.values())} rows)")


def restore_new(
    materialize: Materialize,
    target_url: str,
    *,
    before_commit: Callable[[], None],
    workdir: Path | None,
    parts: BlobParts | None,
    details: Mapping[str, Any],
) -> Outcome:
    """Into a database that must not exist yet, which gets the source database's
    properties from ``details`` (its encoding and locale, owner, grants, settings)."""
    target = database_of(target_url)
    roles.check(target_url, details)
    if admin.properties(target_url, target) is not None:
        raise DriverFailure(f"database {target} exists already; not overwriting it", permanent=True)
    restored = _through_scratch(
        materialize,
        target_url,
        recorded(details),
        admin.rename,
        before_commit=before_commit,
        workdir=workdir,
        parts=parts,
    )
    summary = f"restored into {target} (new database)"
    return Outcome(summary, 0, restored.stdout or summary, restored.stderr)


def restore_over(
    materialize: Materialize,
    target_url: str,
    *,
    before_commit: Callable[[], None],
    workdir: Path | None,
    parts: BlobParts | None,
    details: Mapping[str, Any],
) -> Outcome:
    """Over an existing database, which keeps its own properties."""
    target = database_of(target_url)
    roles.check(target_url, details)
    current = admin.properties(target_url, target)
    if current is None:
        raise DriverFailure(f"the target database {target} is missing", permanent=True)
    restored = _through_scratch(
        materialize,
        target_url,
        current,
        admin.swap,
        before_commit=before_commit,
        workdir=workdir,
        parts=parts,
    )
    summary = f"restored into {target} (swapped in)"
    return Outcome(summary, 0, restored.stdout or summary, restored.stderr)


def _through_scratch(
    materialize: Materialize,
    target_url: str,
    properties: DatabaseProperties | None,
    put_in_place: PutInPlace,
    *,
    before_commit: Callable[[], None],
    workdir: Path | None,
    parts: BlobParts | None,
) -> Outcome:
    """Load a scratch database given ``properties``, then (after ``before_commit``)
    ``put_in_place``; the scratch database is dropped on any failure."""
    target = database_of(target_url)
    scratch = admin.scratch_name(target, "new")
    admin.drop(target_url, scratch)  # what a killed attempt left
    admin.drop(target_url, admin.scratch_name(target, "old"))
    with tempfile.TemporaryDirectory(prefix="capy-restore-", dir=workdir) as scratch_dir:
        dump = Path(scratch_dir) / "restore"  # pg_dump's directory (or an archive file)
        try:
            restored = _load_scratch(
                materialize, parts, dump, url=target_url, scratch=scratch, properties=properties
            )
            if properties is not None:
                admin.give_properties(target_url, scratch, properties)
            before_commit()
            put_in_place(target_url, scratch, target)
        except BaseException:
            admin.drop(target_url, scratch)
            raise
    return restored


def _load_scratch(
    materialize: Materialize,
    parts: BlobParts | None,
    dump: Path,
    *,
    url: str,
    scratch: str,
    properties: DatabaseProperties | None,
) -> Outcome:
    """Create ``scratch`` while the dump is written at ``dump``; then, the other files
    written while it loads, load it."""
    with ThreadPoolExecutor(2) as pool:
        created = pool.submit(admin.create, url, scratch, properties)
        try:
            largest = _write_dump(materialize, parts, dump, pool)
        except BaseException:
            wait([created])  # then dropped by the caller; the unpacking's error is the one
            raise
        created.result()
        if properties is not None:  # may the engine? Known before the load
            admin.try_properties(url, scratch, properties)
        return restore_into(dump, url, scratch, f"pg_restore into {scratch}", largest)


def _write_dump(
    materialize: Materialize, parts: BlobParts | None, dump: Path, pool: ThreadPoolExecutor
) -> Halves | None:
    """The dump at ``dump``; from a blob in frames with a cut, its largest table's halves
    stream from the blob instead (returned), the other files written in ``pool``."""
    if parts is not None and (parts.details.get("tar") or {}).get("cut"):
        return halves.from_blob(parts, dump, pool)
    materialize(dump)
    return None
