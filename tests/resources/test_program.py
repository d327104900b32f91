"""The capy resources as a Pulumi program sees them, under ``pulumi.runtime.set_mocks``.

What is registered (type token, inputs, the serialized provider, secrets,
``additional_secret_outputs``), and what the serialized provider is: a small
reference to a class in the installed package that a fresh interpreter can
load, holding no code and no credential.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import pulumi
import pulumi.runtime
import pytest
from pulumi.dynamic import Config, ConfigureRequest, ResourceProvider
from pulumi.dynamic.dynamic import serialize_provider as _serialize_provider
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs

from pulumi_capy.resources import _provider
from pulumi_capy.resources._provider import LISTINGS
from pulumi_capy.resources.backup import Backup, BackupProvider
from pulumi_capy.resources.project import Project, ProjectProvider
from pulumi_capy.resources.restore import Restore, RestoreProvider
from pulumi_capy.resources.restore_point import RestorePoint, RestorePointProvider

API_KEY = "capy_live_" + "Pq9_program-SECRET-part_0123456789abcdef"
assert len(API_KEY) == len("capy_live_") + 40
DATABASE_PASSWORD = "db-pw-Xk29slQ"
DATABASE_URL = f"postgresql://shop:{DATABASE_PASSWORD}@db.internal:5432/shop"

# @no_type_check in the SDK: give them the types they have
serialize_provider = cast(Callable[[ResourceProvider], str], _serialize_provider)
pulumi_test = cast(
    Callable[[Callable[[], Any]], Callable[[], None]],
    pulumi.runtime.test,
)

PROVIDERS: dict[str, type[ResourceProvider]] = {
    "RestorePoint": RestorePointProvider,
    "Restore": RestoreProvider,
    "Backup": BackupProvider,
    "Project": ProjectProvider,
}


def unwrap_secret(value: Any) -> tuple[bool, Any]:
    """A property as the mock monitor shows it: (is it a secret, its plain value)."""
    if isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig:
        return True, value["value"]
    return False, value


# ---------------------------------------------------------------- the mocked engine


class RecordingMocks(pulumi.runtime.Mocks):
    """Answers every registration with its inputs (an id of ``<name>-id``) and keeps them."""

    def __init__(self) -> None:
        self.registered: dict[str, MockResourceArgs] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[Any, Any]]:
        self.registered[args.name] = args
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
        return {}, None


class RecordingMonitor(MockMonitor):
    """The mock monitor, keeping each registration's ``additionalSecretOutputs``.

    Registrations run on executor threads; each gets an event loop of its own
    that is closed afterwards (the SDK would leave it open).
    """

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.secret_outputs: dict[str, list[str]] = {}

    def RegisterResource(self, request: Any) -> Any:
        self.secret_outputs[request.name] = list(request.additionalSecretOutputs)
        register: Callable[[Any], Any] = super().RegisterResource
        if threading.current_thread() is threading.main_thread():
            return register(request)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return register(request)
        finally:
            asyncio.set_event_loop(None)
            loop.close()


@pytest.fixture(autouse=True)
def _fresh_provider_state() -> Iterator[None]:
    _provider._CONFIG.clear()
    LISTINGS._entries.clear()
    yield
    _provider._CONFIG.clear()
    LISTINGS._entries.clear()


@pytest.fixture
def engine() -> Iterator[tuple[RecordingMocks, RecordingMonitor]]:
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(
        mocks, project="shop-infra", stack="dev", preview=False, monitor=monitor
    )
    yield mocks, monitor
    pulumi.runtime.settings.reset_options(project="project", stack="stack")


def run_program(body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` as a Pulumi program under the mocks; its exceptions fail the test."""
    pulumi_test(lambda: asyncio.ensure_future(body()))()


# ---------------------------------------------------------------- registration


