"""The CapyDB restore surface as pydantic models (see ``shared/capydb-api.md``).

Two families:

- **Objects** (``Job``, ``RestorePoint``, …) are what the API answers. They are
  lenient: unknown fields are ignored and an enum value this version does not
  know (CapyDB adds them over time, e.g. restore point kind ``snapshot``) is
  kept as a plain string.
- **Requests** (``CreateRestorePoint``, ``RestoreRequest``, …) are what callers
  send. They are strict: unknown fields, wrong types and every rule the
  contract states fail validation, and each message names the field.
  ``pulumi_capy.api.validation`` turns their ``ValidationError`` into ``InvalidInput``.

One module past 500 lines on purpose: it is the contract's vocabulary, declarations
only, read side by side with ``capydb-api.md``, and imported by every room.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    Strict,
    field_serializer,
    field_validator,
    model_validator,
)

__all__ = [
    "SCOPES",
    "ApiKey",
    "Backup",
    "BackupDetail",
    "BackupState",
    "CreateApiKey",
    "CreateBackup",
    "CreatePreview",
    "CreateProject",
    "CreateRestorePoint",
    "CreatedApiKey",
    "Environment",
    "Identity",
    "Job",
    "JobProgress",
    "JobState",
    "JobType",
    "Organization",
    "PitrChange",
    "PitrGenerationStatus",
    "PitrMethod",
    "PitrStatus",
    "PitrStreamer",
    "PreviewCreated",
    "PreviewDatabase",
    "PreviewMode",
    "PreviewState",
    "Principal",
    "Project",
    "ProjectCreated",
    "PutPitr",
    "PutScheduledBackup",
    "RestorePoint",
    "RestorePointKind",
    "RestorePointState",
    "RestoreRequest",
    "RetryClassification",
    "ScheduledBackup",
    "ServerInfo",
    "TargetKind",
    "UpdateProject",
    "VerificationState",
    "format_bytes",
    "format_timestamp",
]

LABEL_MAX = 200
TTL_HOURS_MAX = 168

# The ten scopes of the contract, and no others.
SCOPES: tuple[str, ...] = (
    "projects:read",
    "projects:write",
    "credentials:read",
    "backups:read",
    "backups:write",
    "jobs:read",
    "organizations:read",
    "organizations:write",
    "api_keys:read",
    "api_keys:write",
)


# ---------------------------------------------------------------- enums


class JobState(StrEnum):
    pending = "pending"  # waiting for a worker (or for its lock)
    running = "running"  # claimed by a worker that holds its lease
    completed = "completed"  # terminal: done, ``result`` filled
    failed = "failed"  # terminal: ``error`` says why


TERMINAL_JOB_STATES = frozenset({JobState.completed, JobState.failed})


class JobType(StrEnum):
    project_backup = "project.backup"  # take a backup of a project database
    project_restore = "project.restore"  # restore into a preview or the project
    backup_verify = "backup.verify"  # restore a backup into a throwaway target and check it
    preview_create = "preview.create"  # create a preview database
    preview_delete = "preview.delete"  # drop a preview database
    backup_expire = "backup.expire"  # remove a backup past its retention
    pitr_base_backup = "pitr.base_backup"  # [ours] a base backup of a cluster, for PITR
    pitr_expire = "pitr.expire"  # [ours] remove base backups and WAL past retention


class RetryClassification(StrEnum):
    transient = "transient"  # retried while attempts < max_attempts
    permanent = "permanent"  # failed at once: retrying cannot help


class RestorePointKind(StrEnum):
    backup = "backup"  # pinned to a backup key
    pitr = "pitr"  # pinned to a point in time


class PitrMethod(StrEnum):
    stream = "stream"  # a worker streams the log from a replication slot
    archive = "archive"  # the server pushes it (``archive_command = 'capy wal-push %p'``)


class RestorePointState(StrEnum):
    active = "active"  # can be restored from
    expired = "expired"  # its backup expired or its time left the PITR window


class BackupState(StrEnum):
    completed = "completed"  # the blob exists
    expired = "expired"  # removed by retention


class VerificationState(StrEnum):
    pending = "pending"  # not yet restored into a throwaway target
    verified = "verified"  # restored and checked
    failed = "failed"  # did not restore: not usable


class TargetKind(StrEnum):
    new_preview = "new_preview"  # a fresh preview database; nothing existing is touched
    preview = "preview"  # overwrite the existing preview ``preview_id``
    project = "project"  # overwrite the project database (needs confirmation)


class PreviewMode(StrEnum):
    empty = "empty"  # an empty database
    clone = "clone"  # a copy of the project database now
    restore = "restore"  # [ours] made by a restore


class PreviewState(StrEnum):
    creating = "creating"  # [ours] its job has not finished
    ready = "ready"  # [ours] usable
    deleting = "deleting"  # [ours] a delete job is running
    deleted = "deleted"  # [ours] gone
    failed = "failed"  # [ours] its creation failed; ``last_error`` says why


class Environment(StrEnum):
    production = "production"
    non_production = "non_production"


OpenJobState = Annotated[JobState | str, Field(union_mode="left_to_right")]
OpenJobType = Annotated[JobType | str, Field(union_mode="left_to_right")]
OpenRetry = Annotated[RetryClassification | str, Field(union_mode="left_to_right")]
OpenKind = Annotated[RestorePointKind | str, Field(union_mode="left_to_right")]
OpenRestorePointState = Annotated[RestorePointState | str, Field(union_mode="left_to_right")]
OpenBackupState = Annotated[BackupState | str, Field(union_mode="left_to_right")]
OpenVerification = Annotated[VerificationState | str, Field(union_mode="left_to_right")]
OpenPreviewMode = Annotated[PreviewMode | str, Field(union_mode="left_to_right")]
OpenPreviewState = Annotated[PreviewState | str, Field(union_mode="left_to_right")]
OpenEnvironment = Annotated[Environment | str, Field(union_mode="left_to_right")]
OpenPitrMethod = Annotated[PitrMethod | str, Field(union_mode="left_to_right")]


# ---------------------------------------------------------------- timestamps


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``: ``2026-11-26T05:00:00Z`` (microseconds kept if any)."""
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def _aware_utc(value: datetime, *, strict: bool) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        if strict:
            raise ValueError(
                "the timestamp has no UTC offset; write it in RFC 3339, e.g. 2026-11-26T05:00:00Z"
            )
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _lenient_utc(value: datetime) -> datetime:
    return _aware_utc(value, strict=False)


