package provider

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-testing/helper/resource"
	"github.com/hashicorp/terraform-plugin-testing/plancheck"
	"github.com/hashicorp/terraform-plugin-testing/terraform"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

// accProject creates a project on the test server behind Terraform's back (capy_project
// is another resource's business) over a SQLite ("sqlite") or PostgreSQL ("pg")
// database, removed with its backups when the test ends; it returns the project's id.
func accProject(t *testing.T, kind string) string {
	t.Helper()
	var databaseURL string
	switch kind {
	case "sqlite":
		_, databaseURL = accSQLiteDatabase(t, 50)
	case "pg":
		databaseURL = accPostgresDatabase(t)
	default:
		t.Fatalf("accProject: unknown kind %q", kind)
	}
	c := accClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	project, job, err := c.CreateProject(ctx, client.CreateProject{Name: accName(t, "rp"), DatabaseURL: databaseURL})
	if err != nil {
		t.Fatalf("create the test's project: %v", err)
	}
	if job != nil {
		if _, err := c.WaitForJob(ctx, job.ID, nil); err != nil {
			t.Fatalf("set up the test's project: %v", err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := c.DeleteProject(ctx, project.ID, true); err != nil && !client.IsNotFound(err) {
			t.Errorf("remove the test's project %s: %v", project.ID, err)
		}
	})
	return project.ID
}

// capture stores an attribute's value for a later step.
func capture(name, key string, into *string) resource.TestCheckFunc {
	return resource.TestCheckResourceAttrWith(name, key, func(value string) error {
		*into = value
		return nil
	})
}

// differs checks that an attribute changed from the captured value.
func differs(name, key string, old *string) resource.TestCheckFunc {
	return resource.TestCheckResourceAttrWith(name, key, func(value string) error {
		if value == *old {
			return fmt.Errorf("%s.%s is still %s", name, key, value)
		}
		return nil
	})
}

// gone checks, once the test destroyed everything, that no restore point and no backup
// of those the configuration made is listed any more.
func gone(t *testing.T, projectID string) resource.TestCheckFunc {
	return func(*terraform.State) error {
		c := accClient(t)
		points, err := c.ListRestorePoints(context.Background(), projectID)
		if err != nil {
			return err
		}
		for _, point := range points {
			if strings.HasPrefix(point.Label, "acc-") {
				return fmt.Errorf("restore point %s (%s) is still listed after destroy", point.ID, point.Label)
			}
		}
		backups, err := c.ListBackups(context.Background(), projectID)
		if err != nil {
			return err
		}
		for _, backup := range backups {
			if backup.Label != nil && *backup.Label == "acc-backup" {
				return fmt.Errorf("backup %s (acc-backup) is still listed after destroy", backup.ID)
			}
		}
		return nil
	}
}

// jobResultNames checks that a completed backup job's result (a JSON string) names the
// backup's key.
func jobResultNames(jobs, backup string) resource.TestCheckFunc {
	return func(s *terraform.State) error {
		want := s.RootModule().Resources[backup].Primary.Attributes["backup_key"]
		attributes := s.RootModule().Resources[jobs].Primary.Attributes
		for name, value := range attributes {
			if !strings.HasSuffix(name, ".result") || value == "" {
				continue
			}
			var result map[string]any
			if err := json.Unmarshal([]byte(value), &result); err != nil {
				return fmt.Errorf("%s.%s is not JSON: %v", jobs, name, err)
			}
			if result["backup_key"] == want && attributes[strings.TrimSuffix(name, ".result")+".type"] == "project.backup" {
				return nil
			}
		}
		return fmt.Errorf("no project.backup job of %s has a result naming backup_key %s", jobs, want)
	}
}

func restorePointConfig(projectID string) string {
	return accProviderConfig() + fmt.Sprintf(`
resource "capy_backup" "b" {
  project_id = %[1]q
  label      = "acc-backup"
}

resource "capy_restore_point" "rp" {
  project_id = %[1]q
  label      = "acc-before-migration"
  note       = "taken by the acceptance test"
}

data "capy_restore_points" "all" {
  project_id = %[1]q
  depends_on = [capy_restore_point.rp]
}

data "capy_backups" "all" {
  project_id = %[1]q
  depends_on = [capy_backup.b, capy_restore_point.rp]
}

data "capy_jobs" "recent" {
  project_id = %[1]q
  limit      = 50
  depends_on = [capy_backup.b, capy_restore_point.rp]
}
`, projectID)
}

// TestAccRestorePointSQLite: create (a fresh verified backup), a no-change second plan,
// an out-of-band delete healed by the next apply, an expired backup replaced, import
// with no diff, capy_backup create/import/destroy and the data sources.
func TestAccRestorePointSQLite(t *testing.T) {
	accStart(t)
	projectID := accProject(t, "sqlite")
	testRestorePointLifecycle(t, projectID)
}

// TestAccRestorePointPostgreSQL: the same over a PostgreSQL project.
func TestAccRestorePointPostgreSQL(t *testing.T) {
	accStart(t)
	projectID := accProject(t, "pg")
	testRestorePointLifecycle(t, projectID)
}

func testRestorePointLifecycle(t *testing.T, projectID string) {
	var pointID, backupKey, backupID string
	config := restorePointConfig(projectID)
	rp := "capy_restore_point.rp"
	importID := func(name string) resource.ImportStateIdFunc {
		return func(s *terraform.State) (string, error) {
			r, ok := s.RootModule().Resources[name]
			if !ok {
				return "", fmt.Errorf("%s not in state", name)
			}
			return r.Primary.Attributes["project_id"] + "/" + r.Primary.ID, nil
		}
	}
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 func() { accPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		CheckDestroy:             gone(t, projectID),
		Steps: []resource.TestStep{
			{ // create; the framework then checks that a second plan is empty
				Config: config,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(rp, "state", "active"),
					resource.TestCheckResourceAttr(rp, "kind", "backup"),
					resource.TestCheckResourceAttr(rp, "label", "acc-before-migration"),
					resource.TestCheckNoResourceAttr(rp, "pitr_time"),
					resource.TestMatchResourceAttr(rp, "backup_key", regexp.MustCompile(`.`)),
					resource.TestMatchResourceAttr(rp, "created_at", regexp.MustCompile(`Z$`)),
					capture(rp, "id", &pointID),
					capture(rp, "backup_key", &backupKey),
					capture(rp, "backup_id", &backupID),
					resource.TestCheckResourceAttr("capy_backup.b", "verification_state", "verified"),
					resource.TestCheckResourceAttr("capy_backup.b", "state", "completed"),
					resource.TestCheckResourceAttr("capy_backup.b", "label", "acc-backup"),
					resource.TestMatchResourceAttr("capy_backup.b", "size_bytes", regexp.MustCompile(`^[1-9][0-9]*$`)),
					resource.TestCheckTypeSetElemNestedAttrs("data.capy_restore_points.all", "restore_points.*", map[string]string{
						"label": "acc-before-migration", "state": "active", "kind": "backup", "note": "taken by the acceptance test",
					}),
					resource.TestCheckTypeSetElemAttrPair("data.capy_restore_points.all", "restore_points.*.id", rp, "id"),
					resource.TestCheckTypeSetElemAttrPair("data.capy_backups.all", "backups.*.backup_key", "capy_backup.b", "backup_key"),
					resource.TestCheckTypeSetElemAttrPair("data.capy_backups.all", "backups.*.backup_key", rp, "backup_key"),
					resource.TestCheckTypeSetElemNestedAttrs("data.capy_jobs.recent", "jobs.*", map[string]string{
						"type": "project.backup", "state": "completed",
					}),
					resource.TestCheckTypeSetElemNestedAttrs("data.capy_jobs.recent", "jobs.*", map[string]string{
						"type": "backup.verify", "state": "completed",
					}),
					jobResultNames("data.capy_jobs.recent", "capy_backup.b"),
				),
			},
			{ // deleted behind Terraform's back: the plan creates it again, the apply heals it
				PreConfig: func() {
					if err := accClient(t).DeleteRestorePoint(context.Background(), projectID, pointID); err != nil {
						t.Fatalf("delete the restore point out of band: %v", err)
					}
				},
				Config: config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(rp, plancheck.ResourceActionCreate),
					plancheck.ExpectResourceAction("capy_backup.b", plancheck.ResourceActionNoop),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					differs(rp, "id", &pointID),
					resource.TestCheckResourceAttr(rp, "state", "active"),
					capture(rp, "id", &pointID),
					capture(rp, "backup_key", &backupKey),
					capture(rp, "backup_id", &backupID),
				),
			},
			{ // its backup expired: refresh shows state "expired", the plan replaces it
				PreConfig: func() { accHelper(t, "expire-backup", backupID) },
				Config:    config,
				ConfigPlanChecks: resource.ConfigPlanChecks{PreApply: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction(rp, plancheck.ResourceActionReplace),
					plancheck.ExpectResourceAction("capy_backup.b", plancheck.ResourceActionNoop),
				}},
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr(rp, "state", "active"),
					differs(rp, "id", &pointID),
					differs(rp, "backup_key", &backupKey),
				),
			},
			{ // import: the same state, no diff
				ResourceName:      rp,
				ImportState:       true,
				ImportStateVerify: true,
				ImportStateIdFunc: importID(rp),
			},
			{
				ResourceName:      "capy_backup.b",
				ImportState:       true,
				ImportStateVerify: true,
				ImportStateIdFunc: importID("capy_backup.b"),
			},
		},
	})
}

