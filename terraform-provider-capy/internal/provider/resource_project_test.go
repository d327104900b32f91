package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/config"
	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

// projectConfig is a capy_project named name over the URL in variable "url" (kept out
// of the configuration's text: a PostgreSQL URL holds a password).
func projectConfig(name, extra string) string {
	return accProviderConfig() + fmt.Sprintf(`
variable "url" {
  type      = string
  sensitive = true
}

resource "capy_project" "test" {
  name         = %q
  database_url = var.url
%s}
`, name, extra)
}

func configVariables(url string) config.Variables {
	return config.Variables{"url": config.StringVariable(url)}
}

// testBackup takes a backup of the project out of band (what capy_backup would do) and
// returns its id and key.
func testBackup(t *testing.T, projectID string) (string, string) {
	t.Helper()
	c := accClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	job, err := c.CreateBackup(ctx, projectID, "acceptance")
	if err != nil {
		t.Fatalf("backup of %s: %v", projectID, err)
	}
	done, err := c.WaitForJob(ctx, job.ID, nil)
	if err != nil {
		t.Fatalf("backup of %s: %v", projectID, err)
	}
	backupID, key := done.ResultString("backup_id"), done.ResultString("backup_key")
	if backupID == "" || key == "" {
		t.Fatalf("backup job %s completed with no backup_id/backup_key in its result", done.ID)
	}
	return backupID, key
}

// testProjectGone is a CheckDestroy: no capy_project of the state is left on the server.
func testProjectGone(t *testing.T) func(*terraform.State) error {
	return func(s *terraform.State) error {
		c := accClient(t)
		for _, rs := range s.RootModule().Resources {
			if rs.Type != "capy_project" {
				continue
			}
			_, err := c.GetProject(context.Background(), rs.Primary.ID)
			if err == nil {
				return fmt.Errorf("project %s still exists after destroy", rs.Primary.ID)
			}
			if !client.IsNotFound(err) {
				return fmt.Errorf("project %s: %v", rs.Primary.ID, err)
			}
		}
		return nil
	}
}

// captureID stores a resource's id when a step's checks run.
func captureID(name string, into *string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		rs, ok := s.RootModule().Resources[name]
		if !ok {
			return fmt.Errorf("%s not in state", name)
		}
		*into = rs.Primary.ID
		return nil
	}
}

// testSQLiteWAL switches a SQLite database to WAL mode (PITR needs it), with the
// helper's Python.
func testSQLiteWAL(t *testing.T, path string) {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(os.Getenv("CAPY_TF_HELPER")), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("CAPY_TF_HELPER: %v", err)
	}
	script := "import sqlite3, sys; db = sqlite3.connect(sys.argv[1]); " +
		"mode = db.execute('PRAGMA journal_mode=WAL').fetchone()[0]; db.close(); " +
		"sys.exit(0 if mode == 'wal' else 'journal mode is ' + mode)"
	out, err := exec.Command(argv[0], "-c", script, path).CombinedOutput()
	if err != nil {
		t.Fatalf("switch %s to WAL: %v: %s", path, err, out)
	}
}

