"""The CapyDB contract in code: models, errors, the ``Backend`` protocol, the HTTP client."""

from typing import TYPE_CHECKING, Any

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import (
    ApiError,
    BadRequest,
    CapyError,
    ConfigError,
    Conflict,
    Forbidden,
    InvalidInput,
    JobFailed,
    JobTimeout,
    NotFound,
    NotSupported,
    RateLimited,
    ServerError,
    Unauthorized,
    Unreachable,
)
from pulumi_capy.api.retry import HttpRetryPolicy
from pulumi_capy.api.urls import DEFAULT_API_URL

if TYPE_CHECKING:
    from pulumi_capy.api.client import CapyClient


def __getattr__(name: str) -> Any:
    """``CapyClient`` on first use: its module imports httpx, which the embedded mode
    (a provider process, the engine) never needs."""
    if name == "CapyClient":
        from pulumi_capy.api.client import CapyClient

        return CapyClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_API_URL",
    "ApiError",
    "Backend",
    "BadRequest",
    "CapyClient",
    "CapyError",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "HttpRetryPolicy",
    "InvalidInput",
    "JobFailed",
    "JobTimeout",
    "NotFound",
    "NotSupported",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "Unreachable",
]
