package provider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-timeouts/resource/timeouts"
	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/int64planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

var (
	_ resource.Resource                   = (*restoreResource)(nil)
	_ resource.ResourceWithConfigure      = (*restoreResource)(nil)
	_ resource.ResourceWithImportState    = (*restoreResource)(nil)
	_ resource.ResourceWithModifyPlan     = (*restoreResource)(nil)
	_ resource.ResourceWithValidateConfig = (*restoreResource)(nil)
)

const (
	restoreDefaultTimeout       = 60 * time.Minute
	restorePreviewDeleteTimeout = 10 * time.Minute
	// restoreUnrecoveredKey is the private state key listing the arguments an import could
	// not read back from the server (the configuration is trusted for them once)
	restoreUnrecoveredKey = "unrecovered"
)

// restoreSources are the three ways to name what is restored; exactly one is given.
var restoreSources = []string{"backup_key", "restore_time", "restore_point_id"}

// restoreReplacing are the arguments whose change runs a new restore: all of them but
// retain_preview_on_delete and timeouts.
var restoreReplacing = []string{
	"project_id", "backup_key", "restore_time", "restore_point_id", "target_kind", "preview_id",
	"preview_name", "ttl_hours", "recreate", "allow_unverified_backup", "confirm_project_overwrite", "triggers",
}

// NewRestoreResource is capy_restore.
func NewRestoreResource() resource.Resource { return &restoreResource{} }

type restoreResource struct{ data *providerData }

type restoreModel struct {
	ID                      types.String   `tfsdk:"id"`
	JobID                   types.String   `tfsdk:"job_id"`
	ProjectID               types.String   `tfsdk:"project_id"`
	BackupKey               types.String   `tfsdk:"backup_key"`
	RestoreTime             types.String   `tfsdk:"restore_time"`
	RestorePointID          types.String   `tfsdk:"restore_point_id"`
	TargetKind              types.String   `tfsdk:"target_kind"`
	PreviewID               types.String   `tfsdk:"preview_id"`
	PreviewName             types.String   `tfsdk:"preview_name"`
	TTLHours                types.Int64    `tfsdk:"ttl_hours"`
	Recreate                types.Bool     `tfsdk:"recreate"`
	AllowUnverifiedBackup   types.Bool     `tfsdk:"allow_unverified_backup"`
	ConfirmProjectOverwrite types.Bool     `tfsdk:"confirm_project_overwrite"`
	RetainPreviewOnDelete   types.Bool     `tfsdk:"retain_preview_on_delete"`
	Triggers                types.Map      `tfsdk:"triggers"`
	Timeouts                timeouts.Value `tfsdk:"timeouts"`
	State                   types.String   `tfsdk:"state"`
	PreviewDatabaseID       types.String   `tfsdk:"preview_database_id"`
	PreviewDatabaseName     types.String   `tfsdk:"preview_database_name"`
	PreviewDatabaseURL      types.String   `tfsdk:"preview_database_url"`
	PreviewState            types.String   `tfsdk:"preview_state"`
	PreviewExpiresAt        types.String   `tfsdk:"preview_expires_at"`
}

func (r *restoreResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_restore"
}

