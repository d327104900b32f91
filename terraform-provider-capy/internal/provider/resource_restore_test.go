package provider

import (
	"context"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/knownvalue"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/statecheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"
	"github.com/hashicorp/terraform-plugin-testing/tfjsonpath"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

// testProject registers a project out of band (capy_project has tests of its own) and
// deletes it, forced, when the test ends.
func testProject(t *testing.T, databaseURL string) string {
	t.Helper()
	c := accClient(t)
	project, _, err := c.CreateProject(context.Background(), client.CreateProject{Name: accName(t, "prj"), DatabaseURL: databaseURL})
	if err != nil {
		t.Fatalf("create project: %v", err)
	}
	t.Cleanup(func() {
		if err := c.DeleteProject(context.Background(), project.ID, true); err != nil && !client.IsNotFound(err) {
			t.Errorf("delete project %s: %v", project.ID, err)
		}
	})
	return project.ID
}

func restoreConfig(body string) string {
	return accProviderConfig() + "\nresource \"capy_restore\" \"test\" {\n" + body + "}\n"
}

func restoreFromBackup(projectID, backupKey, trigger string) string {
	return restoreConfig(fmt.Sprintf("  project_id = %q\n  backup_key = %q\n  triggers   = { version = %q }\n", projectID, backupKey, trigger))
}

// testPreviewOf returns the preview of the project with this id, or nil when it is not
// listed.
func testPreviewOf(t *testing.T, projectID, previewID string) *client.PreviewDatabase {
	t.Helper()
	previews, err := accClient(t).ListPreviews(context.Background(), projectID)
	if err != nil {
		t.Fatalf("list previews: %v", err)
	}
	for i := range previews {
		if previews[i].ID == previewID {
			return &previews[i]
		}
	}
	return nil
}

// testPreviewGone fails unless the preview is gone (not listed, or deleted).
func testPreviewGone(t *testing.T, projectID string, previewID *string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		if *previewID == "" {
			return fmt.Errorf("no preview id was captured")
		}
		if p := testPreviewOf(t, projectID, *previewID); p != nil && (p.State == nil || *p.State != "deleted") {
			return fmt.Errorf("preview %s is still there (state %v)", *previewID, p.State)
		}
		return nil
	}
}

// testPreviewRows checks that the restore's preview holds the customers of the source.
func testPreviewRows(t *testing.T, sourceURL string, rows int) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		rs := s.RootModule().Resources["capy_restore.test"]
		if rs == nil {
			return fmt.Errorf("capy_restore.test not in state")
		}
		where := rs.Primary.Attributes["preview_database_url"]
		if u, err := url.Parse(sourceURL); err == nil && (u.Scheme == "postgresql" || u.Scheme == "postgres") {
			// the preview's URL carries no password: reach its database as the source's user
			u.Path = "/" + rs.Primary.Attributes["preview_database_name"]
			where = u.String()
		}
		got := accHelper(t, "rows", where, "customers")
		if got != strconv.Itoa(rows) {
			return fmt.Errorf("the preview has %s customers, the source %d", got, rows)
		}
		return nil
	}
}

func captureAttr(name, attribute string, into *string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		rs, ok := s.RootModule().Resources[name]
		if !ok {
			return fmt.Errorf("%s not in state", name)
		}
		*into = rs.Primary.Attributes[attribute]
		return nil
	}
}

func TestAccRestore_sqlite(t *testing.T) {
	accStart(t)
	_, databaseURL := accSQLiteDatabase(t, 12)
	testAccRestore(t, databaseURL, 12, `^sqlite:///`)
}

func TestAccRestore_postgres(t *testing.T) {
	accStart(t)
	testAccRestore(t, accPostgresDatabase(t), 20, `^postgresql://[^:@/]+@`)
}

