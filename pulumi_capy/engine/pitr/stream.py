"""Streaming a project's log into blobs: one worker at a time per project, by lease.

The streamer runs ``pg_receivewal`` (``--synchronous``, on a receiver slot of its run, whose
position says how far it has received) into a private spool directory and, every ``CYCLE``
seconds:

1. asks the server for its clock and its log's insert position (``target``);
2. waits until ``pg_receivewal`` has received the log up to ``target``;
3. archives every completed segment and the partial one (``archive.store``);
4. records that the archive covers every commit made at or before that clock reading
   (fenced by its lease), then advances the project's replication slot to ``target``.

The slot is ours and is only ever advanced past what is durable in blobs, so a streamer
killed at any moment loses nothing: the next one (this worker or another, once the lease
lapses) starts again at the slot, in the segment that holds it. A slot dropped behind
our back is a gap: reported, never papered over, and a new base backup starts a new
window.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

from pulumi_capy.api.models import PitrMethod, format_timestamp
from pulumi_capy.engine.drivers.postgres.libpq import connect, env
from pulumi_capy.engine.pitr import archive, server
from pulumi_capy.engine.pitr.control import enqueue_base_backup
from pulumi_capy.engine.pitr.lsn import (
    DEFAULT_SEGMENT_BYTES as SEGMENT_BYTES,
)
from pulumi_capy.engine.pitr.lsn import (
    format_lsn,
    is_wal_file,
    log_end,
    parse_lsn,
    segment_name,
    segment_number,
)
from pulumi_capy.engine.pitr.processes import popen_tied, stop_process
from pulumi_capy.engine.private import open_private
from pulumi_capy.engine.runtime import Runtime
from pulumi_capy.engine.stores.contract import PitrRecord

__all__ = ["CYCLE", "HEARTBEAT", "LeaseHolder", "StreamManager", "StreamStopped", "Streamer"]

log = logging.getLogger(__name__)

CYCLE = 0.25  # seconds between two archivings of the log: the recovery point trails by ~this
RECEIVE_WAIT = 2.0  # how long one cycle waits for pg_receivewal to catch up
LEASE_SECONDS = 15.0  # a dead streamer's project is taken over after at most this long
RESTART_DELAY = 2.0  # before a failed streamer of this worker tries again
HEARTBEAT = 1.0  # seconds between two renewals of the streaming lease
RECEIVE_LOG = "pg_receivewal.log"  # in the spool directory, beside the segments


class StreamStopped(Exception):
    """The lease was lost, PITR was turned off, or the worker stops."""


@dataclass
class _Sample:
    at: datetime  # the server's clock
    target: int  # the log position every commit made before ``at`` lies under


class LeaseHolder:
    """Holds the lease on streaming (or replicating) one project's log."""

    def __init__(self, rt: Runtime, project_id: str, stop: threading.Event) -> None:
        self.rt = rt
        self.project_id = project_id
        self.stop = stop
        self._renewed = 0.0  # time.monotonic() of the last renewal

    def renew(self, *, every: float = 0.0) -> None:
        """Renew the lease (at most once per ``every`` seconds); ``StreamStopped`` when
        it is gone."""
        if self.stop.is_set():
            raise StreamStopped("the worker stops")
        if time.monotonic() - self._renewed < every:
            return
        self._renewed = time.monotonic()
        now = self.rt.now()
        until = now + timedelta(seconds=LEASE_SECONDS)
        if not self.rt.store.claim_streamer(self.project_id, self.rt.worker_id, now, until):
            raise StreamStopped("the lease is gone (another worker took it, or PITR is off)")