# An answer's timestamp: made UTC when read (naive ones taken as UTC), written by pydantic's
# own serializer, which writes an aware UTC datetime as format_timestamp does (``…Z``).
Timestamp = Annotated[datetime, AfterValidator(_lenient_utc)]


# ---------------------------------------------------------------- objects


class ApiObject(BaseModel):
    """An object the API answers: lenient, timestamps in UTC."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


KIB = 1024


def format_bytes(count: float) -> str:
    """``532 B``, ``12.0 MiB``, ``3.1 GiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < KIB or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= KIB
    return f"{value:.1f} GiB"  # pragma: no cover - the loop returns


class JobProgress(ApiObject):
    """[ours] Where a running job is: its step ("dumping", "compressing", "verifying",
    "loading", "safety backup: …") and, where the engine knows them, the bytes done of the
    step and its total. ``updated_at`` is when the engine last wrote it."""

    step: str
    bytes_done: int | None = None
    bytes_total: int | None = None
    updated_at: Timestamp | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        # an engine of before this object noted its step as plain text
        return {"step": value} if isinstance(value, str) else value

    @property
    def fraction(self) -> float | None:
        """Done of the total, 0 to 1, when both are known."""
        if self.bytes_done is None or not self.bytes_total:
            return None
        return min(1.0, self.bytes_done / self.bytes_total)

    def describe(self) -> str:
        """``compressing: 12.0 MiB of 40.0 MiB (30%)``, or the step alone."""
        if self.bytes_done is None:
            return self.step
        if self.bytes_total is None:
            return f"{self.step}: {format_bytes(self.bytes_done)}"
        fraction = self.fraction
        share = f" ({fraction:.0%})" if fraction is not None else ""
        done, total = format_bytes(self.bytes_done), format_bytes(self.bytes_total)
        return f"{self.step}: {done} of {total}{share}"


