"""The public surface is pinned: a change to it is a decision, not an accident."""

from __future__ import annotations

import subprocess
import sys

import pulumi_capy
import pulumi_capy.api


def test_package_all() -> None:
    assert pulumi_capy.__all__ == [
        "Backup",
        "Project",
        "Restore",
        "RestorePoint",
        "__version__",
        "get_backups",
        "get_jobs",
        "get_restore_points",
    ]
    for name in pulumi_capy.__all__:
        assert getattr(pulumi_capy, name) is not None, name


def test_api_all() -> None:
    assert sorted(pulumi_capy.api.__all__) == sorted(
        [
            "DEFAULT_API_URL",
            "ApiError",
            "BadRequest",
            "Backend",
            "CapyClient",
            "CapyError",
            "ConfigError",
            "Conflict",
            "Forbidden",
            "InvalidInput",
            "JobFailed",
            "JobTimeout",
            "NotFound",
            "NotSupported",
            "RateLimited",
            "HttpRetryPolicy",
            "ServerError",
            "Unauthorized",
            "Unreachable",
        ]
    )
    for name in pulumi_capy.api.__all__:
        assert hasattr(pulumi_capy.api, name), name


def test_api_and_engine_never_import_pulumi() -> None:
    code = (
        "import sys, pulumi_capy.api.client, pulumi_capy.settings, pulumi_capy.engine; "
        "sys.exit(1 if any(m == 'pulumi' or m.startswith('pulumi.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_client_satisfies_the_backend_protocol() -> None:
    client = pulumi_capy.api.CapyClient("https://capydb.example")
    try:
        assert isinstance(client, pulumi_capy.api.Backend)
    finally:
        client.close()
