"""Plain functions for Pulumi programs: read restore points, backups and jobs.

They resolve the same settings as the resources (``capy:*`` stack config,
then the environment) and call the back end directly, at program time.
"""

from __future__ import annotations

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.models import Backup, Job, RestorePoint
from pulumi_capy.settings import ENV, Settings, resolve

__all__ = ["get_backups", "get_jobs", "get_restore_points"]


def _program_settings() -> Settings:
    import pulumi.runtime

    config: dict[str, str] = {}
    for config_key, _ in ENV.values():
        # get_config reads a secret without the warning that Config.get gives
        value = pulumi.runtime.get_config(f"capy:{config_key}")
        if value:
            config[f"capy:{config_key}"] = str(value)
    return resolve(config=config)


def _backend() -> Backend:
    return _program_settings().open_backend()


def get_restore_points(project_id: str) -> list[RestorePoint]:
    """The project's restore points, oldest first."""
    backend = _backend()
    try:
        return backend.list_restore_points(project_id)
    finally:
        backend.close()


def get_backups(project_id: str) -> list[Backup]:
    """The project's backups, oldest first."""
    backend = _backend()
    try:
        return backend.list_backups(project_id)
    finally:
        backend.close()


def get_jobs(project_id: str, limit: int = 25) -> list[Job]:
    """The project's newest jobs, newest first."""
    backend = _backend()
    try:
        return backend.list_jobs(project_id, limit)
    finally:
        backend.close()
