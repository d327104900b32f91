package provider

import (
	"fmt"
	"os"
	"regexp"
	"testing"

	"github.com/hashicorp/terraform-plugin-testing/config"
	"github.com/hashicorp/terraform-plugin-testing/helper/acctest"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
)

// backupsOfProjectConfig is a project over var.url and the capy_backups of it, under the
// provider block `providerBlock`.
func backupsOfProjectConfig(providerBlock, name string) string {
	return providerBlock + fmt.Sprintf(`
variable "url" {
  type      = string
  sensitive = true
}

resource "capy_project" "test" {
  name          = %q
  database_url  = var.url
  force_destroy = true
}

data "capy_backups" "test" {
  project_id = capy_project.test.id
}
`, name)
}

// The provider configured as the README says (api_url in HCL, the key from
// CAPYDB_API_KEY) talks to the server: a project it creates lists its backups, one taken
// behind its back shows on the next read, and the URL capy serve prints (with /v1)
// is the same server to it.
func TestAccProvider_configured(t *testing.T) {
	_, url := accSQLiteDatabase(t, 5)
	name := accName(t, "prj")
	var projectID, backupKey string
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { accPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testProjectGone(t),
		Steps: []resource.TestStep{
			{
				Config:          backupsOfProjectConfig(accProviderConfig(), name),
				ConfigVariables: configVariables(url),
				Check: resource.ComposeTestCheckFunc(
					captureID("capy_project.test", &projectID),
					resource.TestCheckResourceAttrPair("data.capy_backups.test", "project_id", "capy_project.test", "id"),
					resource.TestCheckResourceAttr("data.capy_backups.test", "backups.#", "0"),
				),
			},
			{
				PreConfig:       func() { _, backupKey = testBackup(t, projectID) },
				Config:          backupsOfProjectConfig(accProviderConfig(), name),
				ConfigVariables: configVariables(url),
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("data.capy_backups.test", "backups.#", "1"),
					resource.TestCheckResourceAttrPtr("data.capy_backups.test", "backups.0.backup_key", &backupKey),
					resource.TestCheckResourceAttrPtr("data.capy_backups.test", "backups.0.project_id", &projectID),
					resource.TestCheckResourceAttr("data.capy_backups.test", "backups.0.state", "completed"),
				),
			},
			{
				Config: backupsOfProjectConfig(
					fmt.Sprintf("provider \"capy\" {\n  api_url = %q\n}\n", os.Getenv("CAPY_TF_API_URL")+"/v1/"),
					name),
				ConfigVariables: configVariables(url),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
		},
	})
}

// A key the server does not know, given in HCL through a sensitive variable, fails the
// plan with the server's 401.
func TestAccProvider_unknownKey(t *testing.T) {
	key := "capy_live_" + acctest.RandStringFromCharSet(43, acctest.CharSetAlphaNum)
	resource.Test(t, resource.TestCase{
		PreCheck:                 func() { accPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: fmt.Sprintf(`
variable "key" {
  type      = string
  sensitive = true
}

provider "capy" {
  api_url = %q
  api_key = var.key
}

data "capy_backups" "test" {
  project_id = "prj_0000000000000000"
}
`, os.Getenv("CAPY_TF_API_URL")),
				ConfigVariables: config.Variables{"key": config.StringVariable(key)},
				ExpectError:     regexp.MustCompile(`(?s)Could not list backups.*401\s+Unauthorized`),
			},
		},
	})
}
