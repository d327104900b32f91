"""What every capy dynamic provider shares: configuration, a back end per call,
input checking, replace-on-change diffs, progress lines and clean errors.

Provider objects are pickled into the stack state (by reference: they live in
this installed module), so they hold nothing: no credential, client or
connection. ``configure`` keeps the stack's ``capy:*`` config in this module
(one provider process per Pulumi operation). Every call gets a back end and lets it
go: an API client of its own, closed afterwards; the embedded engine is opened once
per process and directory and shared by the calls (see ``ENGINES``), so that a
refresh or destroy of many resources does not reopen the store for each. The
provider process serves up to four calls at once.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    ConfigureRequest,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.output import Unknown
from pydantic import BaseModel, ValidationError

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import CapyError
from pulumi_capy.api.models import Job, JobState, format_timestamp
from pulumi_capy.api.validation import field_errors
from pulumi_capy.settings import ENV, Mode, Settings, resolve

if TYPE_CHECKING:
    import httpx

__all__ = [
    "UNKNOWN",
    "CapyProvider",
    "CapyResourceError",
    "EngineCache",
    "ListingCache",
    "backend_session",
    "cached_listing",
    "check_past",
    "fail",
    "forget_listing",
    "progress",
]

# How the Pulumi engine marks a value not known during preview.
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

# Tests of hosted mode point the client at an ``httpx.MockTransport`` (hosted CapyDB is
# the one edge they cannot reach); ``None`` means real HTTP.
http_transport: httpx.BaseTransport | None = None

_CONFIG: dict[str, str] = {}
_CONFIG_LOCK = threading.Lock()
_ANNOUNCED: set[str] = set()

ModelT = TypeVar("ModelT", bound=BaseModel)


class CapyResourceError(CapyError):
    """A provider call failed; the message says why and what to do."""


def fail(action: str, error: BaseException) -> NoReturn:
    """Raise a clean error for Pulumi's output, without a chained traceback."""
    raise CapyResourceError(f"{action}: {error}") from None


# What a provider call answers when it failed and its message went to Pulumi's engine as
# the call's gRPC status: the dynamic provider host serializes it; the engine ignores it.
_PLACEHOLDERS_OF_CALLS: dict[str, Callable[..., Any]] = {
    "check": lambda _olds, news: CheckResult(news, []),
    "diff": lambda _id, _olds, _news: DiffResult(),
    "create": lambda _props: CreateResult("failed", {}),
    "read": lambda id_, _props: ReadResult(id_, {}),
    "update": lambda _id, _olds, _news: UpdateResult({}),
    "delete": lambda _id, _props: None,
}


def _host_context(caller: Any) -> Any:
    """The gRPC servicer context of the call when Pulumi's dynamic provider host called
    the provider method directly (its ``Create(self, request, context)`` etc.), else None."""
    context = caller.f_locals.get("context") if caller is not None else None
    try:
        grpc: Any = importlib.import_module("grpc")
    except ImportError:  # pragma: no cover - grpcio comes with pulumi
        return None
    return context if isinstance(context, grpc.ServicerContext) else None


def one_line_errors(call: Callable[..., Any]) -> Callable[..., Any]:
    """Fail a provider call with its message alone, not a Python traceback.

    Pulumi's dynamic provider host (``pulumi/dynamic/__main__.py``) turns any exception
    of a provider method into ``context.abort(UNKNOWN, traceback.format_exc())``: ten
    lines of traceback before the message. A ``CapyError`` raised to the host instead
    sets the call's gRPC status (``UNKNOWN``, the message as details) on that context
    and returns a placeholder result, which the engine ignores for a failed call: the
    ``pulumi up`` output shows ``error: <message>``. Called by anything else (another
    provider method, a test), the error is raised as it was.
    """
    placeholder = _PLACEHOLDERS_OF_CALLS[call.__name__]

    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except CapyError as exc:
            context = _host_context(sys._getframe(1))
            if context is None or kwargs:
                raise
            grpc: Any = importlib.import_module("grpc")
            context.set_code(grpc.StatusCode.UNKNOWN)
            context.set_details(str(exc))
            return placeholder(*args[1:])

    return wrapper


