"""Where pulumi_capy sends its calls, resolved once, in one place.

Precedence for each setting: explicit argument > Pulumi stack config
(``capy:mode``, ``capy:apiUrl``, ``capy:apiKey``, ``capy:engineDir``) >
environment (``CAPY_MODE``, ``CAPYDB_API_URL``, ``CAPYDB_API_KEY``,
``CAPY_ENGINE_DIR``) > defaults. The mode defaults to ``api`` when a key is
known and ``embedded`` otherwise; ``Settings.reason`` says which rule chose it.

This module does not import Pulumi: the provider passes its stack config in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pydantic import SecretStr

from pulumi_capy.api.client import DEFAULT_API_URL
from pulumi_capy.api.credentials import check_credential
from pulumi_capy.api.errors import ConfigError

__all__ = ["ENV", "Mode", "Settings", "resolve"]


class Mode(StrEnum):
    api = "api"  # HTTP to hosted CapyDB or to a self-hosted ``capy serve``
    embedded = "embedded"  # the restore engine runs in this process


# setting -> (Pulumi config key, environment variable)
ENV = {
    "mode": ("mode", "CAPY_MODE"),
    "api_url": ("apiUrl", "CAPYDB_API_URL"),
    "api_key": ("apiKey", "CAPYDB_API_KEY"),
    "engine_dir": ("engineDir", "CAPY_ENGINE_DIR"),
}

DEFAULT_ENGINE_DIR = ".capy"


@dataclass(frozen=True)
class Settings:
    mode: Mode
    api_url: str
    api_key: SecretStr | None = field(repr=False)
    engine_dir: Path
    reason: str

    def __repr__(self) -> str:
        key = "'**********'" if self.api_key else "None"
        return (
            f"Settings(mode={self.mode.value!r}, api_url={self.api_url!r}, api_key={key}, "
            f"engine_dir={str(self.engine_dir)!r})"
        )

    def describe(self) -> str:
        """One line for the provider's log: which back end, and why."""
        if self.mode is Mode.api:
            return f"capy: mode api, {self.api_url} ({self.reason})"
        return f"capy: mode embedded, engine in {self.engine_dir} ({self.reason})"


def _pick(
    name: str,
    explicit: str | None,
    config: Mapping[str, str],
    environ: Mapping[str, str],
) -> tuple[str | None, str]:
    """The first value given, and where it came from (for messages)."""
    config_key, env_var = ENV[name]
    if explicit is not None and explicit != "":
        return explicit, name
    for key in (f"capy:{config_key}", config_key):
        value = config.get(key)
        if value:
            return value, f"capy:{config_key}"
    value = environ.get(env_var)
    if value:
        return value, env_var
    return None, "default"


def resolve(
    *,
    mode: str | None = None,
    api_url: str | None = None,
    api_key: str | SecretStr | None = None,
    engine_dir: str | os.PathLike[str] | None = None,
    config: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve the settings; raise ``ConfigError`` naming the setting that cannot work."""
    config = config or {}
    environ = os.environ if environ is None else environ
    explicit_key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key

    key_text, key_source = _pick("api_key", explicit_key, config, environ)
    key = check_credential(key_text, source=key_source) if key_text else None

    url_text, url_source = _pick("api_url", api_url, config, environ)
    url = (url_text or DEFAULT_API_URL).strip().rstrip("/")
    if not url.startswith(("https://", "http://")) or url[-3:] == "://":
        raise ConfigError(
            f"{url_source} must be an http(s) URL such as {DEFAULT_API_URL}; got {url!r}"
        )

    mode_text, mode_source = _pick("mode", mode, config, environ)
    if mode_text is not None:
        try:
            chosen = Mode(mode_text.strip().lower())
        except ValueError:
            raise ConfigError(
                f"{mode_source} must be 'api' or 'embedded'; got {mode_text!r}"
            ) from None
        reason = f"{mode_source} says so"
    elif key is not None:
        chosen, reason = Mode.api, f"an API key is set in {key_source}"
    else:
        chosen, reason = Mode.embedded, "no API key is set"
    if chosen is Mode.api and key is None:
        raise ConfigError(
            f"{mode_source} selects mode 'api' but no API key is set: set CAPYDB_API_KEY or "
            "`pulumi config set --secret capy:apiKey <key>`"
        )

    dir_text, _ = _pick(
        "engine_dir", None if engine_dir is None else str(engine_dir), config, environ
    )
    base = cwd or Path.cwd()
    directory = Path(dir_text).expanduser() if dir_text else Path(DEFAULT_ENGINE_DIR)
    if not directory.is_absolute():
        directory = base / directory

    return Settings(mode=chosen, api_url=url, api_key=key, engine_dir=directory, reason=reason)
