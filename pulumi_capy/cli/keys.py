"""``capy keys create|list|revoke``: API keys of a self-hosted server.

Works embedded (the first key is minted offline, on the server's engine
directory) and against a server (with a key that has ``api_keys:*``). The
organization is the caller's, from ``GET /v1/me``.
"""

from __future__ import annotations

import click

from pulumi_capy.api.backend import Backend
from pulumi_capy.api.errors import ConfigError
from pulumi_capy.api.models import SCOPES, CreateApiKey
from pulumi_capy.cli.common import (
    CapyGroup,
    backend,
    backend_options,
    echo,
    emit,
    example,
    json_option,
    note,
    request,
    resolve_project,
    show_table,
)

__all__ = ["keys"]


@click.group(
    cls=CapyGroup,
    epilog=example("capy keys create --engine-dir /srv/capy --name admin --scopes all"),
)
def keys() -> None:
    """Mint, list and revoke API keys (capy_live_…)."""


def _organization(chosen: Backend) -> str:
    identity = chosen.get_identity()
    organization = identity.principal.organization_id or (
        identity.organization.id if identity.organization else None
    )
    if organization is None:
        raise ConfigError("the back end did not say which organization this credential acts for")
    return organization


def _scopes(text: str) -> list[str]:
    if text.strip().lower() == "all":
        return list(SCOPES)
    return [scope.strip() for scope in text.split(",") if scope.strip()]


@keys.command(
    epilog=example(
        "capy keys create --engine-dir /srv/capy --name admin --scopes all",
        "capy keys create --name ci --scopes backups:read,backups:write,jobs:read "
        "--project prj_5f2c81d04be97a13 --expires-at 2027-01-01T00:00:00Z",
    )
)
@click.option("--name", required=True, help="What the key is for.")
@click.option(
    "--scopes",
    required=True,
    metavar="all|SCOPE,…",
    help=f"'all', or a comma list of: {', '.join(SCOPES)}.",
)
@click.option("--project", metavar="PROJECT", help="Limit the key to this project (id or name).")
@click.option("--expires-at", metavar="TIME", help="RFC 3339 time, e.g. 2027-01-01T00:00:00Z.")
@backend_options
@json_option
def create(name: str, scopes: str, project: str | None, expires_at: str | None) -> None:
    """Mint a key and print it, once: it is stored only as a SHA-256 hash.

    The key alone goes to stdout (KEY=$(capy keys create …) works); --json
    prints the key with its record.
    """
    chosen = backend(start=True)
    created = chosen.create_api_key(
        _organization(chosen),
        request(
            CreateApiKey,
            name=name,
            scopes=_scopes(scopes),
            project_id=resolve_project(project) if project is not None else None,
            expires_at=expires_at,
        ),
    )

    def human() -> None:
        echo(created.plaintext_api_key.get_secret_value())
        note(
            f"key {created.api_key.id} ({created.api_key.name}): shown once, store it now; "
            "use it as CAPYDB_API_KEY"
        )

    emit(created, human)


@keys.command("list", epilog=example("capy keys list"))
@backend_options
@json_option
def list_() -> None:
    """List the keys (never their secret)."""
    chosen = backend()
    found = chosen.list_api_keys(_organization(chosen))
    emit(
        found,
        lambda: show_table(
            found,
            [
                ("ID", lambda k: k.id),
                ("NAME", lambda k: k.name),
                ("PREFIX", lambda k: f"{k.prefix}…" if k.prefix else None),
                ("SCOPES", lambda k: "all" if set(k.scopes) == set(SCOPES) else k.scopes),
                ("PROJECT", lambda k: k.project_id),
                ("CREATED", lambda k: k.created_at),
                ("EXPIRES", lambda k: k.expires_at),
                ("REVOKED", lambda k: k.revoked_at),
                ("LAST USED", lambda k: k.last_used_at),
            ],
            "no API keys",
        ),
    )


@keys.command(epilog=example("capy keys revoke --id key_8d41b7e2a90c35f1"))
@click.option(
    "--id",
    "key_id",
    required=True,
    metavar="ID",
    help="The key's id (as `capy keys list` shows it).",
)
@backend_options
@json_option
def revoke(key_id: str) -> None:
    """Revoke a key: it stops working at once and stays listed as revoked."""
    chosen = backend()
    chosen.delete_api_key(_organization(chosen), key_id)
    emit({"revoked": True, "id": key_id}, lambda: echo(f"revoked key {key_id}"))
