from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pulumi_capy.api.client import DEFAULT_API_URL, CapyClient
from pulumi_capy.api.errors import ConfigError, ConflictingSettings
from pulumi_capy.engine import Engine
from pulumi_capy.settings import Mode, resolve

KEY_ARG = "capy_live_" + "a" * 40
KEY_CONFIG = "capy_live_" + "c" * 40
KEY_ENV = "capy_live_" + "e" * 40
# header {"alg":"RS256","typ":"JWT"}, any payload, any signature
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


def test_defaults_without_anything_are_embedded_beside_the_project(tmp_path: Path) -> None:
    settings = resolve(environ={}, cwd=tmp_path)
    assert settings.mode is Mode.embedded
    assert settings.api_url == DEFAULT_API_URL
    assert settings.api_key is None
    assert settings.engine_dir == tmp_path / ".capy"
    assert "no API key" in settings.describe()


def test_a_key_selects_api_mode_and_says_why() -> None:
    settings = resolve(environ={"CAPYDB_API_KEY": KEY_ENV})
    assert settings.mode is Mode.api
    assert settings.reason == "an API key is set in CAPYDB_API_KEY"
    assert "mode api" in settings.describe()


@pytest.mark.parametrize(
    ("explicit", "config", "environ", "expected"),
    [
        (KEY_ARG, {"capy:apiKey": KEY_CONFIG}, {"CAPYDB_API_KEY": KEY_ENV}, KEY_ARG),
        (None, {"capy:apiKey": KEY_CONFIG}, {"CAPYDB_API_KEY": KEY_ENV}, KEY_CONFIG),
        (None, {"apiKey": KEY_CONFIG}, {"CAPYDB_API_KEY": KEY_ENV}, KEY_CONFIG),
        (None, {}, {"CAPYDB_API_KEY": KEY_ENV}, KEY_ENV),
    ],
)
def test_key_precedence(
    explicit: str | None, config: dict[str, str], environ: dict[str, str], expected: str
) -> None:
    settings = resolve(api_key=explicit, config=config, environ=environ)
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == expected


def test_url_mode_and_dir_precedence(tmp_path: Path) -> None:
    environ = {
        "CAPYDB_API_URL": "https://env.example/api",
        "CAPY_MODE": "api",
        "CAPYDB_API_KEY": KEY_ENV,
        "CAPY_ENGINE_DIR": "/env/dir",
    }
    config = {"capy:apiUrl": "https://config.example/api/", "capy:engineDir": "state"}
    from_config = resolve(config=config, environ=environ, cwd=tmp_path)
    assert from_config.api_url == "https://config.example/api"
    assert from_config.engine_dir == tmp_path / "state"
    from_env = resolve(environ=environ, cwd=tmp_path)
    assert from_env.api_url == "https://env.example/api"
    assert from_env.engine_dir == Path("/env/dir")
    explicit = resolve(api_url="http://127.0.0.1:8080", mode="api", config=config, environ=environ)
    assert explicit.api_url == "http://127.0.0.1:8080"
    explicit_dir = resolve(engine_dir=tmp_path / "x", mode="embedded", environ=environ)
    assert explicit_dir.engine_dir == tmp_path / "x"
    assert explicit_dir.mode is Mode.embedded
    assert explicit_dir.reason == "mode says so"


def test_config_mode_beats_environment() -> None:
    settings = resolve(
        config={"capy:mode": "embedded"}, environ={"CAPY_MODE": "api", "CAPYDB_API_KEY": KEY_ENV}
    )
    assert settings.mode is Mode.embedded
    assert settings.reason == "capy:mode says so"


def test_session_tokens_are_accepted() -> None:
    settings = resolve(api_key=JWT)
    assert settings.mode is Mode.api


@pytest.mark.parametrize("bad", ["sk_live_1234567890abcdef1234", "capy_live_short", "a.b.c"])
def test_malformed_key_is_refused_without_echo(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(environ={"CAPYDB_API_KEY": bad})
    message = str(caught.value)
    assert "CAPYDB_API_KEY is malformed" in message
    assert bad not in message


def test_malformed_config_key_names_the_config_key() -> None:
    with pytest.raises(ConfigError, match=r"capy:apiKey is malformed"):
        resolve(config={"capy:apiKey": "nope"}, environ={})


def test_api_mode_without_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"CAPY_MODE selects mode 'api' but no API key"):
        resolve(environ={"CAPY_MODE": "api"})


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"capy:mode must be 'api' or 'embedded'; got 'cloud'"):
        resolve(config={"capy:mode": "cloud"}, environ={})


@pytest.mark.parametrize("url", ["ftp://x", "capydb.dev", "https://"])
def test_bad_url_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match=r"CAPYDB_API_URL must be an http\(s\) URL"):
        resolve(environ={"CAPYDB_API_URL": url})


def test_repr_hides_the_key() -> None:
    settings = resolve(api_key=KEY_ARG)
    assert KEY_ARG not in repr(settings)
    assert KEY_ARG not in str(settings)
    assert KEY_ARG not in settings.describe()


def test_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPYDB_API_KEY", KEY_ENV)
    assert resolve().mode is Mode.api


CLI_FLAGS = {"mode": "--mode", "api_url": "--api-url", "engine_dir": "--engine-dir"}


