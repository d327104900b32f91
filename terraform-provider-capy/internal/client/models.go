package client

import "time"

// The objects of CapyDB's restore surface (../shared/capydb-api.md), field for field
// where the provider needs them. Unknown fields are ignored; absent ones stay zero
// (pointers stay nil), so a newer server does not break an older provider.

// Job is asynchronous work: a backup, a restore, a verification, a preview deletion.
type Job struct {
	ID                  string         `json:"id"`
	Type                string         `json:"type"`
	State               string         `json:"state"`
	Attempts            int            `json:"attempts"`
	MaxAttempts         int            `json:"max_attempts"`
	ClaimedBy           *string        `json:"claimed_by"`
	StartedAt           *time.Time     `json:"started_at"`
	CompletedAt         *time.Time     `json:"completed_at"`
	CreatedAt           *time.Time     `json:"created_at"`
	UpdatedAt           *time.Time     `json:"updated_at"`
	Error               *string        `json:"error"`
	LastExitCode        *int           `json:"last_exit_code"`
	LastStdout          *string        `json:"last_stdout"`
	LastStderr          *string        `json:"last_stderr"`
	LockedResource      *string        `json:"locked_resource"`
	RetryClassification *string        `json:"retry_classification"`
	ProjectID           *string        `json:"project_id"`
	PreviewDatabaseID   *string        `json:"preview_database_id"`
	Result              map[string]any `json:"result"`
	Progress            *JobProgress   `json:"progress"`
}

// JobProgress is [ours]: the running attempt's step and bytes.
type JobProgress struct {
	Step       string `json:"step"`
	BytesDone  *int64 `json:"bytes_done"`
	BytesTotal *int64 `json:"bytes_total"`
}

// Job states.
const (
	JobPending   = "pending"
	JobRunning   = "running"
	JobCompleted = "completed"
	JobFailed    = "failed"
)

// Terminal says whether the job will change no more.
func (j *Job) Terminal() bool { return j.State == JobCompleted || j.State == JobFailed }

// ResultString is a string field of the job's result, or "".
func (j *Job) ResultString(name string) string {
	if value, ok := j.Result[name].(string); ok {
		return value
	}
	return ""
}

// RestorePoint is a name pinned to a backup key or to a moment.
type RestorePoint struct {
	ID        string     `json:"id"`
	ProjectID string     `json:"project_id"`
	Label     string     `json:"label"`
	Note      *string    `json:"note"`
	Kind      string     `json:"kind"`
	BackupID  *string    `json:"backup_id"`
	BackupKey *string    `json:"backup_key"`
	PitrTime  *time.Time `json:"pitr_time"`
	State     string     `json:"state"`
	CreatedAt *time.Time `json:"created_at"`
	UpdatedAt *time.Time `json:"updated_at"`
}

// Backup is a verified (or verifying) copy of a project's database.
type Backup struct {
	ID                string     `json:"id"`
	ProjectID         string     `json:"project_id"`
	BackupKey         string     `json:"backup_key"`
	Label             *string    `json:"label"`
	DatabaseName      *string    `json:"database_name"`
	SizeBytes         *int64     `json:"size_bytes"`
	State             string     `json:"state"`
	VerificationState string     `json:"verification_state"`
	VerificationError *string    `json:"verification_error"`
	VerifiedAt        *time.Time `json:"verified_at"`
	CreatedAt         *time.Time `json:"created_at"`
}

// Project is a database under protection.
type Project struct {
	ID              string     `json:"id"`
	Name            string     `json:"name"`
	OrganizationID  *string    `json:"organization_id"`
	Environment     *string    `json:"environment"`
	State           *string    `json:"state"`
	DatabaseKind    *string    `json:"database_kind"`
	DatabaseName    *string    `json:"database_name"`
	PitrWindowStart *time.Time `json:"pitr_window_start"`
	PitrWindowEnd   *time.Time `json:"pitr_window_end"`
	CreatedAt       *time.Time `json:"created_at"`
}

// PreviewDatabase is a database a restore made (or a clone).
type PreviewDatabase struct {
	ID                string     `json:"id"`
	ProjectID         string     `json:"project_id"`
	Name              string     `json:"name"`
	Mode              *string    `json:"mode"`
	State             *string    `json:"state"`
	DatabaseName      *string    `json:"database_name"`
	RoleName          *string    `json:"role_name"`
	PublicHost        *string    `json:"public_host"`
	DirectPort        *int       `json:"direct_port"`
	SSLMode           *string    `json:"ssl_mode"`
	TTLExpiresAt      *time.Time `json:"ttl_expires_at"`
	LastError         *string    `json:"last_error"`
	SourceKind        *string    `json:"source_kind"`
	SourceBackupKey   *string    `json:"source_backup_key"`
	SourceRestoreTime *time.Time `json:"source_restore_time"`
	CreatedAt         *time.Time `json:"created_at"`
}

// Pitr is a project's point-in-time recovery status ([ours], self-hosted only).
type Pitr struct {
	Enabled     bool       `json:"enabled"`
	Method      *string    `json:"method"`
	WindowStart *time.Time `json:"window_start"`
	WindowEnd   *time.Time `json:"window_end"`
	// Notices is [ours]: what needs a person's attention (nobody streams the log, a gap in it)
	Notices []string `json:"notices"`
}

// Identity is who the key is, and which server answers.
type Identity struct {
	Server *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"server"`
	Principal *struct {
		OrganizationID string   `json:"organization_id"`
		ProjectID      *string  `json:"project_id"`
		Scopes         []string `json:"scopes"`
	} `json:"principal"`
}

// CreateProject is the body of POST /v1/projects.
type CreateProject struct {
	Name        string `json:"name"`
	Environment string `json:"environment,omitempty"`
	DatabaseURL string `json:"database_url,omitempty"`
}

// CreateRestorePoint is the body of POST …/restore-points.
type CreateRestorePoint struct {
	Label     string     `json:"label"`
	Kind      string     `json:"kind,omitempty"`
	BackupKey string     `json:"backup_key,omitempty"`
	PitrTime  *time.Time `json:"pitr_time,omitempty"`
	Note      string     `json:"note,omitempty"`
}

// CreateRestore is the body of POST …/restores.
type CreateRestore struct {
	BackupKey               string     `json:"backup_key,omitempty"`
	RestoreTime             *time.Time `json:"restore_time,omitempty"`
	RestorePointID          string     `json:"restore_point_id,omitempty"`
	TargetKind              string     `json:"target_kind"`
	PreviewID               string     `json:"preview_id,omitempty"`
	PreviewName             string     `json:"preview_name,omitempty"`
	TTLHours                int64      `json:"ttl_hours,omitempty"`
	Recreate                bool       `json:"recreate,omitempty"`
	AllowUnverifiedBackup   bool       `json:"allow_unverified_backup,omitempty"`
	ConfirmProjectOverwrite bool       `json:"confirm_project_overwrite,omitempty"`
}
