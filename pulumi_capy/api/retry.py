"""When the HTTP client tries a call again, as a small value object."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["RETRY_STATUSES", "HttpRetryPolicy", "parse_retry_after"]

# Statuses that say "try again": rate limited, or a proxy/upstream hiccup.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class HttpRetryPolicy:
    """Exponential backoff with jitter, bounded by attempts and by a total deadline.

    ``delay(n)`` for the n-th failed attempt (1-based) is drawn from
    ``[d/2, d]`` with ``d = min(max_delay, base_delay * 2**(n-1))``; a
    ``Retry-After`` from the server replaces it.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 10.0
    deadline: float = 60.0

    def delay(
        self,
        failed_attempts: int,
        retry_after: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (failed_attempts - 1))
        return ceiling / 2 + rng() * ceiling / 2

    def next_delay(
        self,
        failed_attempts: int,
        elapsed: float,
        retry_after: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up."""
        if failed_attempts >= self.max_attempts:
            return None
        wait = self.delay(failed_attempts, retry_after, rng)
        if elapsed + wait > self.deadline:
            return None
        return wait


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