def progress(message: str) -> None:
    """One line in the ``pulumi up`` output (the provider's stderr is shown there)."""
    print(f"capy: {message}", file=sys.stderr, flush=True)


def current_settings() -> Settings:
    with _CONFIG_LOCK:
        config = dict(_CONFIG)
    return resolve(config=config, environ=os.environ, cwd=Path.cwd())


class EngineCache:
    """The embedded engine of this process, opened once per engine directory and shared
    by the provider's calls (the engine is thread-safe; several processes may use one
    directory at once, so other processes' writes are seen as before).

    One directory is current at a time (a provider process has one configuration): an
    engine of another directory is closed once no call uses it. An engine whose
    ``engine.db`` is no longer the file it opened (the directory was removed or
    replaced) is not reused: the next call opens the directory again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # directory -> [engine, the identity of its engine.db, calls using it]
        self._entries: dict[Path, list[Any]] = {}
        self._current: Path | None = None

    @staticmethod
    def _identity(directory: Path) -> tuple[int, int] | None:
        try:
            status = os.stat(directory / "engine.db")
        except OSError:
            return None
        return status.st_dev, status.st_ino

    def acquire(self, settings: Settings) -> Backend:
        directory = settings.engine_dir.expanduser().resolve()
        with self._lock:
            if self._current != directory:
                self._current = directory
                self._close_idle()
            entry = self._entries.get(directory)
            if entry is not None and entry[1] != self._identity(directory):
                del self._entries[directory]  # its file is gone: the last user closes it
                if entry[2] == 0:
                    entry[0].close()
                entry = None
            if entry is None:
                engine = settings.open_backend()
                entry = [engine, self._identity(directory), 0]
                self._entries[directory] = entry
            entry[2] += 1
            backend: Backend = entry[0]
            return backend

    def release(self, backend: Backend) -> None:
        with self._lock:
            for directory, entry in list(self._entries.items()):
                if entry[0] is backend:
                    entry[2] -= 1
                    if directory != self._current and entry[2] == 0:
                        del self._entries[directory]
                        backend.close()
                    return
            backend.close()  # dropped from the cache while in use: its last user closes it

    def _close_idle(self) -> None:
        for directory, entry in list(self._entries.items()):
            if directory != self._current and entry[2] == 0:
                del self._entries[directory]
                entry[0].close()

    def clear(self) -> None:
        """Close every engine no call uses (tests; the end of the process)."""
        with self._lock:
            self._current = None
            self._close_idle()


ENGINES = EngineCache()
atexit.register(ENGINES.clear)


@contextmanager
def backend_session(settings: Settings | None = None) -> Iterator[Backend]:
    """A back end for one provider call: the process's engine of the embedded mode's
    directory (shared, see ``EngineCache``), or an API client closed afterwards."""
    try:
        settings = settings or current_settings()
    except CapyError as exc:
        fail("capy configuration", exc)
    if settings.describe() not in _ANNOUNCED:
        _ANNOUNCED.add(settings.describe())
        progress(settings.describe().removeprefix("capy: "))
    if settings.mode is Mode.embedded:
        engine = ENGINES.acquire(settings)
        try:
            yield engine
        finally:
            ENGINES.release(engine)
        return
    backend = settings.open_backend(transport=http_transport)
    try:
        yield backend
    finally:
        backend.close()


def settings_key(settings: Settings) -> str:
    """Which service a listing came from (never includes the key)."""
    if settings.mode is Mode.embedded:
        return f"embedded:{settings.engine_dir}"
    return f"api:{settings.api_url}"


class ListingCache:
    """Short-lived listings shared by the provider's threads.

    A refresh reads every resource at once; N restore points of one project
    share one listing instead of N. Concurrent misses of the same key wait for
    the first caller's answer (single flight).
    """

    def __init__(self, ttl: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Any]] = {}
        self._key_locks: dict[str, threading.Lock] = {}

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                entry = self._entries.get(key)
            if entry is not None and self._clock() - entry[0] < self.ttl:
                return entry[1]
            value = load()
            with self._lock:
                self._entries[key] = (self._clock(), value)
            return value

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)


LISTINGS = ListingCache()


def listing_key(kind: str, project_id: str) -> str:
    return f"{settings_key(current_settings())}:{kind}:{project_id}"


def cached_listing(kind: str, project_id: str, load: Callable[[], Any]) -> Any:
    """A listing of ``kind`` in ``project_id``, shared for a few seconds by all threads."""
    return LISTINGS.get(listing_key(kind, project_id), load)


def forget_listing(kind: str, project_id: str) -> None:
    """After changing the project's ``kind`` objects, the next read lists again."""
    LISTINGS.forget(listing_key(kind, project_id))


