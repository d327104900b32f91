"""The one test suite every metadata store passes, written against ``Store`` only.

Each test runs once per harness in ``conftest.HARNESSES``: reads and
transactions, the queue's claims, locks and fencing, and the named operations
the engine uses.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pulumi_capy.api.errors import Conflict
from pulumi_capy.api.models import JobState, PreviewDatabase, ScheduledBackup
from pulumi_capy.engine.stores.contract import (
    BackupRecord,
    JobOutput,
    PreviewSource,
    Store,
)
from tests.engine.stores.conftest import (
    StoreHarness,
    enqueue,
    later,
    new_job,
    project_record,
)

LEASE = 10.0
NO_OUTPUT = JobOutput(exit_code=0, stdout=None, stderr=None)


def _preview(preview_id: str, name: str, now: datetime, project_id: str = "prj_1") -> Any:
    return PreviewDatabase(
        id=preview_id,
        project_id=project_id,
        name=name,
        mode="empty",
        state="creating",
        created_at=now,
        updated_at=now,
    )


# ---------------------------------------------------------------- reads and transactions


def test_a_read_inside_a_transaction_sees_its_own_writes(store: Store) -> None:
    now = datetime.now(UTC)
    with store.transaction() as tx:
        store.enqueue(tx, new_job("job_1", now, lock=None))
        inside = store.get_job("job_1")
    assert inside is not None
    assert inside.state == JobState.pending


def test_another_thread_reads_the_committed_state_without_waiting_for_the_writer(
    store: Store,
) -> None:
    now = datetime.now(UTC)
    with store.transaction() as tx:
        store.insert_preview(tx, _preview("prv_1", "shop", now))
    seen: list[Any] = []
    with store.transaction() as tx:
        store.mark_preview_deleting(tx, "prv_1", now)

        def read() -> None:
            preview = store.get_preview("prv_1")
            seen.append(preview.state if preview else None)

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(timeout=5)
        # it finished while this transaction was still open, and saw the last commit
        assert not reader.is_alive()
        assert seen == ["creating"]
    after = store.get_preview("prv_1")
    assert after is not None
    assert after.state == "deleting"


def test_a_commit_is_seen_by_the_next_read_of_every_thread(store: Store) -> None:
    names: list[Any] = []

    def read() -> None:
        names.append([project.name for project in store.list_projects()])

    first = threading.Thread(target=read)
    first.start()
    first.join()
    store.insert_project(project_record("prj_1", "shop", datetime.now(UTC)))
    second = threading.Thread(target=read)
    second.start()
    second.join()
    assert names == [[], ["shop"]]


def test_a_failed_transaction_writes_nothing(store: Store) -> None:
    now = datetime.now(UTC)

    def enqueue_then_fail() -> None:
        with store.transaction() as tx:
            store.enqueue(tx, new_job("job_1", now, lock=None))
            raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        enqueue_then_fail()
    assert store.get_job("job_1") is None


def test_close_closes_every_reading_connection(harness: StoreHarness) -> None:
    store = harness.open()
    store.list_projects()
    thread = threading.Thread(target=store.list_projects)
    thread.start()
    thread.join()
    store.close()
    with pytest.raises(harness.closed_error):
        store.list_projects()


def test_the_data_version_moves_with_every_commit(harness: StoreHarness) -> None:
    now = datetime.now(UTC)
    with contextlib.closing(harness.open()) as store, contextlib.closing(harness.open()) as other:
        before = store.data_version()
        assert store.data_version() == before
        other.insert_project(project_record("prj_1", "shop", now))  # another handle's commit
        moved = store.data_version()
        assert moved != before
        store.insert_project(project_record("prj_2", "cart", now))  # this handle's own
        assert store.data_version() != moved


def test_the_schema_is_at_its_newest_version_and_stays_there(harness: StoreHarness) -> None:
    with contextlib.closing(harness.open()) as store:
        version = store.schema_version
        assert version >= 1
    with contextlib.closing(harness.open()) as store:
        assert store.schema_version == version


# ---------------------------------------------------------------- projects


def test_a_project_name_is_taken_once_and_free_again_after_its_deletion(store: Store) -> None:
    now = datetime.now(UTC)
    project = store.insert_project(project_record("prj_1", "shop", now))
    assert (project.id, project.name, project.database_url) == (
        "prj_1",
        "shop",
        "sqlite:////tmp/app.db",
    )
    with pytest.raises(Conflict, match="shop"):
        store.insert_project(project_record("prj_2", "shop", now))
    enqueue(store, new_job("job_1", now, lock=None))
    store.delete_project("prj_1")
    assert store.get_project("prj_1") is None
    assert store.get_job("job_1") is None
    assert store.insert_project(project_record("prj_2", "shop", now)).id == "prj_2"


# ---------------------------------------------------------------- backups


def test_a_backup_is_recorded_then_verified_or_failed(store: Store) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with store.transaction() as tx:
        for backup_id in ("bkp_1", "bkp_2"):
            store.record_backup(
                tx,
                BackupRecord(
                    id=backup_id,
                    project_id="prj_1",
                    backup_key=f"projects/prj_1/backups/{backup_id}.db.zst",
                    sha256="ab" * 32,
                    state="completed",
                    verification_state="pending",
                    created_by_job_id="job_1",
                    created_at=now,
                ),
            )
    with store.transaction() as tx:
        store.mark_backup_verified(tx, "bkp_1", now)
        store.mark_backup_verification_failed(tx, "bkp_2", "x" * 3000)
    verified = store.get_backup("bkp_1")
    assert verified is not None
    assert (verified.verification_state, verified.verified_at, verified.sha256) == (
        "verified",
        now,
        "ab" * 32,
    )
    failed = store.get_backup_by_key("prj_1", "projects/prj_1/backups/bkp_2.db.zst")
    assert failed is not None
    assert (failed.verification_state, failed.verification_error) == ("failed", "x" * 2000)
    assert [backup.id for backup in store.list_backups("prj_1", state="completed")] == [
        "bkp_1",
        "bkp_2",
    ]


def test_a_verification_is_outstanding_while_its_job_is_pending_or_running(store: Store) -> None:
    now = datetime.now(UTC)
    assert not store.verification_outstanding("bkp_1")
    enqueue(
        store,
        new_job(
            "job_v",
            now,
            lock="backup:bkp_1",
            job_type="backup.verify",
            payload={"backup_id": "bkp_1"},
        ),
    )
    assert store.verification_outstanding("bkp_1")
    assert not store.verification_outstanding("bkp_2")
    claimed = store.claim_job("worker-a", now, later(now, LEASE))
    assert claimed is not None
    assert store.verification_outstanding("bkp_1")
    with store.transaction() as tx:
        assert store.complete_job(tx, claimed.fence, result={}, output=NO_OUTPUT, now=now)
    assert not store.verification_outstanding("bkp_1")


# ---------------------------------------------------------------- schedules


def test_a_schedule_run_is_recorded_once(store: Store) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    schedule = ScheduledBackup(
        id="sch_1",
        project_id="prj_1",
        organization_id="org_default",
        cron_hour=1,
        cron_minute=30,
        is_active=True,
        created_at=now,
        updated_at=now,
    )
    assert store.put_schedule(schedule).cron_minute == 30
    with store.transaction() as tx:
        assert store.record_schedule_run(tx, "sch_1", None, "job_1", now)
    with store.transaction() as tx:  # another process saw the schedule before that run
        assert not store.record_schedule_run(tx, "sch_1", None, "job_2", now)
    replaced = store.put_schedule(schedule.model_copy(update={"cron_minute": 45}))
    assert (replaced.cron_minute, replaced.last_job_id, replaced.last_run_at) == (45, "job_1", now)
    assert [s.id for s in store.active_schedules()] == ["sch_1"]


# ---------------------------------------------------------------- previews


def test_a_preview_name_is_taken_while_the_preview_lives(store: Store) -> None:
    now = datetime.now(UTC)
    with store.transaction() as tx:
        store.insert_preview(tx, _preview("prv_1", "check", now))
    with pytest.raises(Conflict, match="check"), store.transaction() as tx:
        store.insert_preview(tx, _preview("prv_2", "check", now))
    with store.transaction() as tx:
        store.insert_preview(tx, _preview("prv_3", "check", now, project_id="prj_2"))
        store.mark_preview_deleted(tx, "prv_1", now)
        store.insert_preview(tx, _preview("prv_4", "check", now))
    assert [preview.id for preview in store.list_previews("prj_1")] == ["prv_4"]


def test_a_preview_becomes_ready_failed_or_deleting(store: Store) -> None:
    now = datetime.now(UTC)
    with store.transaction() as tx:
        store.insert_preview(tx, _preview("prv_1", "one", now))
        store.insert_preview(tx, _preview("prv_2", "two", now))
    with store.transaction() as tx:
        store.mark_preview_ready(
            tx,
            "prv_1",
            {"database_name": "shop_prv_1", "public_host": "db", "direct_port": 5432},
            now,
            PreviewSource(kind="backup", database="shop", backup_key="bk_1"),
        )
        store.mark_preview_failed(tx, "prv_2", "e" * 3000, now)
    ready = store.get_preview("prv_1")
    assert ready is not None
    assert (ready.state, ready.database_name, ready.direct_port, ready.last_error) == (
        "ready",
        "shop_prv_1",
        5432,
        None,
    )
    assert (ready.source_kind, ready.source_database, ready.source_backup_key) == (
        "backup",
        "shop",
        "bk_1",
    )
    failed = store.get_preview("prv_2")
    assert failed is not None
    assert (failed.state, failed.last_error) == ("failed", "e" * 2000)

    assert store.outstanding_preview_deletion("prv_1") is None
    with store.transaction() as tx:
        store.mark_preview_deleting(tx, "prv_1", now)
        store.enqueue(
            tx,
            new_job(
                "job_d",
                now,
                lock="preview:prv_1",
                job_type="preview.delete",
                payload={"preview_id": "prv_1"},
                preview_id="prv_1",
            ),
        )
    assert store.outstanding_preview_deletion("prv_1") == "job_d"
    assert store.outstanding_preview_deletion("prv_2") is None


def test_previews_past_their_ttl(store: Store) -> None:
    now = datetime.now(UTC)
    with store.transaction() as tx:
        for preview_id, hours in (("prv_old", -1), ("prv_new", 1)):
            preview = _preview(preview_id, preview_id, now)
            store.insert_preview(
                tx, preview.model_copy(update={"ttl_expires_at": now + timedelta(hours=hours)})
            )
    assert [preview.id for preview in store.previews_past_ttl(now)] == ["prv_old"]
