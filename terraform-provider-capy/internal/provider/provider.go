// Package provider is the capy provider: resources capy_project, capy_restore_point,
// capy_restore and capy_backup, and data sources capy_restore_points, capy_backups and
// capy_jobs, over the client of CapyDB's restore surface.
package provider

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/diag"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"github.com/hashicorp/terraform-plugin-log/tflog"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

var _ provider.Provider = (*capyProvider)(nil)

// New returns the provider's factory, as providerserver.Serve wants it.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &capyProvider{version: version} }
}

type capyProvider struct {
	version string
}

type providerModel struct {
	APIURL types.String `tfsdk:"api_url"`
	APIKey types.String `tfsdk:"api_key"`
}

// providerData is what every resource and data source gets from Configure.
type providerData struct {
	client *client.Client
	lists  *listCache
}

// providerDataOf is what Configure handed a resource or data source: nil before the
// provider is configured (the framework calls Configure early too), an error otherwise.
func providerDataOf(data any, diags *diag.Diagnostics) *providerData {
	if data == nil {
		return nil
	}
	configured, ok := data.(*providerData)
	if !ok {
		diags.AddError("Unexpected provider data", fmt.Sprintf("expected *providerData, got %T", data))
	}
	return configured
}

func (p *capyProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "capy"
	resp.Version = p.version
}

func (p *capyProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Restore points, restores, backups and projects of CapyDB's restore surface, " +
			"against hosted CapyDB or a self-hosted `capy serve`.",
		Attributes: map[string]schema.Attribute{
			"api_url": schema.StringAttribute{
				Optional: true,
				Description: "Base URL of the API, with or without a final `/v1` (e.g. `http://127.0.0.1:8080` " +
					"for a local `capy serve`). Default: `CAPYDB_API_URL`, else hosted CapyDB (`" + client.DefaultAPIURL + "`).",
			},
			"api_key": schema.StringAttribute{
				Optional:    true,
				Sensitive:   true,
				Description: "API key (`capy_live_…`). Default: `CAPYDB_API_KEY`. Prefer the variable: a key in configuration sits in your files.",
			},
		},
	}
}

func (p *capyProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var config providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &config)...)
	if resp.Diagnostics.HasError() {
		return
	}
	if config.APIURL.IsUnknown() {
		resp.Diagnostics.AddAttributeError(path.Root("api_url"), "api_url is not known yet",
			"The provider's api_url depends on a value known only after apply; give it a value known at plan time.")
	}
	if config.APIKey.IsUnknown() {
		resp.Diagnostics.AddAttributeError(path.Root("api_key"), "api_key is not known yet",
			"The provider's api_key depends on a value known only after apply; give it a value known at plan time.")
	}
	if resp.Diagnostics.HasError() {
		return
	}
	apiURL := os.Getenv("CAPYDB_API_URL")
	if !config.APIURL.IsNull() {
		apiURL = config.APIURL.ValueString()
	}
	apiKey := os.Getenv("CAPYDB_API_KEY")
	if !config.APIKey.IsNull() {
		apiKey = config.APIKey.ValueString()
	}
	c, err := client.New(client.Config{
		BaseURL:   apiURL,
		APIKey:    apiKey,
		UserAgent: "terraform-provider-capy/" + p.version,
		Debug: func(ctx context.Context, msg string, fields map[string]any) {
			tflog.Debug(ctx, msg, fields)
		},
	})
	if err != nil {
		resp.Diagnostics.AddError("Invalid capy provider configuration", err.Error())
		return
	}
	tflog.Debug(ctx, "capy provider configured", map[string]any{"api_url": c.BaseURL(), "api_key_set": apiKey != ""})
	data := &providerData{client: c, lists: newListCache()}
	resp.ResourceData = data
	resp.DataSourceData = data
}

func (p *capyProvider) Resources(_ context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		NewProjectResource,
		NewRestoreResource,
		NewRestorePointResource,
		NewBackupResource,
	}
}

func (p *capyProvider) DataSources(_ context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		NewRestorePointsDataSource,
		NewBackupsDataSource,
		NewJobsDataSource,
	}
}
