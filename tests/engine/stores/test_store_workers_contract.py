"""The worker registry's part of the store contract: record, heartbeat, stop, list, forget.

Runs once per harness in ``conftest.HARNESSES``.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.stores.contract import Store, WorkerRecord
from tests.engine.stores.conftest import StoreHarness, later


def worker(worker_id: str, now: datetime, sqlite_dirs: list[str] | None = None) -> WorkerRecord:
    return WorkerRecord(
        id=worker_id,
        host="host-1",
        pid=4242,
        thread="capy-worker-1",
        sqlite_dirs=sqlite_dirs,
        started_at=now,
        heartbeat_at=now,
    )


def test_a_recorded_worker_is_listed_as_it_was_recorded(harness: StoreHarness) -> None:
    now = ManualClock().now()
    with contextlib.closing(harness.open()) as store:
        store.record_worker(worker("w-1", now, ["/srv/a/", "/srv/b/"]))
        store.record_worker(worker("w-2", later(now, 1), []))
        store.record_worker(worker("w-3", later(now, 2)))
    with contextlib.closing(harness.open()) as other:  # another process sees them
        listed = other.list_workers()
    assert [w.id for w in listed] == ["w-1", "w-2", "w-3"]
    first = listed[0]
    assert (first.host, first.pid, first.thread) == ("host-1", 4242, "capy-worker-1")
    assert [w.sqlite_dirs for w in listed] == [["/srv/a/", "/srv/b/"], [], None]
    assert (first.started_at, first.heartbeat_at, first.stopped_at) == (now, now, None)


def test_a_heartbeat_moves_only_its_worker(store: Store) -> None:
    now = ManualClock().now()
    store.record_worker(worker("w-1", now))
    store.record_worker(worker("w-2", now))
    assert store.heartbeat_worker("w-1", later(now, 5))
    beats = {w.id: w.heartbeat_at for w in store.list_workers()}
    assert beats == {"w-1": later(now, 5), "w-2": now}
    assert not store.heartbeat_worker("w-unknown", later(now, 5))


def test_a_stopped_worker_is_listed_only_with_the_stopped_ones(store: Store) -> None:
    now = ManualClock().now()
    store.record_worker(worker("w-1", now))
    store.record_worker(worker("w-2", now))
    store.stop_worker("w-1", later(now, 7))
    stopped = next(w for w in store.list_workers() if w.id == "w-1")
    assert (stopped.stopped_at, stopped.heartbeat_at) == (later(now, 7), later(now, 7))
    assert [w.id for w in store.list_workers(include_stopped=False)] == ["w-2"]
    # a stopped worker does not come back to life by a late heartbeat
    assert not store.heartbeat_worker("w-1", later(now, 8))


def test_a_worker_recorded_again_under_its_id_starts_afresh(store: Store) -> None:
    now = ManualClock().now()
    store.record_worker(worker("w-1", now))
    store.stop_worker("w-1", later(now, 1))
    store.record_worker(worker("w-1", later(now, 2), ["/a/"]))
    (again,) = store.list_workers()
    assert (again.started_at, again.stopped_at, again.sqlite_dirs) == (later(now, 2), None, ["/a/"])


def test_forgetting_drops_the_workers_not_heard_of_since(store: Store) -> None:
    now = ManualClock().now()
    store.record_worker(worker("w-silent", now))
    store.record_worker(worker("w-stopped", now))
    store.record_worker(worker("w-alive", now))
    store.stop_worker("w-stopped", later(now, 10))
    store.heartbeat_worker("w-alive", later(now, 100))
    assert store.forget_workers(later(now, 50)) == 2
    assert [w.id for w in store.list_workers()] == ["w-alive"]
    assert store.forget_workers(later(now, 50)) == 0
