"""pulumi_capy: database restore points and restores as Pulumi resources.

    import pulumi_capy as capy

    point = capy.RestorePoint("pre-migration-42", project_id=project_id, label="pre-migration-42")

``pulumi_capy.api`` holds the CapyDB contract (models, errors, the ``Backend``
protocol, the HTTP client); ``pulumi_capy.engine`` the embedded restore engine.
The resources are imported on first use, so that the API client, the engine
and the server never load the Pulumi SDK.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from pulumi_capy._version import __version__

if TYPE_CHECKING:
    from pulumi_capy.resources import (
        Backup,
        Project,
        Restore,
        RestorePoint,
        get_backups,
        get_jobs,
        get_restore_points,
    )

__all__ = [
    "Backup",
    "Project",
    "Restore",
    "RestorePoint",
    "__version__",
    "get_backups",
    "get_jobs",
    "get_restore_points",
]

_RESOURCES = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    if name in _RESOURCES:
        return getattr(import_module("pulumi_capy.resources"), name)
    raise AttributeError(f"module 'pulumi_capy' has no attribute {name!r}")
