package provider

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

// backupTimeout bounds taking a backup and verifying it, as the Pulumi package's
// BACKUP_TIMEOUT does; the job goes on on the server past it.
const backupTimeout = time.Hour

// labelMax is the longest label the API takes (pulumi_capy/api/models.py: LABEL_MAX).
const labelMax = 200

// noteMax is the longest note of a restore point, in characters.
const noteMax = 2000

// takenBackup is a backup a Create took: its id and key, known once its job completed.
type takenBackup struct {
	ID, Key string
}

// takeVerifiedBackup backs up the project and waits for the backup and then its
// verification, logging their progress. A backup whose job completed is returned even
// when its verification failed (with the error), so the caller can remove it.
func takeVerifiedBackup(ctx context.Context, c *client.Client, projectID, label, what string) (*takenBackup, error) {
	job, err := c.CreateBackup(ctx, projectID, label)
	if err != nil {
		return nil, err
	}
	tflog.Info(ctx, what+": backup job queued", map[string]any{"job_id": job.ID})
	done, err := c.WaitForJob(ctx, job.ID, logJob(ctx, what+": backup"))
	if err != nil {
		return nil, err
	}
	taken := &takenBackup{ID: done.ResultString("backup_id"), Key: done.ResultString("backup_key")}
	if taken.Key == "" {
		return nil, fmt.Errorf("backup job %s completed without a backup_key in its result", job.ID)
	}
	if verify := done.ResultString("verify_job_id"); verify != "" {
		if _, err := c.WaitForJob(ctx, verify, logJob(ctx, what+": verification")); err != nil {
			return taken, fmt.Errorf("backup %s was taken, but its verification did not pass: %w", taken.Key, err)
		}
	}
	return taken, nil
}

func logJob(ctx context.Context, what string) func(*client.Job) {
	return func(job *client.Job) { tflog.Info(ctx, what+": "+client.ProgressText(job)) }
}

// removeTakenBackup deletes a backup that a failed Create took, so that nothing is left
// behind unknown to Terraform; it returns a sentence for the error's detail.
func removeTakenBackup(ctx context.Context, c *client.Client, projectID string, taken *takenBackup) string {
	if taken == nil {
		return ""
	}
	// the caller's context may be the one that ran out: a short one of its own
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	server, err := c.IsCapyServer(ctx)
	if err == nil && !server {
		return fmt.Sprintf("\n\nThe backup %s taken for it stays: hosted CapyDB's API cannot delete backups (its retention removes it).", taken.Key)
	}
	id := taken.ID
	if id == "" {
		backups, err := c.ListBackups(ctx, projectID)
		if err != nil {
			return fmt.Sprintf("\n\nThe backup %s taken for it could not be removed: %v", taken.Key, err)
		}
		for _, backup := range backups {
			if backup.BackupKey == taken.Key {
				id = backup.ID
			}
		}
	}
	if id == "" {
		return fmt.Sprintf("\n\nThe backup %s taken for it is not listed any more.", taken.Key)
	}
	if err := c.DeleteBackup(ctx, projectID, id); err != nil && !client.IsNotFound(err) {
		return fmt.Sprintf("\n\nThe backup %s taken for it could not be removed: %v", taken.Key, err)
	}
	tflog.Info(ctx, "removed the backup taken for the failed create", map[string]any{"backup_key": taken.Key})
	return fmt.Sprintf("\n\nThe backup %s taken for it was removed.", taken.Key)
}

// checkLabel is the API's rule for a label: 1 to labelMax characters, and none of
// them surrounding whitespace (the server strips it, and state would differ).
func checkLabel(value types.String, attribute string, diags interface {
	AddAttributeError(path.Path, string, string)
}) {
	if value.IsNull() || value.IsUnknown() {
		return
	}
	label := value.ValueString()
	if n := utf8.RuneCountInString(label); n < 1 || n > labelMax {
		diags.AddAttributeError(path.Root(attribute), "Invalid "+attribute,
			fmt.Sprintf("%s must be 1 to %d characters long, got %d.", attribute, labelMax, n))
	} else if strings.TrimSpace(label) != label {
		diags.AddAttributeError(path.Root(attribute), "Invalid "+attribute,
			fmt.Sprintf("%s must not begin or end with whitespace (the API strips it).", attribute))
	}
}

// splitScopedID parses an import id "PROJECT_ID/OBJECT_ID".
func splitScopedID(id, object string) (string, string, error) {
	parts := strings.Split(id, "/")
	if len(parts) != 2 || strings.TrimSpace(parts[0]) == "" || strings.TrimSpace(parts[1]) == "" {
		return "", "", fmt.Errorf("expected an id of the form PROJECT_ID/%s, got %q", object, id)
	}
	return parts[0], parts[1], nil
}

// importScopedID sets project_id and id from "PROJECT_ID/OBJECT_ID"; Read fills the rest.
func importScopedID(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse, object string) {
	projectID, id, err := splitScopedID(req.ID, object)
	if err != nil {
		resp.Diagnostics.AddError("Invalid import id", err.Error())
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project_id"), projectID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), id)...)
}

// instantString is t as state holds it: RFC 3339 in UTC.
func instantString(t *time.Time) types.String {
	if t == nil {
		return types.StringNull()
	}
	return types.StringValue(t.UTC().Format(time.RFC3339Nano))
}

// keepInstant is the server's instant t, written as prior is when prior is the same
// instant (the user's own spelling stays in state).
func keepInstant(prior types.String, t *time.Time) types.String {
	if t == nil {
		return types.StringNull()
	}
	if !prior.IsNull() && !prior.IsUnknown() {
		if was, err := time.Parse(time.RFC3339Nano, prior.ValueString()); err == nil && was.Equal(*t) {
			return prior
		}
	}
	return instantString(t)
}

// sameInstantAsState plans the prior state's spelling of a timestamp when the
// configuration names the same instant ("…Z" and "…+00:00" do not diff).
type sameInstantAsState struct{}

func (sameInstantAsState) Description(context.Context) string {
	return "A timestamp naming the same instant as the one in state is no change."
}

func (m sameInstantAsState) MarkdownDescription(ctx context.Context) string {
	return m.Description(ctx)
}

func (sameInstantAsState) PlanModifyString(_ context.Context, req planmodifier.StringRequest, resp *planmodifier.StringResponse) {
	if req.StateValue.IsNull() || req.StateValue.IsUnknown() || req.PlanValue.IsNull() || req.PlanValue.IsUnknown() {
		return
	}
	planned, err1 := time.Parse(time.RFC3339Nano, req.PlanValue.ValueString())
	prior, err2 := time.Parse(time.RFC3339Nano, req.StateValue.ValueString())
	if err1 == nil && err2 == nil && planned.Equal(prior) {
		resp.PlanValue = req.StateValue
	}
}

// replaceWhenExpired plans a replacement of an object whose prior state says
// state = "expired" (its backup is gone): the planned state becomes unknown, so
// Terraform sees the change, and the path forces the replacement.
func replaceWhenExpired(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return // create or destroy
	}
	var state types.String
	resp.Diagnostics.Append(req.State.GetAttribute(ctx, path.Root("state"), &state)...)
	if resp.Diagnostics.HasError() || state.ValueString() != "expired" {
		return
	}
	resp.Diagnostics.Append(resp.Plan.SetAttribute(ctx, path.Root("state"), types.StringUnknown())...)
	resp.RequiresReplace = append(resp.RequiresReplace, path.Root("state"))
}
