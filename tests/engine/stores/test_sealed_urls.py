"""Projects' URLs are kept sealed in ``engine.db`` (issue 16, files at rest).

Real stores on real files, read back byte for byte: the password of a project's
URL is nowhere in ``engine.db`` or its ``-wal``; the key is ``CAPY_SECRET_KEY``
or ``secret.key`` beside the store (0600, made on first need); a store written
before URLs were sealed is sealed when opened; keys rotate (newest first); a
missing or wrong key is an error that names where keys come from and never
shows one.
"""

from __future__ import annotations

import contextlib
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from pulumi_capy.api.errors import ConfigError
from pulumi_capy.engine.secret_keys import SEALED_PREFIX
from pulumi_capy.engine.stores.contract import ProjectRecord
from pulumi_capy.engine.stores.sqlite import SqliteStore

PASSWORD = "Hunter2-Sekret-pw-9f3b"
URL = f"postgresql://shop_owner:{PASSWORD}@db.example.test:5432/shop"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _record(project_id: str = "prj_1", name: str = "shop", url: str = URL) -> ProjectRecord:
    return ProjectRecord(
        id=project_id,
        organization_id="org_default",
        name=name,
        environment="non_production",
        database_url=url,
        database_kind="postgres",
        database_name="shop",
        state="active",
        created_at=NOW,
        updated_at=NOW,
    )


def _files(path: Path) -> dict[str, bytes]:
    """The bytes of the store and of its log, as another reader of the disk sees them."""
    return {
        candidate.name: candidate.read_bytes()
        for candidate in (path, path.with_name(path.name + "-wal"))
        if candidate.exists()
    }


def _assert_no_password(path: Path) -> None:
    files = _files(path)
    assert "engine.db" in files
    for name, data in files.items():
        assert PASSWORD.encode() not in data, name
        assert b"shop_owner:" not in data, name


