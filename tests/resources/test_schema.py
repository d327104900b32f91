"""schema.json: generated from the code, never stale, valid for Pulumi."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema

import pulumi_capy
from pulumi_capy.schema import build_schema, camel, render

ROOT = Path(__file__).resolve().parents[2]
METASCHEMA = ROOT / "tests" / "data" / "pulumi-package-metaschema.json"


def _metaschema() -> dict[str, Any]:
    # Pulumi's patterns use ECMA named groups, (?<name>…); Python's re spells them (?P<name>…)
    data: dict[str, Any] = json.loads(METASCHEMA.read_text().replace("(?<", "(?P<"))
    return data


def test_committed_schema_is_current() -> None:
    committed = (ROOT / "schema.json").read_text()
    assert committed == render(), "schema.json is stale: run `capy schema -o schema.json`"


def test_schema_is_valid_for_pulumi() -> None:
    validator = jsonschema.Draft202012Validator(_metaschema())
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(build_schema())]
    assert errors == []


def test_metaschema_check_can_fail() -> None:
    broken = build_schema()
    broken["resources"]["capy:index:Restore"]["inputProperties"]["ttlHours"]["type"] = "duration"
    validator = jsonschema.Draft202012Validator(_metaschema())
    assert list(validator.iter_errors(broken))


def test_every_constructor_argument_is_an_input() -> None:
    schema = build_schema()
    for name in ("RestorePoint", "Restore", "Backup", "Project"):
        resource = getattr(pulumi_capy, name)
        parameters = {
            camel(p.name): p
            for p in inspect.signature(resource.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "opts"
        }
        spec = schema["resources"][f"capy:index:{name}"]
        assert set(spec["inputProperties"]) == set(parameters)
        required = [n for n, p in parameters.items() if p.default is inspect.Parameter.empty]
        assert spec["requiredInputs"] == required


def test_secrets_replacements_and_config() -> None:
    resources = build_schema()["resources"]
    assert resources["capy:index:Project"]["inputProperties"]["databaseUrl"]["secret"] is True
    assert resources["capy:index:Project"]["properties"]["databaseUrl"]["secret"] is True
    assert resources["capy:index:Restore"]["properties"]["previewDatabaseUrl"]["secret"] is True
    point = resources["capy:index:RestorePoint"]["inputProperties"]
    assert all(spec.get("replaceOnChanges") for spec in point.values())
    restore = resources["capy:index:Restore"]["inputProperties"]
    assert restore["triggers"]["replaceOnChanges"] is True
    assert "replaceOnChanges" not in restore["retainPreviewOnDelete"]
    assert (
        "replaceOnChanges" not in resources["capy:index:Project"]["inputProperties"]["forceDestroy"]
    )
    variables = build_schema()["config"]["variables"]
    assert set(variables) == {"mode", "apiUrl", "apiKey", "engineDir"}
    assert variables["apiKey"]["secret"] is True


def test_capy_schema_prints_the_schema() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pulumi_capy.cli.main", "schema"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(done.stdout)["name"] == "capy"