func (r *restoreResource) Schema(ctx context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	keep := []planmodifier.String{stringplanmodifier.UseStateForUnknown()}
	computed := func(text string) schema.StringAttribute {
		return schema.StringAttribute{Computed: true, PlanModifiers: keep, Description: text, MarkdownDescription: text}
	}
	text := "A restore: a backup, restore point or moment restored into a new preview database (the " +
		"default), an existing preview, or the project's own database. An event, like the Pulumi " +
		"Restore: create starts the restore job and waits for its end (progress in the provider's log, " +
		"`TF_LOG=INFO`); it never runs again on its own. Changing any argument (but " +
		"`retain_preview_on_delete` and `timeouts`), or a value of `triggers`, runs a new restore. A " +
		"failed job fails the apply with the job's error and output tail, and nothing is kept in state, so " +
		"the next apply tries again. A refresh that finds the preview this restore made gone (deleted, " +
		"failed, or past its TTL) removes the restore from state: the next apply restores again. Destroy " +
		"deletes the preview the restore made (unless `retain_preview_on_delete`); a restore into an " +
		"existing preview or the project is only forgotten. Import: `tofu import capy_restore.x " +
		"PROJECT_ID/JOB_ID` of a completed restore job reads back the target, the preview, its name and " +
		"TTL, and the source (backup_key or restore_time; restore_point_id when exactly one restore point " +
		"pins the restored backup). The server keeps no record of `triggers`, `recreate` and " +
		"`allow_unverified_backup` (nor, for a restore into the project, of which of backup_key and " +
		"restore_point_id named the backup): the first apply after import records the configuration's " +
		"values for those in place, without restoring again."
	resp.Schema = schema.Schema{
		Description:         text,
		MarkdownDescription: text,
		Attributes: map[string]schema.Attribute{
			"id":     computed("The restore job's id (`job_…`)."),
			"job_id": computed("The restore job's id, as `id`."),
			"project_id": schema.StringAttribute{
				Required:            true,
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
				Description:         "The project whose backup or moment is restored.",
				MarkdownDescription: "The project whose backup or moment is restored.",
			},
			"backup_key": schema.StringAttribute{
				Optional:            true,
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
				Description:         "Restore this backup (its key). Exactly one of backup_key, restore_time and restore_point_id.",
				MarkdownDescription: "Restore this backup (its key). Exactly one of `backup_key`, `restore_time` and `restore_point_id`.",
			},
			"restore_time": schema.StringAttribute{
				Optional:   true,
				Validators: []validator.String{restoreTimeValidator{}},
				Description: "Restore the project's state at this moment (RFC 3339, in the past, inside the PITR " +
					"window). Exactly one of backup_key, restore_time and restore_point_id. State keeps the string " +
					"as written; another spelling of the same instant runs no new restore.",
				MarkdownDescription: "Restore the project's state at this moment (RFC 3339, in the past, inside the PITR " +
					"window). Exactly one of `backup_key`, `restore_time` and `restore_point_id`. State keeps the string " +
					"as written; another spelling of the same instant runs no new restore.",
			},
			"restore_point_id": schema.StringAttribute{
				Optional:            true,
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
				Description:         "Restore this restore point (its id). Exactly one of backup_key, restore_time and restore_point_id.",
				MarkdownDescription: "Restore this restore point (its id). Exactly one of `backup_key`, `restore_time` and `restore_point_id`.",
			},
			"target_kind": schema.StringAttribute{
				Optional:   true,
				Computed:   true,
				Default:    stringdefault.StaticString("new_preview"),
				Validators: []validator.String{stringvalidator.OneOf("new_preview", "preview", "project")},
				Description: "Where the restore writes: new_preview (default: a fresh preview database; nothing " +
					"existing is touched), preview (overwrite preview_id) or project (overwrite the project's " +
					"database: needs confirm_project_overwrite = true).",
				MarkdownDescription: "Where the restore writes: `new_preview` (default: a fresh preview database; nothing " +
					"existing is touched), `preview` (overwrite `preview_id`) or `project` (overwrite the project's " +
					"database: needs `confirm_project_overwrite = true`).",
			},
			"preview_id": schema.StringAttribute{
				Optional:            true,
				Validators:          []validator.String{stringvalidator.LengthAtLeast(1)},
				Description:         "The preview to overwrite; only (and required) with target_kind = preview.",
				MarkdownDescription: "The preview to overwrite; only (and required) with `target_kind = \"preview\"`.",
			},
			"preview_name": schema.StringAttribute{
				Optional:            true,
				Computed:            true,
				Validators:          []validator.String{stringvalidator.LengthBetween(1, 63)},
				PlanModifiers:       keep,
				Description:         "The new preview's name (1 to 63 characters; default: the server names it); only with target_kind = new_preview.",
				MarkdownDescription: "The new preview's name (1 to 63 characters; default: the server names it); only with `target_kind = \"new_preview\"`.",
			},
			"ttl_hours": schema.Int64Attribute{
				Optional:            true,
				Computed:            true,
				Validators:          []validator.Int64{int64validator.Between(1, 168)},
				PlanModifiers:       []planmodifier.Int64{int64planmodifier.UseStateForUnknown()},
				Description:         "How long the new preview lives, 1 to 168 hours (default: the server's, 24); only with target_kind = new_preview.",
				MarkdownDescription: "How long the new preview lives, 1 to 168 hours (default: the server's, 24); only with `target_kind = \"new_preview\"`.",
			},
			"recreate":                restoreFlag("Drop and recreate the target before restoring into it."),
			"allow_unverified_backup": restoreFlag("Restore a backup that failed verification (refused without it)."),
			"confirm_project_overwrite": restoreFlag("Must be true with target_kind = project: the restore overwrites " +
				"the project's database (a safety backup is taken first)."),
			"retain_preview_on_delete": schema.BoolAttribute{
				Optional:            true,
				Computed:            true,
				Default:             booldefault.StaticBool(false),
				Description:         "Keep the preview this restore made when the restore is destroyed or replaced (default false: it is deleted). Changes in place.",
				MarkdownDescription: "Keep the preview this restore made when the restore is destroyed or replaced (default false: it is deleted). Changes in place.",
			},
			"triggers": schema.MapAttribute{
				ElementType:         types.StringType,
				Optional:            true,
				Description:         "Arbitrary values; any change runs a new restore (e.g. the migration's version).",
				MarkdownDescription: "Arbitrary values; any change runs a new restore (e.g. the migration's version).",
			},
			"state":                 computed("The restore job's state (completed once applied)."),
			"preview_database_id":   computed("The preview the restore wrote (target_kind new_preview or preview)."),
			"preview_database_name": computed("The preview's database: a PostgreSQL database name or a SQLite file's path."),
			"preview_database_url": schema.StringAttribute{
				Computed:      true,
				Sensitive:     true,
				PlanModifiers: keep,
				Description: "How to reach the preview: `postgresql://role@host:port/database?sslmode=…` (no password) " +
					"or `sqlite:////path`. Sensitive: it is stored in Terraform state (protect the state), never logged.",
				MarkdownDescription: "How to reach the preview: `postgresql://role@host:port/database?sslmode=…` (no password) " +
					"or `sqlite:////path`. Sensitive: it is stored in Terraform state (protect the state), never logged.",
			},
			"preview_state":      computed("The preview's state as last read (ready, …)."),
			"preview_expires_at": computed("When the preview's TTL ends (RFC 3339, UTC): the server drops it then, and the next apply restores again."),
		},
		Blocks: map[string]schema.Block{
			"timeouts": timeouts.Block(ctx, timeouts.Opts{Create: true}),
		},
	}
}