def test_each_resource_registers_its_dynamic_type_with_its_inputs_and_provider(
    engine: tuple[RecordingMocks, RecordingMonitor],
) -> None:
    mocks, _ = engine

    async def program() -> None:
        resources: list[pulumi.CustomResource] = [
            RestorePoint("point", project_id="prj_1", label="before-migration", backup_key="bk_1"),
            Restore("restore", project_id="prj_1", restore_point_id="rp_1", ttl_hours=12),
            Backup("backup", project_id="prj_1", label="nightly"),
            Project("project", name="shop", database_url=DATABASE_URL),
        ]
        for resource in resources:
            await resource.id.future()

    run_program(program)

    registered = mocks.registered
    assert {name: args.typ for name, args in registered.items()} == {
        "point": "pulumi-python:dynamic/capy:RestorePoint",
        "restore": "pulumi-python:dynamic/capy:Restore",
        "backup": "pulumi-python:dynamic/capy:Backup",
        "project": "pulumi-python:dynamic/capy:Project",
    }
    point = registered["point"].inputs
    assert point["project_id"] == "prj_1"
    assert point["label"] == "before-migration"
    assert point["backup_key"] == "bk_1"
    assert point["kind"] == "backup"
    restore = registered["restore"].inputs
    assert restore["restore_point_id"] == "rp_1"
    assert restore["ttl_hours"] == 12
    assert restore["target_kind"] == "new_preview"
    assert restore["wait"] is True
    backup = registered["backup"].inputs
    assert (backup["project_id"], backup["label"]) == ("prj_1", "nightly")
    assert registered["project"].inputs["name"] == "shop"
    for name, args in registered.items():
        assert args.custom, name
        _, provider = unwrap_secret(args.inputs["__provider"])
        assert isinstance(provider, str), name
        assert base64.b64decode(provider), name


def test_the_serialized_provider_is_the_resources_own_provider(
    engine: tuple[RecordingMocks, RecordingMonitor],
) -> None:
    mocks, _ = engine

    async def program() -> None:
        await RestorePoint("point", project_id="prj_1", label="l", backup_key="k").id.future()
        await Project("project", name="shop", database_url=DATABASE_URL).id.future()

    run_program(program)

    for name, provider_class in (("point", RestorePointProvider), ("project", ProjectProvider)):
        _, blob = unwrap_secret(mocks.registered[name].inputs["__provider"])
        assert blob == serialize_provider(provider_class())


def test_project_database_url_is_a_secret_input_and_output(
    engine: tuple[RecordingMocks, RecordingMonitor],
) -> None:
    mocks, monitor = engine
    seen: dict[str, Any] = {}

    async def program() -> None:
        project = Project("project", name="shop", database_url=DATABASE_URL)
        database_url = project.database_url
        seen["secret"] = await database_url.is_secret()
        seen["value"] = await database_url.future()
        seen["name_secret"] = await project.name.is_secret()

    run_program(program)

    is_secret, value = unwrap_secret(mocks.registered["project"].inputs["database_url"])
    assert is_secret
    assert value == DATABASE_URL
    assert seen == {"secret": True, "value": DATABASE_URL, "name_secret": False}
    assert monitor.secret_outputs["project"] == ["database_url"]


def test_restore_registers_preview_database_url_as_a_secret_output(
    engine: tuple[RecordingMocks, RecordingMonitor],
) -> None:
    _, monitor = engine

    async def program() -> None:
        await Restore("plain", project_id="prj_1", backup_key="bk_1").id.future()
        await Restore(
            "with-opts",
            project_id="prj_1",
            backup_key="bk_1",
            opts=pulumi.ResourceOptions(additional_secret_outputs=["last_stdout"]),
        ).id.future()
        await RestorePoint("point", project_id="prj_1", label="l", backup_key="k").id.future()

    run_program(program)

    assert monitor.secret_outputs["plain"] == ["preview_database_url"]
    # the caller's own secret outputs are kept, and preview_database_url is added
    assert sorted(monitor.secret_outputs["with-opts"]) == [
        "last_stdout",
        "preview_database_url",
    ]
    assert monitor.secret_outputs["point"] == []


def test_declared_outputs_are_outputs(engine: tuple[RecordingMocks, RecordingMonitor]) -> None:
    seen: dict[str, Any] = {}

    async def program() -> None:
        point = RestorePoint("point", project_id="prj_1", label="l", backup_key="k")
        restore = Restore("restore", project_id="prj_1", backup_key="bk_1")
        backup = Backup("backup", project_id="prj_1")
        project = Project("project", name="shop", database_url=DATABASE_URL)
        outputs = {
            "restore_point_id": point.restore_point_id,
            "point.state": point.state,
            "job_id": restore.job_id,
            "preview_database_url": restore.preview_database_url,
            "backup_key": backup.backup_key,
            "project_id": project.project_id,
        }
        seen["types"] = {name: isinstance(value, pulumi.Output) for name, value in outputs.items()}
        seen["label"] = await point.label.future()
        seen["id"] = await point.id.future()

    run_program(program)

    assert all(seen["types"].values()), seen["types"]
    assert seen["label"] == "l"
    assert seen["id"] == "point-id"


