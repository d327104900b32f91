"""The hosted API's default URL and how a given base URL is written, without the HTTP
client (``client`` imports httpx; the embedded mode never needs it)."""

from __future__ import annotations

__all__ = ["DEFAULT_API_URL", "normalize_api_url"]

DEFAULT_API_URL = "https://capydb.dev/api/capydb"


def normalize_api_url(url: str) -> str:
    """The base URL the client joins ``v1/…`` to: ``url`` without trailing slashes and
    without a final ``/v1`` (``capy serve`` prints ``http://HOST:PORT/v1``; users paste it)."""
    url = url.strip().rstrip("/")
    if url.endswith("/v1"):
        url = url.removesuffix("/v1").rstrip("/")
    return url