func restoreFlag(text string) schema.BoolAttribute {
	return schema.BoolAttribute{
		Optional:            true,
		Computed:            true,
		Default:             booldefault.StaticBool(false),
		Description:         text + " Default false.",
		MarkdownDescription: text + " Default false.",
	}
}

func (r *restoreResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if data := providerDataOf(req.ProviderData, &resp.Diagnostics); data != nil {
		r.data = data
	}
}

// ValidateConfig checks the rules over several arguments at plan time; a value not known
// yet fails none of them.
func (r *restoreResource) ValidateConfig(ctx context.Context, req resource.ValidateConfigRequest, resp *resource.ValidateConfigResponse) {
	var config restoreModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &config)...)
	if resp.Diagnostics.HasError() {
		return
	}
	sources := map[string]types.String{
		"backup_key": config.BackupKey, "restore_time": config.RestoreTime, "restore_point_id": config.RestorePointID,
	}
	var given []string
	unknown := false
	for _, name := range restoreSources {
		value := sources[name]
		switch {
		case value.IsUnknown():
			unknown = true
		case !value.IsNull():
			given = append(given, name)
		}
	}
	if len(given) > 1 {
		resp.Diagnostics.AddAttributeError(path.Root(given[1]), "Two restore sources",
			fmt.Sprintf("%s are both set: give exactly one restore source (backup_key, restore_time or restore_point_id)", strings.Join(given, " and ")))
	} else if len(given) == 0 && !unknown {
		resp.Diagnostics.AddAttributeError(path.Root("backup_key"), "No restore source",
			"one of backup_key, restore_time or restore_point_id is required: what to restore")
	}
	if config.TargetKind.IsUnknown() {
		return
	}
	target := config.TargetKind.ValueString()
	if config.TargetKind.IsNull() {
		target = "new_preview"
	}
	if target == "preview" && config.PreviewID.IsNull() {
		resp.Diagnostics.AddAttributeError(path.Root("preview_id"), "Missing preview_id",
			"preview_id: required when target_kind is 'preview' (the preview to overwrite)")
	}
	if target != "preview" && !config.PreviewID.IsNull() {
		resp.Diagnostics.AddAttributeError(path.Root("preview_id"), "preview_id not allowed",
			fmt.Sprintf("preview_id: only allowed when target_kind is 'preview' (target_kind is '%s')", target))
	}
	if target != "new_preview" {
		if !config.PreviewName.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("preview_name"), "preview_name not allowed",
				fmt.Sprintf("preview_name: only allowed when target_kind is 'new_preview' (target_kind is '%s')", target))
		}
		if !config.TTLHours.IsNull() {
			resp.Diagnostics.AddAttributeError(path.Root("ttl_hours"), "ttl_hours not allowed",
				fmt.Sprintf("ttl_hours: only allowed when target_kind is 'new_preview' (target_kind is '%s')", target))
		}
	}
	if target == "project" && !config.ConfirmProjectOverwrite.IsUnknown() && !config.ConfirmProjectOverwrite.ValueBool() {
		resp.Diagnostics.AddAttributeError(path.Root("confirm_project_overwrite"), "Project overwrite not confirmed",
			"confirm_project_overwrite: must be true when target_kind is 'project': the restore overwrites the "+
				"project's database (a safety backup is taken first)")
	}
}

