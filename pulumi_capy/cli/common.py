"""What every ``capy`` command shares: the back end, ``--json``, output, ``--wait``, errors.

Commands stay thin: build the library objects (``backend()``), call one method,
print with ``emit``. Every ``CapyError`` is turned into one line on stderr
(``capy: error: …``) and exit code 1 by ``CapyGroup``, the one boundary.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import click
from pydantic import BaseModel
from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import (
    BadRequest,
    CapyError,
    ConflictingSettings,
    JobFailed,
    JobTimeout,
)
from pulumi_capy.api.models import ApiRequest, Job, JobState, format_bytes
from pulumi_capy.api.validation import parse_request

__all__ = [
    "CapyGroup",
    "Failure",
    "State",
    "backend",
    "backend_options",
    "describe_job",
    "echo",
    "embedded",
    "emit",
    "engine_dir_option",
    "engine_directory",
    "example",
    "fmt",
    "follow_command",
    "json_option",
    "jsonable",
    "note",
    "note_queued",
    "project_option",
    "request",
    "resolve",
    "resolve_preview",
    "resolve_project",
    "resolve_restore_point",
    "show_table",
    "state",
    "timeout_option",
    "wait_for",
    "worker_command",
]

F = TypeVar("F", bound=Callable[..., Any])
RequestT = TypeVar("RequestT", bound=ApiRequest)

DEBUG_ENV = "CAPY_DEBUG"  # set to 1 to see the traceback of an unexpected error
WIDE = 4096  # columns when stdout is not a terminal (pipes, logs): rows are not folded


# ---------------------------------------------------------------- errors


class Failure(click.ClickException):
    """An error of a command: one line on stderr, ``capy: error: …``, exit code 1."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
        super().__init__(lines[0] if lines else "failed")

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"capy: error: {self.format_message()}", err=True)


def _one_line(error: CapyError) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, JobFailed):
        text += f" (output: capy jobs get --job-id {error.job.id} --json)"
    return text


def _with_flags(text: str, flags: Mapping[str, str]) -> str:
    """``text`` with the API fields the user gave as options named as those options."""
    if not flags:
        return text
    names = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
    return re.sub(rf"(?<![\w-])({names})(?!\w)", lambda found: flags[found[1]], text)


class CapyGroup(click.Group):
    """A command group whose ``invoke`` is the error boundary of the whole CLI."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:  # Ctrl-C outside a wait (``wait_for`` says more there)
            note("capy: interrupted")
            raise click.exceptions.Exit(INTERRUPTED) from None
        except CapyError as exc:
            text = _one_line(exc)
            if isinstance(exc, BadRequest):
                current = ctx.find_object(State)
                text = _with_flags(text, current.flags if current else {})
            raise Failure(text) from None
        except OSError as exc:
            raise Failure(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            raise Failure(
                f"unexpected {type(exc).__name__}: {exc} "
                f"(set {DEBUG_ENV}=1 to see the traceback, and please report it)"
            ) from None


# ---------------------------------------------------------------- state and options


@dataclass
class State:
    """What the options of the group and of the command said; the back end, made once."""

    engine_dir: str | None = None
    api_url: str | None = None
    mode: str | None = None
    json: bool = False
    flags: dict[str, str] = field(default_factory=dict)  # API field -> the option that set it
    _backend: Backend | None = None


def state() -> State:
    return click.get_current_context().ensure_object(State)


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """An option callback that stores a given value in ``State`` (a command's beats the group's)."""

    def callback(ctx: click.Context, _: click.Parameter, value: Any) -> Any:
        if value is not None and value is not False:
            setattr(ctx.ensure_object(State), name, value)
        return value

    return callback


def engine_dir_option(function: F) -> F:
    return click.option(
        "--engine-dir",
        metavar="DIR",
        expose_value=False,
        callback=_remember("engine_dir"),
        help="Use the embedded restore engine in DIR (env CAPY_ENGINE_DIR; default .capy).",
    )(function)


def backend_options(function: F) -> F:
    """``--engine-dir``, ``--api-url``, ``--mode``: which back end (accepted on the group too)."""
    function = click.option(
        "--mode",
        type=click.Choice(["api", "embedded"], case_sensitive=False),
        expose_value=False,
        callback=_remember("mode"),
        help="Force the back end (env CAPY_MODE; default: api when CAPYDB_API_KEY is set).",
    )(function)
    function = click.option(
        "--api-url",
        metavar="URL",
        expose_value=False,
        callback=_remember("api_url"),
        help="CapyDB or a `capy serve` (env CAPYDB_API_URL). The API key is read only "
        "from CAPYDB_API_KEY, never from a flag, so it stays out of shell history.",
    )(function)
    return engine_dir_option(function)


def json_option(function: F) -> F:
    return click.option(
        "--json",
        "json_output",
        is_flag=True,
        expose_value=False,
        callback=_remember("json"),
        help="Print machine-readable JSON on stdout, and nothing else.",
    )(function)


def project_option(function: F) -> F:
    """``--project``: an id, or a project's name (resolved through the list of projects)."""

    @functools.wraps(function)
    def resolving(*args: Any, **kwargs: Any) -> Any:
        if isinstance(kwargs.get("project"), str):
            kwargs["project"] = resolve_project(kwargs["project"])
        return function(*args, **kwargs)

    return click.option(
        "--project", required=True, metavar="PROJECT", help="The project: its id or its name."
    )(cast(F, resolving))


