"""ASGI middleware: a request body over the limit is refused with 413 before it is read whole."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from pulumi_capy.server.asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BODY_LIMIT", "BodyLimit"]

BODY_LIMIT = 1 << 20  # bytes of a request body [ours]


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before they are read whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        too_large = started = refused = False

        async def limited() -> Message:
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                too_large = True
                raise _TooLarge
            return message

        async def guarded(message: Message) -> None:
            # FastAPI turns the error of a body read into its own 400: answer 413 instead
            nonlocal started, refused
            if too_large and not started:
                if not refused:
                    refused = True
                    await self._refuse(send)
                return
            started = True
            await send(message)

        try:
            await self.app(scope, limited, guarded)
        except _TooLarge:
            if not started and not refused:
                refused = True
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = JSONResponse(
            {"error": f"the request body is larger than {self.limit} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_body, send)


class _TooLarge(Exception):
    pass


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}