// TestAccRestorePointPinnedBackup: a restore point pinned to a capy_backup; a refresh
// shows both as state "expired" once the backup expired (and the plan after it replaces
// them), never an error; a backup pinned by a restore point made outside Terraform is
// not destroyed, and the error names that restore point.
func TestAccRestorePointPinnedBackup(t *testing.T) {
	accStart(t)
	projectID := accProject(t, "sqlite")
	var backupID, pinID string
	config := accProviderConfig() + fmt.Sprintf(`
resource "capy_backup" "b" {
  project_id = %[1]q
}

resource "capy_restore_point" "pinned" {
  project_id = %[1]q
  label      = "acc-pinned"
  backup_key = capy_backup.b.backup_key
}
`, projectID)
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 func() { accPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttrPair("capy_restore_point.pinned", "backup_key", "capy_backup.b", "backup_key"),
					resource.TestCheckResourceAttrPair("capy_restore_point.pinned", "backup_id", "capy_backup.b", "id"),
					resource.TestCheckNoResourceAttr("capy_backup.b", "label"),
					capture("capy_backup.b", "id", &backupID),
				),
			},
			{ // expired behind Terraform's back: refresh says so, the plan after it replaces both
				PreConfig:          func() { accHelper(t, "expire-backup", backupID) },
				RefreshState:       true,
				ExpectNonEmptyPlan: true,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("capy_backup.b", "state", "expired"),
					resource.TestCheckResourceAttr("capy_restore_point.pinned", "state", "expired"),
				),
				RefreshPlanChecks: resource.RefreshPlanChecks{PostRefresh: []plancheck.PlanCheck{
					plancheck.ExpectResourceAction("capy_backup.b", plancheck.ResourceActionReplace),
					plancheck.ExpectResourceAction("capy_restore_point.pinned", plancheck.ResourceActionReplace),
				}},
			},
			{
				Config: config,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("capy_backup.b", "state", "completed"),
					resource.TestCheckResourceAttr("capy_restore_point.pinned", "state", "active"),
					differs("capy_backup.b", "id", &backupID),
					capture("capy_restore_point.pinned", "id", &pinID),
				),
			},
			{ // a restore point made outside Terraform pins the backup: destroy is refused, naming it
				PreConfig: func() {
					c := accClient(t)
					backups, err := c.ListBackups(context.Background(), projectID)
					if err != nil || len(backups) == 0 {
						t.Fatalf("list backups: %v", err)
					}
					var key string
					for _, backup := range backups {
						if backup.State == "completed" {
							key = backup.BackupKey
						}
					}
					if _, err := c.CreateRestorePoint(context.Background(), projectID, client.CreateRestorePoint{Label: "acc-outside", BackupKey: key}); err != nil {
						t.Fatalf("pin the backup out of band: %v", err)
					}
				},
				Config:      accProviderConfig(),
				ExpectError: regexp.MustCompile(`(?s)pinned by restore point.*acc-outside`),
			},
			{ // with the outside restore point gone, destroy goes through
				PreConfig: func() {
					c := accClient(t)
					points, err := c.ListRestorePoints(context.Background(), projectID)
					if err != nil {
						t.Fatalf("list restore points: %v", err)
					}
					for _, point := range points {
						if point.Label == "acc-outside" {
							if err := c.DeleteRestorePoint(context.Background(), projectID, point.ID); err != nil {
								t.Fatalf("delete the outside restore point: %v", err)
							}
						}
					}
				},
				Config: accProviderConfig(),
			},
		},
	})
}

