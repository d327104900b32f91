"""Hosted: the same restore point and restore against CapyDB (or a self-hosted `capy serve`).

Set the key as a secret and name the project CapyDB already has:

    pulumi config set --secret capy:apiKey capy_live_...
    pulumi config set projectId prj_...
    pulumi up

(`capy:apiUrl` or `CAPYDB_API_URL` points it at a self-hosted server.)
"""

from __future__ import annotations

import pulumi

import pulumi_capy as capy

config = pulumi.Config()
project_id = config.require("projectId")

before_change = capy.RestorePoint("before-change", project_id=project_id, label="before-change")

inspect = capy.Restore(
    "inspect",
    project_id=project_id,
    restore_point_id=before_change.restore_point_id,
    ttl_hours=24,
)

pulumi.export("restore_point_id", before_change.restore_point_id)
pulumi.export("backup_key", before_change.backup_key)
pulumi.export("restore_state", inspect.state)
pulumi.export("preview_database_url", inspect.preview_database_url)