class Job(ApiObject):
    id: str
    type: OpenJobType
    state: OpenJobState
    attempts: int = 0
    max_attempts: int = 3
    claimed_at: Timestamp | None = None
    claimed_by: str | None = None
    cluster_id: str | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None
    error: str | None = None
    last_exit_code: int | None = None
    last_stdout: str | None = None
    last_stderr: str | None = None
    locked_resource: str | None = None
    retry_classification: OpenRetry | None = None
    organization_id: str | None = None
    project_id: str | None = None
    preview_database_id: str | None = None
    result: dict[str, Any] | None = None
    # [ours] the running attempt's step and bytes done / total (hosted CapyDB has none)
    progress: JobProgress | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in TERMINAL_JOB_STATES


class RestorePoint(ApiObject):
    id: str
    project_id: str
    organization_id: str | None = None
    label: str
    note: str | None = None
    kind: OpenKind
    backup_id: str | None = None
    backup_key: str | None = None
    pitr_time: Timestamp | None = None
    state: OpenRestorePointState = RestorePointState.active
    created_by_actor_id: str | None = None
    created_by_actor_kind: str | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Backup(ApiObject):
    id: str
    project_id: str
    backup_key: str
    label: str | None = None
    database_name: str | None = None
    size_bytes: int | None = None
    state: OpenBackupState = BackupState.completed
    verification_state: OpenVerification = VerificationState.pending
    verification_error: str | None = None
    verified_at: Timestamp | None = None
    created_at: Timestamp | None = None


class BackupDetail(Backup):
    """[ours] One backup with what its blob's manifest recorded (``GET …/backups/{id}``).

    ``size_bytes`` is the source's size as dumped, ``blob_bytes`` the compressed
    blob's; ``table_count`` and ``row_counts`` (``{"schema.table": rows}``) are what the
    dump reported: a SQLite dump counts tables, a PostgreSQL one counts the rows of each.
    From hosted CapyDB only the ``Backup`` fields are known (the others ``None``)."""

    blob_bytes: int | None = None
    sha256: str | None = None
    format: str | None = None
    source_kind: str | None = None
    table_count: int | None = None
    row_counts: dict[str, int] | None = None
    pulumi_capy_version: str | None = None


class ScheduledBackup(ApiObject):
    id: str
    project_id: str
    organization_id: str | None = None
    cron_hour: int
    cron_minute: int
    is_active: bool
    label: str | None = None
    retention_days: int | None = None
    last_job_id: str | None = None
    last_run_at: Timestamp | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class PreviewDatabase(ApiObject):
    id: str
    project_id: str
    name: str
    mode: OpenPreviewMode | None = None
    state: OpenPreviewState | None = None
    database_name: str | None = None
    role_name: str | None = None
    public_host: str | None = None
    direct_port: int | None = None
    pooled_port: int | None = None
    ssl_mode: str | None = None
    source_kind: str | None = None
    source_database: str | None = None
    source_backup_key: str | None = None
    source_restore_time: Timestamp | None = None
    ttl_expires_at: Timestamp | None = None
    last_error: str | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class Project(ApiObject):
    id: str
    name: str
    organization_id: str | None = None
    environment: OpenEnvironment | None = None
    state: str | None = None
    # [ours] what the engine protects, without credentials: ``sqlite`` or ``postgresql``
    database_kind: str | None = None
    database_name: str | None = None
    # [ours] the PITR window (null when PITR is off or its window is not open yet)
    pitr_window_start: Timestamp | None = None
    pitr_window_end: Timestamp | None = None
    created_at: Timestamp | None = None
    updated_at: Timestamp | None = None


class PitrStreamer(ApiObject):
    """[ours] The worker streaming a project's transaction log, by its lease."""

    worker_id: str
    heartbeat_at: Timestamp | None = None


class PitrGenerationStatus(ApiObject):
    """[ours] One generation of a SQLite project's shipped log: a stretch shipped without
    a break, started by a snapshot; a break that cannot be proven away starts the next."""

    number: int
    started_at: Timestamp
    reason: str  # why it started
    current: bool
    restorable_from: Timestamp | None = None  # its part of the window (None: none yet)
    restorable_to: Timestamp | None = None


class PitrStatus(ApiObject):
    """[ours] A project's point-in-time recovery: on or off, how, and its window."""

    enabled: bool
    method: OpenPitrMethod | None = None
    window_start: Timestamp | None = None
    window_end: Timestamp | None = None
    # seconds between now and ``window_end`` (how far behind the last commit a restore is)
    lag_seconds: float | None = None
    streamer: PitrStreamer | None = None
    # [ours] what needs a person's attention: nobody streams, a gap in the log, …
    notices: list[str] = []
    # [ours] SQLite: the generations of the shipped log, oldest first
    generations: list[PitrGenerationStatus] = []