class Streamer(LeaseHolder):
    """Streams one project's log while this worker holds its lease."""

    def __init__(self, rt: Runtime, project_id: str, stop: threading.Event) -> None:
        super().__init__(rt, project_id, stop)
        self.application_name = f"capy_stream_{project_id}"[:63]
        self._piece_end: dict[str, int] = {}  # segment → its bytes archived as pieces
        self.receiver = server.receiver_slot_name(project_id, secrets.token_hex(3))

    # ------------------------------------------------------------ running

    def run(self) -> None:
        try:
            self._run()
        except StreamStopped as stopped:
            log.info("streamer of %s stopped: %s", self.project_id, stopped)
        finally:
            self.rt.store.release_streamer(self.project_id, self.rt.worker_id)

    def _record(self) -> PitrRecord:
        record = self.rt.store.get_pitr(self.project_id)
        if record is None or not record.enabled or record.slot_name is None:
            raise StreamStopped("PITR is off")
        return record

    def _run(self) -> None:
        self.renew()
        record = self._record()
        project = self.rt.store.get_project(self.project_id)
        if project is None:
            raise StreamStopped("the project is gone")
        url = project.database_url
        major = server.probe(url).major
        receivewal = server.exact_binary("pg_receivewal", major)
        with connect(url) as conn, self.rt.scratch_space() as spool:
            start = self._start(conn, url, record)
            timeline = int(
                str(self._one(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())"))[:8], 16
            )
            (spool / f"{segment_name(timeline, start)}.partial").touch(mode=0o600)
            server.drop_receiver_slots(conn, self.project_id)
            # not reserving: its position stays null until this run's pg_receivewal reports
            conn.execute("SELECT pg_create_physical_replication_slot(%s, false)", (self.receiver,))
            process = self._receive(receivewal, url, spool)
            try:
                self._loop(conn, spool, process, record.slot_name or "")
            finally:
                stop_process(process)
                with contextlib.suppress(psycopg.Error):
                    server.drop_own_receiver(conn, self.project_id, self.receiver)

    @staticmethod
    def _one(conn: psycopg.Connection, query: str, params: tuple[object, ...] = ()) -> object:
        row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]

    def _start(self, conn: psycopg.Connection, url: str, record: PitrRecord) -> int:
        """Where streaming starts: the slot's position; a gap is reported first."""
        slot = record.slot_name or ""
        restart = server.slot_restart_lsn_on(conn, slot)
        streamed = record.streamed_lsn
        if restart and (streamed is None or restart <= streamed):
            return restart
        if restart is not None and restart > 0:
            reason = f"the replication slot {slot} moved past what was archived"
        else:
            if restart == 0:  # invalidated: the server removed the log it held for us
                reason = (
                    f"the server invalidated the replication slot {slot} "
                    "(max_slot_wal_keep_size reached while nothing streamed)"
                )
                server.drop_slot_when_free(url, slot)
            else:
                reason = f"the replication slot {slot} was dropped behind our back"
            self.renew()  # PITR still on: recreate it (and drop it again if turned off since)
            restart = server.create_slot(url, slot)
            if not self._record().enabled:
                server.drop_slot_when_free(url, slot)
                raise StreamStopped("PITR was turned off")
        self._report_gap(record, restart, reason)
        return restart

    def _report_gap(self, record: PitrRecord, restart: int, reason: str) -> None:
        lost_from = format_lsn(record.streamed_lsn) if record.streamed_lsn is not None else "?"
        notice = (
            f"{format_timestamp(self.rt.now())}: gap in the log from LSN {lost_from} to "
            f"{format_lsn(restart)} ({reason}): nothing before it can be restored to a "
            "time after it; a new base backup starts a new window"
        )
        log.warning("project %s: %s", self.project_id, notice)
        self.rt.store.update_pitr(
            self.project_id,
            {
                "floor_lsn": restart,
                "streamed_lsn": None,
                "covered_at": None,
                "notices": [*record.notices, notice][-10:],
            },
        )
        enqueue_base_backup(self.rt, self.project_id)

    def _receive(self, receivewal: str, url: str, spool: Path) -> subprocess.Popen[bytes]:
        variables = env(url)
        variables["PGAPPNAME"] = self.application_name
        with open_private(spool / RECEIVE_LOG, "ab") as log:
            return popen_tied(
                [
                    receivewal,
                    "--directory",
                    str(spool),
                    "--no-loop",
                    "--no-password",
                    "--synchronous",
                    "--status-interval=1",
                    f"--slot={self.receiver}",
                ],
                on_parent_death=signal.SIGTERM,
                env=variables,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    def _loop(
        self, conn: psycopg.Connection, spool: Path, process: subprocess.Popen[bytes], slot: str
    ) -> None:
        advanced = False
        while True:
            self.renew(every=HEARTBEAT)
            self._record()
            if process.poll() is not None:
                error = (spool / RECEIVE_LOG).read_text(errors="replace")[-2000:]
                raise RuntimeError(
                    f"pg_receivewal exited with {process.returncode}: {error.strip()}"
                )
            started = time.monotonic()
            sample = self._sample(conn)
            received = self._received(conn, sample.target, process)
            if received is not None:
                self._archive(spool, received)
                if not self.rt.store.record_streamed(
                    self.project_id, self.rt.worker_id, sample.target, sample.at
                ):
                    raise StreamStopped("the lease is gone")
                server.advance_slot(conn, slot, sample.target)
                if not advanced:
                    advanced = True
                    clear_failure(self.rt, self.project_id)
            self.stop.wait(max(0.0, CYCLE - (time.monotonic() - started)))  # a steady rate

    @staticmethod
    def _sample(conn: psycopg.Connection) -> _Sample:
        row = conn.execute("SELECT clock_timestamp(), pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        return _Sample(at=row[0], target=log_end(parse_lsn(str(row[1]))))

    def _received(
        self, conn: psycopg.Connection, target: int, process: subprocess.Popen[bytes]
    ) -> int | None:
        """How far ``pg_receivewal`` has received (and written), once that reaches
        ``target``; None when it did not within ``RECEIVE_WAIT``."""
        deadline = time.monotonic() + RECEIVE_WAIT
        while time.monotonic() < deadline and process.poll() is None:
            flushed = self._one(
                conn,
                "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (self.receiver,),
            )
            if flushed is not None and parse_lsn(str(flushed)) >= target:
                return parse_lsn(str(flushed))
            if self.stop.wait(0.01):
                return None
        return None

    def _archive(self, spool: Path, received: int) -> None:
        """Archive the completed segments, then what the partial one gained (as a piece)."""
        for path in sorted(spool.iterdir()):
            if path.suffix == ".partial" or not is_wal_file(path.name):
                continue
            archive.store(self.rt, self.project_id, path)
            path.unlink()
            self._piece_end.pop(path.name, None)
        for path in sorted(spool.glob("*.partial")):
            segment = path.name.removesuffix(".partial")
            start = segment_number(segment)[1] * SEGMENT_BYTES
            valid = min(received - start, SEGMENT_BYTES)
            if segment not in self._piece_end:
                pieces = archive.pieces_of(self.rt, self.project_id, segment)
                self._piece_end[segment] = sum(piece.size_bytes for piece in pieces)
            done = self._piece_end[segment]
            if valid <= done:
                continue
            try:
                with path.open("rb") as handle:
                    handle.seek(done)
                    data = handle.read(valid - done)
            except FileNotFoundError:
                continue  # completed between the listing and now: archived next cycle
            if len(data) != valid - done:
                continue  # not written that far after all: next cycle
            archive.store_piece(self.rt, self.project_id, segment, done, data)
            self._piece_end[segment] = valid


FAILED = "streaming failed"


def note_failure(rt: Runtime, project_id: str, error: str) -> None:
    """Say in ``pitr status`` why streaming stopped (the latest failure only)."""
    record = rt.store.get_pitr(project_id)
    if record is not None:
        kept = [n for n in record.notices if not n.startswith(FAILED)]
        rt.store.update_pitr(project_id, {"notices": [*kept, f"{FAILED}: {error}"][-10:]})


def clear_failure(rt: Runtime, project_id: str) -> None:
    record = rt.store.get_pitr(project_id)
    if record is not None and any(n.startswith(FAILED) for n in record.notices):
        kept = [n for n in record.notices if not n.startswith(FAILED)]
        rt.store.update_pitr(project_id, {"notices": kept})


class StreamManager:
    """Run by every worker loop: starts a streamer for each streamed project whose lease
    this worker can take, and stops them with the worker."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._failed_at: dict[str, float] = {}

    def step(self) -> None:
        for record in self.rt.store.enabled_pitr():
            if record.method != PitrMethod.stream:
                continue
            running = self._threads.get(record.project_id)
            if running is not None and running.is_alive():
                continue
            if (
                time.monotonic() - self._failed_at.get(record.project_id, -RESTART_DELAY)
                < RESTART_DELAY
            ):
                continue
            now = self.rt.now()
            if not self.rt.store.claim_streamer(
                record.project_id, self.rt.worker_id, now, now + timedelta(seconds=LEASE_SECONDS)
            ):
                continue
            thread = threading.Thread(
                target=self._run,
                args=(record.project_id,),
                name=f"stream-{record.project_id}",
                daemon=True,
            )
            self._threads[record.project_id] = thread
            thread.start()

    def _run(self, project_id: str) -> None:
        try:
            project = self.rt.store.get_project(project_id)
            if project is not None and project.database_kind == "sqlite":
                from pulumi_capy.engine.pitr.sqlite_replicate import Replicator

                Replicator(self.rt, project_id, self.stop).run()
            else:
                Streamer(self.rt, project_id, self.stop).run()
        except Exception as exc:
            log.exception("streaming the log of %s failed; again in %gs", project_id, RESTART_DELAY)
            self._failed_at[project_id] = time.monotonic()
            note_failure(self.rt, project_id, f"{format_timestamp(self.rt.now())}: {exc}")

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads.values():
            thread.join(timeout=30)