def is_unknown(value: Any) -> bool:
    """Whether Pulumi does not know the value yet (preview). The SDK hands it over as
    ``pulumi.output.Unknown``, as an output value, or as the sentinel string."""
    if isinstance(value, pulumi.Output | Unknown):
        return True
    return isinstance(value, str) and value == UNKNOWN


# Stand-ins that pass validation for values Pulumi does not know yet (preview).
_PLACEHOLDERS: dict[str, Any] = {
    "pitr_time": "2000-01-01T00:00:00Z",
    "restore_time": "2000-01-01T00:00:00Z",
    "ttl_hours": 24,
}


def check_model(
    model: type[ModelT],
    data: Mapping[str, Any],
    failures: list[CheckFailure],
    rename: Mapping[str, str] | None = None,
) -> ModelT | None:
    """Validate ``data`` as ``model``; add a ``CheckFailure`` per bad property. The
    validated request when nothing failed (with stand-ins for unknown values).

    Unknown values (preview) are replaced by stand-ins and never fail.
    ``rename`` maps a model field to the resource property it came from.
    """
    unknown = {key for key, value in data.items() if is_unknown(value)}
    candidate = {
        key: (_PLACEHOLDERS.get(key, "unknown") if key in unknown else value)
        for key, value in data.items()
        if value is not None
    }
    try:
        return model.model_validate(candidate)
    except ValidationError as exc:
        for error in field_errors(exc):
            name = (rename or {}).get(error.field, error.field)
            if error.field.split(".")[0] not in unknown:
                failures.append(CheckFailure(name, f"{name}: {error.message}"))
        return None


def check_past(
    props: Mapping[str, Any], name: str, moment: datetime | None, failures: list[CheckFailure]
) -> None:
    """A moment to restore to has passed: one in the future is in no PITR window."""
    if moment is None or is_unknown(props.get(name)):
        return
    if moment > datetime.now(UTC):
        failures.append(
            CheckFailure(
                name,
                f"{name}: {format_timestamp(moment)} is in the future; point-in-time "
                "recovery restores a moment that has passed (inside the project's PITR window)",
            )
        )


def check_string(
    props: Mapping[str, Any], name: str, failures: list[CheckFailure], *, required: bool = False
) -> None:
    value = props.get(name)
    if value is None:
        if required:
            failures.append(CheckFailure(name, f"{name}: required"))
        return
    if is_unknown(value):
        return
    if not isinstance(value, str) or not value.strip():
        failures.append(CheckFailure(name, f"{name}: must be a non-empty string"))


def check_bool(props: Mapping[str, Any], name: str, failures: list[CheckFailure]) -> None:
    value = props.get(name)
    if value is not None and not is_unknown(value) and not isinstance(value, bool):
        failures.append(CheckFailure(name, f"{name}: must be true or false"))


def job_outputs(job: Job) -> dict[str, Any]:
    """A job's fields as outputs (``job_id`` instead of ``id``)."""
    data = job.model_dump(mode="json", exclude={"id", "result"})
    data["job_id"] = job.id
    data["result"] = job.result or {}
    return data


def model_outputs(model: BaseModel, id_name: str) -> dict[str, Any]:
    data = model.model_dump(mode="json", exclude={"id"})
    data[id_name] = getattr(model, "id")  # noqa: B009 - every object model has an id
    return data


# seconds between two lines of ``pulumi up`` that only move a step's bytes done
BYTES_LINE_EVERY = 5.0


