package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/tfsdk"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-go/tftypes"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

// restorePointServer answers GET /v1/projects/prj_1/restore-points with points, slowly
// (so concurrent reads overlap), counting the calls; any other project is a 404.
func restorePointServer(t *testing.T, points []client.RestorePoint, calls *atomic.Int32) *restorePointResource {
	t.Helper()
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/projects/prj_1/restore-points" {
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"detail":"project not found"}`))
			return
		}
		calls.Add(1)
		time.Sleep(100 * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"restore_points": points})
	}))
	t.Cleanup(server.Close)
	c, err := client.New(client.Config{BaseURL: server.URL, APIKey: "capy_live_unit", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return &restorePointResource{data: &providerData{client: c, lists: newListCache()}}
}

// readPoint runs the resource's Read over a state holding only project_id and id.
func readPoint(t *testing.T, r *restorePointResource, projectID, id string) (*restorePointModel, resource.ReadResponse) {
	t.Helper()
	ctx := context.Background()
	var schemaResp resource.SchemaResponse
	r.Schema(ctx, resource.SchemaRequest{}, &schemaResp)
	state := tfsdk.State{Schema: schemaResp.Schema, Raw: tftypes.NewValue(schemaResp.Schema.Type().TerraformType(ctx), nil)}
	model := restorePointModel{
		ID: types.StringValue(id), ProjectID: types.StringValue(projectID), Label: types.StringNull(), Kind: types.StringNull(),
		BackupKey: types.StringNull(), PitrTime: types.StringNull(), Note: types.StringNull(), State: types.StringNull(),
		BackupID: types.StringNull(), CreatedAt: types.StringNull(),
	}
	if diags := state.Set(ctx, &model); diags.HasError() {
		t.Fatalf("state: %v", diags)
	}
	resp := resource.ReadResponse{State: state}
	r.Read(ctx, resource.ReadRequest{State: state}, &resp)
	if resp.Diagnostics.HasError() || resp.State.Raw.IsNull() {
		return nil, resp
	}
	var out restorePointModel
	if diags := resp.State.Get(ctx, &out); diags.HasError() {
		t.Fatalf("read state: %v", diags)
	}
	return &out, resp
}

// Terraform reads each restore point in its own RPC, concurrently: a refresh of many
// points of one project makes one list call, and each gets its own point.
func TestRestorePointReadsShareOneListCall(t *testing.T) {
	const n = 60
	points := make([]client.RestorePoint, n)
	for i := range points {
		key := fmt.Sprintf("bk-%d", i)
		points[i] = client.RestorePoint{ID: fmt.Sprintf("rp_%d", i), ProjectID: "prj_1", Label: fmt.Sprintf("label-%d", i),
			Kind: "backup", BackupKey: &key, State: "active"}
	}
	var calls atomic.Int32
	r := restorePointServer(t, points, &calls)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			got, resp := readPoint(t, r, "prj_1", fmt.Sprintf("rp_%d", i))
			switch {
			case got == nil:
				errs <- fmt.Errorf("rp_%d: not read: %v", i, resp.Diagnostics)
			case got.Label.ValueString() != fmt.Sprintf("label-%d", i) || got.BackupKey.ValueString() != fmt.Sprintf("bk-%d", i):
				errs <- fmt.Errorf("rp_%d: read %s / %s", i, got.Label, got.BackupKey)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("%d concurrent reads listed the project %d times, want once", n, got)
	}
}

// A restore point gone from the listing, or whose project is gone, leaves state
// (the next plan creates it again): never an error.
func TestRestorePointReadRemovesWhatIsGone(t *testing.T) {
	var calls atomic.Int32
	r := restorePointServer(t, nil, &calls)
	for _, project := range []string{"prj_1", "prj_gone"} {
		got, resp := readPoint(t, r, project, "rp_missing")
		if got != nil || resp.Diagnostics.HasError() || !resp.State.Raw.IsNull() {
			t.Errorf("project %s: want the resource removed without error, got %v, %v", project, got, resp.Diagnostics)
		}
	}
}

func TestSplitScopedID(t *testing.T) {
	project, id, err := splitScopedID("prj_1/rp_2", "RESTORE_POINT_ID")
	if err != nil || project != "prj_1" || id != "rp_2" {
		t.Errorf("got %q %q %v", project, id, err)
	}
	for _, bad := range []string{"", "rp_2", "prj_1/", "/rp_2", "a/b/c"} {
		if _, _, err := splitScopedID(bad, "RESTORE_POINT_ID"); err == nil {
			t.Errorf("%q: want an error naming PROJECT_ID/RESTORE_POINT_ID", bad)
		}
	}
}

// The same instant spelled differently is no change, in a plan and in a read.
func TestSameInstantKeepsTheUsersSpelling(t *testing.T) {
	ctx := context.Background()
	prior := types.StringValue("2026-01-01T01:00:00+01:00")
	req := planmodifier.StringRequest{StateValue: prior, PlanValue: types.StringValue("2026-01-01T00:00:00Z")}
	resp := planmodifier.StringResponse{PlanValue: req.PlanValue}
	sameInstantAsState{}.PlanModifyString(ctx, req, &resp)
	if resp.PlanValue != prior {
		t.Errorf("same instant planned as %s, want the state's %s", resp.PlanValue, prior)
	}
	req.PlanValue = types.StringValue("2026-01-01T00:00:01Z")
	resp.PlanValue = req.PlanValue
	sameInstantAsState{}.PlanModifyString(ctx, req, &resp)
	if resp.PlanValue != req.PlanValue {
		t.Errorf("another instant planned as %s", resp.PlanValue)
	}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := keepInstant(prior, &at); got != prior {
		t.Errorf("keepInstant: %s, want %s", got, prior)
	}
	later := at.Add(time.Second)
	if got := keepInstant(prior, &later); got.ValueString() != "2026-01-01T00:00:01Z" {
		t.Errorf("keepInstant of another instant: %s", got)
	}
}