def test_every_declared_output_attribute_is_an_output(
    engine: tuple[RecordingMocks, RecordingMonitor],
) -> None:
    made: dict[str, pulumi.CustomResource] = {}

    async def program() -> None:
        made["RestorePoint"] = RestorePoint("point", project_id="p", label="l", backup_key="k")
        made["Restore"] = Restore("restore", project_id="p", backup_key="k")
        made["Backup"] = Backup("backup", project_id="p")
        made["Project"] = Project("project", name="shop", database_url=DATABASE_URL)
        for resource in made.values():
            await resource.id.future()

    run_program(program)

    for name, resource in made.items():
        declared = [
            attribute
            for attribute, annotation in type(resource).__annotations__.items()
            if str(annotation).startswith("pulumi.Output")
        ]
        assert declared, name
        missing = [attribute for attribute in declared if not hasattr(resource, attribute)]
        assert missing == [], f"{name} declares outputs it does not have: {missing}"
        not_outputs = [
            attribute
            for attribute in declared
            if not isinstance(getattr(resource, attribute), pulumi.Output)
        ]
        assert not_outputs == [], f"{name}: {not_outputs}"


# ---------------------------------------------------------------- the serialized provider

LOAD_IN_A_FRESH_INTERPRETER = """
import base64, sys
import dill
provider = dill.loads(base64.b64decode(sys.argv[1]))
cls = type(provider)
print(f"{cls.__module__}.{cls.__qualname__}")
print(cls is getattr(sys.modules[cls.__module__], cls.__qualname__))
"""


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_the_provider_is_pickled_by_reference_and_loads_in_a_fresh_interpreter(
    name: str,
) -> None:
    provider_class = PROVIDERS[name]
    blob = serialize_provider(provider_class())
    raw = base64.b64decode(blob)

    assert len(raw) < 2048
    assert b"def " not in raw
    for code_marker in (b"_create_code", b"_create_function", b"CodeType", b"co_code"):
        assert code_marker not in raw, code_marker
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_FRESH_INTERPRETER, blob],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    qualified, same_class = loaded.stdout.split()
    assert qualified == f"{provider_class.__module__}.{provider_class.__qualname__}"
    assert qualified.startswith("pulumi_capy.resources.")
    assert qualified.endswith(f".{name}Provider")
    assert same_class == "True"


@pytest.mark.parametrize("name", list(PROVIDERS))
def test_no_secret_in_the_serialized_provider_after_configure(name: str) -> None:
    provider = PROVIDERS[name]()
    provider.configure(
        ConfigureRequest(
            Config(
                {
                    "capy:apiKey": API_KEY,
                    "capy:apiUrl": "https://capydb.example/api/capydb",
                },
                "shop-infra",
            )
        )
    )
    assert _provider._CONFIG["capy:apiKey"] == API_KEY  # configure did take the key

    blob = serialize_provider(provider)
    raw = base64.b64decode(blob)

    assert API_KEY not in blob
    assert API_KEY.encode() not in raw
    assert API_KEY.removeprefix("capy_live_").encode() not in raw
    assert b"capydb.example" not in raw
    assert blob == serialize_provider(PROVIDERS[name]())  # nothing was added to the object


def test_no_secret_in_the_registered_provider_after_configure(
    engine: tuple[RecordingMocks, RecordingMonitor],
) -> None:
    mocks, _ = engine
    RestorePointProvider().configure(
        ConfigureRequest(Config({"capy:apiKey": API_KEY}, "shop-infra"))
    )

    async def program() -> None:
        await RestorePoint("point", project_id="prj_1", label="l", backup_key="k").id.future()
        await Restore("restore", project_id="prj_1", backup_key="k").id.future()

    run_program(program)

    for args in mocks.registered.values():
        _, blob = unwrap_secret(args.inputs["__provider"])
        assert API_KEY.encode() not in base64.b64decode(blob)
        assert API_KEY not in repr(args.inputs)
