"""A harness for the fidelity of PostgreSQL restores: databases that use what a restore
can lose (owners, grants, row security, default privileges, locales, database-level
settings…), a fingerprint of everything a restore must bring back, and the control copy
the plain tools make (``pg_dump --create | psql``).

- ``build_rich(pg)``: four non-superuser roles and a database owned by one of them,
  created from ``template0``, using (on the session's PostgreSQL 15) objects owned by
  non-superusers, table/column/sequence/function/schema/type/foreign-server/large-object
  grants (one ``WITH GRANT OPTION`` and one re-granted by its grantee), default
  privileges (global and ``IN SCHEMA``), a changed grant on a system function and on an
  extension's function, row security (``ENABLE`` and ``FORCE``, permissive and
  restrictive policies, per role, ``USING`` and ``WITH CHECK``), a ``security_barrier``
  view owned by a non-superuser and a ``security_invoker`` view, a partitioned table
  (with a default partition owned by another role), table inheritance, a stale
  materialized view, large objects, a domain, an enum, a range type, an ICU collation,
  comments, extensions (citext, hstore, postgres_fdw with a server, a user mapping and
  a foreign table), a publication, an extended statistics object, a text search
  configuration, an operator, a disabled trigger and an ``ENABLE ALWAYS`` one, columns
  with non-default collations, ``ALTER DATABASE … SET``, ``ALTER ROLE … IN DATABASE …
  SET``, database grants, a connection limit, identity/serial/cycling sequences, and a
  few thousand rows of non-ASCII text.
- ``build_localised(pg, kind)``: a small database with another encoding or locale
  (``LATIN1``; ``C.UTF-8``; ``C``; ICU ``tr-TR``) and ``locale_probe(url)``, what that
  locale answers (``upper('é')``, ``upper('i')``, the order of words…).
- ``fingerprint(url)``: everything above, computed by the server (see its docstring),
  plus ``pg_dump --create --schema-only``'s text; ``differences(a, b)`` lists what
  differs, readably.
- ``control(pg, source)``: the control copy, made as ``pg_dump --create | psql`` makes it.
- ``rls_answers(url, roles)``: what row security and the grants answer to each role.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, LiteralString
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from tests.pg import installations, version_of
from tests.postgres.conftest import PgNamespace, checksums, connect

__all__ = [
    "DATABASE_LEVEL",
    "LOCALISED",
    "Localised",
    "Rich",
    "build_localised",
    "build_rich",
    "control",
    "differences",
    "fingerprint",
    "has_icu",
    "has_locale",
    "locale_probe",
    "report",
    "rls_answers",
    "schema_text",
    "without_database_level",
]

# ---------------------------------------------------------------- the plain tools


def _binary(name: str, url: str) -> str:
    """``name`` of the installation whose release the server at ``url`` runs (the plain
    tools of that release, found independently of the engine's own choice)."""
    with connect(url) as db:
        major = int(db.info.server_version) // 10000
    for binaries in installations().values():
        if binaries is not None and version_of(binaries).split(".")[0] == str(major):
            return str(binaries / name)
    raise RuntimeError(f"no PostgreSQL {major} installation has {name}")


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and an environment with the password in
    ``PGPASSWORD``: never on a command line."""
    parts = urlsplit(url)
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("PG"):  # the caller's libpq settings must not leak in
            del env[name]
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), env


def _run(command: list[str], url: str, doing: str) -> subprocess.CompletedProcess[str]:
    bare, env = _libpq(url)
    done = subprocess.run(
        [*command, bare], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"{doing} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _database(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


# lines of pg_dump's plain output that differ from run to run, not from database to database
_VOLATILE = re.compile(
    r"^(-- Dumped from database version"  # the server's version: the same server anyway
    r"|-- Dumped by pg_dump version"  # the client's version: idem
    r"|\\restrict |\\unrestrict )"  # 15.14+: a random key per run (CVE-2025-8714)
)


def schema_text(url: str) -> str:
    """``pg_dump --create --schema-only``: the database's own definition (its owner,
    encoding, locale, grants, settings, comment, ``ALTER ROLE … IN DATABASE``) and every
    object's, owners and grants included, in UTF-8 whatever the database's encoding.
    The database's name is replaced by ``<database>``; the lines that change from run to
    run are dropped (``_VOLATILE``); runs of ``GRANT`` lines are sorted
    (``_sorted_grants``).
    Large objects are not in a schema-only dump: ``fingerprint`` has them."""
    name = _database(url)
    text = _run(
        [_binary("pg_dump", url), "--create", "--schema-only", "--encoding=UTF8", "--dbname"],
        url,
        f"pg_dump --schema-only of {name}",
    ).stdout
    lines = _sorted_grants([line for line in text.splitlines() if not _VOLATILE.match(line)])
    quoted = '"' + name.replace('"', '""') + '"'
    pattern = re.compile(re.escape(quoted) + "|" + r"(?<![\w$])" + re.escape(name) + r"(?![\w$])")
    return "\n".join(pattern.sub("<database>", line) for line in lines) + "\n"


def _sorted_grants(lines: list[str]) -> list[str]:
    """Each run of consecutive ``GRANT`` lines, sorted: pg_dump prints an ACL's items in
    the order of the array, which carries no meaning (the same grants in another order
    are the same ACL; ``fingerprint`` compares them as sets, grantors included)."""
    found: list[str] = []
    run: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("GRANT "):
            run.append(line)
            continue
        found += sorted(run)
        run = []
        found.append(line)
    return found[:-1]


def control(pg: PgNamespace, source: str, suffix: str = "control") -> str:
    """The plain tools' copy of ``source`` (a database name): what ``pg_dump --create
    <source> | psql`` makes, named ``<prefix>_<suffix>``; returns its URL.

    ``--create`` recreates the database under the source's own name, so the source is
    renamed aside while psql runs, then the copy takes ``<prefix>_<suffix>`` and the
    source its name back (renaming keeps the database's OID, hence its
    ``ALTER ROLE … IN DATABASE`` settings)."""
    target, aside = pg.name(suffix), pg.name(f"{suffix}_aside")
    with tempfile.TemporaryDirectory(prefix="capy-fidelity-") as scratch:
        dump = Path(scratch) / "dump.sql"
        _run(
            [_binary("pg_dump", pg.server.url()), "--create", "-f", str(dump), "--dbname"],
            pg.server.url(source),
            f"pg_dump --create of {source}",
        )
        _terminate(pg, source)
        _rename(pg, source, aside)
        try:
            _run(
                [pg.server.tool("psql"), "-Xq", "-v", "ON_ERROR_STOP=1", "-f", str(dump), "-d"],
                pg.server.url("postgres"),
                f"psql of pg_dump --create of {source}",
            )
            _terminate(pg, source)
            _rename(pg, source, target)
        finally:
            if pg.exists(aside):
                if pg.exists(source):  # what psql made before it failed
                    with pg.admin() as admin:
                        admin.execute(
                            sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(source))
                        )
                _rename(pg, aside, source)
    return pg.server.url(target)


def _terminate(pg: PgNamespace, name: str) -> None:
    with pg.admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )


def _rename(pg: PgNamespace, old: str, new: str) -> None:
    with pg.admin() as admin:
        admin.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(old), sql.Identifier(new)
            )
        )


# ---------------------------------------------------------------- the rich database


@dataclass(frozen=True)
class Rich:
    name: str
    url: str  # the superuser's
    owner: str  # owns the database and most objects
    reader: str
    writer: str  # owns some objects, the schema ``extra``, a view, a partition
    tenant: str  # subject to row security
    passwords: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def roles(self) -> list[str]:
        return [self.owner, self.reader, self.writer, self.tenant]


# run as the superuser in the maintenance database
RICH_DATABASE: Final[tuple[LiteralString, ...]] = (
    "CREATE DATABASE {db} OWNER {owner} TEMPLATE template0",
    "COMMENT ON DATABASE {db} IS 'Fidelity: the rich database — ünïcødé'",
    "ALTER DATABASE {db} SET search_path = app, public",
    "ALTER DATABASE {db} SET app.x = 'fidelity ✓'",
    "ALTER DATABASE {db} SET work_mem = '5MB'",
    "ALTER ROLE {reader} IN DATABASE {db} SET statement_timeout = '5s'",
    "ALTER ROLE {tenant} IN DATABASE {db} SET app.x = 'tenant'",
    # list settings: an empty one, and elements that need quoting
    "ALTER ROLE {writer} IN DATABASE {db} SET search_path = ''",
    "ALTER ROLE {tenant} IN DATABASE {db} SET search_path = '$user', ' spaced, \"odd', public",
    "ALTER DATABASE {db} CONNECTION LIMIT 40",
    "REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC",
    "GRANT CONNECT ON DATABASE {db} TO {reader} WITH GRANT OPTION",
    "GRANT CONNECT ON DATABASE {db} TO {writer}, {tenant}",
    "GRANT CREATE, TEMPORARY ON DATABASE {db} TO {writer}",
)

# run as the superuser in the new database; SET ROLE switches to the roles
RICH_OBJECTS: Final[tuple[LiteralString, ...]] = (
    "CREATE EXTENSION citext",
    "CREATE EXTENSION hstore",
    "CREATE EXTENSION postgres_fdw",
    "GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO {owner}",
    # changed grants on objects the database did not create: pg_dump compares them with
    # pg_init_privs and dumps the change
    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_reset() TO {writer}",
    "REVOKE EXECUTE ON FUNCTION public.akeys(public.hstore) FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION public.akeys(public.hstore) TO {reader}",
    # ---- the owner's
    "SET ROLE {owner}",
    "CREATE SCHEMA app",
    "COMMENT ON SCHEMA app IS 'the application''s schema'",
    "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO {reader}",
    "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT INSERT, UPDATE ON TABLES TO {writer}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT USAGE ON SEQUENCES TO {writer}",
    "GRANT USAGE ON SCHEMA app TO {reader}, {writer}, {tenant}",
    "GRANT CREATE ON SCHEMA app TO {writer}",
    "CREATE TYPE app.mood AS ENUM ('sad', 'ok', 'happy', 'überglücklich')",
    "ALTER TYPE app.mood ADD VALUE 'meh' BEFORE 'ok'",
    "CREATE DOMAIN app.posint AS integer CONSTRAINT posint_positive CHECK (VALUE > 0)",
    "REVOKE USAGE ON DOMAIN app.posint FROM PUBLIC",
    "GRANT USAGE ON DOMAIN app.posint TO {writer}",
    "CREATE TYPE app.floatrange AS RANGE (subtype = float8, subtype_diff = float8mi)",
    # ICU's German where the server has ICU (the PyPI build has none): libc's C.UTF-8
    "CREATE COLLATION app.german ({german})",
    "CREATE SEQUENCE app.ticket_seq AS bigint INCREMENT BY 7 MINVALUE 3 MAXVALUE 200 "
    "START WITH 150 CACHE 1 CYCLE",
    "SELECT nextval('app.ticket_seq') FROM generate_series(1, 13)",  # past MAXVALUE: cycled
    "GRANT SELECT ON SEQUENCE app.ticket_seq TO {writer}",
    """
    CREATE TABLE app.people (
        id integer GENERATED BY DEFAULT AS IDENTITY (START WITH 1000 INCREMENT BY 5)
            PRIMARY KEY,
        name text NOT NULL,
        sort_key text COLLATE "C",
        german_name text COLLATE app.german,
        email public.citext UNIQUE,
        mood app.mood NOT NULL DEFAULT 'ok',
        age app.posint,
        salary numeric(10, 2),
        version integer NOT NULL DEFAULT 1
    )
    """,
    "COMMENT ON TABLE app.people IS 'people — mit Umlauten'",
    "COMMENT ON COLUMN app.people.salary IS 'only the reader and the owner see it'",
    "GRANT SELECT ON app.people TO {reader} WITH GRANT OPTION",
    "GRANT SELECT (id, name, mood) ON app.people TO {tenant}",
    "GRANT UPDATE (mood) ON app.people TO {tenant}",
    "CREATE STATISTICS app.people_stats (dependencies) ON mood, age FROM app.people",
    """
    CREATE FUNCTION app.people_sort_key() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN NEW.sort_key := lower(NEW.name); RETURN NEW; END $$
    """,
    """
    CREATE FUNCTION app.people_version() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN NEW.version := OLD.version + 1; RETURN NEW; END $$
    """,
    "CREATE TRIGGER people_sort BEFORE INSERT OR UPDATE ON app.people "
    "FOR EACH ROW EXECUTE FUNCTION app.people_sort_key()",
    "CREATE TRIGGER people_versions BEFORE UPDATE ON app.people "
    "FOR EACH ROW EXECUTE FUNCTION app.people_version()",
    """
    CREATE TABLE app.docs (
        id bigserial PRIMARY KEY,
        tenant name NOT NULL,
        title text NOT NULL,
        body text,
        hidden boolean NOT NULL DEFAULT false,
        span app.floatrange
    )
    """,
    "ALTER TABLE app.docs ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY docs_tenant ON app.docs FOR ALL TO {tenant} "
    "USING (tenant = current_user) WITH CHECK (tenant = current_user)",
    "CREATE POLICY docs_reader ON app.docs FOR SELECT TO {reader} USING (true)",
    "CREATE POLICY docs_writer_read ON app.docs FOR SELECT TO {writer} USING (id % 2 = 0)",
    "CREATE POLICY docs_writer_insert ON app.docs FOR INSERT TO {writer} WITH CHECK (title <> '')",
    "CREATE POLICY docs_not_hidden ON app.docs AS RESTRICTIVE FOR SELECT TO PUBLIC "
    "USING (NOT hidden)",
    "COMMENT ON POLICY docs_tenant ON app.docs IS 'a tenant sees its own documents'",
    "GRANT SELECT, INSERT ON app.docs TO {writer}",
    "GRANT SELECT, INSERT, UPDATE ON app.docs TO {tenant}",
    """
    CREATE TABLE app.secrets (
        id integer PRIMARY KEY,
        holder name NOT NULL,
        secret text NOT NULL
    )
    """,
    "ALTER TABLE app.secrets ENABLE ROW LEVEL SECURITY",
    "CREATE POLICY secrets_own ON app.secrets USING (holder = current_user)",
    "GRANT SELECT ON app.secrets TO {tenant}",
    """
    CREATE VIEW app.my_docs WITH (security_invoker = true) AS
    SELECT id, tenant, title FROM app.docs
    """,
    "GRANT SELECT ON app.my_docs TO {writer}, {tenant}",
    """
    CREATE TABLE app.measurements (
        taken date NOT NULL,
        station text NOT NULL,
        reading double precision
    ) PARTITION BY RANGE (taken)
    """,
    "CREATE TABLE app.measurements_2024 PARTITION OF app.measurements "
    "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')",
    "CREATE TABLE app.measurements_2025 PARTITION OF app.measurements "
    "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    "CREATE TABLE app.measurements_other PARTITION OF app.measurements DEFAULT",
    "CREATE TABLE app.vehicles (id integer PRIMARY KEY, label text NOT NULL)",
    "CREATE TABLE app.trucks (payload_kg integer NOT NULL) INHERITS (app.vehicles)",
    "CREATE TABLE app.files (id integer PRIMARY KEY, name text NOT NULL, content oid NOT NULL)",
    """
    CREATE FUNCTION app.greet(who text) RETURNS text LANGUAGE sql IMMUTABLE
    AS $$ SELECT 'grüß dich, ' || who $$
    """,
    "COMMENT ON FUNCTION app.greet(text) IS 'says hello'",
    "GRANT EXECUTE ON FUNCTION app.greet(text) TO {reader}",
    """
    CREATE FUNCTION app.doc_total() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$ SELECT count(*) FROM app.docs $$
    """,
    "GRANT EXECUTE ON FUNCTION app.doc_total() TO {tenant}",
    "CREATE OPERATOR app.=== (LEFTARG = integer, RIGHTARG = integer, FUNCTION = int4eq)",
    "CREATE TEXT SEARCH CONFIGURATION app.plain (COPY = pg_catalog.simple)",
    "CREATE PUBLICATION app_docs FOR TABLE app.docs",
    "CREATE SERVER app_loopback FOREIGN DATA WRAPPER postgres_fdw "
    "OPTIONS (host '127.0.0.1', dbname 'nowhere')",
    "GRANT USAGE ON FOREIGN SERVER app_loopback TO {writer}",
    "CREATE USER MAPPING FOR {writer} SERVER app_loopback OPTIONS (user 'nobody')",
    "CREATE FOREIGN TABLE app.remote_things (id integer, label text) SERVER app_loopback "
    "OPTIONS (schema_name 'public', table_name 'things')",
    # ---- rows (a few thousand, non-ASCII among them)
    """
    INSERT INTO app.people (name, german_name, email, mood, age, salary)
    SELECT CASE g % 5 WHEN 0 THEN 'Zoë ' || g WHEN 1 THEN 'Ärger ' || g
                      WHEN 2 THEN 'straße ' || g WHEN 3 THEN '山田 ' || g
                      ELSE 'O''Brien "q" \\ ' || g END,
           'Müller ' || g,
           'Person' || g || '@Example.TEST',
           (ARRAY['sad', 'meh', 'ok', 'happy', 'überglücklich'])[g % 5 + 1]::app.mood,
           g % 90 + 1,
           (g * 13 % 100000) / 100.0
    FROM generate_series(1, 2000) AS g
    """,
    """
    INSERT INTO app.docs (tenant, title, body, hidden, span)
    SELECT (ARRAY[{owner_l}, {reader_l}, {writer_l}, {tenant_l}])[g % 4 + 1]::name,
           'Dokument Nr. ' || g, repeat('ü€', g % 20), g % 10 = 0,
           app.floatrange(g, g + 1.5)
    FROM generate_series(1, 1500) AS g
    """,
    """
    INSERT INTO app.secrets (id, holder, secret)
    SELECT g, (ARRAY[{owner_l}, {reader_l}, {writer_l}, {tenant_l}])[g % 4 + 1]::name,
           'geheim ' || g
    FROM generate_series(1, 40) AS g
    """,
    """
    INSERT INTO app.measurements (taken, station, reading)
    SELECT date '2024-06-01' + g, 'Station ' || (g % 7), g * 0.25
    FROM generate_series(1, 1200) AS g
    """,
    "INSERT INTO app.vehicles SELECT g, 'Fahrzeug ' || g FROM generate_series(1, 50) AS g",
    "INSERT INTO app.trucks SELECT g, 'LKW ' || g, g * 100 FROM generate_series(51, 80) AS g",
    """
    INSERT INTO app.files (id, name, content) VALUES
      (1, 'grüße.txt', lo_from_bytea(0, convert_to('Grüße aus Köln — ✓', 'UTF8'))),
      (2, 'big.bin', lo_from_bytea(0, (SELECT string_agg(uuid_send(gen_random_uuid()), ''::bytea)
                                         FROM generate_series(1, 6400))))
    """,
    "SELECT setval(pg_get_serial_sequence('app.docs', 'id'), 5000)",
    # forced after its rows went in: from now on the owner sees only its own too
    "ALTER TABLE app.secrets FORCE ROW LEVEL SECURITY",
    # the triggers: one disabled, one firing even on a replica (after the rows above)
    "ALTER TABLE app.people DISABLE TRIGGER people_sort",
    "ALTER TABLE app.people ENABLE ALWAYS TRIGGER people_versions",
    """
    CREATE MATERIALIZED VIEW app.doc_counts AS
    SELECT tenant, count(*) AS docs, count(*) FILTER (WHERE hidden) AS hidden
    FROM app.docs GROUP BY tenant
    """,
    "RESET ROLE",
    # ---- the writer's
    "SET ROLE {writer}",
    "CREATE SCHEMA extra",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA extra GRANT SELECT ON TABLES TO {tenant}",
    "GRANT USAGE ON SCHEMA extra TO {tenant}",
    "CREATE TABLE extra.notes (id serial PRIMARY KEY, body text NOT NULL)",
    "INSERT INTO extra.notes (body) SELECT 'Notiz ' || g || ' ☃' FROM generate_series(1, 300) g",
    # a security-barrier view owned by a non-superuser: the writer's policies apply in it
    """
    CREATE VIEW app.visible_docs WITH (security_barrier) AS
    SELECT id, tenant, title FROM app.docs WHERE title LIKE 'Dokument%'
    """,
    "GRANT SELECT ON app.visible_docs TO {reader}, {tenant}",
    "INSERT INTO app.files (id, name, content) "
    "VALUES (3, 'writer.txt', lo_from_bytea(0, convert_to('vom Schreiber', 'UTF8')))",
    "RESET ROLE",
    # ---- the reader re-grants what it may grant
    "SET ROLE {reader}",
    "GRANT SELECT ON app.people TO {writer}",
    "RESET ROLE",
    # ---- another owner for some objects
    "ALTER TABLE app.measurements_other OWNER TO {writer}",
    "ALTER FUNCTION app.people_version() OWNER TO {writer}",
    # ---- the materialized view goes stale: a restore brings it back refreshed
    """
    INSERT INTO app.docs (tenant, title, hidden)
    SELECT {tenant_l}, 'late ' || g, false FROM generate_series(1, 7) AS g
    """,
)


def build_rich(pg: PgNamespace, suffix: str = "rich") -> Rich:
    """Roles ``<prefix>_owner/_reader/_writer/_tenant`` and the database
    ``<prefix>_<suffix>`` (see ``RICH_OBJECTS``)."""
    passwords: dict[str, str] = {}
    names: dict[str, str] = {}
    for role in ("owner", "reader", "writer", "tenant"):
        role_name, password = pg.create_role(role)
        names[role], passwords[role_name] = role_name, password
    name = pg.name(suffix)
    icu = has_icu(pg.server.url())
    german = "provider = icu, locale = 'de-DE'" if icu else "provider = libc, locale = 'C.UTF-8'"
    values: dict[str, sql.Composable] = {"db": sql.Identifier(name), "german": sql.SQL(german)}
    for role, role_name in names.items():
        values[role] = sql.Identifier(role_name)
        values[f"{role}_l"] = sql.Literal(role_name)
    with pg.admin() as admin:
        for statement in RICH_DATABASE:
            admin.execute(sql.SQL(statement).format(**values))
    url = pg.server.url(name)
    with connect(url) as db:
        for statement in RICH_OBJECTS:
            db.execute(sql.SQL(statement).format(**values))
        # large objects: a grant and a comment on the owner's; the writer owns the third
        files: dict[int, int] = dict(
            db.execute("SELECT id, content FROM app.files ORDER BY id").fetchall()
        )
        db.execute(
            sql.SQL("GRANT SELECT ON LARGE OBJECT {} TO {}").format(
                sql.Literal(int(files[1])), values["reader"]
            )
        )
        db.execute(
            sql.SQL("COMMENT ON LARGE OBJECT {} IS 'Grüße'").format(sql.Literal(int(files[2])))
        )
    return Rich(
        name=name,
        url=url,
        owner=names["owner"],
        reader=names["reader"],
        writer=names["writer"],
        tenant=names["tenant"],
        passwords=passwords,
    )


# ---------------------------------------------------------------- row security


# what each role is asked; the answer is the result or the refusal
RLS_QUERIES: Final[dict[str, LiteralString]] = {
    "visible_docs (security_barrier, the writer's)": "SELECT count(*) FROM app.visible_docs",
    "my_docs (security_invoker)": "SELECT count(*) FROM app.my_docs",
    "docs": "SELECT count(*) FROM app.docs",
    "hidden docs": "SELECT count(*) FROM app.docs WHERE hidden",
    "secrets (FORCE)": "SELECT count(*) FROM app.secrets",
    "people's names (column grant)": "SELECT count(name) FROM app.people",
    "people's salaries": "SELECT sum(salary) FROM app.people",
    "people, every column": "SELECT count(*) FROM (SELECT * FROM app.people) AS p",
    "update a mood (column grant)": "UPDATE app.people SET mood = 'happy' WHERE id = 1005",
    "update a salary": "UPDATE app.people SET salary = 1 WHERE id = 1005",
    "doc_total() (security definer)": "SELECT app.doc_total()",
    "greet()": "SELECT app.greet('x')",
    "akeys() (a changed grant of an extension)": "SELECT public.akeys('a=>1') IS NOT NULL",
    "insert an own doc": "INSERT INTO app.docs (id, tenant, title) "
    "VALUES (-1, current_user, 'probe')",
    "insert another's doc": "INSERT INTO app.docs (id, tenant, title) "
    "VALUES (-2, 'nobody', 'probe')",
    "insert an untitled doc": "INSERT INTO app.docs (id, tenant, title) "
    "VALUES (-3, current_user, '')",
    "the granted large object": "SELECT length(lo_get(content)) FROM app.files WHERE id = 1",
    "the writer's large object": "SELECT length(lo_get(content)) FROM app.files WHERE id = 3",
    "extra.notes (the writer's default privileges)": "SELECT count(*) FROM extra.notes",
    "measurements (partitioned)": "SELECT count(*) FROM app.measurements",
    "the default partition": "SELECT count(*) FROM app.measurements_other",
    "vehicles (inherited)": "SELECT count(*) FROM app.vehicles",
    "ticket_seq": "SELECT last_value FROM app.ticket_seq",
    "create in app": "CREATE TABLE app.probe (id integer)",
    "pg_stat_reset() (a changed grant of the system)": "SELECT pg_catalog.pg_stat_reset() IS NULL",
}


def rls_answers(url: str, roles: list[str]) -> dict[str, dict[str, str]]:
    """``{role: {question: answer}}``: each query of ``RLS_QUERIES`` run as each role
    (``SET LOCAL ROLE``), in a transaction rolled back; a refusal answers with its
    SQLSTATE and message. Nothing it does stays: inserts name their ids, nothing calls
    ``nextval``, and ``pg_stat_reset`` changes no database content."""
    answers: dict[str, dict[str, str]] = {}
    with connect(url) as db:
        for role in roles:
            answers[role] = {}
            for question, query in RLS_QUERIES.items():
                try:
                    with db.transaction(force_rollback=True):
                        db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                        cursor = db.execute(query)
                        row = cursor.fetchone() if cursor.description else None
                        answer = f"{cursor.rowcount} row(s)" if row is None else str(row[0])
                except psycopg.Error as exc:
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    answer = f"refused: {exc.sqlstate} {message}"
                answers[role][question] = answer
    return answers


# ---------------------------------------------------------------- locales


@dataclass(frozen=True)
class Localised:
    kind: str
    options: LiteralString  # of CREATE DATABASE
    words: tuple[str, ...]


_LATIN = ("é", "ü", "ß", "Ærøskøbing", "façade", "naïve", "Über", "¿Qué?", "zebra", "Apfel")
LOCALISED: Final[dict[str, Localised]] = {
    item.kind: item
    for item in (
        Localised(
            "latin1", "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0", _LATIN
        ),
        Localised(
            "c_utf8",
            "ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0",
            (*_LATIN, "İstanbul", "\u0131i", "山田", "☃"),
        ),
        Localised(
            "c",
            "ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
            (*_LATIN, "İstanbul", "\u0131i", "山田", "☃"),
        ),
        Localised(
            "icu_tr",
            "ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'tr-TR' "
            "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0",
            (*_LATIN, "İstanbul", "\u0131i", "ilk", "I\u015f\u0131k"),
        ),
    )
}


def has_icu(url: str) -> bool:
    """Is the server built with ICU? (pg_collation lists ICU collations either way from
    PostgreSQL 16 on; only using one tells.)"""
    with connect(url) as db:
        row = db.execute(
            "SELECT collname FROM pg_collation WHERE collprovider = 'i' LIMIT 1"
        ).fetchone()
        if row is None:
            return False
        try:
            db.execute(sql.SQL("SELECT 'a' < 'b' COLLATE {}").format(sql.Identifier(row[0])))
        except psycopg.errors.FeatureNotSupported:
            return False
    return True


def has_locale(name: str) -> bool:
    """Does the C library know the locale (``locale -a`` spells C.UTF-8 ``C.utf8``)?"""
    try:
        known = subprocess.run(
            ["locale", "-a"], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return False
    wanted = name.lower().replace("-", "")
    return any(item.lower().replace("-", "") == wanted for item in known)


def build_localised(pg: PgNamespace, kind: str) -> str:
    """``<prefix>_<kind>``, created with ``LOCALISED[kind].options``, holding its words;
    returns its URL."""
    spec = LOCALISED[kind]
    name = pg.name(kind)
    with pg.admin() as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} " + spec.options).format(sql.Identifier(name)))
    url = pg.server.url(name)
    with connect(url) as db:
        db.execute("CREATE TABLE words (id integer PRIMARY KEY, word text NOT NULL)")
        db.execute("CREATE INDEX words_word ON words (word)")
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO words (id, word) VALUES (%s, %s)", list(enumerate(spec.words))
            )
        db.execute("COMMENT ON TABLE words IS 'Wörter'")
    return url


def locale_probe(url: str) -> dict[str, Any]:
    """What the database's encoding and locale answer."""
    with connect(url) as db:
        row = db.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype, datlocprovider, "
            # PostgreSQL 15-16: daticulocale; 17 on: datlocale
            "coalesce(to_jsonb(d) ->> 'datlocale', to_jsonb(d) ->> 'daticulocale') "
            "FROM pg_database d WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        found: dict[str, Any] = dict(
            zip(("encoding", "collate", "ctype", "provider", "icu_locale"), row, strict=True)
        )
        probes: tuple[tuple[str, LiteralString], ...] = (
            ("upper('é')", "SELECT upper('é')"),
            ("upper('i')", "SELECT upper('i')"),
            ("lower('Ä')", "SELECT lower('Ä')"),
            ("'a' < 'B'", "SELECT 'a' < 'B'"),
            ("initcap", "SELECT initcap('élan ürün')"),
            ("order", "SELECT string_agg(word, ' ' ORDER BY word) FROM words"),
            ("upper(words)", "SELECT string_agg(upper(word), ' ' ORDER BY id) FROM words"),
            ("index order", "SELECT array_agg(id) FROM (SELECT id FROM words ORDER BY word) w"),
        )
        for question, query in probes:
            # a str, not bytes: psycopg encodes it in the connection's encoding (LATIN1…)
            value = db.execute(query).fetchone()
            found[question] = None if value is None else value[0]
    return found


