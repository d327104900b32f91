"""Garbage collection of the blob store: files no record of the engine refers to.

A blob becomes garbage when the work that wrote it did not get as far as recording
it: a backup job whose lease was lost after its blob was committed, a log segment
archived for a project deleted meanwhile, a project whose deletion stopped half way,
a ``.tmp`` file of a write that was killed. Deleting a backup, retention, PITR
pruning and project deletion remove their blobs themselves; nothing here replaces them.

Conservative by construction:

- only files under ``blobs/projects/<project>/{backups,base,wal}/`` are considered;
  anything else in the directory is left alone;
- a blob is kept while any backup (whatever its state), restore point, preview,
  PITR base backup or snapshot, or archived log segment (or piece) names it;
- every file of a project that has a pending or running job is kept (a job commits
  its blob before it records it);
- every file younger than ``min_age`` is kept (the log archiver, which is not a job,
  also commits before it records).

A manifest goes with its blob; a manifest whose blob is gone is garbage itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pulumi_capy.engine.blobs import fsync_directory
from pulumi_capy.engine.runtime import Runtime

__all__ = ["DEFAULT_MIN_AGE", "Garbage", "GarbageReport", "collect_garbage"]

DEFAULT_MIN_AGE = timedelta(hours=24)
MANIFEST = ".manifest.json"
TMP = ".tmp"
KINDS = ("backups", "base", "wal")  # the folders of a project's blobs


@dataclass(frozen=True)
class Garbage:
    path: str  # relative to the blob directory
    size_bytes: int
    why: str


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


def _why(relative: str, referenced: set[str], root: Path) -> str | None:
    """Why the file is garbage, or ``None`` when it is kept."""
    if relative.endswith(TMP):
        return "an unfinished write (a .tmp file)"
    if relative.endswith(MANIFEST):
        blob = relative[: -len(MANIFEST)]
        if blob in referenced:
            return None
        if (root / blob).exists():
            return "the manifest of an unreferenced blob"
        return "a manifest whose blob is gone"
    if relative in referenced:
        return None
    return "no backup, restore point, base backup or log segment refers to it"


def _files(project_dir: Path) -> list[Path]:
    """The files of a project's blob folders (``KINDS``), in order."""
    found: list[Path] = []
    for kind in KINDS:
        folder = project_dir / kind
        if folder.is_dir():
            found.extend(sorted(p for p in folder.rglob("*") if p.is_file()))
    return found


def collect_garbage(
    rt: Runtime, *, dry_run: bool, min_age: timedelta = DEFAULT_MIN_AGE
) -> GarbageReport:
    """Find (and unless ``dry_run`` remove) the blob store's garbage; what it found."""
    report = GarbageReport(dry_run=dry_run)
    root = rt.blobs.root
    projects_dir = root / "projects"
    if not projects_dir.is_dir():
        return report
    known = {project.id for project in rt.store.list_projects()}
    oldest = rt.now().timestamp() - min_age.total_seconds()
    for project_dir in sorted(projects_dir.iterdir()):
        if not project_dir.is_dir():
            continue
        project_id = project_dir.name
        if project_id in known and rt.store.busy_jobs(project_id):
            report.busy_projects.append(project_id)
            continue
        referenced = _referenced(rt, project_id) if project_id in known else set()
        gone = "" if project_id in known else f" (project {project_id} is gone)"
        for path in _files(project_dir):
            relative = path.relative_to(root).as_posix()
            why = _why(relative, referenced, root)
            if why is None:
                continue
            stat = path.stat()
            if stat.st_mtime > oldest:
                report.young_files += 1
                continue
            report.garbage.append(Garbage(relative, stat.st_size, why + gone))
    if not dry_run:
        _remove(root, report.garbage)
    return report


def _remove(root: Path, garbage: list[Garbage]) -> None:
    folders = set()
    for item in garbage:
        path = root / item.path
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in sorted(folders):
        fsync_directory(folder)
