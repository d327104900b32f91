"""The CapyDB contract in code: models, errors, the ``Backend`` protocol, the HTTP client."""

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.client import DEFAULT_API_URL, CapyClient
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