TIMEOUT_HELP = "With --wait: give up waiting after MIN minutes (the job goes on)."


def timeout_option(function: F, help: str = TIMEOUT_HELP) -> F:
    """``--timeout MIN``; ``help`` for a command that waits without a ``--wait``."""
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=60.0,
        show_default=True,
        metavar="MIN",
        help=help,
    )(function)


def example(*lines: str) -> str:
    """A command's epilog: ``Example:`` and its command lines, kept as written."""
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


# ---------------------------------------------------------------- the back end


def engine_directory() -> Path:
    """--engine-dir, else CAPY_ENGINE_DIR, else .capy (the settings' rules, minus the mode):
    for the commands that work on the engine directory itself (serve, worker, wal-push)."""
    from pulumi_capy.settings import resolve

    environ = {name: os.environ[name] for name in ("CAPY_ENGINE_DIR",) if name in os.environ}
    return resolve(mode="embedded", engine_dir=state().engine_dir, environ=environ).engine_dir


# How the options that choose the back end are called, for the settings' messages.
_FLAGS = {"mode": "--mode", "api_url": "--api-url", "engine_dir": "--engine-dir"}


def has_engine(directory: Path) -> bool:
    """Whether an engine is there to work on: ``engine.db`` in ``directory``, or the
    metadata in PostgreSQL (``CAPY_STORE_URL``), the directory only this host's scratch."""
    return bool(os.environ.get("CAPY_STORE_URL", "").strip()) or (directory / "engine.db").is_file()


def _require_engine(directory: Path) -> None:
    """A command that works on what is there (a read, a project's backup) makes no engine."""
    if directory.exists() and not directory.is_dir():
        return  # the engine says it is a file, naming it
    if os.environ.get("CAPY_STORE_URL", "").strip():
        return  # the metadata is in PostgreSQL: the directory is only this host's scratch
    if not (directory / "engine.db").exists():
        why = "no such directory" if not directory.exists() else "it has no engine.db"
        raise Failure(
            f"no capy engine in {directory} ({why}): nothing is there yet; give --engine-dir "
            "(or CAPY_ENGINE_DIR) the directory of an existing engine, or start one there "
            "with `capy projects create`"
        )


def backend(*, start: bool = False) -> Backend:
    """The back end the options and the environment select, made once per command.

    Embedded, only a command with ``start`` (``projects create``, ``keys create``) makes
    a missing engine directory; for any other (``list``, ``get``, ``status``, a backup of
    a project...) there is nothing there to work on, and the error names the directory.
    """
    current = state()
    if current._backend is None:
        from pulumi_capy.settings import Mode, resolve

        try:
            settings = resolve(
                mode=current.mode,
                api_url=current.api_url,
                engine_dir=current.engine_dir,
                names=_FLAGS,
            )
        except ConflictingSettings as exc:
            raise click.UsageError(str(exc)) from None
        if not start and settings.mode is Mode.embedded:
            _require_engine(settings.engine_dir)
        made = settings.open_backend()
        click.get_current_context().find_root().call_on_close(made.close)
        current._backend = made
    return current._backend


