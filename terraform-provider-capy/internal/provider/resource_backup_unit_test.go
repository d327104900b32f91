package provider

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

// backupAPI is a capy serve that takes backups whose verification passes or fails as
// told, and refuses (or takes) restore points; it records the calls that change things.
type backupAPI struct {
	verifyFails      bool
	refuseRestorePts bool
	mu               sync.Mutex
	calls            []string
}

func (a *backupAPI) record(call string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, call)
}

func (a *backupAPI) called(call string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, c := range a.calls {
		if c == call {
			n++
		}
	}
	return n
}

func (a *backupAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	answer := func(status int, body any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	}
	job := func(id, typ, state string, result map[string]any, errText *string) map[string]any {
		return map[string]any{"job": map[string]any{"id": id, "type": typ, "state": state, "attempts": 1, "max_attempts": 3,
			"result": result, "error": errText}}
	}
	call := r.Method + " " + r.URL.Path
	switch call {
	case "GET /v1/me":
		answer(200, map[string]any{"server": map[string]any{"name": "pulumi-capy", "version": "test"}})
	case "POST /v1/projects/prj_1/backups":
		a.record(call)
		answer(202, job("job_backup", "project.backup", "pending", nil, nil))
	case "GET /v1/jobs/job_backup":
		answer(200, job("job_backup", "project.backup", "completed",
			map[string]any{"backup_id": "bk_1", "backup_key": "key-1", "verify_job_id": "job_verify"}, nil))
	case "GET /v1/jobs/job_verify":
		if a.verifyFails {
			failure := "checksum mismatch: blob key-1"
			answer(200, job("job_verify", "backup.verify", "failed", nil, &failure))
		} else {
			answer(200, job("job_verify", "backup.verify", "completed", map[string]any{"backup_id": "bk_1"}, nil))
		}
	case "GET /v1/projects/prj_1/backups":
		state := "verified"
		if a.verifyFails {
			state = "failed"
		}
		answer(200, map[string]any{"backups": []map[string]any{{"id": "bk_1", "project_id": "prj_1", "backup_key": "key-1",
			"state": "completed", "verification_state": state, "size_bytes": 4096}}})
	case "POST /v1/projects/prj_1/restore-points":
		a.record(call)
		if a.refuseRestorePts {
			answer(400, map[string]any{"error": "label: refused by the test server"})
			return
		}
		answer(201, map[string]any{"restore_point": map[string]any{"id": "rp_1", "project_id": "prj_1", "label": "x",
			"kind": "backup", "backup_id": "bk_1", "backup_key": "key-1", "state": "active"}})
	case "DELETE /v1/projects/prj_1/backups/bk_1":
		a.record(call)
		answer(200, map[string]any{"deleted": true})
	default:
		answer(404, map[string]any{"error": "no route " + call})
	}
}

