package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

var (
	_ resource.ResourceWithConfigure      = (*backupResource)(nil)
	_ resource.ResourceWithImportState    = (*backupResource)(nil)
	_ resource.ResourceWithValidateConfig = (*backupResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*backupResource)(nil)
)

// NewBackupResource is capy_backup: an on-demand, verified backup of a project's
// database. Any argument change replaces it; destroy deletes it (refused by the server
// while a restore point pins it).
func NewBackupResource() resource.Resource { return &backupResource{} }

type backupResource struct{ data *providerData }

type backupModel struct {
	ID                types.String `tfsdk:"id"`
	ProjectID         types.String `tfsdk:"project_id"`
	Label             types.String `tfsdk:"label"`
	BackupKey         types.String `tfsdk:"backup_key"`
	SizeBytes         types.Int64  `tfsdk:"size_bytes"`
	State             types.String `tfsdk:"state"`
	VerificationState types.String `tfsdk:"verification_state"`
	VerificationError types.String `tfsdk:"verification_error"`
	VerifiedAt        types.String `tfsdk:"verified_at"`
	CreatedAt         types.String `tfsdk:"created_at"`
}

func (r *backupResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_backup"
}

func (r *backupResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	attr := func(text string) schema.StringAttribute {
		return schema.StringAttribute{Description: text, MarkdownDescription: text}
	}
	computed := func(text string) schema.StringAttribute {
		a := attr(text)
		a.Computed, a.PlanModifiers = true, keep
		return a
	}
	projectID := attr("Id of the project whose database is backed up.")
	projectID.Required = true
	projectID.PlanModifiers = []planmodifier.String{stringplanmodifier.RequiresReplace()}
	label := attr(fmt.Sprintf("Name of the backup, 1 to %d characters.", labelMax))
	label.Optional = true
	label.PlanModifiers = []planmodifier.String{stringplanmodifier.RequiresReplace()}
	size := "Size of the database the backup holds, in bytes."
	description := "An on-demand backup of a project's database. Creating it takes the backup and waits until it is " +
		"verified (restored into a throwaway database and checked); a backup whose verification fails fails the apply. " +
		"Any argument change replaces it, as does its expiry. Destroy deletes it; the server refuses while a restore " +
		"point pins it. Import with `PROJECT_ID/BACKUP_ID`."
	resp.Schema = schema.Schema{
		Description:         description,
		MarkdownDescription: description,
		Attributes: map[string]schema.Attribute{
			"id":         computed("Id of the backup (`bk_…`)."),
			"project_id": projectID,
			"label":      label,
			"backup_key": computed("Key of the backup, what `capy_restore_point.backup_key` and `capy_restore.backup_key` take."),
			"size_bytes": schema.Int64Attribute{
				Computed: true, Description: size, MarkdownDescription: size,
				PlanModifiers: []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
			},
			"state":              computed("`completed`, or `expired` once retention removed its blob (the next apply replaces it)."),
			"verification_state": computed("`verified` once a restore of it was checked (`pending` before, `failed` if it did not restore)."),
			"verification_error": computed("Why its verification failed, when it did."),
			"verified_at":        computed("When it was verified (RFC 3339, UTC)."),
			"created_at":         computed("When it was taken (RFC 3339, UTC)."),
		},
	}
}

func (r *backupResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if data := providerDataOf(req.ProviderData, &resp.Diagnostics); data != nil {
		r.data = data
	}
}

func (r *backupResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var config backupModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &config)...)
	if resp.Diagnostics.HasError() {
		return
	}
	checkLabel(config.Label, "label", &resp.Diagnostics)
}

func (r *backupResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	replaceWhenExpired(ctx, req, resp)
}

func (m *backupModel) fill(backup *client.Backup) {
	m.ID = types.StringValue(backup.ID)
	m.ProjectID = types.StringValue(backup.ProjectID)
	m.Label = types.StringPointerValue(backup.Label)
	m.BackupKey = types.StringValue(backup.BackupKey)
	m.SizeBytes = types.Int64PointerValue(backup.SizeBytes)
	m.State = types.StringValue(backup.State)
	m.VerificationState = types.StringValue(backup.VerificationState)
	m.VerificationError = types.StringPointerValue(backup.VerificationError)
	m.VerifiedAt = instantString(backup.VerifiedAt)
	m.CreatedAt = instantString(backup.CreatedAt)
}

