"""The log archive: a project's WAL files as checksummed, compressed blobs, catalogued in
the store. Written by the streamer (``stream``) and by ``capy wal-push`` (``archive_command``),
read by a recovery (``capy wal-fetch`` / ``fetch``).

A complete segment is written once: the same bytes again succeed (``archive_command`` is
retried after a crash), other bytes under its name fail loudly. The partial segment, the
one the server is still writing, is replaced as it grows until its complete version lands.
"""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from pulumi_capy.api.errors import EngineFailure, FieldError, InvalidInput, NotFound
from pulumi_capy.api.models import PitrMethod
from pulumi_capy.engine.blobs import CHUNK, ChecksumMismatch
from pulumi_capy.engine.pitr.lsn import (
    DEFAULT_SEGMENT_BYTES,
    SEGMENT_NAME,
    is_wal_file,
    segment_number,
)
from pulumi_capy.engine.private import open_private
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import WalSegmentRecord

__all__ = [
    "WalMismatch",
    "check_pushable",
    "fetch",
    "keep_stream",
    "note_pushed",
    "piece_name",
    "pieces_of",
    "store",
    "store_piece",
    "wal_key",
]

WAL_ZSTD_LEVEL = 1
PARTIAL_READ_TRIES = 5


class WalMismatch(EngineFailure):
    """A complete segment arrived again with other bytes than the archived one."""


def wal_key(project_id: str, name: str, *, partial: bool = False) -> str:
    """[ours] ``projects/<project_id>/wal/<name>[.partial].zst``."""
    return f"projects/{project_id}/wal/{name}{'.partial' if partial else ''}.zst"


def _content_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _archived_sha256(rt: Runtime, record: WalSegmentRecord) -> str:
    digest = hashlib.sha256()

    def consume(stream: IO[bytes]) -> None:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            digest.update(chunk)

    rt.blobs.read(record.blob_key, record.sha256, consume)
    return digest.hexdigest()


def store(rt: Runtime, project_id: str, path: Path, *, partial: bool = False) -> WalSegmentRecord:
    """Archive the WAL file at ``path`` (named as PostgreSQL names it) for the project."""
    name = path.name.removesuffix(".partial")
    partial = partial or path.name.endswith(".partial")  # never a complete segment
    if not is_wal_file(name):
        raise InvalidInput(
            [FieldError("path", f"{path.name} is not a WAL segment or history file")]
        )
    existing = rt.store.get_wal_segment(project_id, name)
    if existing is not None and not existing.partial:
        if partial:
            return existing  # the complete segment is archived: its partial is old news
        if _archived_sha256(rt, existing) == _content_sha256(path):
            return existing
        raise WalMismatch(
            f"WAL file {name} of project {project_id} is archived already with other "
            "contents; refusing to overwrite it (two servers archiving into one project?)"
        )
    key = wal_key(project_id, name, partial=partial)
    with path.open("rb") as reader:
        record, before = _keep(rt, project_id, name, key, reader, partial=partial)
    if before is not None and before.partial and before.blob_key != key:
        rt.blobs.delete(before.blob_key)
    if not partial:
        _drop_pieces(rt, project_id, name)
    return record


def piece_name(segment: str, offset: int) -> str:
    """The catalogue name of the piece of ``segment`` starting at byte ``offset``."""
    return f"{segment}.{offset:08X}"


def store_piece(rt: Runtime, project_id: str, segment: str, offset: int, data: bytes) -> None:
    """Archive bytes ``offset``.. of the segment the server is still writing: a partial
    segment is kept as the pieces that arrived, each archived once, so that keeping it
    durable costs what the log grows by, not its whole size again and again."""
    existing = rt.store.get_wal_segment(project_id, segment)
    if existing is not None and not existing.partial:
        return  # complete already
    key = f"projects/{project_id}/wal/{segment}.partial.{offset:08X}.zst"
    _keep(rt, project_id, piece_name(segment, offset), key, io.BytesIO(data), partial=True)


def keep_stream(rt: Runtime, project_id: str, name: str, key: str, reader: IO[bytes]) -> None:
    """Archive what ``reader`` holds (to its end) as log file ``name``, in blob ``key``."""
    _keep(rt, project_id, name, key, reader, partial=False)