def report_job(what: str) -> Callable[[Job], None]:
    """An ``on_update`` callback that prints the job's state and attempt."""
    started = time.monotonic()
    shown: tuple[str, int, str | None] | None = None
    shown_at = 0.0

    def on_update(job: Job) -> None:
        nonlocal shown, shown_at
        now = time.monotonic()
        elapsed = now - started
        key = (str(job.state), job.attempts, job.progress.step if job.progress else None)
        # a line per state, attempt or step; a step's byte counts at most every few seconds
        if key == shown and now - shown_at < BYTES_LINE_EVERY:
            return
        shown, shown_at = key, now
        running = job.state == JobState.running  # the running attempt's step, not a past one's
        step = f": {job.progress.describe()}" if job.progress and running else ""
        progress(
            f"{what}: job {job.id} {job.state} (attempt {job.attempts}/{job.max_attempts}, "
            f"{elapsed:.0f}s){step}"
        )

    return on_update


class CapyProvider(ResourceProvider):
    """Base of the capy providers. Subclasses list their ``input_names``.

    Every call Pulumi makes (``check``, ``diff``, ``create``, ``read``, ``update``,
    ``delete``) fails with one clean message: see ``one_line_errors``.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _PLACEHOLDERS_OF_CALLS:
            method = cls.__dict__.get(name)
            if method is not None and not getattr(method, "__wrapped__", None):
                setattr(cls, name, one_line_errors(method))

    input_names: tuple[str, ...] = ()
    # inputs that may change without replacing the resource
    updatable: frozenset[str] = frozenset()

    def configure(self, req: ConfigureRequest) -> None:
        values: dict[str, str] = {}
        for config_key, _ in ENV.values():
            value = req.config.get(f"capy:{config_key}")
            if value is not None and value != "":
                values[f"capy:{config_key}"] = str(value)
        with _CONFIG_LOCK:
            _CONFIG.clear()
            _CONFIG.update(values)

    def stored_input(self, olds: Mapping[str, Any], name: str) -> Any:
        """The input as given at creation (some outputs of the same name are resolved)."""
        requested = olds.get("requested")
        if isinstance(requested, Mapping):
            # Pulumi drops None entries from maps: a missing key was None
            return requested.get(name)
        return olds.get(name)

    def replace_reasons(self, olds: Mapping[str, Any]) -> list[str]:
        """Properties that force a replacement whatever the inputs (e.g. an expired state)."""
        return []

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [
            name
            for name in self.input_names
            if is_unknown(news.get(name)) or self.stored_input(olds, name) != news.get(name)
        ]
        replaces = [name for name in changed if name not in self.updatable]
        replaces += self.replace_reasons(olds)
        return DiffResult(
            changes=bool(changed or replaces),
            replaces=replaces,
            delete_before_replace=False,
        )

    def inputs_of(self, props: Mapping[str, Any]) -> dict[str, Any]:
        return {name: props.get(name) for name in self.input_names}

    def requested_of(self, props: Mapping[str, Any]) -> dict[str, Any]:
        """The inputs as given, kept as ``requested`` for ``stored_input``; an input not given
        is left out (read back as None): the state holds no nulls to rewrite at every step."""
        return {name: props[name] for name in self.input_names if props.get(name) is not None}

    # text inputs the contract strips; check returns them stripped, so that the
    # outputs (which come back stripped) never differ from the inputs
    stripped: tuple[str, ...] = ()

    def normalized(self, news: dict[str, Any]) -> dict[str, Any]:
        result = dict(news)
        for name in self.stripped:
            value = result.get(name)
            if isinstance(value, str) and not is_unknown(value):
                result[name] = value.strip()
        return result

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """Only ``updatable`` inputs change without a replacement, and none of them touches
        the object itself (how long to wait, what delete keeps): record them."""
        return UpdateResult({**olds, **self.inputs_of(news)})


# the base's own calls (subclasses' are wrapped by ``__init_subclass__``)
CapyProvider.diff = one_line_errors(CapyProvider.diff)  # type: ignore[method-assign]
CapyProvider.update = one_line_errors(CapyProvider.update)  # type: ignore[method-assign]