// TestAccRestorePointPlanTimeRules: what needs no server is refused at plan time,
// naming the attribute.
func TestAccRestorePointPlanTimeRules(t *testing.T) {
	accStart(t)
	point := func(body string) string {
		return accProviderConfig() + "resource \"capy_restore_point\" \"x\" {\n  project_id = \"prj_plan\"\n" + body + "}\n"
	}
	future := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	steps := []struct{ body, want string }{
		{"  label = \"x\"\n  kind = \"pitr\"\n  backup_key = \"k\"\n", `backup_key is only for kind "backup"`},
		{"  label = \"x\"\n  pitr_time = \"2026-01-01T00:00:00Z\"\n", `pitr_time is only for kind "pitr"`},
		{"  label = \"x\"\n  kind = \"pitr\"\n  pitr_time = \"yesterday\"\n", `(?s)Invalid pitr_time.*RFC\s+3339`},
		{"  label = \"x\"\n  kind = \"pitr\"\n  pitr_time = \"" + future + "\"\n", `(?s)Invalid pitr_time.*in\s+the\s+future`},
		{"  label = \"" + strings.Repeat("l", labelMax+1) + "\"\n", `(?s)Invalid label.*1\s+to\s+200\s+characters`},
		{"  label = \"\"\n", `(?s)Invalid label.*1\s+to\s+200\s+characters`},
		{"  label = \"x\"\n  kind = \"snapshot\"\n", `(?s)kind.*value must be one of`},
		{"  label = \"x\"\n  note = \"" + strings.Repeat("n", noteMax+1) + "\"\n", `(?s)Invalid note.*at\s+most\s+2000`},
	}
	var testSteps []resource.TestStep
	for _, step := range steps {
		testSteps = append(testSteps, resource.TestStep{
			Config: point(step.body), PlanOnly: true, ExpectError: regexp.MustCompile(step.want),
		})
	}
	testSteps = append(testSteps, resource.TestStep{
		Config:      accProviderConfig() + "resource \"capy_backup\" \"x\" {\n  project_id = \"prj_plan\"\n  label = \" padded \"\n}\n",
		PlanOnly:    true,
		ExpectError: regexp.MustCompile(`(?s)Invalid label.*whitespace`),
	})
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 func() { accPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps:                    testSteps,
	})
}