def test_an_explicit_url_selects_api_and_an_explicit_dir_embedded(tmp_path: Path) -> None:
    # both beat the mode of the config and of the environment, and the key's default
    config = {"capy:mode": "embedded", "capy:apiKey": KEY_CONFIG}
    environ = {"CAPY_MODE": "embedded", "CAPYDB_API_KEY": KEY_ENV}
    by_url = resolve(api_url="http://127.0.0.1:8080", config=config, environ=environ)
    assert (by_url.mode, by_url.reason) == (Mode.api, "api_url is given")
    config["capy:mode"] = environ["CAPY_MODE"] = "api"
    by_dir = resolve(engine_dir=tmp_path, config=config, environ=environ, names=CLI_FLAGS)
    assert (by_dir.mode, by_dir.reason) == (Mode.embedded, "--engine-dir is given")
    assert by_dir.engine_dir == tmp_path


def test_an_explicit_mode_agreeing_with_an_explicit_url_or_dir_says_so(tmp_path: Path) -> None:
    settings = resolve(mode="embedded", engine_dir=tmp_path, environ={})
    assert (settings.mode, settings.reason) == (Mode.embedded, "mode says so")
    api = resolve(
        mode="api",
        api_url="http://127.0.0.1:8080",
        environ={"CAPYDB_API_KEY": KEY_ENV},
        names=CLI_FLAGS,
    )
    assert (api.mode, api.reason) == (Mode.api, "--mode says so")


def test_an_explicit_mode_that_would_ignore_an_explicit_url_or_dir_is_refused(
    tmp_path: Path,
) -> None:
    """Issue 16: ``--mode embedded --api-url …`` used to drop the URL without a word."""
    with pytest.raises(ConflictingSettings) as embedded:
        resolve(mode="embedded", api_url="http://127.0.0.1:8080", environ={}, names=CLI_FLAGS)
    assert str(embedded.value) == (
        "--mode embedded would ignore --api-url; give --mode embedded without --api-url, "
        "or --api-url without --mode"
    )
    with pytest.raises(ConflictingSettings, match="--mode api would ignore --engine-dir"):
        resolve(
            mode="api",
            api_url="http://127.0.0.1:8080",
            engine_dir=tmp_path,
            environ={"CAPYDB_API_KEY": KEY_ENV},
            names=CLI_FLAGS,
        )


@pytest.mark.parametrize("source", ["environ", "config"])
def test_an_api_url_without_a_key_is_refused_naming_the_key(source: str) -> None:
    """Issue 16: CAPYDB_API_URL without a key used to mean the embedded engine in ./.capy."""
    url = {"CAPYDB_API_URL": "http://127.0.0.1:8080/v1"}
    config = {"capy:apiUrl": url["CAPYDB_API_URL"]} if source == "config" else {}
    with pytest.raises(ConfigError) as caught:
        resolve(config=config, environ=url if source == "environ" else {})
    message = str(caught.value)
    assert message.startswith(
        "CAPYDB_API_URL is set" if source == "environ" else "capy:apiUrl is set"
    )
    assert "set CAPYDB_API_KEY" in message
    assert "capy:apiKey" in message
    assert "CAPY_MODE=embedded" in message
    # a mode given, or an engine directory given explicitly, still decides
    assert resolve(environ={**url, "CAPY_MODE": "embedded"}).mode is Mode.embedded
    assert resolve(engine_dir="/tmp/x", environ=url).mode is Mode.embedded


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "//v1//"])
def test_an_api_url_may_end_in_v1_or_a_slash(suffix: str) -> None:
    settings = resolve(
        api_url="http://127.0.0.1:8080" + suffix, environ={"CAPYDB_API_KEY": KEY_ENV}
    )
    assert settings.api_url == "http://127.0.0.1:8080"
    hosted = resolve(api_url=DEFAULT_API_URL + suffix, environ={"CAPYDB_API_KEY": KEY_ENV})
    assert hosted.api_url == DEFAULT_API_URL


def test_an_explicit_url_and_dir_without_a_mode_conflict(tmp_path: Path) -> None:
    with pytest.raises(ConflictingSettings) as caught:
        resolve(
            api_url="http://127.0.0.1:8080",
            engine_dir=tmp_path,
            environ={"CAPYDB_API_KEY": KEY_ENV, "CAPY_MODE": "api"},
            names=CLI_FLAGS,
        )
    assert str(caught.value) == (
        "--api-url and --engine-dir select different back ends; give one (or --mode)"
    )
    assert isinstance(caught.value, ConfigError)


def test_empty_explicit_values_are_not_given(tmp_path: Path) -> None:
    settings = resolve(api_url="", engine_dir="", environ={}, cwd=tmp_path)
    assert (settings.mode, settings.reason) == (Mode.embedded, "no API key is set")


def test_an_explicit_url_without_a_key_is_refused_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--api-url selects mode 'api' but no API key"):
        resolve(api_url="http://127.0.0.1:8080", environ={}, names=CLI_FLAGS)


def test_the_back_end_is_the_engine_or_a_client_of_the_url(tmp_path: Path) -> None:
    embedded = resolve(engine_dir=tmp_path / "engine", environ={}).open_backend()
    try:
        assert isinstance(embedded, Engine)
        assert embedded.rt.directory == tmp_path / "engine"
    finally:
        embedded.close()
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"projects": []})

    transport = httpx.MockTransport(answer)
    settings = resolve(api_url="http://127.0.0.1:8080", api_key=KEY_ARG, environ={})
    client = settings.open_backend(transport=transport)
    try:
        assert isinstance(client, CapyClient)
        assert client.base_url == "http://127.0.0.1:8080"
        assert client.list_projects() == []
        assert [str(request.url) for request in seen] == ["http://127.0.0.1:8080/v1/projects"]
        assert seen[0].headers["authorization"] == f"Bearer {KEY_ARG}"
    finally:
        client.close()