func TestAccProject_sqlite(t *testing.T) {
	accStart(t)
	_, url := accSQLiteDatabase(t, 10)
	_, otherURL := accSQLiteDatabase(t, 3)
	name := accName(t, "prj")
	var projectID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testProjectGone(t),
		Steps: []resource.TestStep{
			{
				Config:          projectConfig(name, ""),
				ConfigVariables: configVariables(url),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("capy_project.test", tfjsonpath.New("database_kind"), knownvalue.StringExact("sqlite")),
					statecheck.ExpectKnownValue("capy_project.test", tfjsonpath.New("environment"), knownvalue.StringExact("non_production")),
					statecheck.ExpectKnownValue("capy_project.test", tfjsonpath.New("force_destroy"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue("capy_project.test", tfjsonpath.New("pitr"), knownvalue.Bool(false)),
					statecheck.ExpectKnownValue("capy_project.test", tfjsonpath.New("pitr_window_start"), knownvalue.Null()),
					statecheck.ExpectKnownValue("capy_project.test", tfjsonpath.New("created_at"), knownvalue.NotNull()),
				},
				Check: resource.ComposeTestCheckFunc(
					resource.TestMatchResourceAttr("capy_project.test", "id", regexp.MustCompile(`^prj_`)),
					captureID("capy_project.test", &projectID),
				),
			},
			{ // a second plan of the same configuration changes nothing
				Config:          projectConfig(name, ""),
				ConfigVariables: configVariables(url),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{ // import by id: every attribute but database_url (never returned) comes back
				ResourceName:            "capy_project.test",
				ConfigVariables:         configVariables(url),
				ImportState:             true,
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"database_url"},
			},
			{ // a new database_url is an update in place, and the database's name follows it
				Config:          projectConfig(name, ""),
				ConfigVariables: configVariables(otherURL),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction("capy_project.test", plancheck.ResourceActionUpdate),
						plancheck.ExpectUnknownValue("capy_project.test", tfjsonpath.New("database_name")),
					},
				},
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttrPtr("capy_project.test", "id", &projectID),
					resource.TestMatchResourceAttr("capy_project.test", "database_name", regexp.MustCompile(`sqlite-.*/app\.db$`)),
				),
			},
			{ // a backup out of band: destroy without force_destroy is refused, saying what to do
				PreConfig:       func() { testBackup(t, projectID) },
				Config:          projectConfig(name, ""),
				ConfigVariables: configVariables(otherURL),
				Destroy:         true,
				ExpectError:     regexp.MustCompile(`(?s)still has 1\s+backup.*set\s+force_destroy\s+=\s+true.*apply`),
			},
			{ // force_destroy changes in place, with no call; the final destroy then succeeds
				Config:          projectConfig(name, "  force_destroy = true\n"),
				ConfigVariables: configVariables(otherURL),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("capy_project.test", plancheck.ResourceActionUpdate)},
				},
				Check: resource.TestCheckResourceAttr("capy_project.test", "force_destroy", "true"),
			},
		},
	})
}

func TestAccProject_postgres(t *testing.T) {
	accStart(t)
	url := accPostgresDatabase(t)
	name := accName(t, "prj")
	var projectID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testProjectGone(t),
		Steps: []resource.TestStep{
			{
				Config:          projectConfig(name, "  environment = \"production\"\n"),
				ConfigVariables: configVariables(url),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("capy_project.test", tfjsonpath.New("database_kind"), knownvalue.StringExact("postgresql")),
					statecheck.ExpectKnownValue("capy_project.test", tfjsonpath.New("environment"), knownvalue.StringExact("production")),
					statecheck.ExpectSensitiveValue("capy_project.test", tfjsonpath.New("database_url")),
				},
				Check: captureID("capy_project.test", &projectID),
			},
			{
				Config:          projectConfig(name, "  environment = \"production\"\n"),
				ConfigVariables: configVariables(url),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{ // the environment cannot change in place: the project is replaced
				Config:          projectConfig(name, "  environment = \"non_production\"\n"),
				ConfigVariables: configVariables(url),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("capy_project.test", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: func(s *terraform.State) error {
					if s.RootModule().Resources["capy_project.test"].Primary.ID == projectID {
						return fmt.Errorf("the project was not replaced")
					}
					return captureID("capy_project.test", &projectID)(s)
				},
			},
			{
				PreConfig:       func() { testBackup(t, projectID) },
				Config:          projectConfig(name, ""),
				ConfigVariables: configVariables(url),
				Destroy:         true,
				ExpectError:     regexp.MustCompile(`(?s)still has 1\s+backup.*force_destroy\s+=\s+true`),
			},
			{
				Config:          projectConfig(name, "  force_destroy = true\n"),
				ConfigVariables: configVariables(url),
			},
		},
	})
}

