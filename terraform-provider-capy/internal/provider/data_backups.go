package provider

import (
	"context"
	"fmt"

	"github.com/hashicorp/terraform-plugin-framework/attr"
	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

var _ datasource.DataSourceWithConfigure = (*backupsDataSource)(nil)

// NewBackupsDataSource is capy_backups: every backup of a project.
func NewBackupsDataSource() datasource.DataSource { return &backupsDataSource{} }

type backupsDataSource struct{ data *providerData }

var backupObject = map[string]attr.Type{
	"id": types.StringType, "project_id": types.StringType, "backup_key": types.StringType, "label": types.StringType,
	"database_name": types.StringType, "size_bytes": types.Int64Type, "state": types.StringType,
	"verification_state": types.StringType, "verification_error": types.StringType,
	"verified_at": types.StringType, "created_at": types.StringType,
}

func (d *backupsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_backups"
}

func (d *backupsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	description := "Every backup of a project, as the server lists it (one call)."
	list := "The project's backups."
	size := "Size of the database it holds, in bytes."
	resp.Schema = schema.Schema{
		Description: description, MarkdownDescription: description,
		Attributes: map[string]schema.Attribute{
			"project_id": requiredProjectID("Id of the project."),
			"backups": schema.ListNestedAttribute{
				Computed: true, Description: list, MarkdownDescription: list,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id":                 computedString("Id of the backup."),
					"project_id":         computedString("Id of its project."),
					"backup_key":         computedString("Its key (what restore points and restores take)."),
					"label":              computedString("Its label, if any."),
					"database_name":      computedString("Name of the database it holds."),
					"size_bytes":         schema.Int64Attribute{Computed: true, Description: size, MarkdownDescription: size},
					"state":              computedString("`completed` or `expired`."),
					"verification_state": computedString("`pending`, `verified` or `failed`."),
					"verification_error": computedString("Why its verification failed, when it did."),
					"verified_at":        computedString("When it was verified (RFC 3339, UTC)."),
					"created_at":         computedString("When it was taken (RFC 3339, UTC)."),
				}},
			},
		},
	}
}

func (d *backupsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	if data := providerDataOf(req.ProviderData, &resp.Diagnostics); data != nil {
		d.data = data
	}
}

func (d *backupsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var projectID types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("project_id"), &projectID)...)
	if resp.Diagnostics.HasError() {
		return
	}
	backups, err := d.data.client.ListBackups(ctx, projectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Could not list backups", fmt.Sprintf("project %s: %v", projectID.ValueString(), err))
		return
	}
	objects := make([]attr.Value, 0, len(backups))
	for _, backup := range backups {
		object, diags := types.ObjectValue(backupObject, map[string]attr.Value{
			"id": types.StringValue(backup.ID), "project_id": types.StringValue(backup.ProjectID),
			"backup_key": types.StringValue(backup.BackupKey), "label": types.StringPointerValue(backup.Label),
			"database_name": types.StringPointerValue(backup.DatabaseName), "size_bytes": types.Int64PointerValue(backup.SizeBytes),
			"state": types.StringValue(backup.State), "verification_state": types.StringValue(backup.VerificationState),
			"verification_error": types.StringPointerValue(backup.VerificationError),
			"verified_at":        instantString(backup.VerifiedAt), "created_at": instantString(backup.CreatedAt),
		})
		resp.Diagnostics.Append(diags...)
		objects = append(objects, object)
	}
	list, diags := types.ListValue(types.ObjectType{AttrTypes: backupObject}, objects)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project_id"), projectID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("backups"), list)...)
}