// ModifyPlan replaces the restore (a new restore runs) when an argument but
// retain_preview_on_delete and timeouts changes. After an import, the arguments the
// server keeps no record of are recorded in place instead, once.
func (r *restoreResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var unrecovered []string
	if raw, diags := req.Private.GetKey(ctx, restoreUnrecoveredKey); !diags.HasError() && len(raw) > 0 {
		_ = json.Unmarshal(raw, &unrecovered)
	}
	var state, plan restoreModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	priors, planned := state.replacing(), plan.replacing()
	for _, name := range restoreReplacing {
		prior, next := priors[name], planned[name]
		if prior.Equal(next) || slices.Contains(unrecovered, name) {
			continue
		}
		if name == "restore_time" && sameInstant(prior, next) {
			continue
		}
		resp.RequiresReplace = append(resp.RequiresReplace, path.Root(name))
	}
}

// replacing is the value of each argument of restoreReplacing.
func (m *restoreModel) replacing() map[string]attr.Value {
	return map[string]attr.Value{
		"project_id": m.ProjectID, "backup_key": m.BackupKey, "restore_time": m.RestoreTime,
		"restore_point_id": m.RestorePointID, "target_kind": m.TargetKind, "preview_id": m.PreviewID,
		"preview_name": m.PreviewName, "ttl_hours": m.TTLHours, "recreate": m.Recreate,
		"allow_unverified_backup": m.AllowUnverifiedBackup, "confirm_project_overwrite": m.ConfirmProjectOverwrite,
		"triggers": m.Triggers,
	}
}

// sameInstant says whether two known timestamps name the same moment.
func sameInstant(a, b attr.Value) bool {
	as, aok := a.(types.String)
	bs, bok := b.(types.String)
	if !aok || !bok || as.IsNull() || as.IsUnknown() || bs.IsNull() || bs.IsUnknown() {
		return false
	}
	at, aerr := time.Parse(time.RFC3339Nano, as.ValueString())
	bt, berr := time.Parse(time.RFC3339Nano, bs.ValueString())
	return aerr == nil && berr == nil && at.Equal(bt)
}