# ---------------------------------------------------------------- the fingerprint

# an ACL as ``grantee=privilege[*]/grantor`` strings (role names, not OIDs), sorted;
# SQL NULL (the built-in default) stays NULL, unlike an explicit empty ACL
_ACL: Final = (
    "CASE WHEN {acl} IS NULL THEN NULL ELSE ("
    "SELECT coalesce(jsonb_agg(e.item ORDER BY e.item), '[]'::jsonb) FROM ("
    "SELECT format('%s=%s%s/%s', "
    "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, "
    "a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END, "
    "pg_get_userbyid(a.grantor)) AS item FROM aclexplode({acl}) AS a) AS e) END"
)


def _acl(*column: str) -> sql.Composed:
    return sql.SQL(_ACL).format(acl=sql.Identifier(*column))


def _options(*column: str) -> sql.Composed:
    """An options array (``name=value`` strings), sorted."""
    return sql.SQL("(SELECT jsonb_agg(o ORDER BY o) FROM unnest({}) AS o)").format(
        sql.Identifier(*column)
    )


# the catalogs whose rows have an owner (and maybe an ACL): (catalog, owner, acl).
# Elsewhere: pg_largeobject_metadata (``large_objects``, keyed by OID), pg_default_acl
# (``default_acls``), pg_database (``database``), column grants (``columns``). Left
# out: pg_subscription (cluster-wide rows, and a subscription needs a publisher).
_OWNED: Final[tuple[tuple[str, str, str | None], ...]] = (
    ("pg_namespace", "nspowner", "nspacl"),
    ("pg_class", "relowner", "relacl"),
    ("pg_proc", "proowner", "proacl"),
    ("pg_type", "typowner", "typacl"),
    ("pg_collation", "collowner", None),
    ("pg_conversion", "conowner", None),
    ("pg_operator", "oprowner", None),
    ("pg_opclass", "opcowner", None),
    ("pg_opfamily", "opfowner", None),
    ("pg_ts_config", "cfgowner", None),
    ("pg_ts_dict", "dictowner", None),
    ("pg_extension", "extowner", None),
    ("pg_language", "lanowner", "lanacl"),
    ("pg_foreign_data_wrapper", "fdwowner", "fdwacl"),
    ("pg_foreign_server", "srvowner", "srvacl"),
    ("pg_event_trigger", "evtowner", None),
    ("pg_publication", "pubowner", None),
    ("pg_statistic_ext", "stxowner", None),
)

