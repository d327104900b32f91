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

var _ datasource.DataSourceWithConfigure = (*restorePointsDataSource)(nil)

// NewRestorePointsDataSource is capy_restore_points: every restore point of a project.
func NewRestorePointsDataSource() datasource.DataSource { return &restorePointsDataSource{} }

type restorePointsDataSource struct{ data *providerData }

func computedString(text string) schema.StringAttribute {
	return schema.StringAttribute{Computed: true, Description: text, MarkdownDescription: text}
}

func requiredProjectID(text string) schema.StringAttribute {
	return schema.StringAttribute{Required: true, Description: text, MarkdownDescription: text}
}

var restorePointObject = map[string]attr.Type{
	"id": types.StringType, "project_id": types.StringType, "label": types.StringType, "note": types.StringType,
	"kind": types.StringType, "backup_id": types.StringType, "backup_key": types.StringType,
	"pitr_time": types.StringType, "state": types.StringType, "created_at": types.StringType, "updated_at": types.StringType,
}

func (d *restorePointsDataSource) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_restore_points"
}

func (d *restorePointsDataSource) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	description := "Every restore point of a project, as the server lists it (one call)."
	list := "The project's restore points."
	resp.Schema = schema.Schema{
		Description: description, MarkdownDescription: description,
		Attributes: map[string]schema.Attribute{
			"project_id": requiredProjectID("Id of the project."),
			"restore_points": schema.ListNestedAttribute{
				Computed: true, Description: list, MarkdownDescription: list,
				NestedObject: schema.NestedAttributeObject{Attributes: map[string]schema.Attribute{
					"id":         computedString("Id of the restore point."),
					"project_id": computedString("Id of its project."),
					"label":      computedString("Its name."),
					"note":       computedString("Its note, if any."),
					"kind":       computedString("`backup` or `pitr`."),
					"backup_id":  computedString("Id of the pinned backup (kind `backup`)."),
					"backup_key": computedString("Key of the pinned backup (kind `backup`)."),
					"pitr_time":  computedString("The pinned moment (kind `pitr`), RFC 3339, UTC."),
					"state":      computedString("`active` or `expired`."),
					"created_at": computedString("When it was created (RFC 3339, UTC)."),
					"updated_at": computedString("When it last changed (RFC 3339, UTC)."),
				}},
			},
		},
	}
}

func (d *restorePointsDataSource) Configure(_ context.Context, req datasource.ConfigureRequest, resp *datasource.ConfigureResponse) {
	if data := providerDataOf(req.ProviderData, &resp.Diagnostics); data != nil {
		d.data = data
	}
}

func (d *restorePointsDataSource) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var projectID types.String
	resp.Diagnostics.Append(req.Config.GetAttribute(ctx, path.Root("project_id"), &projectID)...)
	if resp.Diagnostics.HasError() {
		return
	}
	points, err := d.data.client.ListRestorePoints(ctx, projectID.ValueString())
	if err != nil {
		resp.Diagnostics.AddError("Could not list restore points", fmt.Sprintf("project %s: %v", projectID.ValueString(), err))
		return
	}
	objects := make([]attr.Value, 0, len(points))
	for _, point := range points {
		object, diags := types.ObjectValue(restorePointObject, map[string]attr.Value{
			"id": types.StringValue(point.ID), "project_id": types.StringValue(point.ProjectID),
			"label": types.StringValue(point.Label), "note": types.StringPointerValue(point.Note),
			"kind": types.StringValue(point.Kind), "backup_id": types.StringPointerValue(point.BackupID),
			"backup_key": types.StringPointerValue(point.BackupKey), "pitr_time": instantString(point.PitrTime),
			"state": types.StringValue(point.State), "created_at": instantString(point.CreatedAt),
			"updated_at": instantString(point.UpdatedAt),
		})
		resp.Diagnostics.Append(diags...)
		objects = append(objects, object)
	}
	list, diags := types.ListValue(types.ObjectType{AttrTypes: restorePointObject}, objects)
	resp.Diagnostics.Append(diags...)
	if resp.Diagnostics.HasError() {
		return
	}
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("project_id"), projectID)...)
	resp.Diagnostics.Append(resp.State.SetAttribute(ctx, path.Root("restore_points"), list)...)
}
