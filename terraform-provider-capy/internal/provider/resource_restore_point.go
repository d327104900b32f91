package provider

import (
	"context"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

var (
	_ resource.ResourceWithConfigure      = (*restorePointResource)(nil)
	_ resource.ResourceWithImportState    = (*restorePointResource)(nil)
	_ resource.ResourceWithValidateConfig = (*restorePointResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*restorePointResource)(nil)
)

// NewRestorePointResource is capy_restore_point: a name pinned to a backup (or, with
// PITR, to a moment). Any argument change replaces it; destroy removes the restore
// point, never its backup.
func NewRestorePointResource() resource.Resource { return &restorePointResource{} }

type restorePointResource struct{ data *providerData }

type restorePointModel struct {
	ID        types.String `tfsdk:"id"`
	ProjectID types.String `tfsdk:"project_id"`
	Label     types.String `tfsdk:"label"`
	Kind      types.String `tfsdk:"kind"`
	BackupKey types.String `tfsdk:"backup_key"`
	PitrTime  types.String `tfsdk:"pitr_time"`
	Note      types.String `tfsdk:"note"`
	State     types.String `tfsdk:"state"`
	BackupID  types.String `tfsdk:"backup_id"`
	CreatedAt types.String `tfsdk:"created_at"`
}

func (r *restorePointResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_restore_point"
}

func (r *restorePointResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	replace := []planmodifier.String{stringplanmodifier.RequiresReplace()}
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	attr := func(text string) schema.StringAttribute {
		return schema.StringAttribute{Description: text, MarkdownDescription: text}
	}
	projectID := attr("Id of the project whose database the restore point pins.")
	projectID.Required, projectID.PlanModifiers = true, replace
	label := attr(fmt.Sprintf("Name of the restore point, 1 to %d characters (e.g. `before-migration-42`).", labelMax))
	label.Required, label.PlanModifiers = true, replace
	kind := attr("`backup` (default): pinned to a backup; `pitr`: pinned to a moment (`pitr_time`) of a project with point-in-time recovery on.")
	kind.Optional, kind.Computed = true, true
	kind.Default = stringdefault.StaticString("backup")
	kind.Validators = []validator.String{stringvalidator.OneOf("backup", "pitr")}
	kind.PlanModifiers = replace
	backupKey := attr("Kind `backup` only: the key of the backup to pin. Unset, creating the restore point takes a fresh backup " +
		"of the project and waits until it is verified; this attribute then holds that backup's key.")
	backupKey.Optional, backupKey.Computed = true, true
	backupKey.PlanModifiers = []planmodifier.String{stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplaceIfConfigured()}
	pitrTime := attr("Kind `pitr` only: the moment to pin, an RFC 3339 timestamp not in the future (e.g. `2026-01-31T09:30:00Z`). " +
		"Unset, the server pins the moment of creation. A timestamp naming the same instant in another spelling is no change.")
	pitrTime.Optional, pitrTime.Computed = true, true
	pitrTime.PlanModifiers = []planmodifier.String{sameInstantAsState{}, stringplanmodifier.UseStateForUnknown(), stringplanmodifier.RequiresReplaceIfConfigured()}
	note := attr(fmt.Sprintf("Free text kept with the restore point, at most %d characters.", noteMax))
	note.Optional, note.PlanModifiers = true, replace
	id := attr("Id of the restore point (`rp_…`).")
	id.Computed, id.PlanModifiers = true, keep
	state := attr("`active`, or `expired` once its backup expired (or its moment left the PITR window); " +
		"an expired restore point is replaced by the next apply.")
	state.Computed, state.PlanModifiers = true, keep
	backupID := attr("Id of the pinned backup.")
	backupID.Computed, backupID.PlanModifiers = true, keep
	createdAt := attr("When the restore point was created (RFC 3339, UTC).")
	createdAt.Computed, createdAt.PlanModifiers = true, keep

	description := ("A restore point: a named backup (or, with PITR, a moment) of a project's database to restore later, " +
		"e.g. \"before this migration\". Without `backup_key` it takes a fresh, verified backup. Any argument change replaces it; " +
		"destroy removes the restore point, never its backup. Import with `PROJECT_ID/RESTORE_POINT_ID`.")
	resp.Schema = schema.Schema{
		Description:         description,
		MarkdownDescription: description,
		Attributes: map[string]schema.Attribute{
			"id": id, "project_id": projectID, "label": label, "kind": kind, "backup_key": backupKey,
			"pitr_time": pitrTime, "note": note, "state": state, "backup_id": backupID, "created_at": createdAt,
		},
	}
}

func (r *restorePointResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if data := providerDataOf(req.ProviderData, &resp.Diagnostics); data != nil {
		r.data = data
	}
}

// checkPastInstant parses an RFC 3339 timestamp that must not be in the future.
func checkPastInstant(value types.String, attribute string, now time.Time, diags interface {
	AddAttributeError(path.Path, string, string)
}) {
	if value.IsNull() || value.IsUnknown() {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, value.ValueString())
	if err != nil {
		diags.AddAttributeError(path.Root(attribute), "Invalid "+attribute,
			fmt.Sprintf("%s must be an RFC 3339 timestamp such as 2026-01-31T09:30:00Z, got %q.", attribute, value.ValueString()))
		return
	}
	if t.After(now) {
		diags.AddAttributeError(path.Root(attribute), "Invalid "+attribute,
			fmt.Sprintf("%s %s is in the future; a restore point pins a moment that has passed.", attribute, value.ValueString()))
	}
}

func (r *restorePointResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var config restorePointModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &config)...)
	if resp.Diagnostics.HasError() {
		return
	}
	checkLabel(config.Label, "label", &resp.Diagnostics)
	if !config.Note.IsNull() && !config.Note.IsUnknown() {
		note := config.Note.ValueString()
		if n := utf8.RuneCountInString(note); n > noteMax {
			resp.Diagnostics.AddAttributeError(path.Root("note"), "Invalid note",
				fmt.Sprintf("note must be at most %d characters long, got %d.", noteMax, n))
		} else if strings.TrimSpace(note) == "" {
			resp.Diagnostics.AddAttributeError(path.Root("note"), "Invalid note",
				"note must not be empty or blank; leave it unset for no note.")
		} else if strings.TrimSpace(note) != note {
			resp.Diagnostics.AddAttributeError(path.Root("note"), "Invalid note",
				"note must not begin or end with whitespace (the API strips it).")
		}
	}
	if !config.BackupKey.IsNull() && !config.BackupKey.IsUnknown() && strings.TrimSpace(config.BackupKey.ValueString()) == "" {
		resp.Diagnostics.AddAttributeError(path.Root("backup_key"), "Invalid backup_key",
			"backup_key must not be empty; leave it unset to take a fresh backup.")
	}
	if config.Kind.IsUnknown() {
		return // which of backup_key and pitr_time belongs is known at apply
	}
	kind := config.Kind.ValueString()
	if config.Kind.IsNull() {
		kind = "backup"
	}
	switch kind {
	case "pitr":
		if !config.BackupKey.IsNull() && !config.BackupKey.IsUnknown() {
			resp.Diagnostics.AddAttributeError(path.Root("backup_key"), "backup_key is only for kind \"backup\"",
				"backup_key pins a backup; a restore point of kind \"pitr\" pins a moment (pitr_time). Remove backup_key or set kind = \"backup\".")
		}
		checkPastInstant(config.PitrTime, "pitr_time", time.Now(), &resp.Diagnostics)
	case "backup":
		if !config.PitrTime.IsNull() && !config.PitrTime.IsUnknown() {
			resp.Diagnostics.AddAttributeError(path.Root("pitr_time"), "pitr_time is only for kind \"pitr\"",
				"pitr_time pins a moment; a restore point of kind \"backup\" pins a backup. Remove pitr_time or set kind = \"pitr\".")
		}
	}
}