# Which rows: what the database made (OID >= 16384, FirstNormalObjectId), and objects of
# initdb whose ACL differs from pg_init_privs (what pg_dump dumps of them), and the
# public schema (its owner and ACL are the database's choice). Never keyed by OID:
# pg_identify_object's identity is schema-qualified.
_OWNED_QUERY: Final = (
    "SELECT o.type, o.identity, pg_get_userbyid(x.{owner}) AS owner, {acl} AS acl "
    "FROM {catalog} AS x, pg_identify_object({catalog_name}::regclass, x.oid, 0) AS o "
    "WHERE x.oid >= 16384 OR {public} OR {acl_column} IS DISTINCT FROM ("
    "SELECT i.initprivs FROM pg_init_privs AS i "
    "WHERE i.classoid = {catalog_name}::regclass AND i.objoid = x.oid AND i.objsubid = 0)"
)

# what is not the database's content: TOAST (named after OIDs), the temporary schemas a
# backend makes on demand, and information_schema (initdb's, the same in every database,
# never dumped; in 15 its objects have no pg_init_privs rows, so the test above takes
# them in)
_NOT_CONTENT: Final = r"^(pg_(toast|temp_)|information_schema(\.|$))"


def _owned_query() -> sql.Composed:
    parts = []
    for catalog, owner, acl in _OWNED:
        parts.append(
            sql.SQL(_OWNED_QUERY).format(
                owner=sql.Identifier(owner),
                acl=_acl("x", acl) if acl else sql.SQL("NULL::jsonb"),
                acl_column=sql.Identifier("x", acl) if acl else sql.SQL("NULL::aclitem[]"),
                catalog=sql.Identifier("pg_catalog", catalog),
                catalog_name=sql.Literal(catalog),
                public=sql.SQL("x.nspname = 'public'" if catalog == "pg_namespace" else "false"),
            )
        )
    return sql.SQL(
        "SELECT u.type || ' ' || u.identity, "
        "jsonb_build_object('owner', u.owner, 'acl', u.acl) FROM ({}) AS u "
        "WHERE u.identity !~ {pattern}"
    ).format(sql.SQL(" UNION ALL ").join(parts), pattern=sql.Literal(_NOT_CONTENT))