func (r *restoreResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan restoreModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	timeout, diags := plan.Timeouts.Create(ctx, restoreDefaultTimeout)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	request := client.CreateRestore{
		BackupKey:               plan.BackupKey.ValueString(),
		RestorePointID:          plan.RestorePointID.ValueString(),
		TargetKind:              plan.TargetKind.ValueString(),
		PreviewID:               plan.PreviewID.ValueString(),
		PreviewName:             plan.PreviewName.ValueString(),
		TTLHours:                plan.TTLHours.ValueInt64(),
		Recreate:                plan.Recreate.ValueBool(),
		AllowUnverifiedBackup:   plan.AllowUnverifiedBackup.ValueBool(),
		ConfirmProjectOverwrite: plan.ConfirmProjectOverwrite.ValueBool(),
	}
	if !plan.RestoreTime.IsNull() {
		moment, err := time.Parse(time.RFC3339Nano, plan.RestoreTime.ValueString())
		if err != nil {
			resp.Diagnostics.AddAttributeError(path.Root("restore_time"), "Invalid restore_time", err.Error())
			return
		}
		moment = moment.UTC()
		request.RestoreTime = &moment
	}
	c := r.data.client
	projectID := plan.ProjectID.ValueString()
	r.data.lists.forget(projectID, "previews")
	job, err := c.CreateRestore(ctx, projectID, request)
	if err != nil {
		resp.Diagnostics.AddError(fmt.Sprintf("Could not restore into %s", request.TargetKind), err.Error())
		return
	}
	tflog.Info(ctx, fmt.Sprintf("restore job %s started (%s -> %s)", job.ID, restoreSourceKind(request), request.TargetKind))
	waitCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done, err := c.WaitForJob(waitCtx, job.ID, jobProgressLogger(ctx))
	var failed *client.JobFailedError
	switch {
	case errors.As(err, &failed):
		// the job may have made a preview the state will not know of: remove it
		if request.TargetKind == "new_preview" && failed.Job.PreviewDatabaseID != nil {
			r.dropPreview(ctx, projectID, *failed.Job.PreviewDatabaseID)
		}
		resp.Diagnostics.AddError("Restore failed", err.Error())
		return
	case err != nil:
		// it goes on on the server: keep it in state (tainted) so that the next apply
		// replaces it, deleting what it made, instead of leaving a preview nobody knows of
		if done == nil {
			done = job
		}
		r.fill(ctx, &plan, done, false)
		resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
		resp.Diagnostics.AddError(fmt.Sprintf("Restore job %s did not finish in %s", job.ID, timeout), err.Error())
		return
	}
	r.fill(ctx, &plan, done, true)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func restoreSourceKind(request client.CreateRestore) string {
	switch {
	case request.BackupKey != "":
		return "backup"
	case request.RestorePointID != "":
		return "restore_point"
	}
	return "restore_time"
}

// fill sets the computed attributes from the job, and (completed) from the preview it
// wrote; arguments left unknown by the plan (preview_name, ttl_hours) take the server's.
func (r *restoreResource) fill(ctx context.Context, model *restoreModel, job *client.Job, completed bool) {
	model.ID = types.StringValue(job.ID)
	model.JobID = types.StringValue(job.ID)
	model.State = types.StringValue(job.State)
	previewID := ""
	if job.PreviewDatabaseID != nil {
		previewID = *job.PreviewDatabaseID
	} else {
		previewID = job.ResultString("preview_database_id")
	}
	model.PreviewDatabaseID = types.StringNull()
	if previewID != "" {
		model.PreviewDatabaseID = types.StringValue(previewID)
	}
	var preview *client.PreviewDatabase
	if completed && previewID != "" {
		projectID := model.ProjectID.ValueString()
		r.data.lists.forget(projectID, "previews")
		previews, err := cachedList(ctx, r.data.lists, "previews", projectID, r.data.client.ListPreviews)
		if err != nil {
			tflog.Warn(ctx, fmt.Sprintf("could not read preview %s: %s", previewID, err))
		}
		preview = listed(previews, previewID, previewIDOf)
	}
	restoreFillPreview(model, preview)
	newPreview := model.TargetKind.ValueString() == "new_preview"
	if model.PreviewName.IsUnknown() {
		model.PreviewName = types.StringNull()
		if newPreview && preview != nil {
			model.PreviewName = types.StringValue(preview.Name)
		}
	}
	if model.TTLHours.IsUnknown() {
		model.TTLHours = types.Int64Null()
		if newPreview && preview != nil {
			model.TTLHours = restoreTTL(preview)
		}
	}
}

// restoreFillPreview sets the preview's attributes (all null without one).
func restoreFillPreview(model *restoreModel, preview *client.PreviewDatabase) {
	if preview == nil {
		model.PreviewDatabaseName = types.StringNull()
		model.PreviewDatabaseURL = types.StringNull()
		model.PreviewState = types.StringNull()
		model.PreviewExpiresAt = types.StringNull()
		return
	}
	model.PreviewDatabaseName = capyString(preview.DatabaseName)
	model.PreviewDatabaseURL = types.StringNull()
	if url := previewURL(preview); url != "" {
		model.PreviewDatabaseURL = types.StringValue(url)
	}
	state := capyString(preview.State)
	if previewExpired(preview, time.Now()) && !previewLost(preview, time.Now()) {
		state = types.StringValue("expired")
	}
	model.PreviewState = state
	model.PreviewExpiresAt = capyTime(preview.TTLExpiresAt)
}

// restoreTTL is the preview's TTL in whole hours, as the restore asked for it.
func restoreTTL(preview *client.PreviewDatabase) types.Int64 {
	if preview.TTLExpiresAt == nil || preview.CreatedAt == nil {
		return types.Int64Null()
	}
	return types.Int64Value(int64(math.Round(preview.TTLExpiresAt.Sub(*preview.CreatedAt).Hours())))
}

// previewURL is how to reach a preview, as the Pulumi package's preview_url: a
// PostgreSQL URL without password, or a sqlite:/// path; "" when neither applies.
func previewURL(preview *client.PreviewDatabase) string {
	name := ""
	if preview.DatabaseName != nil {
		name = *preview.DatabaseName
	}
	if preview.PublicHost != nil && *preview.PublicHost != "" && name != "" {
		port, user, ssl := "", "", ""
		if preview.DirectPort != nil && *preview.DirectPort != 0 {
			port = fmt.Sprintf(":%d", *preview.DirectPort)
		}
		if preview.RoleName != nil && *preview.RoleName != "" {
			user = *preview.RoleName + "@"
		}
		if preview.SSLMode != nil && *preview.SSLMode != "" {
			ssl = "?sslmode=" + *preview.SSLMode
		}
		return "postgresql://" + user + *preview.PublicHost + port + "/" + name + ssl
	}
	if strings.HasPrefix(name, "/") {
		return "sqlite:///" + name
	}
	return ""
}

// previewExpired says whether the preview's TTL has ended (the server drops it at its
// next tick).
func previewExpired(preview *client.PreviewDatabase, now time.Time) bool {
	return preview.TTLExpiresAt != nil && !preview.TTLExpiresAt.After(now)
}

func previewIDOf(p *client.PreviewDatabase) string { return p.ID }

// previewLost says whether a restore's preview is gone or going (as PREVIEW_LOST of the
// Pulumi package, plus deleted): a new restore replaces it.
func previewLost(preview *client.PreviewDatabase, now time.Time) bool {
	if preview.State != nil {
		switch *preview.State {
		case "deleted", "deleting", "failed", "expired":
			return true
		}
	}
	return previewExpired(preview, now)
}

func (r *restoreResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state restoreModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if state.TargetKind.IsNull() { // just imported: the job tells what it did
		r.readImported(ctx, &state, resp)
		return
	}
	c := r.data.client
	id := state.ID.ValueString()
	projectID := state.ProjectID.ValueString()
	previewID := state.PreviewDatabaseID.ValueString()
	if state.TargetKind.ValueString() == "new_preview" && previewID != "" {
		// one listing per project for every restore of a refresh; the job ended already
		// (a project gone takes its previews with it)
		preview, err := findListed(ctx, r.data.lists, "previews", projectID, previewID, c.ListPreviews, previewIDOf)
		if err != nil {
			resp.Diagnostics.AddError(fmt.Sprintf("Could not read preview %s of restore %s", previewID, id), err.Error())
			return
		}
		if preview == nil || previewLost(preview, time.Now()) {
			tflog.Info(ctx, fmt.Sprintf("restore %s: its preview %s is gone or expired; the next apply restores again", id, previewID))
			resp.State.RemoveResource(ctx)
			return
		}
		restoreFillPreview(&state, preview)
		resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
		return
	}
	job, err := c.GetJob(ctx, id)
	if client.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError(fmt.Sprintf("Could not read restore job %s", id), err.Error())
		return
	}
	state.State = types.StringValue(job.State)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

// readImported fills an imported restore from its job, the preview it wrote and, for a
// restore point, the project's restore points; what the server keeps no record of is
// listed in private state, for ModifyPlan to record in place once.
func (r *restoreResource) readImported(ctx context.Context, state *restoreModel, resp *resource.ReadResponse) {
	c := r.data.client
	id := state.ID.ValueString()
	what := fmt.Sprintf("Could not import restore %s", id)
	job, err := c.GetJob(ctx, id)
	if client.IsNotFound(err) {
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError(what, err.Error())
		return
	}
	if job.Type != "project.restore" {
		resp.Diagnostics.AddError(what, fmt.Sprintf("job %s is a %s job, not a restore (project.restore)", id, job.Type))
		return
	}
	if job.ProjectID == nil || *job.ProjectID != state.ProjectID.ValueString() {
		resp.Diagnostics.AddError(what, fmt.Sprintf("job %s is not a restore of project %s: import it as PROJECT_ID/JOB_ID", id, state.ProjectID.ValueString()))
		return
	}
	if job.State != client.JobCompleted {
		resp.Diagnostics.AddError(what, fmt.Sprintf("job %s is %s: only a completed restore can be imported", id, job.State))
		return
	}
	target := job.ResultString("target_kind")
	if target == "" && job.LockedResource != nil && strings.HasPrefix(*job.LockedResource, "project:") {
		target = "project"
	}
	if target == "" {
		resp.Diagnostics.AddError(what, fmt.Sprintf("job %s does not say which target it restored into", id))
		return
	}
	state.TargetKind = types.StringValue(target)
	state.PreviewID = types.StringNull()
	if target == "preview" && job.PreviewDatabaseID != nil {
		state.PreviewID = types.StringValue(*job.PreviewDatabaseID)
	}
	state.BackupKey, state.RestoreTime, state.RestorePointID = types.StringNull(), types.StringNull(), types.StringNull()
	if key := job.ResultString("backup_key"); key != "" {
		state.BackupKey = types.StringValue(key)
	}
	if moment := job.ResultString("restore_time"); moment != "" {
		if parsed, err := time.Parse(time.RFC3339Nano, moment); err == nil {
			state.RestoreTime = types.StringValue(parsed.UTC().Format(time.RFC3339Nano))
		} else {
			state.RestoreTime = types.StringValue(moment)
		}
	}
	unrecovered := []string{"triggers", "recreate", "allow_unverified_backup"}
	if target != "project" {
		unrecovered = append(unrecovered, "confirm_project_overwrite")
	}
	state.Triggers = types.MapNull(types.StringType)
	state.Recreate, state.AllowUnverifiedBackup = types.BoolValue(false), types.BoolValue(false)
	state.ConfirmProjectOverwrite = types.BoolValue(target == "project")
	state.RetainPreviewOnDelete = types.BoolValue(false)
	state.PreviewName, state.TTLHours = types.StringNull(), types.Int64Null()
	state.PreviewDatabaseID = types.StringNull()
	if job.PreviewDatabaseID != nil {
		state.PreviewDatabaseID = types.StringValue(*job.PreviewDatabaseID)
	}
	var preview *client.PreviewDatabase
	if target != "project" && job.PreviewDatabaseID != nil {
		previews, err := cachedList(ctx, r.data.lists, "previews", state.ProjectID.ValueString(), c.ListPreviews)
		if err != nil {
			resp.Diagnostics.AddError(what, err.Error())
			return
		}
		preview = listed(previews, *job.PreviewDatabaseID, previewIDOf)
		if target == "new_preview" && (preview == nil || previewLost(preview, time.Now())) {
			resp.Diagnostics.AddError(what, fmt.Sprintf("the preview %s restore %s made is gone: there is nothing to import", *job.PreviewDatabaseID, id))
			return
		}
	}
	sourceKnown := false
	if preview != nil && preview.SourceKind != nil {
		sourceKnown = true
		if *preview.SourceKind == "restore_point" && !state.BackupKey.IsNull() {
			points, err := c.ListRestorePoints(ctx, state.ProjectID.ValueString())
			if err != nil {
				resp.Diagnostics.AddError(what, err.Error())
				return
			}
			var pinning []string
			for _, point := range points {
				if point.BackupKey != nil && *point.BackupKey == state.BackupKey.ValueString() {
					pinning = append(pinning, point.ID)
				}
			}
			if len(pinning) == 1 {
				state.RestorePointID, state.BackupKey = types.StringValue(pinning[0]), types.StringNull()
			} else {
				sourceKnown = false
			}
		}
	}
	if !sourceKnown && state.RestoreTime.IsNull() {
		unrecovered = append(unrecovered, "backup_key", "restore_point_id")
	}
	if target == "new_preview" {
		state.PreviewName = types.StringValue(preview.Name)
		state.TTLHours = restoreTTL(preview)
	}
	state.JobID = types.StringValue(job.ID)
	state.State = types.StringValue(job.State)
	restoreFillPreview(state, preview)
	encoded, _ := json.Marshal(unrecovered)
	resp.Diagnostics.Append(resp.Private.SetKey(ctx, restoreUnrecoveredKey, encoded)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, state)...)
}

