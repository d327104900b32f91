"""A PostgreSQL backup's, verification's and restore's progress (issue 16), for real:
pg_dump's bytes as they come against ``pg_database_size``, the blob decompressed against
the size the manifest recorded."""

from __future__ import annotations

from pulumi_capy.api.models import CreateBackup, Job, JobProgress, Project, RestoreRequest
from pulumi_capy.engine.service import Engine
from tests.postgres.conftest import connect


def _follow(engine: Engine, job_id: str) -> tuple[Job, list[JobProgress]]:
    seen: list[JobProgress] = []

    def update(job: Job) -> None:
        if job.progress is not None and (not seen or seen[-1] != job.progress):
            seen.append(job.progress)

    return engine.wait_for_job(job_id, 300, update), seen


def test_a_postgres_backup_and_restore_report_their_bytes(
    engine: Engine, project: Project, source_url: str
) -> None:
    with connect(source_url) as conn:
        conn.execute(
            "CREATE TABLE payload AS SELECT i, repeat(md5(random()::text), 16) AS data"
            " FROM generate_series(1, 8000) i"
        )
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    size = row[0]
    engine.rt.progress_interval = 0.0

    job, seen = _follow(engine, engine.create_backup(project.id, CreateBackup()).id)
    assert {progress.step for progress in seen} == {"dumping and compressing"}
    assert {progress.bytes_total for progress in seen} == {size}
    done = [progress.bytes_done or 0 for progress in seen]
    assert done[0] == 0
    assert done == sorted(done)
    assert len(set(done)) > 2  # written as pg_dump's bytes came, not only at the ends
    dumped = done[-1]
    assert dumped > 4 << 20  # the dump of 8000 rows of 512 characters, and the rest

    assert job.result is not None
    _, verified = _follow(engine, str(job.result["verify_job_id"]))
    decompressing = [p for p in verified if p.step == "verifying: decompressing"]
    assert decompressing[-1].bytes_done == decompressing[-1].bytes_total == dumped

    restore = engine.create_restore(
        project.id, RestoreRequest(backup_key=str(job.result["backup_key"]))
    )
    _, loaded = _follow(engine, restore.id)
    assert loaded[0].step == "loading"
    last = [p for p in loaded if p.step == "loading: decompressing the backup"][-1]
    assert last.bytes_done == last.bytes_total == dumped
    assert loaded[-1].step == "loading into the target"