// testAccRestore: a restore from a backup_key into a new preview that holds the source's
// rows, planned again with no change, imported, restored anew by a changed trigger (the
// old preview deleted), restored again after its preview is deleted out of band, and
// its preview deleted by destroy.
func testAccRestore(t *testing.T, databaseURL string, rows int, urlPattern string) {
	projectID := testProject(t, databaseURL)
	_, backupKey := testBackup(t, projectID)
	var firstPreview, secondPreview, thirdPreview, jobID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(s *terraform.State) error {
			return testPreviewGone(t, projectID, &thirdPreview)(s)
		},
		Steps: []resource.TestStep{
			{
				Config: restoreFromBackup(projectID, backupKey, "1"),
				ConfigStateChecks: []statecheck.StateCheck{
					statecheck.ExpectKnownValue("capy_restore.test", tfjsonpath.New("state"), knownvalue.StringExact("completed")),
					statecheck.ExpectKnownValue("capy_restore.test", tfjsonpath.New("target_kind"), knownvalue.StringExact("new_preview")),
					statecheck.ExpectKnownValue("capy_restore.test", tfjsonpath.New("preview_state"), knownvalue.StringExact("ready")),
					statecheck.ExpectKnownValue("capy_restore.test", tfjsonpath.New("ttl_hours"), knownvalue.Int64Exact(24)),
					statecheck.ExpectSensitiveValue("capy_restore.test", tfjsonpath.New("preview_database_url")),
				},
				Check: resource.ComposeTestCheckFunc(
					resource.TestMatchResourceAttr("capy_restore.test", "id", regexp.MustCompile(`^job_`)),
					resource.TestCheckResourceAttrPair("capy_restore.test", "id", "capy_restore.test", "job_id"),
					resource.TestMatchResourceAttr("capy_restore.test", "preview_database_id", regexp.MustCompile(`^prv_`)),
					resource.TestMatchResourceAttr("capy_restore.test", "preview_database_url", regexp.MustCompile(urlPattern)),
					resource.TestCheckResourceAttrSet("capy_restore.test", "preview_name"),
					resource.TestCheckResourceAttrSet("capy_restore.test", "preview_expires_at"),
					testPreviewRows(t, databaseURL, rows),
					captureAttr("capy_restore.test", "preview_database_id", &firstPreview),
					captureAttr("capy_restore.test", "id", &jobID),
				),
			},
			{ // a second plan changes nothing: the restore never runs again on its own
				Config: restoreFromBackup(projectID, backupKey, "1"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
			{ // import recovers everything the server records
				ResourceName:            "capy_restore.test",
				ImportState:             true,
				ImportStateIdFunc:       func(*terraform.State) (string, error) { return projectID + "/" + jobID, nil },
				ImportStateVerify:       true,
				ImportStateVerifyIgnore: []string{"triggers"},
			},
			{ // a changed trigger: a new restore, the old preview deleted first
				Config: restoreFromBackup(projectID, backupKey, "2"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("capy_restore.test", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				Check: resource.ComposeTestCheckFunc(
					captureAttr("capy_restore.test", "preview_database_id", &secondPreview),
					func(*terraform.State) error {
						if secondPreview == firstPreview {
							return fmt.Errorf("the changed trigger made no new preview")
						}
						return nil
					},
					testPreviewGone(t, projectID, &firstPreview),
					testPreviewRows(t, databaseURL, rows),
				),
			},
			{ // the preview deleted behind Terraform's back: the next apply restores again
				PreConfig: func() {
					c := accClient(t)
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
					defer cancel()
					job, err := c.DeletePreview(ctx, secondPreview)
					if err != nil {
						t.Fatalf("delete preview out of band: %v", err)
					}
					if _, err := c.WaitForJob(ctx, job.ID, nil); err != nil {
						t.Fatalf("delete preview out of band: %v", err)
					}
				},
				Config: restoreFromBackup(projectID, backupKey, "2"),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("capy_restore.test", plancheck.ResourceActionCreate)},
				},
				Check: resource.ComposeTestCheckFunc(
					captureAttr("capy_restore.test", "preview_database_id", &thirdPreview),
					func(*terraform.State) error {
						if thirdPreview == secondPreview || thirdPreview == "" {
							return fmt.Errorf("no new preview after the old one was deleted")
						}
						return nil
					},
					testPreviewRows(t, databaseURL, rows),
				),
			},
		},
	})
}

// An imported restore plans no new restore: what the server does not record (triggers)
// is recorded in place by the first apply.
func TestAccRestore_importThenPlan(t *testing.T) {
	accStart(t)
	_, databaseURL := accSQLiteDatabase(t, 4)
	projectID := testProject(t, databaseURL)
	_, backupKey := testBackup(t, projectID)
	c := accClient(t)
	ctx := context.Background()
	job, err := c.CreateRestore(ctx, projectID, client.CreateRestore{BackupKey: backupKey, PreviewName: "imported-preview", TTLHours: 5})
	if err != nil {
		t.Fatalf("restore out of band: %v", err)
	}
	if _, err := c.WaitForJob(ctx, job.ID, nil); err != nil {
		t.Fatalf("restore out of band: %v", err)
	}
	// the provider named in full: an import step's configuration gets no generated source
	required := "terraform {\n  required_providers {\n    capy = { source = \"capy/capy\" }\n  }\n}\n"
	config := required + restoreConfig(fmt.Sprintf("  project_id   = %q\n  backup_key   = %q\n  preview_name = \"imported-preview\"\n  ttl_hours    = 5\n  triggers     = { version = \"1\" }\n", projectID, backupKey))
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:             config,
				ResourceName:       "capy_restore.test",
				ImportState:        true,
				ImportStateId:      projectID + "/" + job.ID,
				ImportStatePersist: true,
				ImportStateCheck: func(states []*terraform.InstanceState) error {
					if len(states) != 1 {
						return fmt.Errorf("%d states imported", len(states))
					}
					a := states[0].Attributes
					for name, want := range map[string]string{
						"backup_key": backupKey, "preview_name": "imported-preview", "ttl_hours": "5",
						"target_kind": "new_preview", "state": "completed", "project_id": projectID,
					} {
						if a[name] != want {
							return fmt.Errorf("imported %s = %q, want %q", name, a[name], want)
						}
					}
					return nil
				},
			},
			{
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("capy_restore.test", plancheck.ResourceActionUpdate)},
				},
				Check: resource.TestCheckResourceAttr("capy_restore.test", "id", job.ID),
			},
			{ // recorded: a trigger change now runs a new restore
				Config: required + restoreConfig(fmt.Sprintf("  project_id   = %q\n  backup_key   = %q\n  preview_name = \"imported-preview\"\n  ttl_hours    = 5\n  triggers     = { version = \"2\" }\n", projectID, backupKey)),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("capy_restore.test", plancheck.ResourceActionDestroyBeforeCreate)},
				},
			},
		},
	})
}