_SECTIONS: Final[dict[str, LiteralString]] = {
    # the database's own row: read generically (a later version's columns come in too),
    # minus what is per instance: its OID and name, the XID/multixact horizons
    # (datfrozenxid, datminmxid: vacuum's state), datcollversion (recorded at CREATE
    # DATABASE from the C library: the same library here, but not the database's
    # content), and the OIDs replaced by names (datdba, dattablespace, datacl)
    "database": """
        SELECT 'database',
               to_jsonb(d) - ARRAY['oid', 'datname', 'datdba', 'dattablespace', 'datacl',
                                   'datfrozenxid', 'datminmxid', 'datcollversion']
               || jsonb_build_object(
                   'owner', pg_get_userbyid(d.datdba),
                   'encoding_name', pg_encoding_to_char(d.encoding),
                   'tablespace', (SELECT t.spcname FROM pg_tablespace AS t
                                  WHERE t.oid = d.dattablespace),
                   'acl', {database_acl},
                   'comment', shobj_description(d.oid, 'pg_database'))
        FROM pg_database AS d WHERE d.datname = current_database()
    """,
    # ALTER DATABASE … SET ('(every role)') and ALTER ROLE … IN DATABASE … SET
    "db_role_settings": """
        SELECT CASE WHEN s.setrole = 0 THEN '(every role)' ELSE pg_get_userbyid(s.setrole) END,
               (SELECT jsonb_agg(c ORDER BY c) FROM unnest(s.setconfig) AS c)
        FROM pg_db_role_setting AS s
        WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
    """,
    "default_acls": """
        SELECT o.identity, {default_acl}
        FROM pg_default_acl AS d,
             pg_identify_object('pg_default_acl'::regclass, d.oid, 0) AS o
    """,
    # per column of a relation the database made: type, collation, constraints, grants;
    # its position among the live columns (attnum counts dropped columns too). Column
    # grants on initdb's tables are left out (none here)
    "columns": """
        SELECT o.identity,
               jsonb_build_object(
                   'position', row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
                   'type', format_type(a.atttypid, a.atttypmod),
                   'collation', (SELECT format('%I.%I', n.nspname, c.collname)
                                 FROM pg_collation AS c
                                 JOIN pg_namespace AS n ON n.oid = c.collnamespace
                                 WHERE c.oid = a.attcollation),
                   'not_null', a.attnotnull, 'identity', a.attidentity,
                   'generated', a.attgenerated, 'local', a.attislocal,
                   'inherited', a.attinhcount, 'statistics', a.attstattarget,
                   'default', (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef AS d
                               WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum),
                   'acl', {column_acl})
        FROM pg_attribute AS a
        JOIN pg_class AS r ON r.oid = a.attrelid,
        pg_identify_object('pg_class'::regclass, a.attrelid, a.attnum) AS o
        WHERE a.attrelid >= 16384 AND a.attnum > 0 AND NOT a.attisdropped
          AND r.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
          AND r.relnamespace <> 'pg_toast'::regnamespace AND r.relpersistence <> 't'
    """,
    # row security, partitions, inheritance, options, per relation
    "relations": """
        SELECT o.identity,
               jsonb_build_object(
                   'kind', c.relkind, 'persistence', c.relpersistence,
                   'row_security', c.relrowsecurity,
                   'force_row_security', c.relforcerowsecurity,
                   'partition_bound', pg_get_expr(c.relpartbound, c.oid),
                   'partition_key', CASE WHEN c.relkind = 'p'
                                         THEN pg_get_partkeydef(c.oid) END,
                   'parents', (SELECT jsonb_agg(i.inhparent::regclass::text
                                                ORDER BY i.inhseqno)
                               FROM pg_inherits AS i WHERE i.inhrelid = c.oid),
                   'options', {relation_options}, 'replica_identity', c.relreplident,
                   'populated', c.relispopulated)
        FROM pg_class AS c, pg_identify_object('pg_class'::regclass, c.oid, 0) AS o
        WHERE c.oid >= 16384 AND c.relnamespace <> 'pg_toast'::regnamespace
          AND c.relpersistence <> 't'
    """,
    "policies": """
        SELECT format('%s on %I.%I', p.policyname, p.schemaname, p.tablename),
               to_jsonb(p) - 'policyname' - 'schemaname' - 'tablename'
        FROM pg_policies AS p
    """,
    # user triggers (a foreign key's are internal), with their ENABLE state
    "triggers": """
        SELECT o.identity,
               jsonb_build_object('enabled', t.tgenabled, 'definition', pg_get_triggerdef(t.oid))
        FROM pg_trigger AS t, pg_identify_object('pg_trigger'::regclass, t.oid, 0) AS o
        WHERE NOT t.tgisinternal
    """,
    # comments on what the database made, and on the public schema; initdb's comments on
    # its own objects are left out (pg_dump leaves them out too). pg_seclabel is left
    # out: no label provider is loaded
    "comments": """
        SELECT o.type || ' ' || o.identity, to_jsonb(d.description)
        FROM pg_description AS d,
             pg_identify_object(d.classoid, d.objoid, d.objsubid) AS o
        WHERE d.objoid >= 16384
           OR (d.classoid = 'pg_namespace'::regclass AND d.objoid = 'public'::regnamespace)
    """,
    "extensions": """
        SELECT e.extname,
               jsonb_build_object(
                   'version', e.extversion, 'schema', e.extnamespace::regnamespace::text,
                   'owner', pg_get_userbyid(e.extowner), 'relocatable', e.extrelocatable,
                   'config', (SELECT jsonb_agg(c::regclass::text ORDER BY c::regclass::text)
                              FROM unnest(e.extconfig) AS c),
                   'conditions', e.extcondition)
        FROM pg_extension AS e
    """,
    # definition and state (pg_sequences has no log_cnt: how far ahead WAL was written)
    "sequences": """
        SELECT format('%I.%I', s.schemaname, s.sequencename),
               to_jsonb(s) - 'schemaname' - 'sequencename'
        FROM pg_sequences AS s
    """,
    # foreign servers' and tables' options, user mappings (their owners and grants are in
    # ``objects``); options sorted: their order carries no meaning, and pg_dump's differs
    "foreign": """
        SELECT 'server ' || s.srvname,
               jsonb_build_object('wrapper', w.fdwname, 'type', s.srvtype,
                                  'version', s.srvversion, 'options', {server_options})
        FROM pg_foreign_server AS s JOIN pg_foreign_data_wrapper AS w ON w.oid = s.srvfdw
        UNION ALL
        SELECT 'user mapping for ' || m.usename || ' on ' || m.srvname, {mapping_options}
        FROM pg_user_mappings AS m
        UNION ALL
        SELECT 'foreign table ' || f.ftrelid::regclass::text,
               jsonb_build_object('server', s.srvname, 'options', {table_options})
        FROM pg_foreign_table AS f JOIN pg_foreign_server AS s ON s.oid = f.ftserver
    """,
    # large objects are the one thing keyed by OID: pg_dump keeps their OIDs
    "large_objects": """
        SELECT m.oid::text,
               jsonb_build_object('owner', pg_get_userbyid(m.lomowner), 'acl', {lo_acl},
                                  'size', length(lo_get(m.oid)), 'md5', md5(lo_get(m.oid)))
        FROM pg_largeobject_metadata AS m
    """,
}