# API fields whose option has another name (the others are spelt alike: ttl_hours, --ttl-hours)
OPTION_OF_FIELD = {
    "restore_point_id": "restore_point",
    "allow_unverified_backup": "allow_unverified",
    "confirm_project_overwrite": "confirm",
    "project_id": "project",
    "cron_hour": "hour",
    "cron_minute": "minute",
}


def request(model: type[RequestT], **fields: Any) -> RequestT:
    """A request from the options given (``None`` left out). Its fields are remembered
    with the options that set them, so that a ``BadRequest`` names ``--restore-point``
    where the API says ``restore_point_id``."""
    context = click.get_current_context()
    options = {
        parameter.name: max(parameter.opts, key=len)
        for parameter in context.command.params
        if isinstance(parameter, click.Option) and parameter.name
    }
    remembered = state().flags
    for name in fields:
        option = options.get(OPTION_OF_FIELD.get(name, name))
        # only identifiers (restore_point_id), not words a message uses as words (name, kind)
        if option is not None and "_" in name:
            remembered[name] = option
    return parse_request(
        model, {name: value for name, value in fields.items() if value is not None}
    )


# ---------------------------------------------------------------- names and ids


def resolve(
    kind: str, value: str, prefix: str, candidates: Iterable[tuple[str, str | None]]
) -> str:
    """The id of the ``kind`` that ``value`` names: ``value`` itself when it has the ids'
    ``prefix`` (the back end then says if there is none), else the one candidate
    ``(id, name)`` so named. None, or several, is a ``Failure`` that lists the candidates."""
    if value.startswith(prefix):
        return value
    found = list(candidates)
    matching = [ident for ident, name in found if name == value]
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise Failure(
            f"{len(matching)} {kind}s are named {value!r}: {', '.join(sorted(matching))}; "
            "give the id"
        )
    listed = ", ".join(f"{name} ({ident})" for ident, name in found) or "none"
    raise Failure(f"no {kind} has the id or name {value!r}; there are: {listed}")


def resolve_project(value: str) -> str:
    """A project's id from its id or its name."""
    return resolve("project", value, "prj_", ((p.id, p.name) for p in backend().list_projects()))


def resolve_restore_point(project: str, value: str) -> str:
    """A restore point's id from its id or its label."""
    points = backend().list_restore_points(project)
    return resolve("restore point", value, "rp_", ((p.id, p.label) for p in points))


def resolve_preview(project: str, value: str) -> str:
    """A preview database's id from its id or its name."""
    found = backend().list_preview_databases(project)
    return resolve("preview database", value, "prv_", ((p.id, p.name) for p in found))


# ---------------------------------------------------------------- output


def _console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console.width = WIDE
    return console


def jsonable(data: Any) -> Any:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, list | tuple):
        return [jsonable(item) for item in data]
    if isinstance(data, dict):
        return {key: jsonable(value) for key, value in data.items()}
    return data


def emit(data: Any, human: Callable[[], None]) -> None:
    """``--json``: ``data`` as JSON on stdout; otherwise ``human()`` prints it for people."""
    if state().json:
        click.echo(json.dumps(jsonable(data), indent=2))
    else:
        human()


def echo(text: str) -> None:
    """One line for people on stdout."""
    click.echo(text)


def note(text: str) -> None:
    """A remark on stderr (never in the way of ``--json``)."""
    click.echo(text, err=True)


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, list | tuple):
        return " ".join(fmt(item) for item in value) or "-"
    return str(value)


Column = tuple[str, Callable[[Any], Any]]

# Columns of ids and keys, which people copy into the next command: never folded or cut.
ID_HEADERS = frozenset(
    {"ID", "BACKUP KEY", "BACKUP KEY / TIME", "PROJECT", "SOURCE", "PREFIX", "PATH"}
)


NARROWEST = 8  # characters a folded column keeps, at least (or its header's, if shorter)
GAP = 2  # characters between two columns


