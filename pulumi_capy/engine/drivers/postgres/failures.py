"""What went wrong in a PostgreSQL step, as a ``DriverFailure``: the first real cause
of what ``pg_dump``, ``pg_restore`` or libpq printed, with every password masked, and
whether a retry could help."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import unquote, urlsplit

import psycopg

from pulumi_capy.engine.drivers import DriverFailure, Outcome

__all__ = [
    "PRIVILEGE_HINT",
    "cause",
    "command_failure",
    "is_permanent",
    "mask",
    "statement_failure",
]

# a password in a statement (an option of a user mapping) or a connection string
SECRET_OPTION = re.compile(r"(?i)(\bpassword\s*=\s*|\bpassword\s+(?='))('(?:[^']|'')*'|[^\s',)]+)")
ERROR_LINE = re.compile(r"\b(?:error|ERROR|FATAL|PANIC):")
# what pg_dump / pg_restore / libpq print when retrying may help
TRANSIENT = (
    "could not connect",
    "connection refused",
    "timeout expired",
    "server closed the connection",
    "the database system is starting up",
    "the database system is shutting down",
    "too many connections",
    "could not translate host name",
    "is being accessed by other users",  # a swap met a session; the next attempt may not
)
PRIVILEGE_HINT = (
    "the engine's role needs CREATEDB, ownership of the project database, the right to "
    "terminate its connections, and to give every object back to its owner: a superuser "
    "can; another role only where PostgreSQL lets it (see the README)"
)


def is_permanent(text: str) -> bool:
    """True when a failure that printed ``text`` would fail again on a retry."""
    lowered = text.lower()
    return not any(marker in lowered for marker in TRANSIENT)


def cause(stderr: str) -> str | None:
    """The first real cause in what pg_restore, pg_dump or libpq printed: the first
    error line, the DETAIL/HINT lines after it and the first line of the statement that
    failed (pg_restore's last line is often only the end of that statement)."""
    lines = [line.rstrip() for line in stderr.splitlines()]
    for index, line in enumerate(lines):
        if ERROR_LINE.search(line):
            return " ".join([line.strip(), *_explained(lines[index + 1 :])])
    return None


def _explained(following: list[str]) -> list[str]:
    """The DETAIL/HINT/CONTEXT lines and the failed statement after an error line."""
    found: list[str] = []
    for follow in following:
        stripped = follow.strip()
        if stripped.startswith(("DETAIL:", "HINT:", "CONTEXT:")):
            found.append(stripped)
        elif stripped.startswith("Command was:"):
            command = stripped.removeprefix("Command was:").strip()
            found.append(f"(while running: {command[:200]})")
            break
        elif not stripped.startswith("LINE ") and not stripped.startswith("^"):
            break
    return found


def mask(text: str, url: str) -> str:
    """``text`` without the URL's password (as written and decoded) nor any password a
    failed statement carried (``OPTIONS (password '…')``, ``password=…`` in a
    connection string)."""
    password = urlsplit(url).password
    for secret in (password, unquote(password)) if password else ():
        text = text.replace(secret, "***")
    return SECRET_OPTION.sub(
        lambda found: found.group(1) + ("'***'" if found.group(2).startswith("'") else "***"),
        text,
    )


def command_failure(
    doing: str, done: subprocess.CompletedProcess[str], url: str = ""
) -> DriverFailure:
    """A binary that exited with an error: its first real cause, its output masked."""
    stderr = mask(done.stderr or "", url)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {done.returncode}"
    message = f"{doing}: {cause(stderr) or last}"
    if "permission denied" in stderr.lower() or "must be owner" in stderr.lower():
        message += f" ({PRIVILEGE_HINT})"
    outcome = Outcome(message, done.returncode, mask(done.stdout or "", url), stderr)
    # killed by a signal (negative exit code): nothing wrong with the data, try again
    permanent = done.returncode > 0 and is_permanent(stderr)
    return DriverFailure(message, permanent=permanent, outcome=outcome)


def statement_failure(doing: str, exc: psycopg.Error) -> DriverFailure:
    """A control statement that failed, with the privileges hint when it was refused."""
    text = str(exc).strip()
    hint = f" ({PRIVILEGE_HINT})" if isinstance(exc, psycopg.errors.InsufficientPrivilege) else ""
    return DriverFailure(f"{doing}: {text}{hint}", permanent=is_permanent(text))
