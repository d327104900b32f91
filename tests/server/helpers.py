"""Assertions on the server's answers, shared by the server tests."""

from __future__ import annotations

from typing import Any

import httpx


def assert_error(response: httpx.Response, status: int, *words: str) -> str:
    """The answer is ``status`` with exactly ``{"error": "<message>"}``; return the message.

    Every word of ``words`` must be in the message.
    """
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str)
    assert message.strip()
    for word in words:
        assert word in message, (word, message)
    return message


def assert_envelope(response: httpx.Response, status: int, *keys: str) -> dict[str, Any]:
    """The answer is ``status`` with a JSON object of exactly ``keys``; return it."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict)
    assert set(body) == set(keys), body
    return body
