"""Point-in-time recovery: a PostgreSQL database restorable to any moment of its window.

`pulumi up` registers the database and turns PITR on. A `capy worker` running on the
same engine directory streams the database's log from then on; the window (the
moments a restore can reach) opens once the first base backup and the log after it
are archived. To see the database as it was at a moment of that window:

    pulumi config set restore_time 2026-11-26T14:32:00Z && pulumi up

That lands the state at that moment in a new preview database, beside the source,
which is left alone. Unset `restore_time` and `pulumi up` again to remove the preview.
"""

from __future__ import annotations

from typing import Any

import pulumi

import pulumi_capy as capy

config = pulumi.Config()

project = capy.Project(
    "app",
    name=f"pitr-{pulumi.get_stack()}",
    database_url=config.require_secret("database_url"),
    pitr=True,
    # destroy keeps the base backups and the archived log (and refuses) unless this is set
    force_destroy=config.get_bool("force_destroy") or False,
)

pulumi.export("project_id", project.project_id)
# as of the last `pulumi up` that changed the project, or `pulumi up --refresh`
pulumi.export("pitr_window_start", project.pitr_window_start)
pulumi.export("pitr_window_end", project.pitr_window_end)

restore_time = config.get("restore_time")
if restore_time:
    # an event: it runs when created, and again only when restore_time changes
    restored = capy.Restore(
        "to-moment",
        project_id=project.project_id,
        restore_time=restore_time,
    )

    def reached(result: dict[str, Any]) -> Any:
        return result.get("restore_time")

    pulumi.export("restore_state", restored.state)
    pulumi.export("restored_to", restored.result.apply(reached))
    pulumi.export("preview_database_id", restored.preview_database_id)
    pulumi.export("preview_database_name", restored.preview_database_name)