// countingProxy forwards to the test server and counts the GETs of each path.
type countingProxy struct {
	mu     sync.Mutex
	counts map[string]int
}

func (p *countingProxy) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = map[string]int{}
}

func (p *countingProxy) count(path string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[path]
}

func startCountingProxy(t *testing.T) (*countingProxy, string) {
	t.Helper()
	target, err := url.Parse(os.Getenv("CAPY_TF_API_URL"))
	if err != nil {
		t.Fatalf("CAPY_TF_API_URL: %v", err)
	}
	proxy := &countingProxy{counts: map[string]int{}}
	forward := httputil.NewSingleHostReverseProxy(target)
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			proxy.mu.Lock()
			proxy.counts[r.URL.Path]++
			proxy.mu.Unlock()
		}
		forward.ServeHTTP(w, r)
	}))
	t.Cleanup(server.Close)
	return proxy, server.URL
}

// TestAccRestorePointRefreshListsOnce: a refresh of many restore points (and backups)
// of one project makes one list call each, counted by a proxy in front of the server.
func TestAccRestorePointRefreshListsOnce(t *testing.T) {
	accStart(t)
	projectID := accProject(t, "sqlite")
	proxy, proxyURL := startCountingProxy(t)
	const points = 25
	config := fmt.Sprintf(`
provider "capy" {
  api_url = %[1]q
}

resource "capy_backup" "b" {
  project_id = %[2]q
}

resource "capy_restore_point" "many" {
  count      = %[3]d
  project_id = %[2]q
  label      = "acc-many-${count.index}"
  backup_key = capy_backup.b.backup_key
}
`, proxyURL, projectID, points)
	listPoints := "/v1/projects/" + projectID + "/restore-points"
	listBackups := "/v1/projects/" + projectID + "/backups"
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 func() { accPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{Config: config},
			{
				PreConfig:    proxy.reset,
				RefreshState: true,
				Check: func(*terraform.State) error {
					if n := proxy.count(listPoints); n != 1 {
						return fmt.Errorf("a refresh of %d restore points listed them %d times, want once", points, n)
					}
					if n := proxy.count(listBackups); n != 1 {
						return fmt.Errorf("a refresh listed the backups %d times, want once", n)
					}
					return nil
				},
			},
		},
	})
}

