package provider

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework-validators/int64validator"
	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/schema/validator"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

var _ datasource.DataSourceWithConfigure = (*jobsDataSource)(nil)

// NewJobsDataSource is capy_jobs: a project's newest jobs.
func NewJobsDataSource() datasource.DataSource { return &jobsDataSource{} }

type jobsDataSource struct{ data *providerData }

// jobsLimitDefault and jobsLimitMax bound how many jobs capy_jobs lists.
const (
	jobsLimitDefault = 25
	jobsLimitMax     = 1000
)

var jobObject = map[string]attr.Type{
	"id": types.StringType, "type": types.StringType, "state": types.StringType, "attempts": types.Int64Type,
	"max_attempts": types.Int64Type, "error": types.StringType, "preview_database_id": types.StringType,
	"created_at": types.StringType, "started_at": types.StringType, "completed_at": types.StringType,
	"result": types.StringType,
}

func (d *jobsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_jobs"
}

func (d *jobsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	description := "A project's newest jobs (backups, verifications, restores, preview deletions), newest first."
	limit := fmt.Sprintf("How many jobs to list, 1 to %d (default %d).", jobsLimitMax, jobsLimitDefault)
	list := "The jobs, newest first."
	attempts := "Attempts made so far."
	maxAttempts := "Attempts allowed."
	result := "The job's result as a JSON string (null until it completes): decode it with `jsondecode(…)`, " +
		"e.g. `jsondecode(j.result).backup_key` of a backup job."
	resp.Schema = schema.Schema{
		Description: description, MarkdownDescription: description,
		Attributes: map[string]schema.Attribute{
			"project_id": requiredProjectID("Id of the project."),
			"limit": schema.Int64Attribute{
				Optional: true, Description: limit, MarkdownDescription: limit,
				Validators: []validator.Int64{int64validator.Between(1, jobsLimitMax)},
			},
			"jobs": schema.ListNestedAttribute{
				Computed: true, Description: list, MarkdownDescription: list,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id":                  computedString("Id of the job."),
					"type":                computedString("What it does, e.g. `backup`, `backup.verify`, `restore`."),
					"state":               computedString("`pending`, `running`, `completed` or `failed`."),
					"attempts":            schema.Int64Attribute{Computed: true, Description: attempts, MarkdownDescription: attempts},
					"max_attempts":        schema.Int64Attribute{Computed: true, Description: maxAttempts, MarkdownDescription: maxAttempts},
					"error":               computedString("Why it failed, when it did."),
					"preview_database_id": computedString("The preview database it acts on, if any."),
					"created_at":          computedString("When it was queued (RFC 3339, UTC)."),
					"started_at":          computedString("When its last attempt started (RFC 3339, UTC)."),
					"completed_at":        computedString("When it ended (RFC 3339, UTC)."),
					"result":              computedString(result),
				}},
			},
		},
	}
}

func (d *jobsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	if data := providerDataOf(req.ProviderData, &resp.Diagnostics); data != nil {
		d.data = data
	}
}

func (d *jobsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var projectID types.String
	var limit types.Int64
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("project_id"), &projectID)...)
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("limit"), &limit)...)
	if resp.Diagnostics.HasError() {
		return
	}
	count := int64(jobsLimitDefault)
	if !limit.IsNull() {
		count = limit.ValueInt64()
	}
	jobs, err := d.data.client.ListJobs(ctx, projectID.ValueString(), int(count))
	if err != nil {
		resp.Diagnostics.AddError("Could not list jobs", fmt.Sprintf("project %s: %v", projectID.ValueString(), err))
		return
	}
	objects := make([]attr.Value, 0, len(jobs))
	for _, job := range jobs {
		result := types.StringNull()
		if job.Result != nil {
			encoded, err := json.Marshal(job.Result)
			if err != nil {
				resp.Diagnostics.AddError("Could not encode a job's result", fmt.Sprintf("job %s: %v", job.ID, err))
				return
			}
			result = types.StringValue(string(encoded))
		}
		object, diags := types.ObjectValue(jobObject, map[string]attr.Value{
			"id": types.StringValue(job.ID), "type": types.StringValue(job.Type), "state": types.StringValue(job.State),
			"attempts": types.Int64Value(int64(job.Attempts)), "max_attempts": types.Int64Value(int64(job.MaxAttempts)),
			"error": types.StringPointerValue(job.Error), "preview_database_id": types.StringPointerValue(job.PreviewDatabaseID),
			"created_at": instantString(job.CreatedAt), "started_at": instantString(job.StartedAt),
			"completed_at": instantString(job.CompletedAt), "result": result,
		})
		resp.Diagnostics.Append(diags...)
		objects = append(objects, object)
	}
	list, diags := types.ListValue(types.ObjectType{AttrTypes: jobObject}, objects)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project_id"), projectID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("limit"), limit)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("jobs"), list)...)
}
