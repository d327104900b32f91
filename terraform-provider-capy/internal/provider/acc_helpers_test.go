package provider

// Helpers of the acceptance tests. They run under `pytest tests/terraform` (the README's
// test command), which starts a real `capy serve` on loopback, mints a key with every
// scope, starts a PostgreSQL server and sets this environment (see tests/terraform/conftest.py):
//
//	TF_ACC=1, TF_ACC_TERRAFORM_PATH (OpenTofu), TF_ACC_PROVIDER_NAMESPACE, TF_ACC_PROVIDER_HOST
//	CAPY_TF_API_URL   the server's base URL
//	CAPY_TF_API_KEY   an organization key with every scope (a secret)
//	CAPY_TF_HELPER    JSON argv prefix of tests/terraform/acc_helper.py (sqlite-db, pg-db,
//	                  expire-backup, corrupt-blob, rows)
//	CAPY_TF_WORKDIR   a directory the tests may write into (SQLite files go under it)
//
// The key reaches the provider as CAPYDB_API_KEY (set once in TestMain), never through
// HCL: configurations the tests apply, and print when a step fails, hold no secret.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-go/tfprotov6"
	"github.com/hashicorp/terraform-plugin-testing/helper/acctest"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

// accEnvironment is what every acceptance test needs set (accPreCheck fails without it).
var accEnvironment = []string{
	"TF_ACC_TERRAFORM_PATH",
	"CAPY_TF_API_URL",
	"CAPY_TF_API_KEY",
	"CAPY_TF_HELPER",
	"CAPY_TF_WORKDIR",
}

// testAccProtoV6ProviderFactories serves the provider in the test process, for
// resource.TestCase's ProtoV6ProviderFactories.
var testAccProtoV6ProviderFactories = map[string]func() (tfprotov6.ProviderServer, error){
	"capy": providerserver.NewProtocol6WithError(New("test")()),
}

// TestMain gives the in-process provider the key through CAPYDB_API_KEY when the
// acceptance tests run (TF_ACC and CAPY_TF_API_KEY set): t.Setenv cannot be used in
// parallel tests, and the key must not appear in any configuration.
func TestMain(m *testing.M) {
	if os.Getenv("TF_ACC") != "" {
		if key := os.Getenv("CAPY_TF_API_KEY"); key != "" {
			if err := os.Setenv("CAPYDB_API_KEY", key); err != nil {
				fmt.Fprintln(os.Stderr, "set CAPYDB_API_KEY:", err)
				os.Exit(2)
			}
		}
	}
	os.Exit(m.Run())
}

// accPreCheck fails the test when a variable of the contract is missing: acceptance
// tests run only against the real server pytest starts, never against nothing.
func accPreCheck(t *testing.T) {
	t.Helper()
	var missing []string
	for _, name := range accEnvironment {
		if strings.TrimSpace(os.Getenv(name)) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%s not set: run the acceptance tests through `pytest tests/terraform` "+
			"(it starts capy serve and PostgreSQL and sets them)", strings.Join(missing, ", "))
	}
	if os.Getenv("CAPYDB_API_KEY") != os.Getenv("CAPY_TF_API_KEY") {
		t.Fatal("CAPYDB_API_KEY is not CAPY_TF_API_KEY: TestMain sets it when TF_ACC is set")
	}
}

// accProviderConfig is the provider block of every configuration: the server's URL,
// the key from CAPYDB_API_KEY (never inlined).
func accProviderConfig() string {
	return fmt.Sprintf("provider \"capy\" {\n  api_url = %q\n}\n", os.Getenv("CAPY_TF_API_URL"))
}

// skipWithoutAcc skips an acceptance test without TF_ACC, as resource.Test would, before
// it prepares anything (`go test ./...` alone runs the unit tests; pytest tests/terraform
// runs these with TF_ACC=1 against a real capy serve). This skip cannot happen in CI:
// tests/terraform/test_go.py always sets TF_ACC for the acceptance run, and fails it
// when CI is set and any TestAcc test reports SKIP.
func skipWithoutAcc(t *testing.T) {
	t.Helper()
	if os.Getenv("TF_ACC") == "" {
		t.Skip("acceptance test: runs with TF_ACC=1 under pytest tests/terraform")
	}
}

// accStart begins an acceptance test: skipped without TF_ACC, failed when the
// acceptance environment is incomplete.
func accStart(t *testing.T) {
	t.Helper()
	skipWithoutAcc(t)
	accPreCheck(t)
}

// accHelper runs tests/terraform/acc_helper.py with args and returns its stdout,
// trimmed. Its output may be a secret (pg-db prints a URL with a password): it is never
// logged, and a failure shows only the helper's stderr.
func accHelper(t *testing.T, args ...string) string {
	t.Helper()
	skipWithoutAcc(t)
	var argv []string
	if err := json.Unmarshal([]byte(os.Getenv("CAPY_TF_HELPER")), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("CAPY_TF_HELPER must be a JSON array of strings (the helper's argv prefix): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	command := exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...)
	var stdout, stderr bytes.Buffer
	command.Stdout, command.Stderr = &stdout, &stderr
	if err := command.Run(); err != nil {
		name := "(no command)"
		if len(args) > 0 {
			name = args[0]
		}
		t.Fatalf("acc_helper %s: %v\n%s", name, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String())
}

// accClient is a client of the test server, for what a test does behind Terraform's
// back (deleting a restore point, reading a job).
func accClient(t *testing.T) *client.Client {
	t.Helper()
	skipWithoutAcc(t)
	c, err := client.New(client.Config{
		BaseURL:   os.Getenv("CAPY_TF_API_URL"),
		APIKey:    os.Getenv("CAPY_TF_API_KEY"),
		UserAgent: "terraform-provider-capy-acceptance-tests",
	})
	if err != nil {
		t.Fatalf("client of the test server: %v", err)
	}
	return c
}

var unsafeForNames = regexp.MustCompile(`[^a-z0-9]+`)

// accName is a name no other test (or earlier run on the same server) uses:
// prefix-<test name>-<random>, lowercase letters, digits and dashes.
func accName(t *testing.T, prefix string) string {
	t.Helper()
	name := strings.Trim(unsafeForNames.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(name) > 30 {
		name = strings.Trim(name[len(name)-30:], "-")
	}
	return prefix + "-" + name + "-" + acctest.RandString(6)
}

// accSQLiteDatabase makes a SQLite database of `rows` customers under CAPY_TF_WORKDIR
// and returns its path and its sqlite:/// URL.
func accSQLiteDatabase(t *testing.T, rows int) (string, string) {
	t.Helper()
	path := filepath.Join(os.Getenv("CAPY_TF_WORKDIR"), accName(t, "sqlite"), "app.db")
	made := accHelper(t, "sqlite-db", path, fmt.Sprint(rows))
	return made, "sqlite:///" + made
}

// accPostgresDatabase makes a PostgreSQL database of 20 customers on the tests' server
// and returns its URL (a secret: never log it, never put it in a check's message).
func accPostgresDatabase(t *testing.T) string {
	t.Helper()
	name := strings.ReplaceAll(accName(t, "pg"), "-", "_")
	return accHelper(t, "pg-db", name)
}