# the sections of the database's own properties (``without_database_level``)
DATABASE_LEVEL: Final = frozenset({"database", "db_role_settings"})


def fingerprint(url: str) -> dict[str, Any]:
    """What a restore of the database must bring back, by section: ``{section: {key:
    value}}``; computed by the server, in one snapshot, with ``search_path`` pinned to
    ``pg_catalog`` (so every name it prints is qualified, whatever the database's own
    search_path), keyed by names, never by OIDs (large objects excepted).

    Sections: ``database`` (encoding, locale, provider, owner, ACL, connection limit,
    comment…), ``db_role_settings``, ``objects`` (owner and ACL of every object),
    ``default_acls``, ``columns``, ``relations`` (row security, partitions, inheritance),
    ``policies``, ``triggers``, ``comments``, ``extensions``, ``sequences``, ``foreign``,
    ``large_objects``, ``matviews``, ``rows`` (``checksums``: every table's count and md5,
    and each populated materialized view's), ``schema`` (``schema_text``).

    Left out, on purpose: planner statistics (pg_statistic: ANALYZE's, not dumped),
    storage (relfilenode, pages, tuples), OIDs, a sequence's log_cnt, the cluster's roles
    and memberships (not the database's: the same on both sides).
    """
    found: dict[str, Any] = {}
    values = {
        "database_acl": _acl("d", "datacl"),
        "default_acl": _acl("d", "defaclacl"),
        "column_acl": _acl("a", "attacl"),
        "lo_acl": _acl("m", "lomacl"),
        "server_options": _options("s", "srvoptions"),
        "mapping_options": _options("m", "umoptions"),
        "table_options": _options("f", "ftoptions"),
        "relation_options": _options("c", "reloptions"),
    }
    with connect(url, autocommit=False) as db:
        db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with db.transaction():
            db.execute("SET LOCAL search_path = pg_catalog")
            # the JSON comes back as UTF-8 whatever the database's encoding (LATIN1…)
            db.execute("SET LOCAL client_encoding = 'UTF8'")
            found["objects"] = _keyed(db, _owned_query())
            for section, query in _SECTIONS.items():
                found[section] = _keyed(db, sql.SQL(query).format(**values))
            found["matviews"] = _matviews(db)
    found["rows"] = {name: list(value) for name, value in checksums(url).items()}
    found["schema"] = schema_text(url)
    return found


