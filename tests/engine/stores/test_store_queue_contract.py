"""The queue's part of the store contract: claims, locks, fencing, leases, busy jobs.

Runs once per harness in ``conftest.HARNESSES``, on a ``ManualClock``'s times.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter

from pulumi_capy.api.models import JobState
from pulumi_capy.engine.clock import ManualClock
from pulumi_capy.engine.stores.contract import JobOutput, Store
from tests.engine.stores.conftest import StoreHarness, enqueue, later, new_job

LEASE = 10.0
NO_OUTPUT = JobOutput(exit_code=0, stdout=None, stderr=None)


def test_claim_respects_the_lock_of_a_running_job(store: Store) -> None:
    now = ManualClock().now()
    until = later(now, LEASE)
    enqueue(
        store,
        new_job("job_1", now, lock="project:p1"),
        new_job("job_2", later(now, 1), lock="project:p1", run_after=now),
    )

    first = store.claim_job("worker-a", now, until)
    assert first is not None
    assert (first.id, first.state, first.attempts) == ("job_1", JobState.running, 1)
    assert first.claimed_by == "worker-a"
    assert first.lease_expires_at == until

    # the other job needs the same lock: nobody gets it while job_1 runs
    assert store.claim_job("worker-b", now, until) is None
    assert store.claim_job("worker-b", now, until, only_id="job_2") is None
    second = store.get_job("job_2")
    assert second is not None
    assert (second.state, second.attempts, second.claimed_by) == (JobState.pending, 0, None)

    # a job holding another lock (or none) runs meanwhile
    enqueue(store, new_job("job_3", now, lock="project:p2"))
    third = store.claim_job("worker-b", now, until)
    assert third is not None
    assert (third.id, third.claimed_by) == ("job_3", "worker-b")

    # once job_1 ends, job_2 is claimable
    with store.transaction() as tx:
        assert store.complete_job(tx, first.fence, result={}, output=NO_OUTPUT, now=now)
    taken = store.claim_job("worker-b", now, until)
    assert taken is not None
    assert taken.id == "job_2"


def test_claim_skips_jobs_not_due_yet(store: Store) -> None:
    now = ManualClock().now()
    enqueue(store, new_job("job_later", now, lock=None, run_after=now.replace(year=2027)))
    assert store.claim_job("worker-a", now, later(now, LEASE)) is None


def test_concurrent_claims_take_each_job_exactly_once(harness: StoreHarness) -> None:
    now = ManualClock().now()
    until = later(now, LEASE)
    free = [f"job_free_{i:02d}" for i in range(24)]
    locked = [f"job_locked_{i:02d}" for i in range(6)]
    with contextlib.closing(harness.open()) as store:
        enqueue(
            store,
            *(new_job(job_id, now, lock=None) for job_id in free),
            *(new_job(job_id, now, lock="project:shared") for job_id in locked),
        )

    claims: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def claim_all(worker: str) -> None:
        try:
            with contextlib.closing(harness.open()) as store:
                mine: list[str] = []
                barrier.wait(timeout=10)
                while (job := store.claim_job(worker, now, until)) is not None:
                    mine.append(job.id)
                claims[worker] = mine
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim_all, args=(f"worker-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    taken = [job_id for mine in claims.values() for job_id in mine]
    counts = Counter(taken)
    assert all(count == 1 for count in counts.values()), counts
    # every free job once, and exactly one of the jobs sharing a lock
    assert set(free) <= set(taken)
    assert len([job_id for job_id in taken if job_id in locked]) == 1
    with contextlib.closing(harness.open()) as store:
        for worker, mine in claims.items():
            for job_id in mine:
                record = store.get_job(job_id)
                assert record is not None
                assert (record.claimed_by, record.attempts) == (worker, 1)


def test_every_write_of_a_worker_whose_lease_was_rescued_is_refused(store: Store) -> None:
    clock = ManualClock()
    now = clock.now()
    enqueue(store, new_job("job_1", now, lock="project:p1"))
    claimed = store.claim_job("worker-a", now, later(now, LEASE))
    assert claimed is not None
    old = claimed.fence

    assert store.rescue_expired_leases(later(now, LEASE - 1), "lost {worker} {attempt}") == []
    clock.advance(LEASE + 1)
    now = clock.now()
    rescued = store.rescue_expired_leases(now, "lost {worker} {attempt}")
    assert [(job.id, state) for job, state in rescued] == [("job_1", "pending")]
    pending = store.get_job("job_1")
    assert pending is not None
    assert (pending.state, pending.claimed_by, pending.error) == (
        JobState.pending,
        None,
        "lost worker-a 1",
    )
    assert pending.retry_classification == "transient"

    taken = store.claim_job("worker-b", now, later(now, LEASE))
    assert taken is not None
    assert (taken.claimed_by, taken.attempts) == ("worker-b", 2)
    assert not store.renew_lease(old, now, later(now, 3600))
    assert not store.defer_job(old, run_after=now, note="stale", now=now)
    with store.transaction() as tx:
        assert not store.complete_job(tx, old, result={}, output=NO_OUTPUT, now=now)
        assert not store.fail_job(
            tx,
            old,
            error="stale",
            classification="permanent",
            output=NO_OUTPUT,
            now=now,
            retry_at=None,
        )
    current = store.get_job("job_1")
    assert current is not None
    assert (current.state, current.claimed_by, current.attempts) == (
        JobState.running,
        "worker-b",
        2,
    )
    assert store.renew_lease(taken.fence, now, later(now, 2 * LEASE))
    renewed = store.get_job("job_1")
    assert renewed is not None
    assert renewed.lease_expires_at == later(now, 2 * LEASE)


def test_a_rescued_job_without_attempts_left_fails(store: Store) -> None:
    now = ManualClock().now()
    enqueue(store, new_job("job_1", now, lock=None, max_attempts=1))
    assert store.claim_job("worker-a", now, later(now, LEASE)) is not None
    rescued = store.rescue_expired_leases(later(now, 2 * LEASE), "lost {worker}")
    assert [(job.id, state) for job, state in rescued] == [("job_1", "failed")]
    failed = store.get_job("job_1")
    assert failed is not None
    assert (failed.state, failed.error) == (JobState.failed, "lost worker-a")


def test_complete_fail_and_defer_record_what_they_say(store: Store) -> None:
    now = ManualClock().now()
    enqueue(store, *(new_job(f"job_{n}", now, lock=None) for n in (1, 2, 3, 4)))
    jobs = [store.claim_job("worker-a", now, later(now, LEASE)) for _ in range(4)]
    assert all(job is not None for job in jobs)
    one, two, three, four = (job for job in jobs if job is not None)
    output = JobOutput(exit_code=1, stdout="out", stderr="err")
    retry_at = later(now, 30)
    with store.transaction() as tx:
        assert store.complete_job(tx, one.fence, result={"backup_id": "b"}, output=output, now=now)
        assert store.fail_job(
            tx,
            two.fence,
            error="boom",
            classification="transient",
            output=output,
            now=now,
            retry_at=retry_at,
        )
        assert store.fail_job(
            tx,
            three.fence,
            error="never",
            classification="permanent",
            output=output,
            now=now,
            retry_at=None,
        )
    assert store.defer_job(four.fence, run_after=retry_at, note="waiting: verify", now=now)

    done = store.get_job(one.id)
    assert done is not None
    assert (done.state, done.result, done.completed_at, done.error) == (
        JobState.completed,
        {"backup_id": "b"},
        now,
        None,
    )
    assert (done.last_exit_code, done.last_stdout, done.last_stderr) == (1, "out", "err")
    again = store.get_job(two.id)
    assert again is not None
    assert (again.state, again.claimed_by, again.run_after, again.attempts) == (
        JobState.pending,
        None,
        retry_at,
        1,
    )
    assert (again.error, again.retry_classification) == ("boom", "transient")
    failed = store.get_job(three.id)
    assert failed is not None
    assert (failed.state, failed.completed_at, failed.retry_classification) == (
        JobState.failed,
        now,
        "permanent",
    )
    waiting = store.get_job(four.id)
    assert waiting is not None
    assert (waiting.state, waiting.attempts, waiting.run_after, waiting.last_stdout) == (
        JobState.pending,
        0,  # waiting is not an attempt
        retry_at,
        "waiting: verify",
    )
    assert store.claim_job("worker-a", now, later(now, LEASE)) is None


def test_busy_jobs_are_every_pending_or_running_job_of_the_project(store: Store) -> None:
    now = ManualClock().now()
    enqueue(
        store,
        new_job("job_old_pending", now, lock=None),
        new_job("job_running", later(now, 1), lock=None),
        new_job("job_other_project", later(now, 2), lock=None, project_id="prj_2"),
    )
    running = store.claim_job("worker-a", later(now, 1), later(now, LEASE), only_id="job_running")
    assert running is not None
    newer = [new_job(f"job_done_{n:02d}", later(now, 10 + n), lock=None) for n in range(30)]
    enqueue(store, *newer)
    for job in newer:
        claimed = store.claim_job("worker-a", later(now, 60), later(now, LEASE), only_id=job.id)
        assert claimed is not None
        with store.transaction() as tx:
            assert store.complete_job(tx, claimed.fence, result={}, output=NO_OUTPUT, now=now)

    assert [job.id for job in store.busy_jobs("prj_1")] == ["job_running", "job_old_pending"]
    assert [job.id for job in store.list_jobs("prj_1", 5)] == [
        f"job_done_{n:02d}" for n in range(29, 24, -1)
    ]
    assert [job.id for job in store.busy_jobs("prj_2")] == ["job_other_project"]
    assert store.busy_jobs("prj_3") == []


def test_jobs_using_a_backup_are_the_outstanding_ones(store: Store) -> None:
    now = ManualClock().now()
    enqueue(
        store,
        new_job("job_verify", now, lock=None, payload={"backup_id": "bkp_1"}),
        new_job("job_restore", now, lock=None, payload={"request": {"backup_key": "bk_1"}}),
        new_job("job_unrelated", now, lock=None, payload={"backup_id": "bkp_2"}),
    )
    assert sorted(store.jobs_using_backup("bkp_1", "bk_1")) == ["job_restore", "job_verify"]


def test_a_released_job_is_pending_and_claimable_at_once_its_attempt_not_counted(
    store: Store,
) -> None:
    now = ManualClock().now()
    enqueue(store, new_job("job_1", now, lock="project:p1"))
    claimed = store.claim_job("worker-a", now, later(now, LEASE))
    assert claimed is not None
    assert store.release_job(claimed.fence, note="handed back: interrupted", now=now)

    released = store.get_job("job_1")
    assert released is not None
    assert (released.state, released.claimed_by, released.attempts, released.lease_expires_at) == (
        JobState.pending,
        None,
        0,
        None,
    )
    assert released.last_stdout == "handed back: interrupted"
    # its lock is free and it is due now: another worker takes it without waiting for a lease
    taken = store.claim_job("worker-b", now, later(now, LEASE))
    assert taken is not None
    assert (taken.id, taken.claimed_by, taken.attempts) == ("job_1", "worker-b", 1)
    # the stopped worker's fence is stale: it cannot hand back the job it no longer holds
    assert not store.release_job(claimed.fence, note="stale", now=now)


def test_waiting_for_work_ends_by_its_timeout(store: Store) -> None:
    for _ in range(2):  # a store that listens may answer the first call at once
        started = time.monotonic()
        woken = store.wait_for_work(0.05)
        assert isinstance(woken, bool)
        assert time.monotonic() - started < 2.0


# ---------------------------------------------------------------- SQLite affinity


def _claimed_by(store: Store, worker: str, sqlite_dirs: list[str] | None) -> str | None:
    now = ManualClock().now()
    job = store.claim_job(worker, now, later(now, LEASE), sqlite_dirs=sqlite_dirs)
    return job.id if job is not None else None


def test_a_sqlite_job_is_claimed_only_by_a_worker_that_can_open_its_file(store: Store) -> None:
    now = ManualClock().now()
    enqueue(store, new_job("job_a", now, lock=None, sqlite_dir="/a/"))
    job = store.get_job("job_a")
    assert job is not None
    assert job.sqlite_dir == "/a/"
    assert "sqlite_dir" not in job.public().model_dump()

    assert _claimed_by(store, "worker-b", ["/b/"]) is None
    assert _claimed_by(store, "worker-none", []) is None
    assert _claimed_by(store, "worker-ab", ["/ab/", "/A/"]) is None  # no prefix, no case folding
    assert _claimed_by(store, "worker-a", ["/b/", "/a/"]) == "job_a"


def test_a_worker_that_declares_nothing_claims_every_sqlite_job(store: Store) -> None:
    now = ManualClock().now()
    enqueue(store, new_job("job_a", now, lock=None, sqlite_dir="/a/"))
    assert _claimed_by(store, "worker-any", None) == "job_a"


def test_a_declared_directory_takes_the_files_of_its_subdirectories(store: Store) -> None:
    now = ManualClock().now()
    enqueue(store, new_job("job_deep", now, lock=None, sqlite_dir="/srv/apps/shop_1/"))
    # "_" and "%" are no wildcards
    assert _claimed_by(store, "worker-x", ["/srv/apps/shop%/", "/srv/apps/shop_/"]) is None
    assert _claimed_by(store, "worker-srv", ["/srv/"]) == "job_deep"


def test_a_job_of_no_sqlite_file_is_claimed_by_any_worker(store: Store) -> None:
    now = ManualClock().now()
    enqueue(
        store,
        new_job("job_pg_1", now, lock=None),
        new_job("job_pg_2", later(now, 1), lock=None, run_after=now),
        new_job("job_pg_3", later(now, 2), lock=None, run_after=now),
    )
    assert _claimed_by(store, "worker-b", ["/b/"]) == "job_pg_1"
    assert _claimed_by(store, "worker-none", []) == "job_pg_2"
    assert _claimed_by(store, "worker-any", None) == "job_pg_3"


def test_a_sqlite_job_the_worker_cannot_open_does_not_hide_the_next(store: Store) -> None:
    now = ManualClock().now()
    enqueue(
        store,
        new_job("job_a", now, lock=None, sqlite_dir="/a/"),
        new_job("job_b", later(now, 1), lock=None, run_after=now, sqlite_dir="/b/"),
    )
    assert _claimed_by(store, "worker-b", ["/b/"]) == "job_b"
    assert _claimed_by(store, "worker-b", ["/b/"]) is None


def test_a_claim_of_one_job_by_its_id_ignores_the_directories(store: Store) -> None:
    now = ManualClock().now()
    enqueue(store, new_job("job_a", now, lock=None, sqlite_dir="/a/"))
    job = store.claim_job("embedded", now, later(now, LEASE), only_id="job_a", sqlite_dirs=[])
    assert job is not None
    assert job.id == "job_a"


def test_running_jobs_are_every_running_job_and_who_claimed_it(store: Store) -> None:
    now = ManualClock().now()
    enqueue(
        store,
        new_job("job_1", now, lock=None),
        new_job("job_2", later(now, 1), lock=None, run_after=now),
        new_job("job_3", later(now, 2), lock=None, run_after=now),
    )
    assert store.running_jobs() == []
    first = store.claim_job("worker-a", now, later(now, LEASE))
    second = store.claim_job("worker-b", later(now, 1), later(now, LEASE))
    assert first is not None
    assert second is not None
    running = store.running_jobs()
    assert [(job.id, job.claimed_by) for job in running] == [
        ("job_1", "worker-a"),
        ("job_2", "worker-b"),
    ]
    with store.transaction() as tx:
        assert store.complete_job(tx, first.fence, result={}, output=NO_OUTPUT, now=now)
    assert [job.id for job in store.running_jobs()] == ["job_2"]