// A restore whose job fails fails the apply with the job's error, keeps nothing in state
// and leaves no preview behind.
func TestAccRestore_failing(t *testing.T) {
	accStart(t)
	_, databaseURL := accSQLiteDatabase(t, 6)
	projectID := testProject(t, databaseURL)
	_, backupKey := testBackup(t, projectID)
	accHelper(t, "corrupt-blob", backupKey)
	config := restoreFromBackup(projectID, backupKey, "1")
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config:      config,
				ExpectError: regexp.MustCompile(`(?s)Restore failed.*checksum`),
			},
			{ // nothing was kept: the next plan creates it again; no preview was left behind
				PreConfig: func() {
					previews, err := accClient(t).ListPreviews(context.Background(), projectID)
					if err != nil {
						t.Fatalf("list previews: %v", err)
					}
					for _, p := range previews {
						if p.State == nil || *p.State != "deleted" {
							t.Errorf("the failed restore left preview %s (state %v)", p.ID, p.State)
						}
					}
				},
				Config:             config,
				PlanOnly:           true,
				ExpectNonEmptyPlan: true,
			},
		},
	})
}

func TestAccRestore_planTimeRefusals(t *testing.T) {
	accStart(t)
	refused := func(body, pattern string) resource.TestStep {
		return resource.TestStep{Config: restoreConfig(body), PlanOnly: true, ExpectError: regexp.MustCompile(pattern)}
	}
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			refused("  project_id = \"prj_1\"\n  backup_key = \"k\"\n  restore_point_id = \"rp_1\"\n",
				`(?s)backup_key and restore_point_id are both set`),
			refused("  project_id = \"prj_1\"\n",
				`(?s)one of backup_key, restore_time or restore_point_id is required`),
			refused("  project_id = \"prj_1\"\n  backup_key = \"k\"\n  target_kind = \"project\"\n",
				`(?s)confirm_project_overwrite: must be true when target_kind is 'project'`),
			refused("  project_id = \"prj_1\"\n  backup_key = \"k\"\n  target_kind = \"preview\"\n",
				`(?s)preview_id: required when target_kind is 'preview'`),
			refused("  project_id = \"prj_1\"\n  backup_key = \"k\"\n  target_kind = \"project\"\n  confirm_project_overwrite = true\n  ttl_hours = 3\n",
				`(?s)ttl_hours: only allowed when target_kind is 'new_preview'`),
			refused("  project_id = \"prj_1\"\n  restore_time = \"2999-01-01T00:00:00Z\"\n",
				`(?s)restore_time: 2999-01-01T00:00:00Z is in the future`),
			refused("  project_id = \"prj_1\"\n  backup_key = \"k\"\n  ttl_hours = 500\n",
				`(?s)ttl_hours.*between 1 and 168`),
		},
	})
}

