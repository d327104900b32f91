"""``capy doctor`` on a real engine directory: it warns about what others can read, the
key file first, with the chmod that fixes it, and is quiet once that ran."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

from pulumi_capy.engine.blob_keys import BlobKey, generate_blob_key
from tests.cli.conftest import Capy
from tests.pg import PostgresServer


def _fixes(output: str) -> list[str]:
    return [line.split("fix: ", 1)[1] for line in output.splitlines() if "fix: " in line]


def test_doctor_is_quiet_on_a_fresh_engine(capy: Capy, project_id: str) -> None:
    result = capy("doctor")
    assert "ok: nothing in it is open to a group or to others" in result.stdout
    assert f"secret keys from: {capy.engine_dir / 'secret.key'}" in result.stdout


def test_doctor_warns_about_an_open_engine_directory_and_key_file(
    capy: Capy, project_id: str
) -> None:
    key_file = capy.engine_dir / "secret.key"
    key = key_file.read_text().strip()
    capy.engine_dir.chmod(0o755)
    key_file.chmod(0o644)
    store = capy.engine_dir / "engine.db"
    store.chmod(0o644)

    result = capy("doctor", code=1)
    assert f"the key file {key_file} (mode 0o644) can be read by others" in result.stdout
    assert f"{store} (0o644)" in result.stdout
    fixes = _fixes(result.stdout)
    assert fixes == [
        f"chmod 600 {shlex.quote(str(key_file))}",
        f"chmod -R go-rwx {shlex.quote(str(capy.engine_dir))}",
    ]
    assert key not in result.stdout + result.stderr
    report = json.loads(capy("doctor", "--json", code=1).stdout)
    assert [problem["fix"] for problem in report["problems"]] == fixes

    for fix in fixes:  # the commands it says to run, run for real
        subprocess.run(shlex.split(fix), check=True)
    assert "ok:" in capy("doctor").stdout


def test_doctor_names_the_environment_key_and_a_missing_directory(
    capy: Capy, tmp_path: Path
) -> None:
    missing = capy("doctor")
    assert f"no engine directory at {capy.engine_dir}" in missing.stdout
    capy.engine_dir.mkdir(mode=0o700)
    result = capy("doctor", env={**os.environ, "CAPY_SECRET_KEY": "k" * 44})
    assert "secret keys from: CAPY_SECRET_KEY" in result.stdout
    assert "k" * 44 not in result.stdout


def test_doctor_names_the_postgresql_store_without_its_password(
    capy: Capy, project_id: str, debian_postgres: PostgresServer
) -> None:
    url = debian_postgres.url()
    result = capy("doctor", env={"CAPY_STORE_URL": url})
    assert debian_postgres.password not in result.stdout
    host = f"{debian_postgres.host}:{debian_postgres.port}"
    assert f"metadata store: postgresql postgresql://capy:***@{host}/postgres, reachable" in (
        result.stdout
    )

    wrong = url.replace(debian_postgres.password, "not-the-password-42")
    failed = capy("doctor", "--json", code=1, env={"CAPY_STORE_URL": wrong})
    assert "not-the-password-42" not in failed.stdout
    report = json.loads(failed.stdout)
    assert report["store"]["reachable"] is False
    assert "password authentication failed" in report["store"]["error"]


def test_doctor_names_the_sqlite_store(capy: Capy, project_id: str) -> None:
    report = capy.json("doctor")
    assert report["store"] == {
        "kind": "sqlite",
        "location": str(capy.engine_dir / "engine.db"),
        "reachable": True,
        "error": None,
    }


def test_doctor_names_the_blob_store_its_keys_and_a_refusal(
    capy: Capy, project_id: str, s3_env: dict[str, str]
) -> None:
    local = capy.json("doctor")["blobs"]
    assert local["kind"] == "local"
    assert local["reachable"] is True
    assert local["encryption"] == []

    key = generate_blob_key()
    result = capy("doctor", env={**s3_env, "CAPY_BLOB_KEY": key})
    bucket_url = s3_env["CAPY_BLOB_URL"]
    key_id = BlobKey.from_text(key).key_id_hex
    assert f"blob store: s3 {bucket_url}/, reachable, encrypted (key ids {key_id})" in (
        result.stdout
    )
    assert key not in result.stdout

    wrong = {**s3_env, "AWS_SECRET_ACCESS_KEY": "not-the-secret-42"}
    failed = capy("doctor", "--json", code=1, env=wrong)
    assert "not-the-secret-42" not in failed.stdout
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in failed.stdout
    report = json.loads(failed.stdout)
    assert report["blobs"]["reachable"] is False
    assert "SignatureDoesNotMatch" in report["blobs"]["error"]
