"""Engine failures that reach a request outside a job are faults: a 500 that reveals nothing,
as before they joined the ``CapyError`` tree; other ``CapyError`` classes keep their status."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from pulumi_capy.api.errors import CapyError, Conflict
from pulumi_capy.engine.blobs import BlobMissing
from pulumi_capy.engine.drivers import DriverFailure
from pulumi_capy.engine.tarstream import TarDamaged
from pulumi_capy.server.handlers import EXCEPTION_HANDLERS


def _answer(error: Exception) -> httpx.Response:
    """What an app with the server's handlers answers to a route that raises ``error``."""
    app = FastAPI(exception_handlers=EXCEPTION_HANDLERS)

    @app.get("/boom")
    def boom() -> None:
        raise error

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom")

    # a loop of its own, not asyncio.run: that would unset (and so drop) the thread's
    # current loop, which an earlier test's Pulumi SDK may have left open
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(call())
    finally:
        loop.close()


@pytest.mark.parametrize(
    "error",
    [DriverFailure("secret host refused", permanent=False), TarDamaged("stream ended early")],
)
def test_driver_and_tar_failures_are_faults(error: Exception) -> None:
    answer = _answer(error)
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal server error"}


@pytest.mark.parametrize(
    ("error", "status"),
    [(Conflict("busy"), 409), (BlobMissing("blob gone"), 500), (CapyError("odd"), 500)],
)
def test_other_capy_errors_keep_their_status_and_message(error: CapyError, status: int) -> None:
    answer = _answer(error)
    assert answer.status_code == status
    assert str(error) in answer.json()["error"]
