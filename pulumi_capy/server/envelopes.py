"""CapyDB's answer envelopes (``{"restore_points": [...]}``, ``{"job": ...}``) as models,
so that the OpenAPI document describes every answer exactly."""

from __future__ import annotations

from pydantic import BaseModel

from pulumi_capy.api.models import (
    ApiKey,
    Backup,
    BackupDetail,
    Job,
    PitrStatus,
    PreviewDatabase,
    Project,
    RestorePoint,
    ScheduledBackup,
)


class ErrorBody(BaseModel):
    error: str


class Deleted(BaseModel):
    deleted: bool = True


class JobEnvelope(BaseModel):
    job: Job


class JobList(BaseModel):
    jobs: list[Job]


class RestorePointEnvelope(BaseModel):
    restore_point: RestorePoint


class RestorePointList(BaseModel):
    restore_points: list[RestorePoint]


class BackupDetailEnvelope(BaseModel):
    backup: BackupDetail


class BackupList(BaseModel):
    backups: list[Backup]


class ScheduledBackupEnvelope(BaseModel):
    scheduled_backup: ScheduledBackup


class ScheduledBackupList(BaseModel):
    scheduled_backups: list[ScheduledBackup]


class PreviewList(BaseModel):
    preview_databases: list[PreviewDatabase]


class PreviewCreatedEnvelope(BaseModel):
    job: Job
    preview: PreviewDatabase


class ProjectEnvelope(BaseModel):
    project: Project


class ProjectCreatedEnvelope(BaseModel):
    project: Project
    job: Job | None = None


class ProjectList(BaseModel):
    projects: list[Project]


class ApiKeyList(BaseModel):
    api_keys: list[ApiKey]


class PitrEnvelope(BaseModel):
    pitr: PitrStatus


class PitrJobEnvelope(BaseModel):
    """[ours] Turning PITR on started its first base backup: the status and that job."""

    pitr: PitrStatus
    job: Job
