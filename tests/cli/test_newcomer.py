"""Issue 16: the rough edges a new user of ``capy`` met on the first day.

``capy`` runs through click's CliRunner on a real embedded engine, or against the
real server (``create_app``, what ``capy serve`` runs) on a loopback port.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from pulumi_capy._version import __version__
from pulumi_capy.api.client import CapyClient
from pulumi_capy.cli.main import cli
from pulumi_capy.engine import Engine
from tests.cli.conftest import Capy
from tests.cli.test_help import _walk
from tests.engine.conftest import make_app_db, sqlite_url, take_backup
from tests.server.conftest import LiveServer

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("capy: error: "), stderr
    return lines[0]


# ---------------------------------------------------------------- (4) /v1 in the URL


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from pulumi_capy.server import create_app
    from tests.server.conftest import serve

    directory = tmp_path_factory.mktemp("served") / ".capy"
    with Engine(directory) as engine, serve(create_app(directory)) as url:
        yield LiveServer(url=url, directory=directory, engine=engine)


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_the_url_capy_serve_prints_works_with_or_without_v1(
    served: LiveServer, tmp_path: Path, suffix: str
) -> None:
    """``capy serve`` prints ``http://HOST:PORT/v1``; pasted as is, it used to 404."""
    key = served.mint(name="newcomer")[0]
    result = CliRunner().invoke(
        cli,
        ["projects", "list", "--json"],
        env={"CAPYDB_API_URL": served.url + suffix, "CAPYDB_API_KEY": key},
    )
    assert result.exit_code == 0, result.stderr
    assert isinstance(json.loads(result.stdout), list)
    flag = CliRunner().invoke(
        cli, ["--api-url", served.url + suffix, "projects", "list"], env={"CAPYDB_API_KEY": key}
    )
    assert flag.exit_code == 0, flag.stderr
    with CapyClient(served.url + suffix, key) as client:
        assert client.base_url == served.url
        assert isinstance(client.list_projects(), list)


# ---------------------------------------------------------------- (5) a URL without a key


def test_an_api_url_without_a_key_is_an_error_and_makes_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["projects", "list"], env={"CAPYDB_API_URL": "http://127.0.0.1:9/v1"}
    )
    assert result.exit_code == 1, result.stdout
    line = _error(result.stderr)
    assert "CAPYDB_API_URL is set but no API key is: set CAPYDB_API_KEY" in line
    assert "capy:apiKey" in line
    assert list(tmp_path.iterdir()) == []  # no ./.capy


READS = [
    ["projects", "list"],
    ["keys", "list"],
    ["backups", "list", "--project", "prj_5f2c81d04be97a13"],
    ["backups", "schedule", "get", "--project", "prj_5f2c81d04be97a13"],
    ["restore-points", "list", "--project", "prj_5f2c81d04be97a13"],
    ["jobs", "list", "--project", "prj_5f2c81d04be97a13"],
    ["jobs", "get", "--job-id", "job_a47c19e5038bd26f"],
    ["previews", "list", "--project", "prj_5f2c81d04be97a13"],
    ["pitr", "status", "--project", "prj_5f2c81d04be97a13"],
]


@pytest.mark.parametrize("args", READS, ids=[" ".join(args[:3]) for args in READS])
def test_a_read_of_a_missing_engine_says_so_and_makes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    missing = tmp_path / "nowhere"
    given = CliRunner().invoke(cli, ["--engine-dir", str(missing), *args])
    assert given.exit_code == 1, given.stdout
    line = _error(given.stderr)
    assert f"no capy engine in {missing} (no such directory)" in line
    assert not missing.exists()

    monkeypatch.chdir(tmp_path)  # the default engine directory, ./.capy
    default = CliRunner().invoke(cli, args)
    assert default.exit_code == 1, default.stdout
    assert f"no capy engine in {tmp_path / '.capy'}" in _error(default.stderr)
    assert not (tmp_path / ".capy").exists()


def test_projects_create_still_starts_an_engine(tmp_path: Path, capy: Capy) -> None:
    app_db = make_app_db(tmp_path / "app.db")
    capy("projects", "create", "--name", "shop", "--database-url", sqlite_url(app_db))
    assert (capy.engine_dir / "engine.db").is_file()
    assert capy("projects", "list").stdout.startswith("ID")


# ---------------------------------------------------------------- (11) the rest


def test_version_as_json_and_as_an_option() -> None:
    runner = CliRunner()
    as_json = runner.invoke(cli, ["--json", "version"])
    assert as_json.exit_code == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"version": __version__}
    option = runner.invoke(cli, ["--version"])
    assert option.exit_code == 0, option.stderr
    assert option.stdout == f"pulumi-capy {__version__}\n"
    assert runner.invoke(cli, ["version"]).stdout == f"pulumi-capy {__version__}\n"


@pytest.mark.parametrize(
    "args", [["projects", "list"], ["projects", "create", "--name", "x", "--database-url", "u"]]
)
def test_a_file_as_engine_dir_is_a_clear_error_naming_it(tmp_path: Path, args: list[str]) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory\n")
    result = CliRunner().invoke(cli, ["--engine-dir", str(a_file), *args])
    assert result.exit_code == 1, result.stdout
    line = _error(result.stderr)
    assert f"the engine directory {a_file} is a file, not a directory" in line
    assert "FileExistsError" not in line
    inside = CliRunner().invoke(cli, ["--engine-dir", str(a_file / "sub"), *args])
    assert inside.exit_code == 1
    assert str(a_file / "sub") in _error(inside.stderr)
    assert "NotADirectoryError" not in inside.stderr