// Update records retain_preview_on_delete and timeouts, and after an import the
// arguments the server keeps no record of: nothing is restored again.
func (r *restoreResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan restoreModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.Private.SetKey(ctx, restoreUnrecoveredKey, nil)...)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *restoreResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state restoreModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	previewID := state.PreviewDatabaseID.ValueString()
	if state.TargetKind.ValueString() != "new_preview" || previewID == "" {
		return // a restore into an existing target is only forgotten
	}
	if state.RetainPreviewOnDelete.ValueBool() {
		tflog.Info(ctx, fmt.Sprintf("keeping preview %s (retain_preview_on_delete)", previewID))
		return
	}
	if err := r.deletePreview(ctx, state.ProjectID.ValueString(), previewID); err != nil {
		resp.Diagnostics.AddError(fmt.Sprintf("Could not delete preview %s of restore %s", previewID, state.ID.ValueString()), err.Error())
	}
}

// deletePreview deletes the preview and waits for that; one already gone is no error.
func (r *restoreResource) deletePreview(ctx context.Context, projectID, previewID string) error {
	r.data.lists.forget(projectID, "previews")
	job, err := r.data.client.DeletePreview(ctx, previewID)
	if client.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	waitCtx, cancel := context.WithTimeout(ctx, restorePreviewDeleteTimeout)
	defer cancel()
	if _, err := r.data.client.WaitForJob(waitCtx, job.ID, jobProgressLogger(ctx)); err != nil {
		return err
	}
	tflog.Info(ctx, fmt.Sprintf("deleted preview %s", previewID))
	return nil
}

