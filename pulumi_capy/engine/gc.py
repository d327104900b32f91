"""Garbage collection of the blob store: objects no record of the engine refers to.

A blob becomes garbage when the work that wrote it did not get as far as recording
it: a backup job whose lease was lost after its blob was committed, a log segment
archived for a project deleted meanwhile, a project whose deletion stopped half way,
a ``.tmp`` file of a write that was killed. Deleting a backup, retention, PITR
pruning and project deletion remove their blobs themselves; nothing here replaces them.

Conservative by construction:

- only objects under ``projects/<project>/{backups,base,wal}/`` of the blob store are
  considered (a local store's ``blobs/`` directory, or an S3 prefix); anything else is
  left alone;
- a blob is kept while any backup (whatever its state), restore point, preview,
  PITR base backup or snapshot, or archived log segment (or piece) names it;
- every file of a project that has a pending or running job is kept (a job commits
  its blob before it records it);
- every file younger than ``min_age`` is kept (the log archiver, which is not a job,
  also commits before it records).

A manifest goes with its blob; a manifest whose blob is gone is garbage itself.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

from pulumi_capy.engine.blobs import MANIFEST
from pulumi_capy.engine.objects import TMP, ObjectInfo
from pulumi_capy.engine.runtime import Runtime

__all__ = ["DEFAULT_MIN_AGE", "Garbage", "GarbageReport", "collect_garbage"]

DEFAULT_MIN_AGE = timedelta(hours=24)
KINDS = ("backups", "base", "wal")  # the folders of a project's blobs


@dataclass(frozen=True)
class Garbage:
    path: str  # the object's name: relative to the blob directory, or the S3 prefix
    size_bytes: int
    why: str
    found: ObjectInfo  # as the store listed it


@dataclass
class GarbageReport:
    dry_run: bool
    garbage: list[Garbage] = field(default_factory=list)
    busy_projects: list[str] = field(default_factory=list)  # kept whole: jobs running
    young_files: int = 0  # kept: younger than min_age

    @property
    def total_bytes(self) -> int:
        return sum(item.size_bytes for item in self.garbage)


def _referenced(rt: Runtime, project_id: str) -> set[str]:
    """Every blob key a record of the project names."""
    store = rt.store
    keys = {backup.backup_key for backup in store.list_backups(project_id)}
    keys |= {p.backup_key for p in store.list_restore_points(project_id) if p.backup_key}
    keys |= {p.source_backup_key for p in store.list_previews(project_id) if p.source_backup_key}
    keys |= {base.blob_key for base in store.list_base_backups(project_id, state=None)}
    keys |= {segment.blob_key for segment in store.list_wal_segments(project_id)}
    return keys


def _why(info: ObjectInfo, referenced: set[str], present: set[str]) -> str | None:
    """Why the object (or unfinished upload) is garbage, or ``None`` when it is kept."""
    if info.upload.endswith(TMP):
        return "an unfinished write (a .tmp file)"
    if info.upload:
        return "an unfinished multipart upload"
    return _why_object(info.name, referenced, present)


def _why_object(relative: str, referenced: set[str], present: set[str]) -> str | None:
    if relative.endswith(MANIFEST):
        blob = relative[: -len(MANIFEST)]
        if blob in referenced:
            return None
        if blob in present:
            return "the manifest of an unreferenced blob"
        return "a manifest whose blob is gone"
    if relative in referenced:
        return None
    return "no backup, restore point, base backup or log segment refers to it"


def _by_project(rt: Runtime) -> dict[str, list[ObjectInfo]]:
    """The objects of each project's blob folders (``KINDS``), in name order."""
    found: dict[str, list[ObjectInfo]] = defaultdict(list)
    objects = rt.blobs.objects
    for info in [*objects.list("projects/"), *objects.unfinished("projects/")]:
        _, project_id, kind, *rest = [*info.name.split("/"), "", ""][:4]
        if kind in KINDS and rest[0]:
            found[project_id].append(info)
    return found


def collect_garbage(
    rt: Runtime, *, dry_run: bool, min_age: timedelta = DEFAULT_MIN_AGE
) -> GarbageReport:
    """Find (and unless ``dry_run`` remove) the blob store's garbage; what it found."""
    report = GarbageReport(dry_run=dry_run)
    known = {project.id for project in rt.store.list_projects()}
    oldest = rt.now().timestamp() - min_age.total_seconds()
    for project_id, objects in sorted(_by_project(rt).items()):
        if project_id in known and rt.store.busy_jobs(project_id):
            report.busy_projects.append(project_id)
            continue
        referenced = _referenced(rt, project_id) if project_id in known else set()
        present = {info.name for info in objects if not info.upload}
        gone = "" if project_id in known else f" (project {project_id} is gone)"
        for info in objects:
            why = _why(info, referenced, present)
            if why is None:
                continue
            if info.modified > oldest:
                report.young_files += 1
                continue
            path = info.upload if info.upload.endswith(TMP) else info.name
            report.garbage.append(Garbage(path, info.size, why + gone, info))
    if not dry_run:
        for item in report.garbage:
            if item.found.upload:
                rt.blobs.objects.drop_unfinished(item.found)
            else:
                rt.blobs.objects.delete(item.path)
    return report
