"""The PostgreSQL driver: projects whose ``database_url`` is ``postgresql://…``.

The data moves through the real ``pg_dump``/``pg_restore`` of the server's release
(``binaries``); their exit code and output become the job's
``last_exit_code``/``last_stdout``/``last_stderr``. psycopg runs the control
statements.

- dump (``dump``): ``pg_dump -Fd -Z0`` (the directory format: one file per table's
  data, which parallel pg_restore workers read each on its own) inside an exported
  snapshot, with the row count of every table read in that same snapshot; the
  directory is streamed as a tar into the engine's zstd compressor and SHA-256, and
  unpacked from the blob the same way;
- check (``restore.check``): restore into a throwaway database, compare the row
  counts, drop it;
- restore (``restore``): from the directory (or a custom-format archive file),
  always into a scratch database first, created from ``template0`` with the source's
  encoding and locale (``properties``), keeping every owner and grant
  (``pg_restore -j 2``, ``loading``); the largest table's rows, from ``split_over``
  up, are loaded in two halves by two ``COPY … FROM STDIN`` at once, between the
  schema and the rest (``halves``, ``loading.restore_split``), streamed from the
  blob's frames when the blob has them or else unpacked in two files; only when all
  that succeeded is the scratch database renamed into place. Over an existing
  database (``admin.swap``): connections are refused and terminated, the target is
  renamed aside (``<name>__capy_old_…``), the scratch database takes its name, the
  old one is dropped. A failure at any step leaves the target as it was. A new
  database gets the source database's own properties (owner, grants, settings) from
  the backup; a database restored in place keeps its own.

Modules: ``driver`` (the ``Driver`` contract), ``libpq`` (reaching a server, running
its binaries), ``binaries`` (which ones), ``failures``, ``dump``, ``halves``,
``loading``, ``restore``, ``admin``, ``properties`` (a database's own) and ``roles``.

The engine's role needs CREATEDB, ownership of the project database, the right to
terminate its connections (``pg_signal_backend``, or the same role), and membership
in every role that owns something in it (to give the restored objects back to their
owners); a superuser has all of these.
"""

from __future__ import annotations

from pulumi_capy.engine.drivers.postgres.driver import PostgresDriver
from pulumi_capy.engine.drivers.postgres.libpq import redact

__all__ = ["PostgresDriver", "redact"]