// dropPreview deletes the preview of a failed restore, saying so in the log when it cannot.
func (r *restoreResource) dropPreview(ctx context.Context, projectID, previewID string) {
	if err := r.deletePreview(ctx, projectID, previewID); err != nil {
		tflog.Warn(ctx, fmt.Sprintf("could not delete preview %s of the failed restore: %s", previewID, err))
	}
}

// ImportState takes PROJECT_ID/JOB_ID; Read fills the rest from the job.
func (r *restoreResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	projectID, jobID, ok := strings.Cut(req.ID, "/")
	if !ok || projectID == "" || jobID == "" || strings.Contains(jobID, "/") {
		resp.Diagnostics.AddError("Invalid import id",
			fmt.Sprintf("capy_restore is imported as PROJECT_ID/JOB_ID (e.g. prj_…/job_…), got %q", req.ID))
		return
	}
	var diags diag.Diagnostics
	diags.Append(resp.State.SetAttribute(ctx, path.Root("project_id"), projectID)...)
	diags.Append(resp.State.SetAttribute(ctx, path.Root("id"), jobID)...)
	diags.Append(resp.State.SetAttribute(ctx, path.Root("job_id"), jobID)...)
	resp.Diagnostics.Append(diags...)
}

// restoreTimeValidator checks restore_time at plan time: RFC 3339, and in the past (a
// moment to come is in no PITR window).
type restoreTimeValidator struct{}

func (restoreTimeValidator) Description(context.Context) string {
	return "an RFC 3339 timestamp in the past"
}

func (v restoreTimeValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (restoreTimeValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	moment, err := time.Parse(time.RFC3339Nano, req.ConfigValue.ValueString())
	if err != nil {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid restore_time",
			fmt.Sprintf("restore_time: %q is not an RFC 3339 timestamp (e.g. 2026-12-01T14:32:00Z)", req.ConfigValue.ValueString()))
		return
	}
	if moment.After(time.Now()) {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid restore_time",
			fmt.Sprintf("restore_time: %s is in the future: a restore names a moment that has passed", req.ConfigValue.ValueString()))
	}
}