def test_a_corrupt_engine_db_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    directory = tmp_path / "engine"
    directory.mkdir()
    (directory / "engine.db").write_bytes(b"this is not SQLite at all" * 200)
    result = CliRunner().invoke(cli, ["--engine-dir", str(directory), "projects", "list"])
    assert result.exit_code == 1, result.stdout
    line = _error(result.stderr)
    assert f"{directory / 'engine.db'} is not a capy engine database" in line
    assert "please report it" not in line


def test_a_too_short_api_key_is_called_too_short(capy: Capy) -> None:
    key = "capy_live_abc123"
    result = capy.raw("--api-url", "http://127.0.0.1:9", "projects", "list",
                      env={"CAPYDB_API_KEY": key})  # fmt: skip
    assert result.exit_code == 1
    line = _error(result.stderr)
    assert "only 6 after capy_live_ (too short" in line
    assert "starting with" not in line
    assert key not in line
    assert "abc123" not in line


def test_mode_embedded_with_an_api_url_is_an_error_naming_both(capy: Capy) -> None:
    result = capy.raw("--mode", "embedded", "--api-url", "http://127.0.0.1:9", "projects", "list")
    assert result.exit_code == 2
    assert "--mode embedded would ignore --api-url" in result.stderr


def test_help_ids_look_like_the_ids_capy_makes(capy: Capy, project_id: str) -> None:
    real = capy.json("projects", "list")[0]["id"]
    shape = re.compile(r"^prj_[0-9a-f]{16}$")
    assert shape.match(real)
    runner = CliRunner()
    id_like = re.compile(r"\b(?:prj|rp|job|key|prv|bkp|bk)_[\w…]*")
    for path in _walk(cli):
        text = runner.invoke(cli, [*path, "--help"]).stdout
        for found in id_like.findall(text):
            if found in ("key_id", "job_id"):  # option names, not ids
                continue
            assert re.fullmatch(r"(?:prj|rp|job|key|prv|bkp)_[0-9a-f]{16}", found), (path, found)
        assert "bk_" not in text


def test_restore_points_create_help_promises_no_wait_it_lacks() -> None:
    text = CliRunner().invoke(cli, ["restore-points", "create", "--help"]).stdout
    assert "--wait" not in text
    assert "Without --backup-key" in text


def test_backups_list_is_newest_first(capy: Capy, project_id: str) -> None:
    with Engine(capy.engine_dir) as engine:
        first = take_backup(engine, project_id, label="first")
        second = take_backup(engine, project_id, label="second")
    listed = capy.json("backups", "list", "--project", project_id)
    assert [b["id"] for b in listed] == [second.id, first.id]
    table = capy("backups", "list", "--project", project_id).stdout
    assert table.index(second.id) < table.index(first.id)


def test_ids_in_tables_never_wrap_on_a_100_column_terminal(capy: Capy, project_id: str) -> None:
    with Engine(capy.engine_dir) as engine:
        backup = take_backup(engine, project_id, label="a label long enough to need folding")
    terminal = {"TTY_COMPATIBLE": "1", "COLUMNS": "100", "NO_COLOR": "1"}
    result = capy("backups", "list", "--project", project_id, env=terminal)
    lines = [ANSI.sub("", line) for line in result.stdout.splitlines()]
    assert max(len(line) for line in lines) <= 100, lines
    assert any(backup.id in line for line in lines), lines
    assert any(backup.backup_key in line for line in lines), lines
    # too narrow for the ids and the rest side by side: one block per backup
    assert lines[0] == backup.id
    assert lines[1].split() == ["backup", "key", backup.backup_key]

    # a table that fits folds its other columns, never the ids
    long_name = "a project name long enough to be folded " * 3
    app_db = make_app_db(capy.engine_dir.parent / "other.db")
    capy("projects", "create", "--name", long_name.strip(), "--database-url", sqlite_url(app_db))
    table = capy("projects", "list", env=terminal).stdout
    lines = [ANSI.sub("", line) for line in table.splitlines()]
    assert lines[0].split()[:2] == ["ID", "NAME"]
    assert max(len(line) for line in lines) <= 100, lines
    for found in capy.json("projects", "list"):
        assert any(found["id"] in line for line in lines), (found["id"], lines)


def test_an_invalid_option_is_named_as_the_option(capy: Capy, project_id: str) -> None:
    result = capy(
        "restore", "--project", project_id, "--restore-point", "rp_0000000000000000", code=1
    )
    line = _error(result.stderr)
    assert "--restore-point: no restore point rp_0000000000000000" in line
    assert "restore_point_id" not in line


def test_an_engine_db_migrated_by_a_newer_capy_is_refused_naming_it(tmp_path: Path) -> None:
    directory = tmp_path / "engine"
    Engine(directory).close()
    with closing(sqlite3.connect(directory / "engine.db")) as db, db:
        db.execute("INSERT INTO schema_migrations VALUES (999, '2030-01-01T00:00:00Z')")
    before = (directory / "engine.db").read_bytes()
    result = CliRunner().invoke(cli, ["--engine-dir", str(directory), "projects", "list"])
    assert result.exit_code == 1, result.stdout
    line = _error(result.stderr)
    assert f"{directory / 'engine.db'}: this engine's store was migrated by a newer capy" in line
    assert "schema version 999" in line
    assert (directory / "engine.db").read_bytes() == before  # nothing written
