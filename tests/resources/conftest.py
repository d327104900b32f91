"""Shared fixtures of the Pulumi-layer tests: providers called directly on a real engine.

The providers open their back end per call from the settings, so every test
points ``CAPY_ENGINE_DIR`` at a tmp directory (``engine_dir``) and checks what
they did through its own ``Engine`` on the same directory (``engine``). Time is
the wall clock here, as in a provider process; nothing sleeps in a test.

Fixtures: ``engine_dir`` (set as ``CAPY_ENGINE_DIR``), ``engine`` (an
``Engine`` on it, closed afterwards), ``app_db`` (a SQLite application
database with known rows), ``app_contents`` (its tables at the start),
``project`` (a project protecting ``app_db``) and ``backup`` (a verified backup
of it). Autouse: the provider module's stack config and listing cache are empty
before and after every test.

Helpers: ``restore_point_inputs``, ``restore_inputs``, ``backup_inputs`` and
``project_inputs`` build the inputs a provider receives from its ``Resource``
(the resource's defaults, overridden by keyword, plus ``__provider``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pulumi_capy.api.models import Backup, CreateProject, Project
from pulumi_capy.engine.service import Engine
from pulumi_capy.resources import _provider
from tests.engine.conftest import make_app_db, sqlite_url, table_contents, take_backup

__all__ = [
    "PROVIDER_KEY",
    "SERIALIZED_PROVIDER",
    "backup_inputs",
    "project_inputs",
    "restore_inputs",
    "restore_point_inputs",
]

# What the dynamic provider SDK adds to every input and output bag.
PROVIDER_KEY = "__provider"
SERIALIZED_PROVIDER = "c2VyaWFsaXplZCBwcm92aWRlcg=="  # any opaque text


def _inputs(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    unknown = set(overrides) - set(defaults)
    assert not unknown, f"not an input of the resource: {sorted(unknown)}"
    return {**defaults, **overrides, PROVIDER_KEY: SERIALIZED_PROVIDER}


def restore_point_inputs(project_id: Any, **overrides: Any) -> dict[str, Any]:
    """The inputs of ``capy.RestorePoint(project_id=..., label="before-migration")``."""
    defaults: dict[str, Any] = {
        "project_id": project_id,
        "label": "before-migration",
        "kind": "backup",
        "backup_key": None,
        "pitr_time": None,
        "note": None,
        "adopt_id": None,
    }
    return _inputs(defaults, overrides)


def restore_inputs(project_id: Any, **overrides: Any) -> dict[str, Any]:
    """The inputs of ``capy.Restore(project_id=..., **overrides)`` (give one source)."""
    defaults: dict[str, Any] = {
        "project_id": project_id,
        "backup_key": None,
        "restore_time": None,
        "restore_point_id": None,
        "target_kind": "new_preview",
        "preview_id": None,
        "preview_name": None,
        "ttl_hours": None,
        "recreate": False,
        "allow_unverified_backup": False,
        "confirm_project_overwrite": False,
        "retain_preview_on_delete": False,
        "wait": True,
        "timeout_minutes": 60,
        "triggers": None,
    }
    return _inputs(defaults, overrides)


def backup_inputs(project_id: Any, **overrides: Any) -> dict[str, Any]:
    """The inputs of ``capy.Backup(project_id=..., label="on-demand")``."""
    defaults: dict[str, Any] = {"project_id": project_id, "label": "on-demand", "wait": True}
    return _inputs(defaults, overrides)


def project_inputs(database_url: Any, **overrides: Any) -> dict[str, Any]:
    """The inputs of ``capy.Project(name="shop", database_url=...)``."""
    defaults: dict[str, Any] = {
        "name": "shop",
        "database_url": database_url,
        "environment": "non_production",
        "force_destroy": False,
        "pitr": None,
    }
    return _inputs(defaults, overrides)


def _clear_provider_state() -> None:
    _provider._CONFIG.clear()
    _provider.LISTINGS._entries.clear()
    _provider.ENGINES.clear()


@pytest.fixture(autouse=True)
def _fresh_provider_state() -> Iterator[None]:
    """No stack config or cached listing of one test leaks into another."""
    _clear_provider_state()
    yield
    _clear_provider_state()


@pytest.fixture
def engine_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The embedded engine's directory, given to the providers as ``CAPY_ENGINE_DIR``."""
    directory = tmp_path / "engine"
    monkeypatch.setenv("CAPY_ENGINE_DIR", str(directory))
    return directory


@pytest.fixture
def engine(engine_dir: Path) -> Iterator[Engine]:
    """The test's own view of the providers' engine (same directory)."""
    with Engine(engine_dir) as instance:
        yield instance


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    return make_app_db(tmp_path / "app" / "app.db")


@pytest.fixture
def app_contents(app_db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The application database's tables as they were at the start."""
    return table_contents(app_db)


@pytest.fixture
def project(engine: Engine, app_db: Path) -> Project:
    return engine.create_project(CreateProject(name="app", database_url=sqlite_url(app_db))).project


@pytest.fixture
def backup(engine: Engine, project: Project, app_contents: dict[str, Any]) -> Backup:
    """A verified backup of ``app_db`` holding ``app_contents``."""
    taken = take_backup(engine, project.id, "fixture")
    assert taken.verification_state == "verified"
    return taken
