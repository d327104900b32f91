package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/terraform-plugin-framework-validators/stringvalidator"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/booldefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/planmodifier"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringdefault"
	"github.com/hashicorp/terraform-plugin-framework/resource/schema/stringplanmodifier"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

var (
	_ resource.Resource                = (*projectResource)(nil)
	_ resource.ResourceWithConfigure   = (*projectResource)(nil)
	_ resource.ResourceWithImportState = (*projectResource)(nil)
	_ resource.ResourceWithModifyPlan  = (*projectResource)(nil)
)

// projectHostedHint is why capy_project refuses hosted CapyDB, and what to do instead
// (the Pulumi Project's words).
const projectHostedHint = "hosted CapyDB creates projects itself: create it in CapyDB's console or with " +
	"CapyDB's Terraform provider (resource capydb_project), then pass its id as project_id. " +
	"capy_project is for a self-hosted `capy serve`"

// projectBaseBackupTimeout bounds the wait for the first PITR base backup (it copies the
// whole PostgreSQL cluster), as the Pulumi Project's.
const projectBaseBackupTimeout = 6 * time.Hour

// projectDatabaseSchemes are the schemes the engine's drivers protect.
var projectDatabaseSchemes = []string{"sqlite", "postgres", "postgresql"}

// NewProjectResource is capy_project.
func NewProjectResource() resource.Resource { return &projectResource{} }

type projectResource struct{ data *providerData }

type projectModel struct {
	ID              types.String `tfsdk:"id"`
	Name            types.String `tfsdk:"name"`
	DatabaseURL     types.String `tfsdk:"database_url"`
	Environment     types.String `tfsdk:"environment"`
	ForceDestroy    types.Bool   `tfsdk:"force_destroy"`
	Pitr            types.Bool   `tfsdk:"pitr"`
	DatabaseKind    types.String `tfsdk:"database_kind"`
	DatabaseName    types.String `tfsdk:"database_name"`
	PitrWindowStart types.String `tfsdk:"pitr_window_start"`
	PitrWindowEnd   types.String `tfsdk:"pitr_window_end"`
	CreatedAt       types.String `tfsdk:"created_at"`
}

func (r *projectResource) Metadata(_ context.Context, req resource.MetadataRequest, resp *resource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_project"
}