class PitrChange(ApiObject):
    """[ours] The answer to turning PITR on or off: the status, and the job of the first
    base backup when turning it on started one."""

    pitr: PitrStatus
    job: Job | None = None


class ApiKey(ApiObject):
    id: str
    name: str
    organization_id: str | None = None
    project_id: str | None = None
    scopes: list[str] = Field(default_factory=list)
    prefix: str | None = None
    created_at: Timestamp | None = None
    expires_at: Timestamp | None = None
    revoked_at: Timestamp | None = None
    last_used_at: Timestamp | None = None


class CreatedApiKey(ApiObject):
    """The answer to a key creation: the only time the plaintext key is shown."""

    api_key: ApiKey
    plaintext_api_key: SecretStr

    @field_serializer("plaintext_api_key", when_used="json")
    def _reveal(self, value: SecretStr) -> str:
        return value.get_secret_value()


class Organization(ApiObject):
    id: str
    name: str | None = None


class Principal(ApiObject):
    auth_source: str
    organization_id: str | None = None
    scopes: list[str] = Field(default_factory=list)
    project_id: str | None = None
    api_key_id: str | None = None
    actor_id: str | None = None


class ServerInfo(ApiObject):
    """[ours] how a self-hosted ``capy serve`` names itself in ``GET /v1/me``."""

    name: str
    version: str | None = None


class Identity(ApiObject):
    """The answer of ``GET /v1/me``."""

    organization: Organization | None = None
    principal: Principal
    server: ServerInfo | None = None

    @property
    def is_pulumi_capy_server(self) -> bool:
        return self.server is not None and self.server.name == "pulumi-capy"


class PreviewCreated(ApiObject):
    job: Job
    preview: PreviewDatabase


class ProjectCreated(ApiObject):
    project: Project
    job: Job | None = None


# ---------------------------------------------------------------- requests

Label = Annotated[str, Field(min_length=1, max_length=LABEL_MAX)]


# A request's true/false: JSON's own booleans only (lax bools would take 0, 1 or "yes")
Flag = Annotated[bool, Strict()]


def _not_a_flag(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a whole number, not true/false")
    return value


# A request's whole number: 3 or 3.0 (Pulumi's numbers are floats), never true/false.
# (Range first: after a validator, pydantic would write the range into the JSON schema
# under its own names, ``ge``/``le``, instead of ``minimum``/``maximum``.)
NotFlag = BeforeValidator(_not_a_flag)
TtlHours = Annotated[int, Field(ge=1, le=TTL_HOURS_MAX), NotFlag]


class ApiRequest(BaseModel):
    """A request body: strict; serialized with ``to_wire``."""

    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, validate_default=True, frozen=True
    )

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            return _aware_utc(value, strict=True)
        return value

    @field_serializer("*", when_used="json-unless-none")
    def _serialize(self, value: Any, info: SerializationInfo) -> Any:
        if isinstance(value, datetime):
            return format_timestamp(value)
        if isinstance(value, SecretStr):
            context = info.context or {}
            return value.get_secret_value() if context.get("reveal_secrets") else str(value)
        return value

    def to_wire(self) -> dict[str, Any]:
        """The JSON body to send: secrets revealed, unset optional fields left out."""
        return self.model_dump(mode="json", exclude_none=True, context={"reveal_secrets": True})


class RuleError(ValueError):
    """A rule over several fields broke; ``fields`` are the ones to blame."""

    def __init__(self, fields: tuple[str, ...] | str, message: str) -> None:
        self.fields = (fields,) if isinstance(fields, str) else fields
        self.message = message
        super().__init__(f"{', '.join(self.fields)}: {message}")


def _exactly_one(model: BaseModel, fields: tuple[str, ...], what: str) -> None:
    given = tuple(name for name in fields if getattr(model, name) is not None)
    if len(given) != 1:
        names = ", ".join(fields)
        if given:
            raise RuleError(given, f"give exactly one {what} ({names}); got {len(given)}")
        raise RuleError(fields, f"give exactly one {what} ({names}); got none")