def show_table(rows: Sequence[Any], columns: Iterable[Column], empty: str) -> None:
    """A table on stdout, or the ``empty`` line when there are no rows.

    Id columns (``ID_HEADERS``) keep each value on one line, whatever the terminal's
    width; the other columns fold to make room. A terminal too narrow for that gets
    one block per row instead (the first column, then ``header: value`` lines).
    """
    if not rows:
        echo(empty)
        return
    columns = list(columns)
    headers = [header for header, _ in columns]
    cells = [[fmt(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(header), *(len(line[index]) for line in cells)) for index, header in
              enumerate(headers)]  # fmt: skip
    console = _console()
    needed = GAP * (len(columns) - 1) + sum(
        width if header in ID_HEADERS else min(width, NARROWEST)
        for header, width in zip(headers, widths, strict=True)
    )
    if needed > console.width:
        echo(_blocks(headers, cells))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for header, width in zip(headers, widths, strict=True):
        if header in ID_HEADERS:
            table.add_column(header, no_wrap=True, overflow="ignore", min_width=width)
        else:
            table.add_column(header, overflow="fold", min_width=min(width, NARROWEST))
    for line in cells:
        table.add_row(*(Text(cell) for cell in line))
    with console.capture() as captured:
        console.print(table)
    echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def _blocks(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Rows as blocks: the first column alone, then each other column on its own line."""
    label_width = max((len(header) for header in headers[1:]), default=0) + GAP
    blocks = []
    for line in cells:
        rest = (
            f"  {header.lower():<{label_width}}{cell}"
            for header, cell in zip(headers[1:], line[1:], strict=True)
        )
        blocks.append("\n".join([line[0], *rest]))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------- waiting for jobs


def describe_job(job: Job) -> str:
    text = f"job {job.id} ({job.type}): {fmt(job.state)}"
    if job.attempts:
        text += f", attempt {job.attempts}/{job.max_attempts}"
    if job.progress and job.state == JobState.running:  # the running attempt's, not a past one's
        text += f"; {job.progress.describe()}"
    if job.error:
        text += f"; last error: {job.error.strip().splitlines()[0]}"
    return text


BAR_WIDTH = 20


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


class _StatusLine:
    """The live line of ``--wait``; rendered afresh at each refresh, so the clock moves.
    A step with bytes gets a bar (when its total is known) and its rate."""

    def __init__(self, job: Job, what: str) -> None:
        self.what = what
        self.started = time.monotonic()
        self.step: str | None = None
        # the step's first and last sight: (when, bytes done), for its rate
        self.first: tuple[float, int] | None = None
        self.last: tuple[float, int] | None = None
        self.job = job
        self.shown: tuple[str, int, str | None] | None = None  # nothing yet

    def see(self, job: Job) -> bool:
        """Take the job as last seen; True when its state, attempt or step changed."""
        step = job.progress.step if job.progress else None
        key = (str(job.state), job.attempts, step)
        changed = key != self.shown
        self.shown = key
        sight = (time.monotonic(), job.progress.bytes_done or 0) if job.progress else None
        if step != self.step:
            self.step = step
            self.first = sight
        self.last = sight
        self.job = job
        return changed

    def rate(self) -> str:
        """Bytes per second of the step between its first and last sight."""
        if self.first is None or self.last is None or self.job.state != JobState.running:
            return ""
        seconds, count = self.last[0] - self.first[0], self.last[1] - self.first[1]
        if seconds <= 0 or count <= 0:
            return ""
        return f", {format_bytes(count / seconds)}/s"

    def bar(self) -> str:
        progress = self.job.progress
        fraction = progress.fraction if progress is not None else None
        if fraction is None or self.job.state != JobState.running:
            return ""
        filled = round(fraction * BAR_WIDTH)
        return f" [{'#' * filled}{'-' * (BAR_WIDTH - filled)}]"

    def text(self) -> str:
        elapsed = _clock(time.monotonic() - self.started)
        return f"{self.what}: {describe_job(self.job)}{self.bar()} [{elapsed}{self.rate()}]"

    def __rich__(self) -> Text:
        return Text(self.text())


def wait_for(job: Job, timeout_minutes: float, what: str | None = None) -> Job:
    """Wait until ``job`` ends, showing its status on stderr; return it completed.

    Raises ``JobFailed`` / ``JobTimeout`` (exit 1) otherwise; with ``--json`` the
    job as last seen is printed first. Embedded, the work runs in this process.
    """
    chosen = backend()
    line = _StatusLine(job, what or "waiting")
    console = _console(stderr=True)

    live: Live | None = None

    def update(seen: Job) -> None:
        changed = line.see(seen)
        if live is not None:
            live.refresh()  # drawn now, not at the next tick: a short step is seen too
        elif changed:  # no live line in a log: a line per state or step, not per byte count
            console.print(Text(line.text()))

    try:
        if console.is_terminal:
            # what console.status draws (a spinner before the line), refreshed at each update
            spinner = Spinner("dots", text=line)
            with Live(spinner, console=console, refresh_per_second=12.5, transient=True) as live:
                return chosen.wait_for_job(job.id, timeout_minutes * 60, update)
        return chosen.wait_for_job(job.id, timeout_minutes * 60, update)
    except (JobFailed, JobTimeout) as exc:
        if state().json:
            click.echo(json.dumps(jsonable(exc.job), indent=2))
        raise
    except KeyboardInterrupt:
        _interrupted(chosen, job)


INTERRUPTED = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT)


def _where() -> str:
    """The options that chose this command's back end, to repeat in a command we suggest
    (never a secret: the API key stays in CAPYDB_API_KEY, a URL loses its user info)."""
    current = state()
    where = ""
    if current.engine_dir:
        where = f" --engine-dir {shlex.quote(current.engine_dir)}"
    elif current.api_url:
        parts = urlsplit(current.api_url)
        bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        where = f" --api-url {shlex.quote(bare)}"
    if current.mode:
        where += f" --mode {current.mode}"
    return where


def follow_command(job_id: str) -> str:
    """The command that follows ``job_id`` to its end with the back end this one used."""
    return f"capy{_where()} jobs get --job-id {job_id} --wait"


def worker_command() -> str:
    """``capy worker`` on this command's engine directory."""
    directory = state().engine_dir
    return "capy worker" + (f" --engine-dir {shlex.quote(directory)}" if directory else "")


def embedded() -> bool:
    """Whether this command's back end is the embedded engine (its work runs only in this
    process with ``--wait``, or in a ``capy worker`` / ``capy serve --workers``)."""
    from pulumi_capy.api.client import CapyClient

    return not isinstance(backend(), CapyClient)


def note_queued(job: Job, what: str = "") -> None:
    """Where queued work stands: embedded, nothing runs it unless a worker does; said on
    the spot, with the two ways to run it."""
    follow = follow_command(job.id)
    if not embedded():
        note(f"queued as job {job.id}{what} at the server; follow it with: {follow}")
        return
    note(
        f"queued as job {job.id}{what}; nothing runs it until a worker does: run "
        f"`{worker_command()}` (it runs queued work until stopped), or add --wait to run it "
        f"here; follow it with: {follow}"
    )


def _interrupted(chosen: Backend, job: Job) -> NoReturn:
    """Ctrl-C while waiting: say where the job stands and how to follow it; exit 130.

    Embedded, the worker of this process handed back the job it was running (pending,
    claimable at once, its child processes stopped); a server's job goes on there.
    """
    from pulumi_capy.api.client import CapyClient

    try:
        seen = chosen.get_job(job.id)
    except (CapyError, OSError):
        seen = job
    follow = follow_command(job.id)
    if isinstance(chosen, CapyClient):
        note(
            f"interrupted: job {job.id} ({job.type}) goes on at the server "
            f"({fmt(seen.state)}); follow it with: {follow}"
        )
    elif seen.state == JobState.running:
        note(
            f"interrupted: job {job.id} ({job.type}) goes on in worker {seen.claimed_by}; "
            f"follow it with: {follow}"
        )
    elif seen.is_terminal:
        note(f"interrupted: {describe_job(seen)}; see it with: {follow}")
    else:
        note(
            f"interrupted: job {job.id} ({job.type}) is {fmt(seen.state)}, in the queue and "
            f"held by no one: resume it with `{follow}`, or let `{worker_command()}` run it"
        )
    raise click.exceptions.Exit(INTERRUPTED)
