"""The self-hosted server: CapyDB's REST API over the restore engine (``capy serve``).

``create_app`` is imported on first use, so that ``pulumi_capy.server.runner``
(``capy worker``) works without the ``server`` extra (FastAPI, uvicorn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pulumi_capy.server.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from pulumi_capy.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