class CreateRestorePoint(ApiRequest):
    label: Label
    kind: RestorePointKind = RestorePointKind.backup
    backup_key: Annotated[str, Field(min_length=1)] | None = None
    pitr_time: datetime | None = None
    note: Annotated[str, Field(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _kind_fields(self) -> Self:
        if self.kind is RestorePointKind.backup:
            if self.backup_key is None:
                raise RuleError("backup_key", "required when kind is 'backup'")
            if self.pitr_time is not None:
                raise RuleError("pitr_time", "only allowed when kind is 'pitr'")
        elif self.backup_key is not None:
            raise RuleError("backup_key", "only allowed when kind is 'backup'")
        return self


class RestoreRequest(ApiRequest):
    backup_key: Annotated[str, Field(min_length=1)] | None = None
    restore_time: datetime | None = None
    restore_point_id: Annotated[str, Field(min_length=1)] | None = None
    target_kind: TargetKind = TargetKind.new_preview
    preview_id: Annotated[str, Field(min_length=1)] | None = None
    preview_name: Annotated[str, Field(min_length=1, max_length=63)] | None = None
    ttl_hours: TtlHours | None = None
    recreate: Flag = False
    allow_unverified_backup: Flag = False
    confirm_project_overwrite: Flag = False

    @model_validator(mode="after")
    def _rules(self) -> Self:
        _exactly_one(self, ("backup_key", "restore_time", "restore_point_id"), "restore source")
        if self.target_kind is TargetKind.preview:
            if self.preview_id is None:
                raise RuleError("preview_id", "required when target_kind is 'preview'")
        elif self.preview_id is not None:
            raise RuleError(
                "preview_id",
                f"only allowed when target_kind is 'preview' (target_kind is '{self.target_kind}')",
            )
        if self.target_kind is not TargetKind.new_preview:
            for name in ("preview_name", "ttl_hours"):
                if getattr(self, name) is not None:
                    raise RuleError(
                        name,
                        f"only allowed when target_kind is 'new_preview' "
                        f"(target_kind is '{self.target_kind}')",
                    )
        return self

    @property
    def source_kind(self) -> str:
        if self.backup_key is not None:
            return "backup"
        if self.restore_point_id is not None:
            return "restore_point"
        return "restore_time"

    def to_wire(self) -> dict[str, Any]:
        body = super().to_wire()
        body["target_kind"] = self.target_kind.value  # CapyDB rejects a restore without it
        return body


class PutPitr(ApiRequest):
    """[ours] Turn a project's point-in-time recovery on or off."""

    enabled: Flag
    method: PitrMethod = PitrMethod.stream
    # [ours] SQLite: switch a database not in WAL mode to it (no other connection open)
    set_wal: Flag | None = None


class CreateBackup(ApiRequest):
    label: Label | None = None


class PutScheduledBackup(ApiRequest):
    cron_hour: Annotated[int, Field(ge=0, le=23), NotFlag]
    cron_minute: Annotated[int, Field(ge=0, le=59), NotFlag]
    is_active: Flag
    label: Label | None = None
    retention_days: Annotated[int, Field(ge=1, le=365), NotFlag] | None = None


class CreatePreview(ApiRequest):
    name: Annotated[str, Field(min_length=1, max_length=63)]
    mode: PreviewMode = PreviewMode.clone
    ttl_hours: TtlHours = 24


class CreateProject(ApiRequest):
    name: Annotated[str, Field(min_length=1, max_length=LABEL_MAX)]
    environment: Environment = Environment.non_production
    # [ours] only on the self-hosted server and the embedded engine; a secret
    database_url: SecretStr | None = None

    @field_validator("database_url")
    @classmethod
    def _url_not_empty(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value


class UpdateProject(ApiRequest):
    """[ours] A new ``database_url`` for a project (a rotated password, a moved database)."""

    database_url: SecretStr

    @field_validator("database_url")
    @classmethod
    def _url_not_empty(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value


class CreateApiKey(ApiRequest):
    name: Annotated[str, Field(min_length=1, max_length=LABEL_MAX)]
    scopes: Annotated[list[str], Field(min_length=1)]
    project_id: Annotated[str, Field(min_length=1)] | None = None
    expires_at: datetime | None = None

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        unknown = [scope for scope in value if scope not in SCOPES]
        if unknown:
            raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {' '.join(SCOPES)}")
        return list(dict.fromkeys(value))
