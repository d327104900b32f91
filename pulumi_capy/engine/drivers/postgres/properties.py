"""What a PostgreSQL database is besides its contents, and how a restored one gets it.

``pg_dump`` without ``--create`` (what a restore into another database name needs)
carries every object inside a database but none of the database's own properties:
its encoding and locale, owner, ``GRANT … ON DATABASE``, ``ALTER DATABASE … SET``
and ``ALTER ROLE … IN DATABASE … SET``, comment and connection limit. These are read
here (``read``), recorded in a backup's manifest, and given to the databases the
engine creates (``create_statement``, ``apply_statements``), as ``pg_dump --create``
would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["DatabaseProperties", "apply_statements", "create_statement", "read"]

DATABASE_PRIVILEGES = frozenset({"CREATE", "CONNECT", "TEMPORARY"})  # aclexplode's names
# settings whose value is a list, each element quoted on its own (pg_dump's
# variable_is_guc_list_quote): one literal would make the whole list one element
LIST_SETTINGS = frozenset(
    {
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    }
)
# pg_database.datlocprovider
PROVIDERS = {"c": "libc", "i": "icu", "b": "builtin"}


@dataclass(frozen=True)
class Grant:
    grantee: str | None  # None: PUBLIC
    privilege: str  # CREATE, CONNECT or TEMPORARY
    grantable: bool


@dataclass(frozen=True)
class Setting:
    role: str | None  # None: every role (ALTER DATABASE … SET)
    name: str
    value: str


@dataclass(frozen=True)
class DatabaseProperties:
    """A database's own properties, as ``pg_dump --create`` would recreate them."""

    encoding: str
    collate: str
    ctype: str
    owner: str
    provider: str | None = None  # libc, icu, builtin; None before PostgreSQL 15
    locale: str | None = None  # the ICU or builtin locale
    icu_rules: str | None = None
    # None: the built-in default (owner: all; PUBLIC: CONNECT, TEMPORARY)
    grants: list[Grant] | None = None
    settings: list[Setting] = field(default_factory=list)
    comment: str | None = None
    connection_limit: int = -1
    tablespace: str | None = None  # None: the server's default

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatabaseProperties:
        """From a manifest, ignoring what a newer engine may have added."""
        known = {item.name for item in fields(cls)}
        grants = data.get("grants")
        return cls(
            **{
                **{key: value for key, value in data.items() if key in known},
                "grants": None if grants is None else [Grant(**grant) for grant in grants],
                "settings": [Setting(**setting) for setting in data.get("settings") or []],
            }
        )


def read(conn: psycopg.Connection, name: str) -> DatabaseProperties | None:
    """The properties of database ``name`` (None if it does not exist)."""
    row = conn.execute(
        "SELECT to_jsonb(d), pg_encoding_to_char(d.encoding), pg_get_userbyid(d.datdba), "
        "shobj_description(d.oid, 'pg_database'), "
        "(SELECT spcname FROM pg_tablespace WHERE oid = d.dattablespace) "
        "FROM pg_database d WHERE d.datname = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    columns, encoding, owner, comment, tablespace = row
    grants = None
    if columns.get("datacl") is not None:
        grants = [
            Grant(grantee, privilege, grantable)
            for grantee, privilege, grantable in conn.execute(
                "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, "
                "a.privilege_type, a.is_grantable "
                "FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s "
                "ORDER BY 1 NULLS FIRST, 2",
                (name,),
            )
        ]
    settings = [
        Setting(role, *_split_setting(str(item)))
        for role, config in conn.execute(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole) END, "
            "s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            "WHERE d.datname = %s ORDER BY 1 NULLS FIRST",
            (name,),
        )
        for item in config or []
    ]
    provider = columns.get("datlocprovider")
    return DatabaseProperties(
        encoding=str(encoding),
        collate=str(columns["datcollate"]),
        ctype=str(columns["datctype"]),
        owner=str(owner),
        provider=PROVIDERS.get(provider, provider) if provider else None,
        # PostgreSQL 15-16: daticulocale; 17 on: datlocale (ICU or builtin)
        locale=columns.get("datlocale", columns.get("daticulocale")),
        icu_rules=columns.get("daticurules"),
        grants=grants,
        settings=settings,
        comment=comment,
        connection_limit=int(columns.get("datconnlimit", -1)),
        tablespace=None if tablespace == "pg_default" else tablespace,
    )