// A SQLite project with PITR on: a restore to a moment inside the window lands in a new
// preview; the same instant spelt otherwise runs no new restore. Then a restore into
// the project itself (confirmed) is kept while its job exists and only forgotten by
// destroy.
func TestAccRestore_sqliteRestoreTimeAndProject(t *testing.T) {
	accStart(t)
	path, databaseURL := accSQLiteDatabase(t, 7)
	testSQLiteWAL(t, path)
	projectID := testProject(t, databaseURL)
	c := accClient(t)
	ctx := context.Background()
	if _, _, err := c.PutPitr(ctx, projectID, true); err != nil {
		t.Fatalf("turn PITR on: %v", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	var moment time.Time
	for {
		pitr, err := c.GetPitr(ctx, projectID)
		if err != nil {
			t.Fatalf("read PITR: %v", err)
		}
		if pitr.WindowStart != nil && pitr.WindowEnd != nil && pitr.WindowEnd.After(*pitr.WindowStart) {
			moment = *pitr.WindowEnd
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the PITR window did not open within 2 minutes (does capy serve run workers?)")
		}
		time.Sleep(500 * time.Millisecond)
	}
	withOffset := moment.UTC().Format("2006-01-02T15:04:05.999999999") + "+00:00"
	inZ := moment.UTC().Format(time.RFC3339Nano)
	atMoment := func(spelt string) string {
		return restoreConfig(fmt.Sprintf("  project_id   = %q\n  restore_time = %q\n  ttl_hours    = 2\n", projectID, spelt))
	}
	_, backupKey := testBackup(t, projectID)
	intoProject := restoreConfig(fmt.Sprintf("  project_id = %q\n  backup_key = %q\n  target_kind = \"project\"\n  confirm_project_overwrite = true\n", projectID, backupKey))
	var previewID string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: atMoment(withOffset),
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("capy_restore.test", "restore_time", withOffset),
					resource.TestCheckResourceAttr("capy_restore.test", "ttl_hours", "2"),
					resource.TestCheckResourceAttr("capy_restore.test", "state", "completed"),
					testPreviewRows(t, databaseURL, 7),
					captureAttr("capy_restore.test", "preview_database_id", &previewID),
				),
			},
			{ // the same instant in another spelling: recorded in place, no new restore
				Config: atMoment(inZ),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("capy_restore.test", plancheck.ResourceActionUpdate)},
				},
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttrPtr("capy_restore.test", "preview_database_id", &previewID),
					resource.TestCheckResourceAttr("capy_restore.test", "restore_time", inZ),
				),
			},
			{ // into the project: the preview of the restore above goes with it
				Config: intoProject,
				Check: resource.ComposeTestCheckFunc(
					resource.TestCheckResourceAttr("capy_restore.test", "target_kind", "project"),
					resource.TestCheckResourceAttr("capy_restore.test", "state", "completed"),
					resource.TestCheckNoResourceAttr("capy_restore.test", "preview_database_id"),
					resource.TestCheckNoResourceAttr("capy_restore.test", "preview_database_url"),
					testPreviewGone(t, projectID, &previewID),
					func(*terraform.State) error {
						if got := accHelper(t, "rows", path, "customers"); got != "7" {
							return fmt.Errorf("the project's database has %s customers after the restore, want 7", got)
						}
						return nil
					},
				),
			},
			{
				Config: intoProject,
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectEmptyPlan()},
				},
			},
		},
	})
	// destroy only forgot the restore into the project: the project is still there
	if _, err := c.GetProject(ctx, projectID); err != nil {
		t.Fatalf("the project after destroying a restore into it: %v", err)
	}
}

// A restore that outlives its create timeout fails the apply but stays in state,
// tainted: the next apply replaces it, deleting the preview it made, rather than leave
// a preview nobody knows of.
func TestAccRestore_createTimeout(t *testing.T) {
	accStart(t)
	_, databaseURL := accSQLiteDatabase(t, 3)
	projectID := testProject(t, databaseURL)
	_, backupKey := testBackup(t, projectID)
	body := fmt.Sprintf("  project_id = %q\n  backup_key = %q\n", projectID, backupKey)
	var firstPreview, secondPreview string
	resource.Test(t, resource.TestCase{
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy: func(s *terraform.State) error {
			return testPreviewGone(t, projectID, &secondPreview)(s)
		},
		Steps: []resource.TestStep{
			{
				Config:      restoreConfig(body + "  timeouts {\n    create = \"1ms\"\n  }\n"),
				ExpectError: regexp.MustCompile(`(?s)did not finish in 1ms`),
			},
			{
				Config: restoreConfig(body),
				ConfigPlanChecks: resource.ConfigPlanChecks{
					PreApply: []plancheck.PlanCheck{plancheck.ExpectResourceAction("capy_restore.test", plancheck.ResourceActionDestroyBeforeCreate)},
				},
				PreConfig: func() {
					previews, err := accClient(t).ListPreviews(context.Background(), projectID)
					if err != nil || len(previews) != 1 {
						t.Fatalf("the timed-out restore's preview: %d previews, %v", len(previews), err)
					}
					firstPreview = previews[0].ID
				},
				Check: resource.ComposeTestCheckFunc(
					captureAttr("capy_restore.test", "preview_database_id", &secondPreview),
					resource.TestCheckResourceAttr("capy_restore.test", "state", "completed"),
					testPreviewGone(t, projectID, &firstPreview),
				),
			},
		},
	})
}
