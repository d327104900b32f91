package client

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrNotSupported is a call that only a self-hosted `capy serve` answers.
var ErrNotSupported = errors.New("not supported by hosted CapyDB")

// ---------------------------------------------------------------- identity

// Identity is GET /v1/me.
func (c *Client) Identity(ctx context.Context) (*Identity, error) {
	var out Identity
	if err := c.do(ctx, "GET", "v1/me", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// IsCapyServer says (asking /v1/me once) whether the API is a self-hosted `capy serve`;
// a failed probe is asked again next time.
func (c *Client) IsCapyServer(ctx context.Context) (bool, error) {
	c.server.mu.Lock()
	defer c.server.mu.Unlock()
	if c.server.known {
		return c.server.is, nil
	}
	identity, err := c.Identity(ctx)
	if err != nil {
		return false, err
	}
	c.server.is = identity.Server != nil && identity.Server.Name == "pulumi-capy"
	c.server.known = true
	return c.server.is, nil
}

// ---------------------------------------------------------------- projects

// ListProjects is GET /v1/projects.
func (c *Client) ListProjects(ctx context.Context) ([]Project, error) {
	var out struct {
		Projects []Project `json:"projects"`
	}
	err := c.do(ctx, "GET", "v1/projects", nil, nil, &out)
	return out.Projects, err
}

// GetProject is GET /v1/projects/{id}.
func (c *Client) GetProject(ctx context.Context, projectID string) (*Project, error) {
	path, err := projectPath(projectID)
	if err != nil {
		return nil, err
	}
	var out struct {
		Project *Project `json:"project"`
	}
	if err := c.do(ctx, "GET", path, nil, nil, &out); err != nil {
		return nil, err
	}
	if out.Project == nil {
		return nil, fmt.Errorf("GET %s: the answer has no project", path)
	}
	return out.Project, nil
}

// CreateProject is POST /v1/projects; the job, when there is one, set it up.
func (c *Client) CreateProject(ctx context.Context, request CreateProject) (*Project, *Job, error) {
	var out struct {
		Project *Project `json:"project"`
		Job     *Job     `json:"job"`
	}
	if err := c.do(ctx, "POST", "v1/projects", nil, request, &out); err != nil {
		return nil, nil, err
	}
	if out.Project == nil {
		return nil, nil, errors.New("POST v1/projects: the answer has no project")
	}
	return out.Project, out.Job, nil
}

// UpdateProjectURL is PATCH /v1/projects/{id} with a new database_url ([ours]).
func (c *Client) UpdateProjectURL(ctx context.Context, projectID, databaseURL string) (*Project, error) {
	path, err := projectPath(projectID)
	if err != nil {
		return nil, err
	}
	var out struct {
		Project *Project `json:"project"`
	}
	body := map[string]string{"database_url": databaseURL}
	if err := c.do(ctx, "PATCH", path, nil, body, &out); err != nil {
		return nil, err
	}
	if out.Project == nil {
		return nil, fmt.Errorf("PATCH %s: the answer has no project", path)
	}
	return out.Project, nil
}

// DeleteProject is DELETE /v1/projects/{id} ([ours]); force also deletes its backups.
func (c *Client) DeleteProject(ctx context.Context, projectID string, force bool) error {
	path, err := projectPath(projectID)
	if err != nil {
		return err
	}
	query := url.Values{}
	if force {
		query.Set("force", "true")
	}
	return c.do(ctx, "DELETE", path, query, nil, nil)
}

// GetPitr is GET …/pitr ([ours]).
func (c *Client) GetPitr(ctx context.Context, projectID string) (*Pitr, error) {
	path, err := projectPath(projectID, "pitr")
	if err != nil {
		return nil, err
	}
	var out struct {
		Pitr *Pitr `json:"pitr"`
	}
	if err := c.do(ctx, "GET", path, nil, nil, &out); err != nil {
		return nil, err
	}
	if out.Pitr == nil {
		return nil, fmt.Errorf("GET %s: the answer has no pitr", path)
	}
	return out.Pitr, nil
}

// PutPitr is PUT …/pitr ([ours]): the status, or the job that turns it on.
func (c *Client) PutPitr(ctx context.Context, projectID string, enabled bool) (*Pitr, *Job, error) {
	path, err := projectPath(projectID, "pitr")
	if err != nil {
		return nil, nil, err
	}
	var out struct {
		Pitr *Pitr `json:"pitr"`
		Job  *Job  `json:"job"`
	}
	if err := c.do(ctx, "PUT", path, nil, map[string]bool{"enabled": enabled}, &out); err != nil {
		return nil, nil, err
	}
	return out.Pitr, out.Job, nil
}

// ---------------------------------------------------------------- restore points

// ListRestorePoints is GET …/restore-points: every restore point of the project, in one call.
func (c *Client) ListRestorePoints(ctx context.Context, projectID string) ([]RestorePoint, error) {
	path, err := projectPath(projectID, "restore-points")
	if err != nil {
		return nil, err
	}
	var out struct {
		RestorePoints []RestorePoint `json:"restore_points"`
	}
	err = c.do(ctx, "GET", path, nil, nil, &out)
	return out.RestorePoints, err
}

// CreateRestorePoint is POST …/restore-points.
func (c *Client) CreateRestorePoint(ctx context.Context, projectID string, request CreateRestorePoint) (*RestorePoint, error) {
	path, err := projectPath(projectID, "restore-points")
	if err != nil {
		return nil, err
	}
	var out struct {
		RestorePoint *RestorePoint `json:"restore_point"`
	}
	if err := c.do(ctx, "POST", path, nil, request, &out); err != nil {
		return nil, err
	}
	if out.RestorePoint == nil {
		return nil, fmt.Errorf("POST %s: the answer has no restore_point", path)
	}
	return out.RestorePoint, nil
}

// DeleteRestorePoint is DELETE …/restore-points/{id}; the backup stays.
func (c *Client) DeleteRestorePoint(ctx context.Context, projectID, restorePointID string) error {
	id, err := segment(restorePointID)
	if err != nil {
		return err
	}
	path, err := projectPath(projectID, "restore-points", id)
	if err != nil {
		return err
	}
	return c.do(ctx, "DELETE", path, nil, nil, nil)
}

// ---------------------------------------------------------------- backups

// ListBackups is GET …/backups.
func (c *Client) ListBackups(ctx context.Context, projectID string) ([]Backup, error) {
	path, err := projectPath(projectID, "backups")
	if err != nil {
		return nil, err
	}
	var out struct {
		Backups []Backup `json:"backups"`
	}
	err = c.do(ctx, "GET", path, nil, nil, &out)
	return out.Backups, err
}

// CreateBackup is POST …/backups: the job that takes it.
func (c *Client) CreateBackup(ctx context.Context, projectID, label string) (*Job, error) {
	path, err := projectPath(projectID, "backups")
	if err != nil {
		return nil, err
	}
	body := map[string]string{}
	if label != "" {
		body["label"] = label
	}
	return c.jobOf(ctx, "POST", path, nil, body)
}

// DeleteBackup is DELETE …/backups/{id} ([ours]); 409 while a restore point pins it.
func (c *Client) DeleteBackup(ctx context.Context, projectID, backupID string) error {
	id, err := segment(backupID)
	if err != nil {
		return err
	}
	path, err := projectPath(projectID, "backups", id)
	if err != nil {
		return err
	}
	return c.do(ctx, "DELETE", path, nil, nil, nil)
}

// ---------------------------------------------------------------- restores, previews

// CreateRestore is POST …/restores: the job that restores.
func (c *Client) CreateRestore(ctx context.Context, projectID string, request CreateRestore) (*Job, error) {
	path, err := projectPath(projectID, "restores")
	if err != nil {
		return nil, err
	}
	if request.TargetKind == "" {
		request.TargetKind = "new_preview"
	}
	return c.jobOf(ctx, "POST", path, nil, request)
}

// ListPreviews is GET …/preview-databases.
func (c *Client) ListPreviews(ctx context.Context, projectID string) ([]PreviewDatabase, error) {
	path, err := projectPath(projectID, "preview-databases")
	if err != nil {
		return nil, err
	}
	var out struct {
		Previews []PreviewDatabase `json:"preview_databases"`
	}
	err = c.do(ctx, "GET", path, nil, nil, &out)
	return out.Previews, err
}

// DeletePreview is DELETE /v1/preview-databases/{id}: the job that drops it.
func (c *Client) DeletePreview(ctx context.Context, previewID string) (*Job, error) {
	id, err := segment(previewID)
	if err != nil {
		return nil, err
	}
	return c.jobOf(ctx, "DELETE", "v1/preview-databases/"+id, nil, nil)
}

// ---------------------------------------------------------------- jobs

// GetJob is GET /v1/jobs/{id}.
func (c *Client) GetJob(ctx context.Context, jobID string) (*Job, error) {
	id, err := segment(jobID)
	if err != nil {
		return nil, err
	}
	return c.jobOf(ctx, "GET", "v1/jobs/"+id, nil, nil)
}

// ListJobs is GET …/jobs?limit=N, newest first.
func (c *Client) ListJobs(ctx context.Context, projectID string, limit int) ([]Job, error) {
	path, err := projectPath(projectID, "jobs")
	if err != nil {
		return nil, err
	}
	query := url.Values{}
	if limit > 0 {
		query.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Jobs []Job `json:"jobs"`
	}
	err = c.do(ctx, "GET", path, query, nil, &out)
	return out.Jobs, err
}

func (c *Client) jobOf(ctx context.Context, method, path string, query url.Values, body any) (*Job, error) {
	var out struct {
		Job *Job `json:"job"`
	}
	if err := c.do(ctx, method, path, query, body, &out); err != nil {
		return nil, err
	}
	if out.Job == nil {
		return nil, fmt.Errorf("%s %s: the answer has no job", method, path)
	}
	return out.Job, nil
}

// JobFailedError is a job that ended failed: its error and its output's tail.
type JobFailedError struct{ Job *Job }

func (e *JobFailedError) Error() string {
	job := e.Job
	var b strings.Builder
	fmt.Fprintf(&b, "job %s (%s) failed after %d attempt(s)", job.ID, job.Type, job.Attempts)
	if job.RetryClassification != nil {
		fmt.Fprintf(&b, " [%s]", *job.RetryClassification)
	}
	if job.Error != nil && *job.Error != "" {
		fmt.Fprintf(&b, ": %s", *job.Error)
	}
	if job.LastExitCode != nil {
		fmt.Fprintf(&b, "\nexit code %d", *job.LastExitCode)
	}
	for _, output := range []struct {
		name string
		text *string
	}{{"stderr", job.LastStderr}, {"stdout", job.LastStdout}} {
		if output.text != nil && strings.TrimSpace(*output.text) != "" {
			fmt.Fprintf(&b, "\n%s (last lines):\n%s", output.name, Tail(*output.text, 20))
		}
	}
	return b.String()
}

// Tail is the last n lines of text.
func Tail(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitForJob polls the job until it ends (or ctx is done: a create timeout), calling
// onUpdate whenever its state, attempts or progress changed. A failed job is a
// *JobFailedError.
func (c *Client) WaitForJob(ctx context.Context, jobID string, onUpdate func(*Job)) (*Job, error) {
	interval := c.cfg.PollStart
	seen := ""
	state := "unknown"
	for {
		job, err := c.GetJob(ctx, jobID)
		if err != nil {
			if ctx.Err() != nil {
				// the timeout struck mid-call: say which job goes on, as below
				return nil, fmt.Errorf("job %s is still %s: %w (it goes on on the server; see `capy jobs get %s`)", jobID, state, ctx.Err(), jobID)
			}
			return nil, err
		}
		state = job.State
		if onUpdate != nil {
			now := fmt.Sprintf("%s/%d/%v", job.State, job.Attempts, progressText(job.Progress))
			if now != seen {
				seen = now
				onUpdate(job)
			}
		}
		switch job.State {
		case JobCompleted:
			return job, nil
		case JobFailed:
			return job, &JobFailedError{Job: job}
		}
		timer := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			timer.Stop()
			return job, fmt.Errorf("job %s is still %s: %w (it goes on on the server; see `capy jobs get %s`)", job.ID, job.State, ctx.Err(), job.ID)
		case <-timer.C:
		}
		interval = min(interval*3/2, c.cfg.PollCap)
	}
}

func progressText(p *JobProgress) string {
	if p == nil {
		return ""
	}
	text := p.Step
	if p.BytesDone != nil {
		text += fmt.Sprintf(" %d", *p.BytesDone)
		if p.BytesTotal != nil {
			text += fmt.Sprintf("/%d", *p.BytesTotal)
		}
	}
	return text
}

// ProgressText says where a running job is, for a log line.
func ProgressText(job *Job) string {
	text := fmt.Sprintf("job %s %s (attempt %d/%d)", job.ID, job.State, job.Attempts, job.MaxAttempts)
	if p := progressText(job.Progress); p != "" {
		text += ": " + p
	}
	return text
}
