"""``capy doctor``: checks of an engine directory that need no engine running.

It reads modes and nothing else (it opens no store: opening one seals its URLs),
so it is safe on a directory a server or workers are using. Today it checks the
files at rest: an engine directory holds copies of users' databases and the
store of their URLs, so nothing in it should be open to a group or to others,
least of all the key file. Exit code 1 when it warns, so scripts can gate on it.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import click

from pulumi_capy.api.errors import CapyError
from pulumi_capy.cli.common import emit, engine_dir_option, engine_directory, example, json_option

__all__ = ["doctor"]

LISTED = 10  # loose paths named one by one; past that, a count


def _problems(directory: Path) -> list[dict[str, Any]]:
    from pulumi_capy.engine.private import loose_paths
    from pulumi_capy.engine.secret_keys import KEY_FILE_NAME

    key_file = directory / KEY_FILE_NAME
    loose = list(loose_paths(directory))
    quoted = shlex.quote(str(directory))
    problems: list[dict[str, Any]] = []
    for path, mode in loose:
        if path == key_file:
            problems.append(
                {
                    "path": str(path),
                    "mode": oct(mode),
                    "warning": f"the key file {path} (mode {oct(mode)}) can be read by "
                    "others, and with it the passwords in engine.db; rotate the key once "
                    "it is private (README, Files at rest)",
                    "fix": f"chmod 600 {shlex.quote(str(path))}",
                }
            )
    others = [(path, mode) for path, mode in loose if path != key_file]
    if others:
        names = ", ".join(f"{path} ({oct(mode)})" for path, mode in others[:LISTED])
        more = f" and {len(others) - LISTED} more" if len(others) > LISTED else ""
        problems.append(
            {
                "path": str(directory),
                "mode": oct(others[0][1]),
                "warning": f"{len(others)} path(s) in the engine directory can be used by its "
                f"group or others (copies of your databases): {names}{more}",
                "fix": f"chmod -R go-rwx {quoted}",
            }
        )
    if key_file.exists() and key_file.stat().st_uid != os.getuid():
        problems.append(
            {
                "path": str(key_file),
                "mode": oct(key_file.stat().st_mode & 0o777),
                "warning": f"the key file {key_file} belongs to another user",
                "fix": f"chown {os.getuid()} {shlex.quote(str(key_file))}",
            }
        )
    return problems


def _store(directory: Path) -> dict[str, Any]:
    """Which metadata store the engine uses (``CAPY_STORE_URL`` or ``engine.db``), and
    whether it can be reached; a PostgreSQL URL is shown without its password."""
    url = os.environ.get("CAPY_STORE_URL", "").strip()
    if not url:
        path = directory / "engine.db"
        return {
            "kind": "sqlite",
            "location": str(path),
            "reachable": path.is_file(),
            "error": None if path.is_file() else "no engine.db yet",
        }
    from pulumi_capy.engine.stores.postgres_base import probe, redact

    why = probe(url)
    return {"kind": "postgresql", "location": redact(url), "reachable": why is None, "error": why}


def _blobs(directory: Path) -> dict[str, Any]:
    """Where blobs go (``CAPY_BLOB_URL`` or the directory's ``blobs/``), whether the
    place answers, and the blob keys' ids (never a key)."""
    from pulumi_capy.engine.blob_keys import load_blob_keys
    from pulumi_capy.engine.blobs import open_blob_store

    found: dict[str, Any] = {"kind": None, "location": None, "reachable": False, "error": None}
    try:
        keys = load_blob_keys(os.environ)
        found["encryption"] = [key.key_id_hex for key in keys] if keys is not None else []
        blobs = open_blob_store(directory)
    except CapyError as exc:
        return {**found, "error": str(exc)}
    s3 = os.environ.get("CAPY_BLOB_URL", "").strip()
    found.update(kind="s3" if s3 else "local", location=blobs.describe())
    try:
        next(iter(blobs.objects.list("projects/")), None)  # one listing: reachable, allowed
    except CapyError as exc:
        return {**found, "error": str(exc)}
    except OSError as exc:
        return {**found, "error": f"{type(exc).__name__}: {exc}"}
    return {**found, "reachable": True}


@click.command(
    epilog=example(
        "capy doctor --engine-dir .capy",
        "capy doctor --engine-dir /srv/capy --json",
    )
)
@engine_dir_option
@json_option
def doctor() -> None:
    """Check the engine directory: nothing in it readable by others (and the key file);
    say which metadata store is in use (CAPY_STORE_URL, password hidden) and if it answers.

    Prints each problem with the command that fixes it (such as `chmod -R go-rwx DIR`)
    and exits 1 when there is one; 0 when all is well.
    """
    from pulumi_capy.engine.secret_keys import ENV_SECRET_KEY, KEY_FILE_NAME

    directory = engine_directory()
    store = _store(directory)
    if not directory.is_dir():
        emit(
            {"engine_dir": str(directory), "exists": False, "store": store, "problems": []},
            lambda: click.echo(f"no engine directory at {directory}: nothing to check"),
        )
        return
    problems = _problems(directory)
    blobs = _blobs(directory)
    if not blobs["reachable"]:
        problems.append(
            {
                "path": blobs["location"] or "CAPY_BLOB_URL",
                "mode": None,
                "warning": f"the blob store cannot be used: {blobs['error']}",
                "fix": "check CAPY_BLOB_URL, the AWS_* variables and CAPY_BLOB_KEY",
            }
        )
    if store["kind"] == "postgresql" and not store["reachable"]:
        problems.append(
            {
                "path": store["location"],
                "mode": None,
                "warning": f"the store {store['location']} cannot be reached: {store['error']}",
                "fix": "check CAPY_STORE_URL (host, port, user, password, database)",
            }
        )
    key_source = (
        ENV_SECRET_KEY
        if os.environ.get(ENV_SECRET_KEY, "").strip()
        else str(directory / KEY_FILE_NAME)
    )

    def human() -> None:
        click.echo(f"engine directory: {directory}")
        reachable = "reachable" if store["reachable"] else f"not reachable ({store['error']})"
        click.echo(f"metadata store: {store['kind']} {store['location']}, {reachable}")
        click.echo(f"secret keys from: {key_source}")
        if blobs["reachable"]:
            keys = blobs["encryption"]
            sealed = f"encrypted (key ids {', '.join(keys)})" if keys else "not encrypted"
            click.echo(f"blob store: {blobs['kind']} {blobs['location']}, reachable, {sealed}")
        for problem in problems:
            click.echo(f"warning: {problem['warning']}")
            click.echo(f"  fix: {problem['fix']}")
        if not problems:
            click.echo("ok: nothing in it is open to a group or to others")

    emit(
        {
            "engine_dir": str(directory),
            "exists": True,
            "key_source": key_source,
            "store": store,
            "blobs": blobs,
            "problems": problems,
        },
        human,
    )
    if problems:
        raise click.exceptions.Exit(1)