def _keep(
    rt: Runtime, project_id: str, name: str, key: str, reader: IO[bytes], *, partial: bool
) -> tuple[WalSegmentRecord, WalSegmentRecord | None]:
    """Compress and hash ``reader`` into blob ``key`` and catalogue it as ``name``; the
    record, and what was catalogued under that name before."""
    staged = rt.blobs.stage(key, reader, level=WAL_ZSTD_LEVEL)
    info = rt.blobs.commit(staged, {"project_id": project_id, "wal_file": name})
    record = WalSegmentRecord(
        project_id=project_id,
        name=name,
        blob_key=key,
        sha256=info.sha256,
        size_bytes=info.source_bytes,
        blob_bytes=info.blob_bytes,
        partial=partial,
        created_at=rt.now(),
    )
    try:
        return record, rt.store.put_wal_segment(record)
    except NotFound:  # the project went while its log was being archived
        rt.blobs.delete(key)
        raise


def pieces_of(rt: Runtime, project_id: str, segment: str) -> list[WalSegmentRecord]:
    """The archived pieces of a partial segment that follow each other from its start, in
    order (a piece after a hole would be of no use)."""
    found = rt.store.list_wal_segments(project_id, prefix=f"{segment}.")
    contiguous: list[WalSegmentRecord] = []
    end = 0
    for item in found:
        if int(item.name.rpartition(".")[2], 16) != end:
            break
        contiguous.append(item)
        end += item.size_bytes
    return contiguous


def _drop_pieces(rt: Runtime, project_id: str, segment: str) -> None:
    for item in rt.store.list_wal_segments(project_id, prefix=f"{segment}."):
        rt.blobs.delete(item.blob_key)
        rt.store.delete_wal_segment(project_id, item.name)


def check_pushable(rt: Runtime, project_id: str) -> None:
    """``InvalidInput`` unless the project's PITR is on with method ``archive``: a server
    pushing its log anywhere else is misconfigured, and its ``archive_command`` must fail
    (the server keeps the segment and tries again) rather than look archived."""
    record = rt.store.get_pitr(project_id)
    if record is None or not record.enabled:
        message = (
            f"point-in-time recovery is off for project {project_id}: turn it on with "
            f"`capy pitr enable --project {project_id} --method archive` before pointing "
            "archive_command at it"
        )
    elif record.method != PitrMethod.archive:
        message = (
            f"project {project_id} streams its log (method {record.method}); wal-push is for "
            "method archive"
        )
    else:
        return
    raise InvalidInput([FieldError("project", message)])


def note_pushed(rt: Runtime, project_id: str, path: Path) -> None:
    """A complete segment pushed by ``archive_command`` moves the window's end of a project
    with method ``archive``: the archive now holds the log up to the segment's end, and
    with it every commit made before its last write (the file's modification time, on the
    server's machine, where ``archive_command`` runs)."""
    record = rt.store.get_pitr(project_id)
    name = path.name
    if record is None or not record.enabled or record.method != PitrMethod.archive:
        return
    if path.name.endswith(".partial") or not SEGMENT_NAME.match(name):
        return
    _, number = segment_number(name)
    end = (number + 1) * DEFAULT_SEGMENT_BYTES
    written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    if record.streamed_lsn is not None and record.streamed_lsn >= end:
        return
    rt.store.update_pitr(
        project_id,
        {
            "streamed_lsn": end,
            "covered_at": max(written, record.covered_at) if record.covered_at else written,
        },
    )


def fetch(rt: Runtime, project_id: str, name: str, destination: Path) -> None:
    """Write archived WAL file ``name`` to ``destination``, checked against its checksum:
    a complete segment, or the pieces of a partial one followed by zeros to a segment's
    size (where the log ends, as in the server's own file). ``NotFound`` when the archive
    does not hold it (the end of the log, for a recovery)."""
    for _ in range(PARTIAL_READ_TRIES):
        record = rt.store.get_wal_segment(project_id, name)
        pieces = pieces_of(rt, project_id, name) if record is None else []
        if record is None and not pieces:
            raise NotFound(f"WAL file {name} is not in the archive of project {project_id}")
        try:
            if record is not None:
                rt.blobs.get_file(record.blob_key, record.sha256, destination, durable=False)
            else:
                _assemble(rt, pieces, destination)
        except (ChecksumMismatch, EngineFailure):
            # the partial segment was completed (its pieces replaced) while being read
            if record is None or record.partial:
                continue
            raise
        return
    raise ChecksumMismatch(f"WAL file {name}: its partial segment kept changing while read")


def _assemble(rt: Runtime, pieces: list[WalSegmentRecord], destination: Path) -> None:
    with open_private(destination, "wb") as out:

        def append(stream: IO[bytes]) -> None:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                out.write(chunk)

        for piece in pieces:
            rt.blobs.read(piece.blob_key, piece.sha256, append)
        out.truncate(max(out.tell(), DEFAULT_SEGMENT_BYTES))