func (r *restorePointResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	replaceWhenExpired(ctx, req, resp)
}

func (r *restorePointResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan restorePointModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c := r.data.client
	projectID, label := plan.ProjectID.ValueString(), plan.Label.ValueString()
	r.data.lists.forget(projectID, "restore-points", "backups")
	ctx, cancel := context.WithTimeout(ctx, backupTimeout)
	defer cancel()

	request := client.CreateRestorePoint{Label: label, Kind: plan.Kind.ValueString(), Note: plan.Note.ValueString()}
	if !plan.PitrTime.IsNull() && !plan.PitrTime.IsUnknown() {
		t, err := time.Parse(time.RFC3339Nano, plan.PitrTime.ValueString())
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("pitr_time"), "Invalid pitr_time", err.Error())
			return
		}
		request.PitrTime = &t
	}
	var taken *takenBackup
	if !plan.BackupKey.IsNull() && !plan.BackupKey.IsUnknown() {
		request.BackupKey = plan.BackupKey.ValueString()
	} else if request.Kind == "backup" {
		tflog.Info(ctx, "restore point "+label+": taking a fresh backup")
		var err error
		taken, err = takeVerifiedBackup(ctx, c, projectID, label, "restore point "+label)
		if err != nil {
			resp.Diagnostics.AddError("Could not take the restore point's backup",
				fmt.Sprintf("restore point %s: %v%s", label, err, removeTakenBackup(ctx, c, projectID, taken)))
			return
		}
		request.BackupKey = taken.Key
	}
	point, err := c.CreateRestorePoint(ctx, projectID, request)
	if err != nil {
		resp.Diagnostics.AddError("Could not create restore point",
			fmt.Sprintf("restore point %s: %v%s", label, err, removeTakenBackup(ctx, c, projectID, taken)))
		return
	}
	tflog.Info(ctx, "created restore point", map[string]any{"id": point.ID, "label": point.Label})
	plan.fill(point)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