def create_statement(name: str, properties: DatabaseProperties | None) -> sql.Composed:
    """``CREATE DATABASE`` from ``template0`` (nothing an operator put in ``template1``
    comes along) with ``properties``' encoding and locale."""
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if properties is None:
        return statement
    options = [
        ("ENCODING", properties.encoding),
        ("LC_COLLATE", properties.collate),
        ("LC_CTYPE", properties.ctype),
    ]
    if properties.provider is not None:
        options.append(("LOCALE_PROVIDER", properties.provider))
        if properties.provider == "icu" and properties.locale is not None:
            options.append(("ICU_LOCALE", properties.locale))
        if properties.provider == "builtin" and properties.locale is not None:
            options.append(("BUILTIN_LOCALE", properties.locale))
    if properties.icu_rules is not None:
        options.append(("ICU_RULES", properties.icu_rules))
    for option, value in options:
        statement += sql.SQL(" {} {}").format(sql.SQL(option), sql.Literal(value))
    if properties.tablespace is not None:
        statement += sql.SQL(" TABLESPACE {}").format(sql.Identifier(properties.tablespace))
    return statement


def apply_statements(name: str, properties: DatabaseProperties) -> list[tuple[str, sql.Composed]]:
    """``(what it does, statement)`` that give database ``name`` the owner, settings,
    grants, comment and connection limit of ``properties``."""
    database = sql.Identifier(name)
    steps: list[tuple[str, sql.Composed]] = [
        (
            f"give it the owner {properties.owner}",
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                database, sql.Identifier(properties.owner)
            ),
        ),
        *(_setting_step(database, setting) for setting in properties.settings),
        *_grant_steps(database, properties),
    ]
    if properties.comment is not None:
        steps.append(
            (
                "copy its comment",
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    database, sql.Literal(properties.comment)
                ),
            )
        )
    if properties.connection_limit != -1:
        steps.append(
            (
                "copy its connection limit",
                sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(
                    database, sql.Literal(properties.connection_limit)
                ),
            )
        )
    return steps


def _setting_step(database: sql.Identifier, setting: Setting) -> tuple[str, sql.Composed]:
    """``ALTER DATABASE … SET`` (or ``ALTER ROLE … IN DATABASE … SET``) of one setting."""
    target = (
        sql.SQL("ALTER DATABASE {}").format(database)
        if setting.role is None
        else sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(setting.role), database)
    )
    return (
        f"copy the setting {setting.name}" + (f" of {setting.role}" if setting.role else ""),
        sql.SQL("{} SET {} = {}").format(
            target, sql.Identifier(setting.name), _setting_value(setting)
        ),
    )


def _grant_steps(
    database: sql.Identifier, properties: DatabaseProperties
) -> list[tuple[str, sql.Composed]]:
    """The database-level grants of ``properties`` in place of the default ones; none
    when it recorded the built-in default, as a new database has."""
    if properties.grants is None:
        return []
    steps = [
        (
            "clear the default grants",
            sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC, {}").format(
                database, sql.Identifier(properties.owner)
            ),
        )
    ]
    for grant in properties.grants:
        if grant.privilege not in DATABASE_PRIVILEGES:
            raise ValueError(f"a grant of {grant.privilege!r} on a database")
        steps.append(
            (
                f"grant {grant.privilege} to {grant.grantee or 'PUBLIC'}",
                sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(grant.privilege),  # checked above
                    database,
                    sql.SQL("PUBLIC") if grant.grantee is None else sql.Identifier(grant.grantee),
                    sql.SQL(" WITH GRANT OPTION" if grant.grantable else ""),
                ),
            )
        )
    return steps


def _split_setting(item: str) -> tuple[str, str]:
    name, _, value = item.partition("=")
    return name, value


def _setting_value(setting: Setting) -> sql.Composable:
    """The value as ``pg_dump`` writes it: a list setting element by element (an empty
    list as ``''``)."""
    if setting.name.lower() not in LIST_SETTINGS:
        return sql.Literal(setting.value)
    return sql.SQL(", ").join(sql.Literal(element) for element in _split_list(setting.value))


def _split_list(value: str) -> list[str]:
    """Split a list setting as PostgreSQL stores it (``"$user", public``; ``""`` for an
    empty one): commas outside double quotes separate elements, whitespace outside
    quotes is dropped, a doubled quote inside quotes is one quote."""
    elements: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(value):
        char = value[index]
        if quoted:
            if char == '"' and value[index + 1 : index + 2] == '"':
                current.append('"')
                index += 1
            elif char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == '"':
            quoted = True
        elif char == ",":
            elements.append("".join(current))
            current = []
        elif not char.isspace():
            current.append(char)
        index += 1
    elements.append("".join(current))
    return elements