def _keyed(db: psycopg.Connection, query: sql.Composed) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in db.execute(query).fetchall():
        assert key not in found, f"two rows are keyed {key!r}"
        found[str(key)] = value
    return dict(sorted(found.items()))


def _matviews(db: psycopg.Connection) -> dict[str, Any]:
    """The rows of each materialized view (a table's are in ``checksums``)."""
    found: dict[str, Any] = {}
    views = db.execute(
        "SELECT schemaname, matviewname, ispopulated FROM pg_matviews ORDER BY 1, 2"
    ).fetchall()
    for schema, view, populated in views:
        entry: dict[str, Any] = {"populated": populated}
        if populated:
            row = db.execute(
                sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                    " FROM {} AS t"
                ).format(sql.Identifier(schema, view))
            ).fetchone()
            assert row is not None
            entry.update(rows=int(row[0]), md5=str(row[1]))
        found[f"{schema}.{view}"] = entry
    return found


def differences(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, str]:
    """``{"section key": what differs}``, for every key of every section that differs;
    the schema text as a unified diff."""
    found: dict[str, str] = {}
    for section in sorted(set(expected) | set(actual)):
        want, got = expected.get(section), actual.get(section)
        if want == got:
            continue
        if isinstance(want, str) and isinstance(got, str):
            diff = difflib.unified_diff(
                want.splitlines(), got.splitlines(), "expected", "actual", lineterm="", n=1
            )
            found[section] = "\n".join(list(diff)[:80])
        elif isinstance(want, dict) and isinstance(got, dict):
            for key in sorted(set(want) | set(got)):
                if want.get(key, "<missing>") != got.get(key, "<missing>"):
                    found[f"{section} {key}"] = (
                        f"expected {_show(want.get(key, '<missing>'))}, "
                        f"got {_show(got.get(key, '<missing>'))}"
                    )
        else:
            found[section] = f"expected {_show(want)}, got {_show(got)}"
    return found


def report(found: dict[str, str], limit: int = 40) -> str:
    """``differences`` as text, for an assertion's message (the first ``limit``)."""
    lines = [f"{key}: {text}" for key, text in list(found.items())[:limit]]
    if len(found) > limit:
        lines.append(f"… and {len(found) - limit} more: {', '.join(list(found)[limit:])}")
    return "\n".join(lines)


def without_database_level(found: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint without the database's own properties (its ``pg_database`` row,
    ``db_role_settings``, and every line of the schema text that names the database:
    CREATE/ALTER/COMMENT ON/GRANT … DATABASE, ALTER ROLE … IN DATABASE, ``\\connect``):
    what an in-place restore takes from the backup."""
    kept = {key: value for key, value in found.items() if key not in DATABASE_LEVEL}
    kept["schema"] = "".join(
        line for line in found["schema"].splitlines(keepends=True) if "<database>" not in line
    )
    return kept


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