// fill sets what the server says of the point; a timestamp naming the instant already
// in state keeps its spelling.
func (m *restorePointModel) fill(point *client.RestorePoint) {
	m.ID = types.StringValue(point.ID)
	m.ProjectID = types.StringValue(point.ProjectID)
	m.Label = types.StringValue(point.Label)
	m.Kind = types.StringValue(point.Kind)
	m.Note = types.StringPointerValue(point.Note)
	m.BackupKey = types.StringPointerValue(point.BackupKey)
	m.BackupID = types.StringPointerValue(point.BackupID)
	m.PitrTime = keepInstant(m.PitrTime, point.PitrTime)
	m.State = types.StringValue(point.State)
	m.CreatedAt = instantString(point.CreatedAt)
}

func (r *restorePointResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state restorePointModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	projectID, id := state.ProjectID.ValueString(), state.ID.ValueString()
	point, err := findListed(ctx, r.data.lists, "restore-points", projectID, id, r.data.client.ListRestorePoints,
		func(p *client.RestorePoint) string { return p.ID })
	if err != nil {
		resp.Diagnostics.AddError("Could not read restore point", fmt.Sprintf("restore point %s: %v", id, err))
		return
	}
	if point == nil {
		tflog.Info(ctx, "the restore point (or its project) is gone: removing it from state", map[string]any{"id": id, "project_id": projectID})
		resp.State.RemoveResource(ctx)
		return
	}
	state.fill(point)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update is never called with a change to make: every argument replaces the restore
// point, and every other attribute is computed.
func (r *restorePointResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	resp.Diagnostics.AddError("Restore points are not updated in place",
		"Every argument of capy_restore_point replaces it; an update in place is a bug of the provider, please report it.")
}

func (r *restorePointResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state restorePointModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	projectID, id := state.ProjectID.ValueString(), state.ID.ValueString()
	r.data.lists.forget(projectID, "restore-points", "backups")
	err := r.data.client.DeleteRestorePoint(ctx, projectID, id)
	if err != nil && !client.IsNotFound(err) {
		resp.Diagnostics.AddError("Could not delete restore point", fmt.Sprintf("restore point %s: %v", id, err))
	}
}

func (r *restorePointResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importScopedID(ctx, req, resp, "RESTORE_POINT_ID")
}
