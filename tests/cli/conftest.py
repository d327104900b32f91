"""Fixtures of the CLI tests: ``capy`` through click's CliRunner on a real embedded engine.

``capy(*args, code=0)`` runs ``capy --engine-dir <tmp engine dir> *args`` in this
process and checks the exit code; ``capy.json(*args)`` adds ``--json`` and
parses stdout. ``app_db`` is a real SQLite application database and
``project_id`` a project protecting it, created through ``capy projects create``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pulumi_capy.cli.main import cli
from pulumi_capy.engine import Engine
from tests.engine.conftest import make_app_db, sqlite_url


@dataclass
class Capy:
    engine_dir: Path
    runner: CliRunner

    def raw(
        self, *args: str, env: Mapping[str, str] | None = None, input: str | None = None
    ) -> Result:
        """``capy *args`` exactly as given (no ``--engine-dir`` added); ``input`` its stdin."""
        return self.runner.invoke(cli, list(args), env=dict(env or {}), input=input)

    def __call__(
        self,
        *args: str,
        code: int = 0,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> Result:
        result = self.raw("--engine-dir", str(self.engine_dir), *args, env=env, input=input)
        assert result.exit_code == code, (
            f"capy {' '.join(args)} exited {result.exit_code}, not {code}\n"
            f"stdout: {result.stdout}\nstderr: {result.stderr}\nexception: {result.exception!r}"
        )
        return result

    def start_engine(self) -> None:
        """An empty engine in ``engine_dir``, as ``capy projects create`` starts one (the
        other commands work on an engine that is there: they do not make one)."""
        Engine(self.engine_dir).close()

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)


@pytest.fixture
def capy(tmp_path: Path) -> Capy:
    return Capy(engine_dir=tmp_path / "engine", runner=CliRunner())


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    return make_app_db(tmp_path / "app" / "app.db")


@pytest.fixture
def project_id(capy: Capy, app_db: Path) -> str:
    created = capy.json(
        "projects", "create", "--name", "shop", "--database-url", sqlite_url(app_db)
    )
    return str(created["project"]["id"])