func (r *backupResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan backupModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c := r.data.client
	projectID := plan.ProjectID.ValueString()
	r.data.lists.forget(projectID, "backups")
	ctx, cancel := context.WithTimeout(ctx, backupTimeout)
	defer cancel()
	// As the Pulumi package does: a backup whose verification fails fails the create
	// (the backup stays on the server, listed with verification_state "failed").
	taken, err := takeVerifiedBackup(ctx, c, projectID, plan.Label.ValueString(), "backup of project "+projectID)
	if err != nil {
		detail := fmt.Sprintf("backup of project %s: %v", projectID, err)
		if taken != nil {
			detail += fmt.Sprintf("\n\nThe backup %s stays on the server with verification_state \"failed\" "+
				"(capy_backups lists it); `capy backups delete` removes it.", taken.Key)
		}
		resp.Diagnostics.AddError("Could not back up the project", detail)
		return
	}
	backups, err := c.ListBackups(ctx, projectID)
	if err != nil {
		resp.Diagnostics.AddError("Could not read the new backup", fmt.Sprintf("backup %s: %v", taken.Key, err))
		return
	}
	for i := range backups {
		if backups[i].ID == taken.ID || backups[i].BackupKey == taken.Key {
			tflog.Info(ctx, "took backup", map[string]any{"id": backups[i].ID, "backup_key": backups[i].BackupKey})
			plan.fill(&backups[i])
			resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
			return
		}
	}
	resp.Diagnostics.AddError("Could not read the new backup",
		fmt.Sprintf("the backup job completed, but its backup %s is not listed in project %s", taken.Key, projectID))
}

func (r *backupResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state backupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	projectID, id := state.ProjectID.ValueString(), state.ID.ValueString()
	backup, err := findListed(ctx, r.data.lists, "backups", projectID, id, r.data.client.ListBackups,
		func(b *client.Backup) string { return b.ID })
	if err != nil {
		resp.Diagnostics.AddError("Could not read backup", fmt.Sprintf("backup %s: %v", id, err))
		return
	}
	if backup == nil {
		tflog.Info(ctx, "the backup (or its project) is gone: removing it from state", map[string]any{"id": id, "project_id": projectID})
		resp.State.RemoveResource(ctx)
		return
	}
	state.fill(backup)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// Update is never called with a change to make: every argument replaces the backup,
// and every other attribute is computed.
func (r *backupResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	resp.Diagnostics.AddError("Backups are not updated in place",
		"Every argument of capy_backup replaces it; an update in place is a bug of the provider, please report it.")
}

func (r *backupResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state backupModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c := r.data.client
	projectID, id := state.ProjectID.ValueString(), state.ID.ValueString()
	r.data.lists.forget(projectID, "backups")
	server, err := c.IsCapyServer(ctx)
	if err != nil {
		resp.Diagnostics.AddError("Could not delete backup", fmt.Sprintf("backup %s: %v", id, err))
		return
	}
	if !server {
		resp.Diagnostics.AddWarning("Backup stays in CapyDB",
			fmt.Sprintf("Hosted CapyDB's API cannot delete backups: backup %s stays (its retention removes it); Terraform forgets it.", state.BackupKey.ValueString()))
		return
	}
	err = c.DeleteBackup(ctx, projectID, id)
	switch {
	case err == nil, client.IsNotFound(err):
	case client.IsConflict(err):
		// the server's message names the restore points that pin it
		resp.Diagnostics.AddError("Could not delete backup: it is pinned or in use",
			fmt.Sprintf("backup %s: %v\n\nDestroy (or remove from this configuration) the restore points that pin it first.", state.BackupKey.ValueString(), err))
	default:
		resp.Diagnostics.AddError("Could not delete backup", fmt.Sprintf("backup %s: %v", id, err))
	}
}

func (r *backupResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	importScopedID(ctx, req, resp, "BACKUP_ID")
}