// accEnablePitr turns point-in-time recovery on for a SQLite project (switching its
// database to WAL mode: set_wal, which the client does not send, so a PUT of its own)
// and waits until the window holds a moment one second old; it returns that moment.
func accEnablePitr(t *testing.T, projectID string) time.Time {
	t.Helper()
	body := strings.NewReader(`{"enabled": true, "set_wal": true}`)
	request, err := http.NewRequest(http.MethodPut, strings.TrimRight(os.Getenv("CAPY_TF_API_URL"), "/")+"/v1/projects/"+projectID+"/pitr", body)
	if err != nil {
		t.Fatal(err)
	}
	request.Header.Set("Authorization", "Bearer "+os.Getenv("CAPY_TF_API_KEY"))
	request.Header.Set("Content-Type", "application/json")
	response, err := http.DefaultClient.Do(request)
	if err != nil {
		t.Fatalf("turn PITR on: %v", err)
	}
	_ = response.Body.Close()
	if response.StatusCode >= 300 {
		t.Fatalf("turn PITR on: HTTP %d", response.StatusCode)
	}
	c := accClient(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		pitr, err := c.GetPitr(context.Background(), projectID)
		if err != nil {
			t.Fatalf("PITR status: %v", err)
		}
		if pitr.WindowStart != nil && pitr.WindowEnd != nil && pitr.WindowEnd.Sub(*pitr.WindowStart) > 2*time.Second {
			return pitr.WindowEnd.Add(-time.Second)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the PITR window did not open within 60 s: %+v", pitr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAccRestorePointPitr: restore points of kind pitr on a SQLite project with PITR
// on: one at the moment of creation (pitr_time unset), one at a moment spelled with
// "+00:00" (the same instant in state: no diff); a no-change plan; import with no diff.
func TestAccRestorePointPitr(t *testing.T) {
	accStart(t)
	projectID := accProject(t, "sqlite")
	moment := accEnablePitr(t, projectID).UTC()
	spelled := moment.Format("2006-01-02T15:04:05.000000-07:00") // …+00:00
	config := accProviderConfig() + fmt.Sprintf(`
resource "capy_restore_point" "now" {
  project_id = %[1]q
  label      = "acc-pitr-now"
  kind       = "pitr"
}

resource "capy_restore_point" "then" {
  project_id = %[1]q
  label      = "acc-pitr-then"
  kind       = "pitr"
  pitr_time  = %[2]q
}
`, projectID, spelled)
	resource.ParallelTest(t, resource.TestCase{
		PreCheck:                 func() { accPreCheck(t) },
		ProtoV6ProviderFactories: testAccProtoV6ProviderFactories,
		Steps: []resource.TestStep{
			{
				Config: config,
				Check: resource.ComposeAggregateTestCheckFunc(
					resource.TestCheckResourceAttr("capy_restore_point.then", "pitr_time", spelled),
					resource.TestCheckResourceAttr("capy_restore_point.then", "state", "active"),
					resource.TestCheckNoResourceAttr("capy_restore_point.then", "backup_key"),
					resource.TestMatchResourceAttr("capy_restore_point.now", "pitr_time", regexp.MustCompile(`^\d{4}-\d\d-\d\dT.*Z$`)),
					resource.TestCheckResourceAttr("capy_restore_point.now", "kind", "pitr"),
				),
			},
			{
				ResourceName:      "capy_restore_point.now",
				ImportState:       true,
				ImportStateVerify: true,
				ImportStateIdFunc: func(s *terraform.State) (string, error) {
					return projectID + "/" + s.RootModule().Resources["capy_restore_point.now"].Primary.ID, nil
				},
			},
		},
	})
}