func unitData(t *testing.T, api http.Handler) *providerData {
	t.Helper()
	server := httptest.NewServer(api)
	t.Cleanup(server.Close)
	c, err := client.New(client.Config{BaseURL: server.URL, APIKey: "capy_live_unit", MaxAttempts: 1, PollStart: 1, PollCap: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &providerData{client: c, lists: newListCache()}
}

// createWith runs a resource's Create over a plan of model.
func createWith(t *testing.T, r resource.Resource, model any) resource.CreateResponse {
	t.Helper()
	ctx := context.Background()
	var schemaResp resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &schemaResp)
	null := tftypes.NewValue(schemaResp.Schema.Type().TerraformType(ctx), nil)
	plan := tfsdk.Plan{Schema: schemaResp.Schema, Raw: null}
	if diags := plan.Set(ctx, model); diags.HasError() {
		t.Fatalf("plan: %v", diags)
	}
	resp := resource.CreateResponse{State: tfsdk.State{Schema: schemaResp.Schema, Raw: null}}
	r.Create(ctx, resource.CreateRequest{Plan: plan}, &resp)
	return resp
}

func freshPointPlan() *restorePointModel {
	return &restorePointModel{
		ID: types.StringUnknown(), ProjectID: types.StringValue("prj_1"), Label: types.StringValue("x"),
		Kind: types.StringValue("backup"), BackupKey: types.StringUnknown(), PitrTime: types.StringUnknown(),
		Note: types.StringNull(), State: types.StringUnknown(), BackupID: types.StringUnknown(), CreatedAt: types.StringUnknown(),
	}
}

func diagnosticsText(resp resource.CreateResponse) string {
	var b strings.Builder
	for _, d := range resp.Diagnostics {
		b.WriteString(d.Summary() + ": " + d.Detail() + "\n")
	}
	return b.String()
}

// A restore point whose creation fails after its fresh backup was taken removes that
// backup, and says so (as the Pulumi resource's _undo_backup does).
func TestRestorePointCreateFailureRemovesItsBackup(t *testing.T) {
	api := &backupAPI{refuseRestorePts: true}
	r := &restorePointResource{data: unitData(t, api)}
	resp := createWith(t, r, freshPointPlan())
	text := diagnosticsText(resp)
	if !resp.Diagnostics.HasError() || !strings.Contains(text, "refused by the test server") || !strings.Contains(text, "key-1 taken for it was removed") {
		t.Fatalf("want the server's refusal and the backup's removal, got:\n%s", text)
	}
	if api.called("DELETE /v1/projects/prj_1/backups/bk_1") != 1 {
		t.Errorf("the backup taken for the restore point was not deleted: %v", api.calls)
	}
	if !resp.State.Raw.IsNull() {
		t.Error("a failed create left state")
	}
}

// A fresh backup whose verification fails is no restore point's backup: the create
// fails with the verification's error, no restore point is made, the backup is removed.
func TestRestorePointUnverifiedBackupIsRemoved(t *testing.T) {
	api := &backupAPI{verifyFails: true}
	r := &restorePointResource{data: unitData(t, api)}
	resp := createWith(t, r, freshPointPlan())
	text := diagnosticsText(resp)
	if !strings.Contains(text, "checksum mismatch") || !strings.Contains(text, "was removed") {
		t.Fatalf("want the verification's error and the backup's removal, got:\n%s", text)
	}
	if api.called("POST /v1/projects/prj_1/restore-points") != 0 || api.called("DELETE /v1/projects/prj_1/backups/bk_1") != 1 {
		t.Errorf("calls: %v", api.calls)
	}
}

// A restore point over a verified fresh backup records it.
func TestRestorePointCreateTakesAVerifiedBackup(t *testing.T) {
	api := &backupAPI{}
	r := &restorePointResource{data: unitData(t, api)}
	resp := createWith(t, r, freshPointPlan())
	if resp.Diagnostics.HasError() {
		t.Fatal(diagnosticsText(resp))
	}
	var got restorePointModel
	resp.State.Get(context.Background(), &got)
	if got.ID.ValueString() != "rp_1" || got.BackupKey.ValueString() != "key-1" || got.State.ValueString() != "active" {
		t.Errorf("state: %+v", got)
	}
}

// capy_backup does what the Pulumi Backup does when verification fails: the create
// fails with the verification's error; the backup stays (listed as failed), and the
// error says so.
func TestBackupCreateFailsWhenVerificationFails(t *testing.T) {
	api := &backupAPI{verifyFails: true}
	r := &backupResource{data: unitData(t, api)}
	plan := &backupModel{
		ID: types.StringUnknown(), ProjectID: types.StringValue("prj_1"), Label: types.StringNull(), BackupKey: types.StringUnknown(),
		SizeBytes: types.Int64Unknown(), State: types.StringUnknown(), VerificationState: types.StringUnknown(),
		VerificationError: types.StringUnknown(), VerifiedAt: types.StringUnknown(), CreatedAt: types.StringUnknown(),
	}
	resp := createWith(t, r, plan)
	text := diagnosticsText(resp)
	if !strings.Contains(text, "checksum mismatch") || !strings.Contains(text, "key-1 stays on the server") {
		t.Fatalf("want the verification's error and where the backup is, got:\n%s", text)
	}
	if api.called("DELETE /v1/projects/prj_1/backups/bk_1") != 0 || !resp.State.Raw.IsNull() {
		t.Errorf("calls %v, state %v", api.calls, resp.State.Raw)
	}
}
