"""The self-hosted server: CapyDB's REST API over the restore engine (``capy serve``)."""

from pulumi_capy.server.app import create_app

__all__ = ["create_app"]
