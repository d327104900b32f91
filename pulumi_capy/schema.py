"""The Pulumi package schema of ``capy`` (``schema.json``), generated from the code.

Inputs come from each resource's constructor (names, required or not) and
types from the contract's request models; outputs from the response models.
Properties are camelCase, as Pulumi schemas are. ``capy schema`` prints it;
a test fails when the committed ``schema.json`` is stale.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from pulumi_capy._version import __version__
from pulumi_capy.api import models

__all__ = ["build_schema", "camel", "render"]

TYPE_NAME = "capy:index:{}"

DESCRIPTIONS: dict[str, str] = {
    "project_id": "The project (database) the object belongs to.",
    "label": "A human name, 1-200 characters.",
    "kind": "`backup` (pinned to a backup key) or `pitr` (pinned to a moment).",
    "backup_key": "The backup to use. For a RestorePoint of kind `backup`, leave it unset to "
    "take a fresh backup and pin it.",
    "pitr_time": "The moment a `pitr` restore point pins (RFC 3339, default now).",
    "note": "Free text kept with the restore point.",
    "adopt_id": "Take over an existing object with this id instead of creating one "
    "(`pulumi import` cannot import dynamic resources).",
    "restore_time": "Restore to this moment (RFC 3339, inside the PITR window).",
    "restore_point_id": "Restore from this restore point.",
    "target_kind": "`new_preview` (default: a fresh preview database), `preview` (overwrite "
    "`preview_id`) or `project` (overwrite the project database).",
    "preview_id": "The preview to overwrite (target_kind `preview`).",
    "preview_name": "Name of the new preview (target_kind `new_preview`; auto-named if unset).",
    "ttl_hours": "Hours the new preview lives, 1-168 (default 24).",
    "recreate": "Drop and recreate the target before restoring.",
    "allow_unverified_backup": "Allow a backup that has not passed verification.",
    "confirm_project_overwrite": "Required to overwrite the project database.",
    "retain_preview_on_delete": "Keep the preview this restore made when the resource is deleted.",
    "wait": "Wait for the job to end (default true).",
    "timeout_minutes": "How long create waits for the job (default 60).",
    "triggers": "Any value; a change runs the restore again.",
    "name": "The project's name, unique in the organization.",
    "database_url": "The database to protect: `sqlite:////absolute/path.db` "
    "(or `postgresql://…` where supported). A secret.",
    "environment": "`production` or `non_production`.",
    "force_destroy": "Allow deleting the project with its backups, restore points and previews.",
    "pitr": "Point-in-time recovery: `true` turns it on (PostgreSQL: a replication slot and a "
    "first base backup, waited for; SQLite, in WAL mode: a worker's replicator ships its log "
    "from a first snapshot), `false` off; unset leaves it as it is. An update, never a "
    "replacement. Its log streams while a `capy worker` runs.",
    "pitr_window_start": "The oldest moment a `restore_time` can name (null while PITR is off "
    "or its window is not open yet).",
    "pitr_window_end": "The newest moment a `restore_time` can name (null while PITR is off or "
    "its window is not open yet).",
    "preview_database_url": "How to reach the preview this restore made. A secret.",
    "preview_state": "The state of the preview this restore made, as the last refresh found "
    "it: `ready`, or `expired` (past its TTL), `deleting` or `failed`, which the next `up` "
    "replaces with a new restore. A preview found gone shows the restore as deleted.",
    "preview_expires_at": "When the preview this restore made expires (its TTL).",
    "requested": "The inputs as given (backup_key, pitr_time and, for an adopted restore "
    "point, label and note may differ from the outputs of the same names).",
}

CONFIG = {
    "mode": (
        "`api` (CapyDB or a self-hosted `capy serve`) or `embedded`; default `api` when "
        "a key is set, else `embedded`.",
        False,
    ),
    "apiUrl": ("The API's base URL (default https://capydb.dev/api/capydb).", False),
    "apiKey": ("A CapyDB API key (`capy_live_…`) or session token.", True),
    "engineDir": ("The embedded engine's directory (default `.capy` beside the project).", False),
}

# property name -> (Pulumi type spec) for names no model describes
EXTRA_TYPES: dict[str, dict[str, Any]] = {
    "project_id": {"type": "string"},
    "adopt_id": {"type": "string"},
    "retain_preview_on_delete": {"type": "boolean"},
    "wait": {"type": "boolean"},
    "timeout_minutes": {"type": "number"},
    "triggers": {"$ref": "pulumi.json#/Any"},
    "force_destroy": {"type": "boolean"},
    "pitr": {"type": "boolean"},
    "job_id": {"type": "string"},
    "restore_point_id": {"type": "string"},
    "backup_id": {"type": "string"},
    "preview_database_url": {"type": "string"},
    "preview_database_name": {"type": "string"},
    "preview_state": {"type": "string"},
    "preview_expires_at": {"type": "string"},
    "requested": {"type": "object", "additionalProperties": {"$ref": "pulumi.json#/Any"}},
}


SCALARS = frozenset({"string", "integer", "number", "boolean"})  # JSON schema's and Pulumi's


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _pulumi_type(spec: Mapping[str, Any], definitions: Mapping[str, Any]) -> dict[str, Any]:
    """A pydantic JSON-schema property as a Pulumi type spec."""
    if "$ref" in spec:
        target = definitions[spec["$ref"].split("/")[-1]]
        if "enum" in target:
            return {"type": "string"}
        return {"type": "object", "additionalProperties": {"$ref": "pulumi.json#/Any"}}
    for key in ("anyOf", "oneOf"):
        if key in spec:
            options = [option for option in spec[key] if option.get("type") != "null"]
            types = [_pulumi_type(option, definitions) for option in options]
            return types[0] if len({json.dumps(t) for t in types}) == 1 else {"type": "string"}
    kind = spec.get("type")
    if kind == "array":
        return {"type": "array", "items": _pulumi_type(spec.get("items", {}), definitions)}
    if kind == "object":
        return {"type": "object", "additionalProperties": {"$ref": "pulumi.json#/Any"}}
    return {"type": kind} if kind in SCALARS else {"$ref": "pulumi.json#/Any"}


def _model_types(*model_classes: type[BaseModel]) -> dict[str, dict[str, Any]]:
    types: dict[str, dict[str, Any]] = {}
    for model in model_classes:
        # validation mode: the models' field serializers hide the types from serialization mode
        schema = model.model_json_schema(mode="validation")
        definitions = schema.get("$defs", {})
        for name, spec in schema.get("properties", {}).items():
            types.setdefault(name, _pulumi_type(spec, definitions))
    return types


def _property(
    name: str, types: Mapping[str, dict[str, Any]], *, secret: bool = False
) -> dict[str, Any]:
    spec = dict(EXTRA_TYPES.get(name) or types.get(name) or {"$ref": "pulumi.json#/Any"})
    if name in DESCRIPTIONS:
        spec["description"] = DESCRIPTIONS[name]
    if secret:
        spec["secret"] = True
    return spec


def _resource(
    resource: type,
    *,
    provider: Any,
    request_models: tuple[type[BaseModel], ...],
    output_models: tuple[type[BaseModel], ...],
    output_names: tuple[str, ...],
    secrets: frozenset[str],
    description: str,
) -> dict[str, Any]:
    parameters = [
        parameter
        for parameter in inspect.signature(resource.__init__).parameters.values()  # type: ignore[misc]
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.name != "opts"
    ]
    types = _model_types(*request_models, *output_models)
    replace = set(provider.input_names) - set(provider.updatable)
    inputs: dict[str, Any] = {}
    for parameter in parameters:
        spec = _property(parameter.name, types, secret=parameter.name in secrets)
        if parameter.name in replace:
            spec["replaceOnChanges"] = True
        if parameter.default is not inspect.Parameter.empty and parameter.default is not None:
            spec["default"] = parameter.default
        inputs[camel(parameter.name)] = spec
    outputs = {
        name: {
            key: value for key, value in spec.items() if key not in ("replaceOnChanges", "default")
        }
        for name, spec in inputs.items()
    }
    for name in output_names:
        outputs[camel(name)] = _property(name, types, secret=name in secrets)
    required = [camel(p.name) for p in parameters if p.default is inspect.Parameter.empty]
    return {
        "description": description,
        "inputProperties": inputs,
        "requiredInputs": required,
        "properties": outputs,
        "required": sorted(set(required)),
    }


def _first_line(thing: object) -> str:
    return (inspect.getdoc(thing) or "").split("\n\n")[0].replace("\n", " ")


def build_schema() -> dict[str, Any]:
    from pulumi_capy.resources import backup, functions, project, restore, restore_point

    job_outputs = (*(name for name in models.Job.model_fields if name != "id"), "job_id")
    resources = {
        TYPE_NAME.format("RestorePoint"): _resource(
            restore_point.RestorePoint,
            provider=restore_point.RestorePointProvider,
            request_models=(models.CreateRestorePoint,),
            output_models=(models.RestorePoint,),
            output_names=(
                "restore_point_id",
                *(n for n in models.RestorePoint.model_fields if n != "id"),
                "requested",
            ),
            secrets=frozenset(),
            description=_first_line(restore_point),
        ),
        TYPE_NAME.format("Restore"): _resource(
            restore.Restore,
            provider=restore.RestoreProvider,
            request_models=(models.RestoreRequest,),
            output_models=(models.Job,),
            output_names=(
                *job_outputs,
                "preview_database_name",
                "preview_database_url",
                "preview_state",
                "preview_expires_at",
            ),
            secrets=frozenset({"preview_database_url"}),
            description=_first_line(restore),
        ),
        TYPE_NAME.format("Backup"): _resource(
            backup.Backup,
            provider=backup.BackupProvider,
            request_models=(models.CreateBackup,),
            output_models=(models.Backup,),
            output_names=(
                "backup_id",
                *(n for n in models.Backup.model_fields if n != "id"),
                "job_id",
            ),
            secrets=frozenset(),
            description=_first_line(backup),
        ),
        TYPE_NAME.format("Project"): _resource(
            project.Project,
            provider=project.ProjectProvider,
            request_models=(models.CreateProject,),
            output_models=(models.Project,),
            output_names=("project_id", *(n for n in models.Project.model_fields if n != "id")),
            secrets=frozenset({"database_url"}),
            description=_first_line(project),
        ),
    }
    list_of = {
        "getRestorePoints": "restorePoints",
        "getBackups": "backups",
        "getJobs": "jobs",
    }
    function_docs = {
        "getRestorePoints": functions.get_restore_points,
        "getBackups": functions.get_backups,
        "getJobs": functions.get_jobs,
    }
    functions_schema: dict[str, Any] = {}
    for name, field in list_of.items():
        inputs: dict[str, Any] = {"projectId": _property("project_id", {})}
        if name == "getJobs":
            inputs["limit"] = {"type": "integer", "description": "At most this many (default 25)."}
        functions_schema[TYPE_NAME.format(name)] = {
            "description": _first_line(function_docs[name]),
            "inputs": {"properties": inputs, "required": ["projectId"]},
            "outputs": {
                "properties": {field: {"type": "array", "items": {"$ref": "pulumi.json#/Any"}}},
                "required": [field],
            },
        }
    return {
        "name": "capy",
        "displayName": "CapyDB restores",
        "version": __version__,
        "description": "Database restore points and restores as code: CapyDB's restore surface, "
        "an embedded restore engine, or a self-hosted `capy serve`.",
        "keywords": ["pulumi", "capydb", "postgresql", "sqlite", "backup", "restore"],
        "license": "Apache-2.0",
        "publisher": "pulumi_capy",
        "config": {
            "variables": {
                name: (
                    {"type": "string", "description": text} | ({"secret": True} if secret else {})
                )
                for name, (text, secret) in CONFIG.items()
            }
        },
        "resources": resources,
        "functions": functions_schema,
        "language": {"python": {"packageName": "pulumi_capy"}},
    }


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=True) + "\n"
