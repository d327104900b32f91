"""The Pulumi layer: one module per resource, each a Resource and its ResourceProvider."""

from pulumi_capy.resources.backup import Backup
from pulumi_capy.resources.functions import get_backups, get_jobs, get_restore_points
from pulumi_capy.resources.project import Project
from pulumi_capy.resources.restore import Restore
from pulumi_capy.resources.restore_point import RestorePoint

__all__ = [
    "Backup",
    "Project",
    "Restore",
    "RestorePoint",
    "get_backups",
    "get_jobs",
    "get_restore_points",
]