def _stored_value(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return str(db.execute("SELECT database_url FROM projects").fetchone()[0])


def test_the_password_is_nowhere_in_the_store_nor_its_log(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    with contextlib.closing(SqliteStore(path)) as store:
        assert not (tmp_path / "secret.key").exists()  # made on first need, not on open
        store.insert_project(_record())
        assert (path.with_name("engine.db-wal")).stat().st_size > 0  # the insert is in it
        _assert_no_password(path)
        assert store.get_project("prj_1") is not None
        assert store.get_project("prj_1").database_url == URL  # type: ignore[union-attr]
        assert [project.database_url for project in store.list_projects()] == [URL]
    _assert_no_password(path)
    assert _stored_value(path).startswith(SEALED_PREFIX)
    key_file = tmp_path / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    with contextlib.closing(SqliteStore(path)) as again:
        assert again.get_project("prj_1").database_url == URL  # type: ignore[union-attr]
        assert key_file.read_text().strip() not in repr(again.secret_keys)


def test_a_store_with_plaintext_urls_is_sealed_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    with contextlib.closing(SqliteStore(path)) as store:
        store.insert_project(_record())
    # a store as written before URLs were sealed: the URL in plaintext, in the file itself
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE projects SET database_url = ?", (URL,))
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert PASSWORD.encode() in path.read_bytes()

    with contextlib.closing(SqliteStore(path)) as store:
        assert store.get_project("prj_1").database_url == URL  # type: ignore[union-attr]
        _assert_no_password(path)
        assert _stored_value(path).startswith(SEALED_PREFIX)
    _assert_no_password(path)


def test_a_key_from_the_environment_and_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("CAPY_SECRET_KEY", key)
    path = tmp_path / "engine.db"
    with contextlib.closing(SqliteStore(path)) as store:
        store.insert_project(_record())
    assert not (tmp_path / "secret.key").exists()
    _assert_no_password(path)
    with contextlib.closing(SqliteStore(path)) as store:
        assert store.get_project("prj_1").database_url == URL  # type: ignore[union-attr]

    monkeypatch.delenv("CAPY_SECRET_KEY")
    with contextlib.closing(SqliteStore(path)) as store:
        with pytest.raises(ConfigError) as missing:
            store.get_project("prj_1")
        with pytest.raises(ConfigError):
            store.insert_project(_record("prj_2", "other"))  # no new key beside old URLs
    assert not (tmp_path / "secret.key").exists()
    message = str(missing.value)
    assert "CAPY_SECRET_KEY" in message
    assert str(tmp_path / "secret.key") in message
    assert "prj_1" in message
    assert key not in message


def test_a_wrong_key_is_a_clear_error_that_never_shows_a_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "engine.db"
    with contextlib.closing(SqliteStore(path)) as store:
        store.insert_project(_record())
    stored_key = (tmp_path / "secret.key").read_text().strip()
    wrong = Fernet.generate_key().decode()
    monkeypatch.setenv("CAPY_SECRET_KEY", wrong)
    with contextlib.closing(SqliteStore(path)) as store, pytest.raises(ConfigError) as caught:
        store.list_projects()
    message = str(caught.value)
    assert "CAPY_SECRET_KEY" in message
    assert "cannot be decrypted" in message
    assert wrong not in message
    assert stored_key not in message
    assert PASSWORD not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_a_malformed_key_names_its_place_not_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = Fernet.generate_key().decode()
    monkeypatch.setenv("CAPY_SECRET_KEY", f"{good},not-a-fernet-key-value")
    with (
        contextlib.closing(SqliteStore(tmp_path / "engine.db")) as store,
        pytest.raises(ConfigError) as caught,
    ):
        store.insert_project(_record())
    message = str(caught.value)
    assert "CAPY_SECRET_KEY: key 2 of 2 is not a Fernet key" in message
    assert "not-a-fernet-key-value" not in message
    assert good not in message


def test_a_lost_key_file_is_an_error_not_a_new_key(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    with contextlib.closing(SqliteStore(path)) as store:
        store.insert_project(_record())
    (tmp_path / "secret.key").unlink()
    with contextlib.closing(SqliteStore(path)) as store:
        with pytest.raises(ConfigError, match=r"put back the key file .*secret\.key"):
            store.get_project("prj_1")
        with pytest.raises(ConfigError, match="no key was found"):
            store.insert_project(_record("prj_2", "other"))
    assert not (tmp_path / "secret.key").exists()


def test_rotation_reseals_every_url_with_the_newest_key_on_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    path = tmp_path / "engine.db"
    monkeypatch.setenv("CAPY_SECRET_KEY", old)
    with contextlib.closing(SqliteStore(path)) as store:
        store.insert_project(_record())
        store.insert_project(_record("prj_2", "other", URL.replace("shop", "other")))
    before = _stored_value(path)

    monkeypatch.setenv("CAPY_SECRET_KEY", f"{new}, {old}")  # newest first
    with contextlib.closing(SqliteStore(path)) as store:
        assert store.get_project("prj_1").database_url == URL  # type: ignore[union-attr]
    after = _stored_value(path)
    assert after != before
    assert Fernet(new).decrypt(after.removeprefix(SEALED_PREFIX).encode()).decode() == URL
    _assert_no_password(path)

    monkeypatch.setenv("CAPY_SECRET_KEY", new)  # the old key retired
    with contextlib.closing(SqliteStore(path)) as store:
        assert sorted(project.id for project in store.list_projects()) == ["prj_1", "prj_2"]
    monkeypatch.setenv("CAPY_SECRET_KEY", old)
    with contextlib.closing(SqliteStore(path)) as store, pytest.raises(ConfigError):
        store.list_projects()


def test_rotation_in_the_key_file(tmp_path: Path) -> None:
    path = tmp_path / "engine.db"
    with contextlib.closing(SqliteStore(path)) as store:
        store.insert_project(_record())
    key_file = tmp_path / "secret.key"
    old = key_file.read_text().strip()
    new = Fernet.generate_key().decode()
    key_file.write_text(f"{new}\n{old}\n")
    with contextlib.closing(SqliteStore(path)) as store:
        assert store.get_project("prj_1").database_url == URL  # type: ignore[union-attr]
    key_file.write_text(f"{new}\n")
    with contextlib.closing(SqliteStore(path)) as store:
        assert store.get_project("prj_1").database_url == URL  # type: ignore[union-attr]
