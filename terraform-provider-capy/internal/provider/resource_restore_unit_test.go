package provider

import (
	"testing"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

func pointer[T any](value T) *T { return &value }

func TestPreviewURL(t *testing.T) {
	for _, tc := range []struct {
		name    string
		preview client.PreviewDatabase
		want    string
	}{
		{"postgres", client.PreviewDatabase{
			PublicHost: pointer("db.example"), DirectPort: pointer(5433), RoleName: pointer("preview_role"),
			DatabaseName: pointer("prv_db"), SSLMode: pointer("require"),
		}, "postgresql://preview_role@db.example:5433/prv_db?sslmode=require"},
		{"postgres without port, role or sslmode", client.PreviewDatabase{
			PublicHost: pointer("127.0.0.1"), DatabaseName: pointer("prv_db"),
		}, "postgresql://127.0.0.1/prv_db"},
		{"sqlite", client.PreviewDatabase{DatabaseName: pointer("/srv/previews/prv_1.db")}, "sqlite:////srv/previews/prv_1.db"},
		{"nothing to reach", client.PreviewDatabase{DatabaseName: pointer("relative")}, ""},
		{"no database yet", client.PreviewDatabase{PublicHost: pointer("h")}, ""},
	} {
		if got := previewURL(&tc.preview); got != tc.want {
			t.Errorf("%s: previewURL = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestPreviewLost(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	later, earlier := now.Add(time.Hour), now.Add(-time.Second)
	for _, tc := range []struct {
		state   string
		expires *time.Time
		lost    bool
	}{
		{"ready", &later, false},
		{"creating", &later, false},
		{"ready", &earlier, true}, // past its TTL: the server drops it at its next tick
		{"ready", &now, true},
		{"deleting", &later, true},
		{"deleted", &later, true},
		{"failed", &later, true},
		{"expired", nil, true},
		{"ready", nil, false},
	} {
		preview := client.PreviewDatabase{State: pointer(tc.state), TTLExpiresAt: tc.expires}
		if got := previewLost(&preview, now); got != tc.lost {
			t.Errorf("state %s, expires %v: previewLost = %v, want %v", tc.state, tc.expires, got, tc.lost)
		}
	}
}

func TestSameInstant(t *testing.T) {
	for _, tc := range []struct {
		a, b types.String
		same bool
	}{
		{types.StringValue("2026-01-01T00:00:00Z"), types.StringValue("2026-01-01T00:00:00+00:00"), true},
		{types.StringValue("2026-01-01T01:00:00+01:00"), types.StringValue("2026-01-01T00:00:00Z"), true},
		{types.StringValue("2026-01-01T00:00:00.5Z"), types.StringValue("2026-01-01T00:00:00Z"), false},
		{types.StringValue("2026-01-01T00:00:00Z"), types.StringNull(), false},
		{types.StringValue("2026-01-01T00:00:00Z"), types.StringUnknown(), false},
		{types.StringValue("yesterday"), types.StringValue("yesterday"), false},
	} {
		if got := sameInstant(tc.a, tc.b); got != tc.same {
			t.Errorf("sameInstant(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.same)
		}
	}
}

func TestRestoreTTL(t *testing.T) {
	created := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	expires := created.Add(5*time.Hour + 40*time.Millisecond)
	preview := client.PreviewDatabase{CreatedAt: &created, TTLExpiresAt: &expires}
	if got := restoreTTL(&preview); got.ValueInt64() != 5 {
		t.Errorf("restoreTTL = %v, want 5", got)
	}
	if got := restoreTTL(&client.PreviewDatabase{TTLExpiresAt: &expires}); !got.IsNull() {
		t.Errorf("restoreTTL without created_at = %v, want null", got)
	}
}
