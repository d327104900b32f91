"""What the routes share about their answers: the declared errors, and answers serialized once."""

from __future__ import annotations

from typing import Any

from fastapi.responses import Response
from pydantic import BaseModel

from pulumi_capy.server import envelopes as env

__all__ = ["ERROR_RESPONSES", "answer"]

# Declared on every operation: each is the error envelope ``{"error": "<message>"}``.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": env.ErrorBody} for code in (400, 401, 403, 404, 409, 413)
}


def answer(model: BaseModel) -> Response:
    """A 200 of ``model``, serialized once by pydantic (what FastAPI would answer for the
    route's ``response_model``, without its dump, re-validation and second serialization)."""
    return Response(model.model_dump_json(), media_type="application/json")
