"""Answers repeated reads from memory while nothing they depend on has changed.

Every answer of a ``GET /v1/…`` is a function of the store and of the key that
asked (``Engine``'s reads do not look at the clock; the one that does, the PITR
status, answers ``Cache-Control: no-store``, which is never kept). SQLite tells us whether
the store changed: its ``data_version()`` (SQLite's ``PRAGMA data_version``, on
a connection of the store's own) changes whenever anyone (this process's engine
and workers, or another process such as ``capy worker``) commits. So a 200
answer is kept, tagged with the version read *before* it was computed, and
served again while the version is still that one — byte for byte the answer the app would give.

The key is part of every entry (its SHA-256, as the store keeps it). A revoked
key, a new restore point, a job that moved on: each is a commit, a new version,
and every entry goes. Time is the one thing a commit does not mark, so an entry
also ends when its key expires, and when the key's ``last_used_at`` is due to be
recorded again (the app records it, which is a commit).

The same versioned memory spares the app a thread hop per request for the
caller's principal (:class:`Principals`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus

from pulumi_capy.api.credentials import API_KEY_PREFIX
from pulumi_capy.api.models import Principal
from pulumi_capy.engine import Engine
from pulumi_capy.engine.keys import TOUCH_EVERY, hash_key
from pulumi_capy.engine.stores.contract import Store
from pulumi_capy.server.asgi import ASGIApp, Message, Receive, Scope, Send
from pulumi_capy.server.auth import token_from

__all__ = ["Principals", "ReadCache", "ReadStats", "StoreVersion"]

MAX_ENTRIES = 2048
MAX_BODY = 1 << 20


class StoreVersion:
    """The store's data version (``Store.data_version``): it moves with every commit."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def current(self) -> int:
        return self._store.data_version()


@dataclass(frozen=True)
class _Key:
    """What the store says about one API key, as of one version."""

    version: int
    principal: Principal | None
    fresh_until: datetime | None  # expiry or the next last_used_at to record


def token_of(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key a request carries, read as :func:`~pulumi_capy.server.auth.token_from` does."""
    authorization = api_key = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"x-api-key":
            api_key = value.decode("latin-1")
    return token_from(authorization, api_key)


class Principals:
    """Who a key stands for, remembered while the store is unchanged.

    ``lookup`` answers from memory or returns ``None`` ("ask the engine"); the
    engine's answer is recorded with ``remember``.
    """

    def __init__(self, engine: Engine, version: StoreVersion) -> None:
        self.engine = engine
        self.version = version
        self._keys: dict[str, _Key] = {}

    def lookup(self, token: str, version: int) -> _Key | None:
        known = self._keys.get(hash_key(token))
        if known is None or known.version != version:
            return None
        if known.fresh_until is not None and self.engine.rt.now() >= known.fresh_until:
            return None
        return known

    def remember(self, token: str, version: int) -> _Key:
        """Read the key's row as of ``version`` (read before the app used the key)."""
        digest = hash_key(token)
        principal = self.engine.authenticate(token)
        fresh_until: datetime | None = None
        if principal is not None:
            row = self.engine.rt.store.find_api_key(digest)
            if row is None:
                principal = None
            else:
                last_used = row["last_used_at"]
                fresh_until = last_used + TOUCH_EVERY if last_used is not None else None
                if row["expires_at"] is not None:
                    expires: datetime = row["expires_at"]
                    fresh_until = min(fresh_until, expires) if fresh_until else expires
        entry = _Key(version, principal, fresh_until)
        if len(self._keys) >= MAX_ENTRIES:
            self._keys.clear()
        self._keys[digest] = entry
        return entry


def _no_store(start: Message) -> bool:
    for name, value in start.get("headers", []):
        if name.lower() == b"cache-control" and b"no-store" in value.lower():
            return True
    return False


@dataclass
class ReadStats:
    """How the read cache has answered (``app.state.read_stats``)."""

    hits: int = 0
    misses: int = 0


@dataclass(frozen=True)
class _Answer:
    version: int
    fresh_until: datetime | None
    start: Message
    body: bytes


class ReadCache:
    """ASGI middleware: ``GET /v1/…`` answers served again while the store is unchanged."""

    def __init__(self, app: ASGIApp, principals: Principals, stats: ReadStats) -> None:
        self.app = app
        self.principals = principals
        self.stats = stats
        self.version = principals.version
        self._answers: dict[tuple[str, bytes, str], _Answer] = {}
        self._answers_version = -1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith("/v1/")
            or scope["path"] == "/v1/openapi.json"
        ):
            await self.app(scope, receive, send)
            return
        token = token_of(scope["headers"])
        if token is None or not token.startswith(API_KEY_PREFIX):
            await self.app(scope, receive, send)
            return
        version = self.version.current()
        if version != self._answers_version:
            self._answers.clear()
            self._answers_version = version
        entry = (scope["path"], scope["query_string"], hash_key(token))
        answer = self._answers.get(entry)
        if answer is not None and (
            answer.fresh_until is None or self.principals.engine.rt.now() < answer.fresh_until
        ):
            self.stats.hits += 1
            await send(answer.start)
            await send({"type": "http.response.body", "body": answer.body})
            return
        self.stats.misses += 1
        await self._compute(scope, receive, send, entry=entry, token=token, version=version)

    async def _compute(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        entry: tuple[str, bytes, str],
        token: str,
        version: int,
    ) -> None:
        start: Message | None = None
        chunks: list[bytes] = []
        keep = True

        async def recording(message: Message) -> None:
            nonlocal start, keep
            if message["type"] == "http.response.start":
                start = dict(message)
                keep = message["status"] == HTTPStatus.OK and not _no_store(message)
            elif message["type"] == "http.response.body" and keep:
                chunks.append(message.get("body", b""))
                if sum(map(len, chunks)) > MAX_BODY:
                    keep = False
            await send(message)

        await self.app(scope, receive, recording)
        if not keep or start is None:
            return
        known = self.principals.lookup(token, version)
        if known is None or known.principal is None:
            return  # the key changed while the app answered: do not keep the answer
        if len(self._answers) >= MAX_ENTRIES:
            self._answers.clear()
        if self._answers_version == version:
            self._answers[entry] = _Answer(version, known.fresh_until, start, b"".join(chunks))