func TestAccProject_sqlitePitr(t *testing.T) {
	accStart(t)
	path, url := accSQLiteDatabase(t, 5)
	testSQLiteWAL(t, path)
	name := accName(t, "prj")
	var projectID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             testProjectGone(t),
		Steps: []resource.TestStep{
			{
				Config:          projectConfig(name, "  pitr = true\n  force_destroy = true\n"),
				ConfigVariables: configVariables(url),
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("capy_project.test", "pitr", "true"),
					captureID("capy_project.test", &projectID),
				),
			},
			{ // PITR turned off behind Terraform's back: the refresh sees it, the apply turns it on again
				PreConfig: func() {
					if _, _, err := accClient(t).PutPitr(context.Background(), projectID, false); err != nil {
						t.Fatalf("turn PITR off out of band: %v", err)
					}
				},
				Config:          projectConfig(name, "  pitr = true\n  force_destroy = true\n"),
				ConfigVariables: configVariables(url),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("capy_project.test", plancheck.ResourceActionUpdate)},
				},
				Check: resource.TestCheckResourceAttr("capy_project.test", "pitr", "true"),
			},
			{
				Config:          projectConfig(name, "  pitr = false\n  force_destroy = true\n"),
				ConfigVariables: configVariables(url),
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("capy_project.test", "pitr", "false"),
					func(*terraform.State) error {
						pitr, err := accClient(t).GetPitr(context.Background(), projectID)
						if err != nil {
							return err
						}
						if pitr.Enabled {
							return fmt.Errorf("PITR is still on on the server")
						}
						return nil
					},
				),
			},
		},
	})
}

func TestAccProject_planTimeRefusals(t *testing.T) {
	accStart(t)
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:          projectConfig("p", ""),
				ConfigVariables: configVariables("mysql://user:secret-password@host/db"),
				PlanOnly:        true,
				ExpectError:     regexp.MustCompile(`database_url: unsupported URL`),
			},
			{
				Config:          projectConfig("p", "  environment = \"staging\"\n"),
				ConfigVariables: configVariables("sqlite:////tmp/x.db"),
				PlanOnly:        true,
				ExpectError:     regexp.MustCompile(`(?s)environment.*production`),
			},
		},
	})
}

// Against hosted CapyDB (a /v1/me without our server's name), create fails before
// sending anything, saying where projects are made there.
func TestAccProject_refusedByHostedCapyDB(t *testing.T) {
	accStart(t)
	var others atomic.Int32
	hosted := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/v1/me" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"organization":{"id":"org_1"},"principal":{"organization_id":"org_1","scopes":["projects:write"]}}`))
			return
		}
		others.Add(1)
		http.Error(w, `{"error":"not expected"}`, http.StatusInternalServerError)
	}))
	defer hosted.Close()
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: fmt.Sprintf("provider \"capy\" {\n  api_url = %q\n}\n", hosted.URL) + `
resource "capy_project" "test" {
  name         = "hosted"
  database_url = "postgresql://u@h/db"
}
`,
				ExpectError: regexp.MustCompile(`(?s)hosted CapyDB creates projects itself.*capydb_project`),
			},
		},
	})
	if n := others.Load(); n != 0 {
		t.Fatalf("%d call(s) besides GET /v1/me reached hosted CapyDB", n)
	}
}

// An imported project has no database_url in state (the server never returns it): the
// first plan updates it in place, nothing else; after that apply the plan is empty.
func TestAccProject_importThenPlan(t *testing.T) {
	accStart(t)
	_, url := accSQLiteDatabase(t, 2)
	projectID := testProject(t, url)
	project, err := accClient(t).GetProject(context.Background(), projectID)
	if err != nil {
		t.Fatalf("read project: %v", err)
	}
	// the provider named in full: an import step's configuration gets no generated source
	config := "terraform {\n  required_providers {\n    capy = { source = \"capy/capy\" }\n  }\n}\n" +
		projectConfig(project.Name, "")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:             config,
				ConfigVariables:    configVariables(url),
				ResourceName:       "capy_project.test",
				ImportState:        true,
				ImportStateId:      projectID,
				ImportStatePersist: true,
			},
			{
				Config:          config,
				ConfigVariables: configVariables(url),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{
						plancheck.ExpectResourceAction("capy_project.test", plancheck.ResourceActionUpdate),
						plancheck.ExpectKnownValue("capy_project.test", tfjsonpath.New("database_kind"), knownvalue.StringExact("sqlite")),
					},
				},
				Check: resource.TestCheckResourceAttr("capy_project.test", "id", projectID),
			},
			{
				Config:          config,
				ConfigVariables: configVariables(url),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
		},
	})
}
