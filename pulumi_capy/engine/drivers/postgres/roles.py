"""The roles a PostgreSQL database's objects refer to, recorded in a backup's manifest
(``needed``), so that a restore that would need a role the server does not have, or
the right to give objects to one, is refused before it starts (``check``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.drivers.postgres.libpq import admin
from pulumi_capy.engine.drivers.postgres.properties import DatabaseProperties

__all__ = ["RoleNeeds", "check", "needed"]

POSTGRES_16 = 160000  # server_version_num of the first release with SET on role grants


@dataclass(frozen=True)
class RoleNeeds:
    """The roles a database's objects refer to: as owners (restoring them needs the
    right to give objects to that role) or in grants, policies and settings."""

    owners: list[str]
    others: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# does the bootstrap superuser (OID 10, pinned: no pg_shdepend rows) own an object that
# pg_dump gives an owner to? Objects of the system's schemas and of extensions aside.
BOOTSTRAP_OWNS = """
WITH user_schemas AS (
    SELECT oid FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema')
    AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp%'
), members AS (
    SELECT classid, objid FROM pg_depend WHERE deptype = 'e'
)
SELECT EXISTS (SELECT 1 FROM pg_namespace n JOIN user_schemas u ON u.oid = n.oid
               WHERE n.nspowner = 10)
    OR EXISTS (SELECT 1 FROM pg_class c JOIN user_schemas u ON u.oid = c.relnamespace
               WHERE c.relowner = 10 AND NOT EXISTS (SELECT 1 FROM members m
               WHERE m.classid = 'pg_class'::regclass AND m.objid = c.oid))
    OR EXISTS (SELECT 1 FROM pg_proc p JOIN user_schemas u ON u.oid = p.pronamespace
               WHERE p.proowner = 10 AND NOT EXISTS (SELECT 1 FROM members m
               WHERE m.classid = 'pg_proc'::regclass AND m.objid = p.oid))
    OR EXISTS (SELECT 1 FROM pg_type t JOIN user_schemas u ON u.oid = t.typnamespace
               WHERE t.typowner = 10 AND NOT EXISTS (SELECT 1 FROM members m
               WHERE m.classid = 'pg_type'::regclass AND m.objid = t.oid))
    OR EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE lomowner = 10)
"""


def needed(conn: psycopg.Connection, properties: DatabaseProperties) -> RoleNeeds:
    """The roles the objects of ``conn``'s database refer to (pg_shdepend: owners,
    grantees, policies, default privileges), and those of its own properties."""
    owners: set[str] = {properties.owner}
    others: set[str] = set()
    for role, kind in conn.execute(
        "SELECT DISTINCT r.rolname, s.deptype FROM pg_shdepend s "
        "JOIN pg_roles r ON r.oid = s.refobjid "
        "WHERE s.refclassid = 'pg_authid'::regclass "
        "AND s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ):
        (owners if kind == "o" else others).add(str(role))
    others.update(grant.grantee for grant in properties.grants or [] if grant.grantee)
    others.update(setting.role for setting in properties.settings if setting.role)
    row = conn.execute(BOOTSTRAP_OWNS).fetchone()
    if row is not None and row[0]:
        bootstrap = conn.execute("SELECT rolname FROM pg_roles WHERE oid = 10").fetchone()
        if bootstrap is not None:
            owners.add(str(bootstrap[0]))
    return RoleNeeds(sorted(owners), sorted(others - owners))


def check(url: str, details: Mapping[str, Any]) -> None:
    """Refuse, before anything is done, a restore that needs a role the server does
    not have, or the right to give objects to a role the engine's role lacks."""
    needs = details.get("roles")
    if not needs:  # the backup recorded no roles: pg_restore will say
        return
    owners, others = list(needs.get("owners") or []), list(needs.get("others") or [])
    with admin(url) as conn:
        # ALTER … OWNER TO needs membership (15), the SET option of it (16 on)
        privilege = "SET" if conn.info.server_version >= POSTGRES_16 else "MEMBER"
        found = {
            str(name): bool(allowed)
            for name, allowed in conn.execute(
                "SELECT rolname, pg_has_role(current_user, oid, %s) "
                "FROM pg_roles WHERE rolname = ANY(%s)",
                (privilege, owners + others),
            )
        }
        row = conn.execute(
            "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    missing = sorted(set(owners + others) - set(found))
    if missing:
        raise DriverFailure(
            "the backup's objects belong or are granted to roles this server does not "
            f"have: {', '.join(missing)}; create them (CREATE ROLE …) and restore again",
            permanent=True,
        )
    engine_role, superuser = row if row else ("", False)
    foreign = sorted(owner for owner in owners if not superuser and not found[owner])
    if foreign:
        raise DriverFailure(
            f"the engine's role {engine_role} cannot give the restored objects back to "
            f"their owners {', '.join(foreign)}: grant it membership "
            f"(GRANT {foreign[0]} TO {engine_role}) or restore as a superuser",
            permanent=True,
        )
