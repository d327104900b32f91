"""Where pulumi_capy sends its calls, resolved once, in one place; and the back end
that serves them, built only here (``Settings.open_backend``).

Precedence for each setting: explicit argument > Pulumi stack config
(``capy:mode``, ``capy:apiUrl``, ``capy:apiKey``, ``capy:engineDir``) >
environment (``CAPY_MODE``, ``CAPYDB_API_URL``, ``CAPYDB_API_KEY``,
``CAPY_ENGINE_DIR``) > defaults. The mode: an explicit ``mode``, else an explicit
``api_url`` (``api``) or ``engine_dir`` (``embedded``), else ``capy:mode`` or
``CAPY_MODE``, else ``api`` when a key is known and ``embedded`` otherwise (an
API URL set without a key is an error, not the embedded engine); an explicit
mode that would ignore an explicit URL or directory is an error too.
``Settings.reason`` says which rule chose it. A URL may end in ``/v1`` or ``/``.

This module does not import Pulumi: the provider passes its stack config in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

from pulumi_capy.api.credentials import check_credential
from pulumi_capy.api.errors import ConfigError, ConflictingSettings
from pulumi_capy.api.urls import DEFAULT_API_URL, normalize_api_url

if TYPE_CHECKING:
    import httpx

    from pulumi_capy.api.backend import Backend

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

    def open_backend(self, *, transport: httpx.BaseTransport | None = None) -> Backend:
        """A new back end of these settings, which the caller closes: the engine in
        ``engine_dir``, or a client of ``api_url`` (over ``transport``, in tests)."""
        if self.mode is Mode.embedded:
            from pulumi_capy.engine import Engine  # the engine is imported only where it runs

            return Engine(self.engine_dir)
        from pulumi_capy.api.client import CapyClient  # httpx, only where the API is used

        return CapyClient(self.api_url, self.api_key, transport=transport)


def _given(value: object) -> bool:
    return value is not None and str(value) != ""


def _pick(
    name: str,
    explicit: str | None,
    config: Mapping[str, str],
    environ: Mapping[str, str],
    names: Mapping[str, str],
) -> tuple[str | None, str]:
    """The first value given, and where it came from (for messages)."""
    config_key, env_var = ENV[name]
    if _given(explicit):
        return explicit, names[name]
    for key in (f"capy:{config_key}", config_key):
        value = config.get(key)
        if value:
            return value, f"capy:{config_key}"
    value = environ.get(env_var)
    if value:
        return value, env_var
    return None, "default"


def _choose_mode(
    explicit: str | None,
    *,
    url_given: bool,
    dir_given: bool,
    key_source: str | None,
    config: Mapping[str, str],
    environ: Mapping[str, str],
    names: Mapping[str, str],
) -> tuple[Mode, str, str]:
    """The mode, why (``Settings.reason``), and the setting that chose it."""
    if not _given(explicit):
        if url_given:
            return Mode.api, f"{names['api_url']} is given", names["api_url"]
        if dir_given:
            return Mode.embedded, f"{names['engine_dir']} is given", names["engine_dir"]
    text, source = _pick("mode", explicit, config, environ, names)
    if text is not None:
        try:
            chosen = Mode(text.strip().lower())
        except ValueError:
            raise ConfigError(f"{source} must be 'api' or 'embedded'; got {text!r}") from None
        return chosen, f"{source} says so", source
    if key_source is not None:
        return Mode.api, f"an API key is set in {key_source}", key_source
    return Mode.embedded, "no API key is set", "default"


def _refuse_an_ignored_setting(
    mode: str | None, *, url_given: bool, dir_given: bool, names: Mapping[str, str]
) -> None:
    """An explicit mode that would silently ignore an explicit URL or directory."""
    if not _given(mode):
        return
    chosen = str(mode).strip().lower()
    if chosen == Mode.embedded.value and url_given:
        ignored = names["api_url"]
    elif chosen == Mode.api.value and dir_given:
        ignored = names["engine_dir"]
    else:
        return
    raise ConflictingSettings(
        f"{names['mode']} {chosen} would ignore {ignored}; give {names['mode']} {chosen} "
        f"without {ignored}, or {ignored} without {names['mode']}"
    )


def resolve(
    *,
    mode: str | None = None,
    api_url: str | None = None,
    api_key: str | SecretStr | None = None,
    engine_dir: str | os.PathLike[str] | None = None,
    config: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    names: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve the settings; raise ``ConfigError`` naming the setting that cannot work.

    The mode: an explicit ``mode``; else an explicit ``api_url`` selects ``api`` and an
    explicit ``engine_dir`` ``embedded`` (both, without ``mode``, or an explicit ``mode``
    that would ignore one of them: ``ConflictingSettings``); else ``capy:mode``,
    ``CAPY_MODE``; else ``api`` when a key is known, and ``embedded`` when no URL is
    set either (a URL without a key: ``ConfigError``). ``names`` says
    how the caller's user gave the explicit arguments (the CLI: ``{"api_url":
    "--api-url", ...}``), for messages; by default they are named as the arguments.
    """
    config = config or {}
    environ = os.environ if environ is None else environ
    names = {name: name for name in ENV} | dict(names or {})
    explicit_key = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
    url_given, dir_given = _given(api_url), _given(engine_dir)
    if url_given and dir_given and not _given(mode):
        raise ConflictingSettings(
            f"{names['api_url']} and {names['engine_dir']} select different back ends; "
            f"give one (or {names['mode']})"
        )
    _refuse_an_ignored_setting(mode, url_given=url_given, dir_given=dir_given, names=names)

    key_text, key_source = _pick("api_key", explicit_key, config, environ, names)
    key = check_credential(key_text, source=key_source) if key_text else None

    url_text, url_source = _pick("api_url", api_url, config, environ, names)
    url = normalize_api_url(url_text or DEFAULT_API_URL)
    if not url.startswith(("https://", "http://")) or url[-3:] == "://":
        raise ConfigError(
            f"{url_source} must be an http(s) URL such as {DEFAULT_API_URL}; got {url!r}"
        )

    chosen, reason, mode_source = _choose_mode(
        mode,
        url_given=url_given,
        dir_given=dir_given,
        key_source=key_source if key is not None else None,
        config=config,
        environ=environ,
        names=names,
    )
    if chosen is Mode.api and key is None:
        raise ConfigError(
            f"{mode_source} selects mode 'api' but no API key is set: set CAPYDB_API_KEY, "
            "or in a Pulumi program `pulumi config set --secret capy:apiKey <key>`"
        )
    if chosen is Mode.embedded and mode_source == "default" and url_text is not None:
        # an API URL with no key is a half-made API setup, not a wish for the embedded engine
        raise ConfigError(
            f"{url_source} is set but no API key is: set CAPYDB_API_KEY (in a Pulumi "
            "program `pulumi config set --secret capy:apiKey <key>`) to use that API, or "
            f"unset {url_source} (or set CAPY_MODE=embedded) to use the embedded engine"
        )

    dir_text, _ = _pick(
        "engine_dir", None if engine_dir is None else str(engine_dir), config, environ, names
    )
    base = cwd or Path.cwd()
    directory = Path(dir_text).expanduser() if dir_text else Path(DEFAULT_ENGINE_DIR)
    if not directory.is_absolute():
        directory = base / directory

    return Settings(mode=chosen, api_url=url, api_key=key, engine_dir=directory, reason=reason)
