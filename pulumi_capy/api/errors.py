"""Every error pulumi_capy raises. One root, a short tree:

    CapyError                   anything this package raises on purpose
    ├── ConfigError             settings that cannot work (malformed key, unknown mode)
    │   └── ConflictingSettings two explicit settings select different back ends
    ├── NotSupported            an operation this back end does not offer
    ├── Unreachable             the API could not be reached (connection, TLS, timeout)
    ├── ApiError                an answer of the CapyDB API, or the engine's equivalent
    │   ├── BadRequest          400: invalid input; the message names the field
    │   │   └── InvalidInput    400 raised before anything was sent, one entry per field
    │   ├── Unauthorized        401: no key, or a rejected one
    │   ├── Forbidden           403: valid key, call not allowed
    │   ├── NotFound            404: unknown (or another organization's) object
    │   ├── Conflict            409: the object's state forbids the call
    │   ├── RateLimited         429: too many calls; carries ``retry_after``
    │   └── ServerError         5xx: a fault of the service
    ├── JobFailed               a job ended ``failed``; carries the job
    ├── JobTimeout              a job did not end in time; carries the job
    ├── EngineFailure           a step of a job failed; ``permanent``: no retry can help
    │   ├── PermanentFailure    the job cannot succeed (engine.jobs)
    │   ├── ChecksumMismatch    a blob's bytes differ from its checksum (engine.blobs)
    │   ├── BlobMissing         a backup's blob is gone (engine.blobs)
    │   ├── BlobKeyMissing      an encrypted blob's key is not listed (engine.blob_crypto)
    │   ├── BlobAuthenticationFailed
    │   │                       an encrypted blob does not authenticate (engine.blob_crypto)
    │   └── DriverFailure       a driver step failed; carries its outcome (engine.drivers)
    ├── TarDamaged              a dump stream is not the tar the engine wrote (engine.tarstream)
    └── CapyResourceError       a provider call failed, as Pulumi shows it (resources)

The server maps each ``ApiError`` class to exactly one HTTP status
(``server.handlers``); a ``DriverFailure`` or ``TarDamaged`` that reaches it is an
unexpected fault (a 500 that reveals nothing). The job worker retries an
``EngineFailure`` unless it is ``permanent``, and any other exception as a
transient failure. ``Deferred`` and ``LeaseLost`` (engine.queue) are signals the
worker catches itself, not errors, and stay outside the tree. Messages say what
was being done and what to do next; they never contain a credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # the job JobFailed carries; models import nothing from here
    from pulumi_capy.api.models import Job

__all__ = [
    "ApiError",
    "BadRequest",
    "CapyError",
    "ConfigError",
    "Conflict",
    "ConflictingSettings",
    "EngineFailure",
    "FieldError",
    "Forbidden",
    "InvalidInput",
    "JobFailed",
    "JobTimeout",
    "NotFound",
    "NotSupported",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "Unreachable",
    "error_for_status",
]

_TAIL_CHARS = 2000


class CapyError(Exception):
    """pulumi_capy failed."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (type(self).__doc__ or "").strip()
        super().__init__(self.message)


class ConfigError(CapyError):
    """The capy settings are invalid."""


class ConflictingSettings(ConfigError):
    """Two settings select different back ends."""


class NotSupported(CapyError):
    """This back end does not offer that operation."""


class Unreachable(CapyError):
    """The API could not be reached."""


class ApiError(CapyError):
    """The CapyDB API refused the call."""

    status_code: ClassVar[int] = 500
    hint: ClassVar[str] = ""

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None = None,
        method: str | None = None,
        url: str | None = None,
    ) -> None:
        self.status = status_code if status_code is not None else type(self).status_code
        self.method = method
        self.url = url
        self.detail = message or (type(self).__doc__ or "").strip()
        text = self.detail
        if method and url:
            text = f"{self.status} from {method} {url}: {text}"
        if self.hint and method:
            text = f"{text}; {self.hint}"
        super().__init__(text)


class BadRequest(ApiError):
    """The request is invalid."""

    status_code = 400


@dataclass(frozen=True)
class FieldError:
    """One invalid field of a request: its dotted name and what is wrong."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidInput(BadRequest):
    """The request is invalid; nothing was sent or changed."""

    def __init__(self, errors: Sequence[FieldError], *, what: str | None = None) -> None:
        self.errors = list(errors)
        by_message: dict[str, list[str]] = {}
        for error in self.errors:
            by_message.setdefault(error.message, []).append(error.field)
        summary = "; ".join(
            f"{', '.join(fields)}: {message}" for message, fields in by_message.items()
        )
        summary = summary or "invalid input"
        super().__init__(f"{what}: {summary}" if what else summary)

    @property
    def fields(self) -> list[str]:
        return [error.field for error in self.errors]


class Unauthorized(ApiError):
    """No API key was given, or the key was rejected."""

    status_code = 401
    hint = (
        "the API key was rejected; set CAPYDB_API_KEY or "
        "`pulumi config set --secret capy:apiKey <key>`"
    )


class Forbidden(ApiError):
    """The credential is valid but may not make this call."""

    status_code = 403
    hint = "check the key's scopes and project, or use an organization key"


class NotFound(ApiError):
    """No such object."""

    status_code = 404
    hint = "check the id; objects of other organizations are reported as not found"


class Conflict(ApiError):
    """The object's current state does not allow this call."""

    status_code = 409


class RateLimited(ApiError):
    """Too many requests."""

    status_code = 429
    hint = "the API is rate limiting this key; retry later"

    def __init__(
        self,
        message: str | None = None,
        *,
        status_code: int | None = None,
        method: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status_code=status_code, method=method, url=url)


class ServerError(ApiError):
    """The service failed."""

    status_code = 500
    hint = "the service had a fault; try again later"


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def error_for_status(status_code: int) -> type[ApiError]:
    """The class for an HTTP error status (other 4xx are ``BadRequest``, 5xx ``ServerError``)."""
    if status_code >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return ServerError
    return _BY_STATUS.get(status_code, BadRequest)


def _output_tail(job: Job) -> str:
    parts = []
    for name, text in (("stderr", job.last_stderr), ("stdout", job.last_stdout)):
        if text and text.strip():
            tail = text.strip()[-_TAIL_CHARS:]
            parts.append(f"{name} (tail):\n{tail}")
    return "\n".join(parts)


class JobFailed(CapyError):
    """A job failed."""

    def __init__(self, job: Job) -> None:
        self.job = job
        text = (
            f"job {job.id} ({job.type}) failed after {job.attempts} attempt(s): "
            f"{job.error or 'no error recorded'}"
        )
        if job.last_exit_code is not None:
            text += f" [exit code {job.last_exit_code}]"
        tail = _output_tail(job)
        if tail:
            text += "\n" + tail
        super().__init__(text)


class JobTimeout(CapyError):
    """A job did not finish in time."""

    def __init__(self, job: Job, timeout: float) -> None:
        self.job = job
        self.timeout = timeout
        super().__init__(
            f"job {job.id} ({job.type}) is still {job.state} after {timeout:g}s; it goes on "
            f"in the background: follow it with `capy jobs get --job-id {job.id} --wait`"
        )


class EngineFailure(CapyError):
    """A step of a job failed."""

    #: whether no retry could help; subclasses that can be transient set it per instance
    permanent: bool = True