func (r *projectResource) Schema(_ context.Context, _ resource.SchemaRequest, resp *resource.SchemaResponse) {
	resourceText := "A database the restore engine of a self-hosted `capy serve` protects. Hosted CapyDB " +
		"creates projects itself (its console or its own Terraform provider): against it, create fails " +
		"before sending anything. Delete is refused while the engine holds backups of the project, unless " +
		"`force_destroy` is true (which deletes its backups, restore points and previews too). " +
		"Import by the project's id: `tofu import capy_project.x prj_…` (see `database_url`)."
	s := schema.Schema{
		Description:         resourceText,
		MarkdownDescription: resourceText,
		Attributes: map[string]schema.Attribute{
			"id": schema.StringAttribute{
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"name": schema.StringAttribute{
				Required:      true,
				Validators:    []validator.String{stringvalidator.LengthBetween(1, 200)},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"database_url": schema.StringAttribute{
				Required:   true,
				Sensitive:  true,
				Validators: []validator.String{projectURLValidator{}},
			},
			"environment": schema.StringAttribute{
				Optional:      true,
				Computed:      true,
				Default:       stringdefault.StaticString("non_production"),
				Validators:    []validator.String{stringvalidator.OneOf("production", "non_production")},
				PlanModifiers: []planmodifier.String{stringplanmodifier.RequiresReplace()},
			},
			"force_destroy": schema.BoolAttribute{
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(false),
			},
			"pitr": schema.BoolAttribute{
				Optional: true,
				Computed: true,
				Default:  booldefault.StaticBool(false),
			},
			"database_kind": schema.StringAttribute{
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"database_name": schema.StringAttribute{
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"pitr_window_start": schema.StringAttribute{
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"pitr_window_end": schema.StringAttribute{
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
			"created_at": schema.StringAttribute{
				Computed:      true,
				PlanModifiers: []planmodifier.String{stringplanmodifier.UseStateForUnknown()},
			},
		},
	}
	descriptions := map[string]string{
		"id": "The project's id (`prj_…`).",
		"name": "The project's name (1 to 200 characters), unique on the server. Changing it replaces the " +
			"project (the old one is deleted first, so the same rules as destroy apply).",
		"database_url": "The database the project protects: `sqlite:////absolute/path.db` or " +
			"`postgresql://user:password@host:port/database`. Sensitive: it is stored in Terraform state " +
			"(protect the state), never logged. Changing it points the project at the new URL in place " +
			"(a rotated password, a moved database: the kind of database may not change). The server never " +
			"returns it, so a refresh keeps the value of the last apply; after `import` it is null in state " +
			"and the first plan shows an in-place update of `database_url` alone, whose apply sends the " +
			"configured URL to the server (which checks it; a no-op when it is the project's URL already).",
		"environment": "`production` or `non_production` (default). Changing it replaces the project.",
		"force_destroy": "Whether destroy also deletes the project's backups, restore points and previews " +
			"(default false: destroy is refused while backups exist). Changing it is recorded in state " +
			"only (no API call): set it to true and apply before a destroy that should delete them.",
		"pitr": "Point-in-time recovery on (true) or off (false, the default). Turning it on waits for the " +
			"first base backup when that starts one (PostgreSQL), not for the window, which needs a worker " +
			"streaming the log (`capy serve --workers N` or `capy worker`). A SQLite database must be in WAL " +
			"mode first (`PRAGMA journal_mode=WAL` or `capy pitr enable --set-wal`). A refresh reads whether " +
			"it is on.",
		"database_kind":     "What the project protects: `sqlite` or `postgresql`.",
		"database_name":     "The database's name (PostgreSQL) or file (SQLite), without credentials.",
		"pitr_window_start": "The earliest moment a restore_time may name (RFC 3339, UTC); null while PITR is off or no window exists yet.",
		"pitr_window_end":   "The latest moment a restore_time may name (RFC 3339, UTC); it moves as the log is shipped.",
		"created_at":        "When the project was registered (RFC 3339, UTC).",
	}
	for name, attribute := range s.Attributes {
		text, markdown := descriptions[name], descriptions[name]
		switch a := attribute.(type) {
		case schema.StringAttribute:
			a.Description, a.MarkdownDescription = text, markdown
			s.Attributes[name] = a
		case schema.BoolAttribute:
			a.Description, a.MarkdownDescription = text, markdown
			s.Attributes[name] = a
		}
	}
	resp.Schema = s
}

func (r *projectResource) Configure(_ context.Context, req resource.ConfigureRequest, resp *resource.ConfigureResponse) {
	if data := providerDataOf(req.ProviderData, &resp.Diagnostics); data != nil {
		r.data = data
	}
}

// ModifyPlan marks what an update changes as known after apply: the database's name
// when the URL changes, the PITR window when PITR is turned on or off.
func (r *projectResource) ModifyPlan(ctx context.Context, req resource.ModifyPlanRequest, resp *resource.ModifyPlanResponse) {
	if req.State.Raw.IsNull() || req.Plan.Raw.IsNull() {
		return
	}
	var state, plan projectModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if !plan.DatabaseURL.Equal(state.DatabaseURL) {
		plan.DatabaseName = types.StringUnknown()
	}
	if !plan.Pitr.Equal(state.Pitr) {
		plan.PitrWindowStart = types.StringUnknown()
		plan.PitrWindowEnd = types.StringUnknown()
	}
	resp.Diagnostics.Append(resp.Plan.Set(ctx, &plan)...)
}

func (r *projectResource) Create(ctx context.Context, req resource.CreateRequest, resp *resource.CreateResponse) {
	var plan projectModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c := r.data.client
	what := fmt.Sprintf("Could not create project %s", plan.Name.ValueString())
	isServer, err := c.IsCapyServer(ctx)
	if err != nil {
		resp.Diagnostics.AddError(what, err.Error())
		return
	}
	if !isServer {
		resp.Diagnostics.AddError(what, projectHostedHint)
		return
	}
	project, job, err := c.CreateProject(ctx, client.CreateProject{
		Name:        plan.Name.ValueString(),
		Environment: plan.Environment.ValueString(),
		DatabaseURL: plan.DatabaseURL.ValueString(),
	})
	if err != nil {
		resp.Diagnostics.AddError(what, err.Error())
		return
	}
	tflog.Info(ctx, fmt.Sprintf("project %s registered as %s", project.Name, project.ID))
	if job != nil {
		if _, err := c.WaitForJob(ctx, job.ID, jobProgressLogger(ctx)); err != nil {
			resp.Diagnostics.AddError(what, fmt.Sprintf("project %s was registered, but its setup failed: %s", project.ID, err))
			// the project exists: keep it in state (tainted) so the next apply replaces it
			plan.ID = types.StringValue(project.ID)
			projectFill(&plan, project, false)
			resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
			return
		}
	}
	pitrOn := false
	if plan.Pitr.ValueBool() {
		if err := projectSetPitr(ctx, c, project, true); err != nil {
			undone := "it was removed again"
			if _, _, offErr := c.PutPitr(ctx, project.ID, false); offErr != nil {
				undone = fmt.Sprintf("it stays registered as %s (%s); remove it with `capy pitr disable --project %s` and `capy projects delete`", project.ID, offErr, project.ID)
			} else if delErr := c.DeleteProject(ctx, project.ID, true); delErr != nil {
				undone = fmt.Sprintf("it stays registered as %s (%s); remove it with `capy projects delete`", project.ID, delErr)
			}
			resp.Diagnostics.AddError(what+": turn point-in-time recovery on ("+undone+")", err.Error())
			return
		}
		pitrOn = true
	}
	if fresh, err := c.GetProject(ctx, project.ID); err == nil {
		project = fresh
	} else {
		tflog.Warn(ctx, fmt.Sprintf("could not read project %s back: %s", project.ID, err))
	}
	plan.ID = types.StringValue(project.ID)
	projectFill(&plan, project, pitrOn)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *projectResource) Read(ctx context.Context, req resource.ReadRequest, resp *resource.ReadResponse) {
	var state projectModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	c := r.data.client
	project, err := c.GetProject(ctx, state.ID.ValueString())
	if client.IsNotFound(err) {
		tflog.Info(ctx, fmt.Sprintf("project %s is gone: removed from state", state.ID.ValueString()))
		resp.State.RemoveResource(ctx)
		return
	}
	if err != nil {
		resp.Diagnostics.AddError(fmt.Sprintf("Could not read project %s", state.ID.ValueString()), err.Error())
		return
	}
	pitrOn := false
	if isServer, err := c.IsCapyServer(ctx); err == nil && isServer {
		pitr, err := c.GetPitr(ctx, project.ID)
		if client.IsNotFound(err) {
			resp.State.RemoveResource(ctx)
			return
		}
		if err != nil {
			resp.Diagnostics.AddError(fmt.Sprintf("Could not read point-in-time recovery of project %s", project.ID), err.Error())
			return
		}
		pitrOn = pitr.Enabled
	}
	state.Name = types.StringValue(project.Name)
	if project.Environment != nil {
		state.Environment = types.StringValue(*project.Environment)
	} else if state.Environment.IsNull() {
		state.Environment = types.StringValue("non_production")
	}
	if state.ForceDestroy.IsNull() { // imported
		state.ForceDestroy = types.BoolValue(false)
	}
	projectFill(&state, project, pitrOn)
	resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
}

func (r *projectResource) Update(ctx context.Context, req resource.UpdateRequest, resp *resource.UpdateResponse) {
	var plan, state projectModel
	resp.Diagnostics.Append(req.Plan.Get(ctx, &plan)...)
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if plan.DatabaseURL.Equal(state.DatabaseURL) && plan.Pitr.Equal(state.Pitr) {
		// force_destroy alone: recorded in state, no call (the plan kept every computed value)
		resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
		return
	}
	c := r.data.client
	id := state.ID.ValueString()
	what := fmt.Sprintf("Could not update project %s", plan.Name.ValueString())
	project, err := c.GetProject(ctx, id)
	if err != nil {
		resp.Diagnostics.AddError(what, err.Error())
		return
	}
	if !plan.DatabaseURL.Equal(state.DatabaseURL) {
		r.data.lists.forget(id)
		project, err = c.UpdateProjectURL(ctx, id, plan.DatabaseURL.ValueString())
		if err != nil {
			resp.Diagnostics.AddError(what+": database_url", err.Error())
			return
		}
		tflog.Info(ctx, fmt.Sprintf("project %s points at its new database_url", id))
		// recorded at once: a PITR failure below must not lose it
		state.DatabaseURL = plan.DatabaseURL
		projectFill(&state, project, state.Pitr.ValueBool())
	}
	pitrOn := state.Pitr.ValueBool()
	if !plan.Pitr.Equal(state.Pitr) {
		wanted := plan.Pitr.ValueBool()
		if err := projectSetPitr(ctx, c, project, wanted); err != nil {
			resp.Diagnostics.AddError(fmt.Sprintf("%s: turn point-in-time recovery %s", what, capyOnOff(wanted)), err.Error())
			resp.Diagnostics.Append(resp.State.Set(ctx, &state)...)
			return
		}
		pitrOn = wanted
	}
	if fresh, err := c.GetProject(ctx, id); err == nil {
		project = fresh
	}
	plan.ID = state.ID
	projectFill(&plan, project, pitrOn)
	resp.Diagnostics.Append(resp.State.Set(ctx, &plan)...)
}

func (r *projectResource) Delete(ctx context.Context, req resource.DeleteRequest, resp *resource.DeleteResponse) {
	var state projectModel
	resp.Diagnostics.Append(req.State.Get(ctx, &state)...)
	if resp.Diagnostics.HasError() {
		return
	}
	id := state.ID.ValueString()
	force := state.ForceDestroy.ValueBool()
	r.data.lists.forget(id)
	err := r.data.client.DeleteProject(ctx, id, force)
	if err == nil || client.IsNotFound(err) {
		return
	}
	what := fmt.Sprintf("Could not delete project %s (%s)", state.Name.ValueString(), id)
	var apiErr *client.APIError
	if client.IsConflict(err) && !force && errors.As(err, &apiErr) && strings.Contains(apiErr.Message, "force=true") {
		// the engine's remedy is the API's (force=true); say the Terraform one
		refusal, _, _ := strings.Cut(apiErr.Message, "; ")
		resp.Diagnostics.AddError(what, refusal+", which stay safe: to delete them with the project, set "+
			"force_destroy = true on this capy_project, apply (`tofu apply`), then destroy")
		return
	}
	resp.Diagnostics.AddError(what, err.Error())
}

// ImportState takes the project's id; database_url stays null (the server never returns
// it: see its description), force_destroy false.
func (r *projectResource) ImportState(ctx context.Context, req resource.ImportStateRequest, resp *resource.ImportStateResponse) {
	id := strings.TrimSpace(req.ID)
	if id == "" || strings.Contains(id, "/") {
		resp.Diagnostics.AddError("Invalid import id", fmt.Sprintf("capy_project is imported by the project's id (prj_…), got %q", req.ID))
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("id"), id)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("force_destroy"), false)...)
}

// projectFill sets the attributes the server decides from its project.
func projectFill(model *projectModel, project *client.Project, pitrOn bool) {
	model.DatabaseKind = capyString(project.DatabaseKind)
	model.DatabaseName = capyString(project.DatabaseName)
	model.PitrWindowStart = capyTime(project.PitrWindowStart)
	model.PitrWindowEnd = capyTime(project.PitrWindowEnd)
	model.CreatedAt = capyTime(project.CreatedAt)
	model.Pitr = types.BoolValue(pitrOn)
}

// projectSetPitr turns the project's PITR on or off; on, it waits for the first base
// backup that started, and turns PITR off again when that fails (so a failed apply
// leaves it as it was).
func projectSetPitr(ctx context.Context, c *client.Client, project *client.Project, enabled bool) error {
	pitr, job, err := c.PutPitr(ctx, project.ID, enabled)
	if err != nil {
		return err
	}
	tflog.Info(ctx, fmt.Sprintf("project %s: point-in-time recovery %s", project.Name, capyOnOff(enabled)))
	if job != nil {
		waitCtx, cancel := context.WithTimeout(ctx, projectBaseBackupTimeout)
		defer cancel()
		if _, err := c.WaitForJob(waitCtx, job.ID, jobProgressLogger(ctx)); err != nil {
			if _, _, offErr := c.PutPitr(ctx, project.ID, false); offErr != nil {
				tflog.Warn(ctx, fmt.Sprintf("project %s: could not turn PITR off again: %s", project.Name, offErr))
			} else {
				tflog.Info(ctx, fmt.Sprintf("project %s: point-in-time recovery off again", project.Name))
			}
			return fmt.Errorf("the first base backup failed: %w", err)
		}
	}
	if pitr != nil {
		for _, notice := range pitr.Notices {
			tflog.Warn(ctx, fmt.Sprintf("project %s: %s", project.Name, notice))
		}
	}
	return nil
}

// logJob reports a job's progress in the provider's log (TF_LOG=INFO shows it).
func jobProgressLogger(ctx context.Context) func(*client.Job) {
	return func(job *client.Job) { tflog.Info(ctx, client.ProgressText(job)) }
}

func capyOnOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

func capyString(value *string) types.String {
	if value == nil {
		return types.StringNull()
	}
	return types.StringValue(*value)
}

// timeOrNull is a timestamp as state holds it: RFC 3339 in UTC, or null.
func capyTime(value *time.Time) types.String {
	if value == nil {
		return types.StringNull()
	}
	return types.StringValue(value.UTC().Format(time.RFC3339Nano))
}

// projectURLValidator checks a database_url's scheme at plan time, as the engine's
// drivers would; its messages never repeat the URL (a secret).
type projectURLValidator struct{}

func (projectURLValidator) Description(context.Context) string {
	return "a sqlite:// or postgresql:// URL"
}

func (v projectURLValidator) MarkdownDescription(ctx context.Context) string {
	return v.Description(ctx)
}

func (projectURLValidator) ValidateString(_ context.Context, req validator.StringRequest, resp *validator.StringResponse) {
	if req.ConfigValue.IsNull() || req.ConfigValue.IsUnknown() {
		return
	}
	url := strings.TrimSpace(req.ConfigValue.ValueString())
	if url == "" {
		resp.Diagnostics.AddAttributeError(req.Path, "Invalid database_url", "database_url: must not be empty")
		return
	}
	scheme, _, found := strings.Cut(url, ":")
	for _, known := range projectDatabaseSchemes {
		if found && strings.EqualFold(scheme, known) {
			return
		}
	}
	resp.Diagnostics.AddAttributeError(req.Path, "Invalid database_url",
		"database_url: unsupported URL; expected sqlite:////absolute/path.db or postgresql://user:password@host:port/database")
}
