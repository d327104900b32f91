package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// The client against real HTTP servers (httptest on loopback) that answer what a test
// scripts: each attempt is recorded as the server saw it.

const testKey = "capy_live_Zq8sEcReTkEy0123456789"

type seenRequest struct {
	Method         string
	EscapedPath    string
	Path           string
	Query          string
	Authorization  string
	IdempotencyKey string
	HasIdempotency bool
	Body           string
}

type recorder struct {
	mu   sync.Mutex
	seen []seenRequest
}

func (r *recorder) add(req *http.Request) int {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	_, has := req.Header["Idempotency-Key"]
	r.seen = append(r.seen, seenRequest{
		Method:         req.Method,
		EscapedPath:    req.URL.EscapedPath(),
		Path:           req.URL.Path,
		Query:          req.URL.RawQuery,
		Authorization:  req.Header.Get("Authorization"),
		IdempotencyKey: req.Header.Get("Idempotency-Key"),
		HasIdempotency: has,
		Body:           string(body),
	})
	return len(r.seen)
}

func (r *recorder) requests() []seenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seenRequest(nil), r.seen...)
}

// serve starts a server whose handler gets the 1-based number of the request.
func serve(t *testing.T, handler func(w http.ResponseWriter, r *http.Request, n int)) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler(w, r, rec.add(r))
	}))
	t.Cleanup(server.Close)
	return server, rec
}

// fastConfig retries quickly: tests wait milliseconds, not the production seconds.
func fastConfig(baseURL string) Config {
	return Config{
		BaseURL:     baseURL,
		APIKey:      testKey,
		MaxAttempts: 4,
		BaseDelay:   time.Millisecond,
		MaxDelay:    5 * time.Millisecond,
		Deadline:    10 * time.Second,
		PollStart:   time.Millisecond,
		PollCap:     5 * time.Millisecond,
	}
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func writeJSON(w http.ResponseWriter, status int, value any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(value)
}

// hangUp closes the connection without an answer: a connection error for the client.
func hangUp(t *testing.T, w http.ResponseWriter) {
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		t.Errorf("the test server cannot hijack")
		return
	}
	conn, _, err := hijacker.Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	_ = conn.Close()
}

func restorePointAnswer(label string) map[string]any {
	return map[string]any{"restore_point": map[string]any{
		"id": "rp_1", "project_id": "prj_1", "label": label, "kind": "backup", "state": "ready",
		"backup_key": "bk_1", "created_at": "2026-01-02T03:04:05Z",
	}}
}

func assertOneKeyPerCall(t *testing.T, seen []seenRequest, attempts int) string {
	t.Helper()
	if len(seen) != attempts {
		t.Fatalf("the server saw %d requests, want %d: %+v", len(seen), attempts, seen)
	}
	first := seen[0].IdempotencyKey
	if len(first) < 16 {
		t.Fatalf("Idempotency-Key %q is not a random key", first)
	}
	for i, req := range seen {
		if req.IdempotencyKey != first {
			t.Errorf("attempt %d has Idempotency-Key %q, the first had %q", i+1, req.IdempotencyKey, first)
		}
		if req.Body != seen[0].Body {
			t.Errorf("attempt %d sent body %q, the first sent %q", i+1, req.Body, seen[0].Body)
		}
		if req.Authorization != "Bearer "+testKey {
			t.Errorf("attempt %d has Authorization %q", i+1, req.Authorization)
		}
	}
	return first
}

// ---------------------------------------------------------------- retries

func TestRetriesConnectionErrorsWithOneIdempotencyKey(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n <= 2 {
			hangUp(t, w)
			return
		}
		writeJSON(w, http.StatusCreated, restorePointAnswer("before-migration"))
	})
	c := newClient(t, fastConfig(server.URL))
	rp, err := c.CreateRestorePoint(context.Background(), "prj_1", CreateRestorePoint{Label: "before-migration", BackupKey: "bk_1"})
	if err != nil {
		t.Fatalf("CreateRestorePoint: %v", err)
	}
	if rp.ID != "rp_1" || rp.Label != "before-migration" || rp.BackupKey == nil || *rp.BackupKey != "bk_1" {
		t.Errorf("decoded %+v", rp)
	}
	seen := rec.requests()
	assertOneKeyPerCall(t, seen, 3)
	if seen[0].Path != "/v1/projects/prj_1/restore-points" || seen[0].Method != "POST" {
		t.Errorf("first request %s %s", seen[0].Method, seen[0].Path)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(seen[0].Body), &body); err != nil || body["label"] != "before-migration" || body["backup_key"] != "bk_1" {
		t.Errorf("body %q (%v)", seen[0].Body, err)
	}
}

func TestRetries429And5xxWithOneIdempotencyKeyPerCall(t *testing.T) {
	statuses := []int{http.StatusTooManyRequests, http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusBadGateway}
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n <= len(statuses) {
			writeJSON(w, statuses[n-1], map[string]string{"error": "try later"})
			return
		}
		writeJSON(w, http.StatusCreated, restorePointAnswer("x"))
	})
	cfg := fastConfig(server.URL)
	cfg.MaxAttempts = 5
	c := newClient(t, cfg)
	if _, err := c.CreateRestorePoint(context.Background(), "prj_1", CreateRestorePoint{Label: "x"}); err != nil {
		t.Fatalf("CreateRestorePoint: %v", err)
	}
	firstKey := assertOneKeyPerCall(t, rec.requests(), 5)

	// the next call is another operation: another key
	if _, err := c.CreateRestorePoint(context.Background(), "prj_1", CreateRestorePoint{Label: "x"}); err != nil {
		t.Fatalf("second CreateRestorePoint: %v", err)
	}
	seen := rec.requests()
	if len(seen) != 6 {
		t.Fatalf("the server saw %d requests, want 6", len(seen))
	}
	if seen[5].IdempotencyKey == "" || seen[5].IdempotencyKey == firstKey {
		t.Errorf("the second POST has Idempotency-Key %q, the first had %q", seen[5].IdempotencyKey, firstKey)
	}
}

func TestGetHasNoIdempotencyKeyAndIsRetried(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "starting"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"restore_points": []any{restorePointAnswer("a")["restore_point"]}})
	})
	c := newClient(t, fastConfig(server.URL))
	points, err := c.ListRestorePoints(context.Background(), "prj_1")
	if err != nil {
		t.Fatalf("ListRestorePoints: %v", err)
	}
	if len(points) != 1 || points[0].ID != "rp_1" {
		t.Errorf("decoded %+v", points)
	}
	seen := rec.requests()
	if len(seen) != 2 {
		t.Fatalf("the server saw %d requests, want 2", len(seen))
	}
	for _, req := range seen {
		if req.HasIdempotency {
			t.Errorf("a GET carries Idempotency-Key %q", req.IdempotencyKey)
		}
		if req.Method != "GET" || req.Authorization != "Bearer "+testKey {
			t.Errorf("request %+v", req)
		}
	}
}

func TestRetryAfterSecondsIsHonoured(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "slow down"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"projects": []any{}})
	})
	c := newClient(t, fastConfig(server.URL)) // its own backoff is at most 5 ms
	started := time.Now()
	if _, err := c.ListProjects(context.Background()); err != nil {
		t.Fatalf("ListProjects: %v", err)
	}
	if waited := time.Since(started); waited < 950*time.Millisecond {
		t.Errorf("the retry came after %v; Retry-After said 1 s", waited)
	}
	if n := len(rec.requests()); n != 2 {
		t.Errorf("the server saw %d requests, want 2", n)
	}
}

func TestRetryAfterHTTPDateIsHonoured(t *testing.T) {
	var retryAt time.Time
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			// an HTTP date has whole seconds: the next full second after now + 1 s
			retryAt = time.Now().Add(time.Second).Truncate(time.Second).Add(time.Second)
			w.Header().Set("Retry-After", retryAt.UTC().Format(http.TimeFormat))
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "maintenance"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"projects": []any{}})
	})
	c := newClient(t, fastConfig(server.URL))
	if _, err := c.ListProjects(context.Background()); err != nil {
		t.Fatalf("ListProjects: %v", err)
	}
	// the client reads the date against its own clock; allow a little skew of rounding
	if early := time.Until(retryAt); early > 50*time.Millisecond {
		t.Errorf("the retry came %v before the Retry-After date", early)
	}
	if n := len(rec.requests()); n != 2 {
		t.Errorf("the server saw %d requests, want 2", n)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	huge := time.Duration(1<<63 - 1)
	for value, want := range map[string]time.Duration{
		"":                              -1,
		"soon":                          -1,
		"NaN":                           -1,
		"0":                             0,
		"-5":                            0,
		"2":                             2 * time.Second,
		" 1.5 ":                         1500 * time.Millisecond,
		"1e300":                         huge,
		"Inf":                           huge,
		"99999999999999":                huge,
		"Wed, 04 Mar 2026 05:06:17 GMT": 10 * time.Second,
		"Wed, 04 Mar 2026 05:00:00 GMT": 0,
	} {
		if got := parseRetryAfter(value, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", value, got, want)
		}
	}
}

func TestRetryAfterBeyondTheDeadlineGivesUpAtOnce(t *testing.T) {
	for _, retryAfter := range []string{"3600", "1e300", "99999999999999"} {
		t.Run(retryAfter, func(t *testing.T) {
			server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
				w.Header().Set("Retry-After", retryAfter)
				writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "quota exhausted"})
			})
			c := newClient(t, fastConfig(server.URL)) // Deadline 10 s
			started := time.Now()
			_, err := c.ListProjects(context.Background())
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 || apiErr.Message != "quota exhausted" {
				t.Fatalf("err = %v, want the 429", err)
			}
			if apiErr.RetryAfter < time.Hour {
				t.Errorf("RetryAfter = %v", apiErr.RetryAfter)
			}
			if n := len(rec.requests()); n != 1 {
				t.Errorf("the server saw %d requests: a wait past the deadline is no reason to retry now", n)
			}
			if took := time.Since(started); took > 2*time.Second {
				t.Errorf("giving up took %v", took)
			}
		})
	}
}

func TestNoRetryOnClientErrorsNor501(t *testing.T) {
	for _, status := range []int{400, 401, 403, 404, 409, 422, 501} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
				w.Header().Set("Retry-After", "0")
				writeJSON(w, status, map[string]string{"error": "refused: " + http.StatusText(status)})
			})
			c := newClient(t, fastConfig(server.URL))
			_, err := c.CreateRestorePoint(context.Background(), "prj_1", CreateRestorePoint{Label: "x"})
			var apiErr *APIError
			if !errors.As(err, &apiErr) || apiErr.StatusCode != status {
				t.Fatalf("err = %v, want an APIError %d", err, status)
			}
			if apiErr.Message != "refused: "+http.StatusText(status) || apiErr.Method != "POST" || apiErr.URL != server.URL+"/v1/projects/prj_1/restore-points" {
				t.Errorf("APIError %+v", apiErr)
			}
			if !strings.Contains(err.Error(), fmt.Sprint(status)) || !strings.Contains(err.Error(), "/v1/projects/prj_1/restore-points") {
				t.Errorf("message %q names neither the status nor the call", err)
			}
			if n := len(rec.requests()); n != 1 {
				t.Errorf("the server saw %d requests, want exactly 1", n)
			}
			if IsNotFound(err) != (status == 404) || IsConflict(err) != (status == 409) {
				t.Errorf("IsNotFound/IsConflict wrong for %d", status)
			}
		})
	}
}

func TestGivesUpAfterMaxAttemptsWithTheLastError(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": fmt.Sprintf("busy %d", n)})
	})
	c := newClient(t, fastConfig(server.URL)) // 4 attempts
	_, err := c.CreateBackup(context.Background(), "prj_1", "nightly")
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Message != "busy 4" {
		t.Fatalf("err = %v, want the 4th answer", err)
	}
	assertOneKeyPerCall(t, rec.requests(), 4)
}

func TestGivesUpAfterTheDeadlineWithTheLastError(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeJSON(w, http.StatusBadGateway, map[string]string{"error": fmt.Sprintf("upstream %d", n)})
	})
	cfg := fastConfig(server.URL)
	cfg.MaxAttempts = 1000
	cfg.BaseDelay = 40 * time.Millisecond
	cfg.MaxDelay = 40 * time.Millisecond
	cfg.Deadline = 300 * time.Millisecond
	c := newClient(t, cfg)
	started := time.Now()
	_, err := c.ListProjects(context.Background())
	took := time.Since(started)
	seen := len(rec.requests())
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 502 || apiErr.Message != fmt.Sprintf("upstream %d", seen) {
		t.Fatalf("err = %v, want the last (%d-th) answer", err, seen)
	}
	// waits of 20-40 ms within 300 ms: at most 16 attempts, never all 1000; at least two
	// (how many more depends on how fast a loaded machine answers)
	if seen < 2 || seen > 16 {
		t.Errorf("the server saw %d requests within the deadline", seen)
	}
	if took > time.Second {
		t.Errorf("giving up took %v for a 300 ms deadline", took)
	}
}

func TestConnectionErrorsGiveUpAsUnreachable(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) { hangUp(t, w) })
	c := newClient(t, fastConfig(server.URL))
	_, err := c.ListProjects(context.Background())
	var unreachable *UnreachableError
	if !errors.As(err, &unreachable) {
		t.Fatalf("err = %v (%T), want an UnreachableError", err, err)
	}
	if !strings.Contains(err.Error(), "check api_url") || unreachable.URL != server.URL+"/v1/projects" || unreachable.Method != "GET" {
		t.Errorf("message %q", err)
	}
	if n := len(rec.requests()); n != 4 {
		t.Errorf("the server saw %d requests, want 4", n)
	}

	// nothing listens: refused at once, every attempt
	listener, listenErr := net.Listen("tcp", "127.0.0.1:0")
	if listenErr != nil {
		t.Fatal(listenErr)
	}
	address := listener.Addr().String()
	_ = listener.Close()
	c = newClient(t, fastConfig("http://"+address))
	_, err = c.GetProject(context.Background(), "prj_1")
	if !errors.As(err, &unreachable) || !strings.Contains(err.Error(), address) {
		t.Fatalf("err = %v, want an UnreachableError naming %s", err, address)
	}
}

func TestCancelledContextStopsRetrying(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "later"})
	})
	c := newClient(t, fastConfig(server.URL))
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	started := time.Now()
	_, err := c.ListProjects(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "later") {
		t.Fatalf("err = %v, want the deadline and the last error", err)
	}
	if took := time.Since(started); took > 2*time.Second {
		t.Errorf("stopping took %v", took)
	}
	if n := len(rec.requests()); n != 1 {
		t.Errorf("the server saw %d requests", n)
	}
}

func TestNextDelay(t *testing.T) {
	c := newClient(t, Config{BaseURL: "http://127.0.0.1:1", MaxAttempts: 100, BaseDelay: 100 * time.Millisecond, MaxDelay: 2 * time.Second, Deadline: time.Hour})
	for failed, ceiling := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 5: 1600 * time.Millisecond, 6: 2 * time.Second, 40: 2 * time.Second, 70: 2 * time.Second, 99: 2 * time.Second} {
		for range 50 {
			wait, ok := c.nextDelay(failed, 0, -1)
			if !ok || wait < ceiling/2 || wait > ceiling {
				t.Fatalf("nextDelay(%d) = %v, %v; want within [%v, %v]", failed, wait, ok, ceiling/2, ceiling)
			}
		}
	}
	if _, ok := c.nextDelay(100, 0, -1); ok {
		t.Error("a retry after the last attempt")
	}
	if wait, ok := c.nextDelay(1, 0, 7*time.Second); !ok || wait != 7*time.Second {
		t.Errorf("Retry-After 7 s gave %v, %v", wait, ok)
	}
	if _, ok := c.nextDelay(1, 59*time.Minute, 2*time.Minute); ok {
		t.Error("a wait past the deadline")
	}
	if _, ok := c.nextDelay(1, time.Second, time.Duration(1<<63-1)); ok {
		t.Error("a huge Retry-After overflowed into a retry")
	}

	// a shift that wraps around: 2^33+1 ns << 31 is 2^64 + 2^31 ns, i.e. 2.1 s once wrapped
	wrapping := newClient(t, Config{BaseURL: "http://127.0.0.1:1", MaxAttempts: 100, BaseDelay: 1<<33 + 1, MaxDelay: 1 << 34, Deadline: 1000 * time.Hour})
	for failed := 2; failed < 100; failed++ {
		wait, ok := wrapping.nextDelay(failed, 0, -1)
		if !ok || wait < (1<<34)/2 || wait > 1<<34 {
			t.Fatalf("nextDelay(%d) = %v, %v; want within [%v, %v]", failed, wait, ok, time.Duration(1<<33), time.Duration(1<<34))
		}
	}
}

// ---------------------------------------------------------------- error bodies

func TestErrorBodies(t *testing.T) {
	long := strings.Repeat("é", 400) // two bytes each: cut on a character, not a byte
	cases := []struct {
		name, contentType, body, want string
	}{
		{"json message", "application/json", `{"error": "label \"x\" is taken"}`, `label "x" is taken`},
		{"json object", "application/json", `{"error": {"code": "conflict", "field": "label"}}`, `{"code":"conflict","field":"label"}`},
		{"text", "text/plain", "  upstream exploded\n", "upstream exploded"},
		{"html", "text/html", "<html><body>" + long + "</body></html>", "<html><body>" + strings.Repeat("é", 288) + "…"},
		{"empty", "text/plain", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			server, _ := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
				w.Header().Set("Content-Type", tc.contentType)
				w.WriteHeader(http.StatusConflict)
				_, _ = io.WriteString(w, tc.body)
			})
			c := newClient(t, fastConfig(server.URL))
			_, err := c.GetProject(context.Background(), "prj_1")
			var apiErr *APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("err = %v", err)
			}
			if apiErr.Message != tc.want {
				t.Errorf("Message = %q, want %q", apiErr.Message, tc.want)
			}
			if tc.want == "" && !strings.HasSuffix(err.Error(), ": 409 Conflict: Conflict") {
				t.Errorf("an empty body says %q", err)
			}
		})
	}
}

func TestUnauthorizedWithoutAKeySaysSo(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "missing bearer token"})
	})
	cfg := fastConfig(server.URL)
	cfg.APIKey = ""
	c := newClient(t, cfg)
	_, err := c.Identity(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no API key was configured") || !strings.Contains(err.Error(), "missing bearer token") {
		t.Fatalf("err = %v", err)
	}
	if got := rec.requests()[0].Authorization; got != "" {
		t.Errorf("Authorization %q without a key", got)
	}

	c = newClient(t, fastConfig(server.URL))
	if _, err = c.Identity(context.Background()); err == nil || strings.Contains(err.Error(), "no API key") {
		t.Errorf("with a key configured: %v", err)
	}
}

// TestTheKeyIsInNoError runs every way an error can be made with a server that echoes
// the key back: in a JSON error, in a long text body (across the 300-character cut), in
// a malformed header line (Go's error quotes it), in a redirect's URL, in a bad answer.
func TestTheKeyIsInNoError(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	_ = closed.Close()

	scenarios := map[string]func(w http.ResponseWriter, r *http.Request){
		"json error": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "key " + testKey + " lacks restores:write; sent " + r.Header.Get("Authorization")})
		},
		"json object error": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"key": testKey}})
		},
		"unauthorized": func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unknown key " + testKey})
		},
		"text across the cut": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, strings.Repeat("x", 280)+testKey+" trailing")
		},
		"retried 503": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "overloaded, your key "+testKey)
		},
		"malformed header": func(w http.ResponseWriter, r *http.Request) {
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				return
			}
			_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nbroken header "+testKey+"\r\n\r\n{}")
			_ = conn.Close()
		},
		"redirect to a URL with the key": func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "http://"+refused+"/v1/x?api_key="+testKey+"&k="+url.QueryEscape(testKey), http.StatusTemporaryRedirect)
		},
		"redirect to a path with the key": func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, testKey) {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such path " + r.URL.Path})
				return
			}
			http.Redirect(w, r, "/v1/"+testKey+"/x", http.StatusFound)
		},
		"answer not JSON": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, `{"restore_point": "`+testKey+`", "restore_points": "`+testKey+`"}`)
		},
	}
	for name, handler := range scenarios {
		t.Run(name, func(t *testing.T) {
			server, _ := serve(t, func(w http.ResponseWriter, r *http.Request, n int) { handler(w, r) })
			var debugLines []string
			var mu sync.Mutex
			cfg := fastConfig(server.URL)
			cfg.Debug = func(_ context.Context, msg string, fields map[string]any) {
				mu.Lock()
				defer mu.Unlock()
				debugLines = append(debugLines, fmt.Sprint(msg, fields))
			}
			c := newClient(t, cfg)
			calls := map[string]func() error{
				"GET": func() error { _, err := c.ListRestorePoints(context.Background(), "prj_1"); return err },
				"POST": func() error {
					_, err := c.CreateRestorePoint(context.Background(), "prj_1", CreateRestorePoint{Label: "x"})
					return err
				},
			}
			for method, call := range calls {
				err := call()
				if err == nil {
					t.Fatalf("%s: no error", method)
				}
				for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
					if strings.Contains(text, testKey) || strings.Contains(text, testKey[:16]) {
						t.Errorf("%s: the key is in the error: %s", method, text)
					}
				}
				for unwrapped := errors.Unwrap(err); unwrapped != nil; unwrapped = errors.Unwrap(unwrapped) {
					if strings.Contains(unwrapped.Error(), testKey) {
						t.Errorf("%s: the key is in a wrapped error: %s", method, unwrapped)
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, line := range debugLines {
				if strings.Contains(line, testKey) {
					t.Errorf("the key is in a debug line: %s", line)
				}
			}
		})
	}
}

// ---------------------------------------------------------------- URLs and ids

func TestBaseURLWithOrWithoutV1(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeJSON(w, http.StatusOK, map[string]any{"projects": []any{}})
	})
	forms := map[string]string{
		server.URL:                                       "/v1/projects",
		server.URL + "/":                                 "/v1/projects",
		server.URL + "/v1":                               "/v1/projects",
		server.URL + "/v1/":                              "/v1/projects",
		" " + server.URL + "//v1//  ":                    "/v1/projects",
		server.URL + "/api/capydb":                       "/api/capydb/v1/projects",
		server.URL + "/api/capydb/v1/":                   "/api/capydb/v1/projects",
		server.URL + "/api/capydb/":                      "/api/capydb/v1/projects",
		strings.ToUpper(server.URL[:4]) + server.URL[4:]: "/v1/projects",
	}
	for base, want := range forms {
		c := newClient(t, fastConfig(base))
		before := len(rec.requests())
		if _, err := c.ListProjects(context.Background()); err != nil {
			t.Errorf("%q: %v", base, err)
			continue
		}
		seen := rec.requests()
		if len(seen) != before+1 || seen[before].EscapedPath != want {
			t.Errorf("%q reached %+v, want %s", base, seen[before:], want)
		}
		if strings.HasSuffix(c.BaseURL(), "/") || strings.HasSuffix(c.BaseURL(), "/v1") {
			t.Errorf("%q: BaseURL() = %q", base, c.BaseURL())
		}
	}
}

func TestInvalidBaseURLsAreRefused(t *testing.T) {
	for _, raw := range []string{
		"ftp://example.com",
		"127.0.0.1:8080",
		"http://",
		"http:///v1",
		"not a url",
		"http://exa mple.com",
		"mailto:ops@example.com",
	} {
		if _, err := New(Config{BaseURL: raw}); err == nil || !strings.Contains(err.Error(), "api_url") {
			t.Errorf("New(%q) = %v, want an api_url error", raw, err)
		}
	}
	const password = "hunter2-s3cret"
	for _, raw := range []string{
		"http://admin:" + password + "@127.0.0.1:8080",
		"https://admin:" + password + "@capydb.dev/api/capydb/v1",
		"http://" + password + "@127.0.0.1:8080",
		"admin:" + password + "@127.0.0.1:8080",
		"ftp://admin:" + password + "@127.0.0.1",
		"//admin:" + password + "@127.0.0.1:8080",
		"http://admin:" + password + "@exa mple.com",
	} {
		_, err := New(Config{BaseURL: raw})
		if err == nil {
			t.Errorf("New(%q) accepted credentials in the URL", raw)
			continue
		}
		if strings.Contains(err.Error(), password) {
			t.Errorf("New(%q) echoes the password: %v", raw, err)
		}
	}
	if _, err := New(Config{BaseURL: "http://127.0.0.1:1", APIKey: "capy_live_a b"}); err == nil || strings.Contains(err.Error(), "capy_live_a") {
		t.Errorf("a key with whitespace: %v", err)
	}
	if c, err := New(Config{}); err != nil || c.BaseURL() != DefaultAPIURL {
		t.Errorf("no URL: %v, %v; want hosted CapyDB", c, err)
	}
}

func TestBadIDsAreRefusedBeforeAnyRequest(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeJSON(w, http.StatusOK, map[string]any{})
	})
	c := newClient(t, fastConfig(server.URL))
	ctx := context.Background()
	for _, id := range []string{"", ".", "..", "a/b", "../prj_2", "prj_1/..", "x?y=1", "x#frag", "/"} {
		calls := map[string]func() error{
			"GetProject":         func() error { _, err := c.GetProject(ctx, id); return err },
			"DeleteProject":      func() error { return c.DeleteProject(ctx, id, true) },
			"ListRestorePoints":  func() error { _, err := c.ListRestorePoints(ctx, id); return err },
			"CreateRestorePoint": func() error { _, err := c.CreateRestorePoint(ctx, id, CreateRestorePoint{Label: "x"}); return err },
			"DeleteRestorePoint": func() error { return c.DeleteRestorePoint(ctx, "prj_1", id) },
			"DeleteRestorePoint project": func() error {
				return c.DeleteRestorePoint(ctx, id, "rp_1")
			},
			"ListBackups":   func() error { _, err := c.ListBackups(ctx, id); return err },
			"CreateBackup":  func() error { _, err := c.CreateBackup(ctx, id, ""); return err },
			"DeleteBackup":  func() error { return c.DeleteBackup(ctx, "prj_1", id) },
			"CreateRestore": func() error { _, err := c.CreateRestore(ctx, id, CreateRestore{BackupKey: "k"}); return err },
			"ListPreviews":  func() error { _, err := c.ListPreviews(ctx, id); return err },
			"DeletePreview": func() error { _, err := c.DeletePreview(ctx, id); return err },
			"GetJob":        func() error { _, err := c.GetJob(ctx, id); return err },
			"WaitForJob":    func() error { _, err := c.WaitForJob(ctx, id, nil); return err },
			"ListJobs":      func() error { _, err := c.ListJobs(ctx, id, 5); return err },
			"GetPitr":       func() error { _, err := c.GetPitr(ctx, id); return err },
			"PutPitr":       func() error { _, _, err := c.PutPitr(ctx, id, true); return err },
			"UpdateProjectURL": func() error {
				_, err := c.UpdateProjectURL(ctx, id, "sqlite:///x")
				return err
			},
		}
		for name, call := range calls {
			if err := call(); err == nil || !strings.Contains(err.Error(), "invalid id") {
				t.Errorf("%s(%q) = %v, want an invalid id error", name, id, err)
			}
		}
	}
	if seen := rec.requests(); len(seen) != 0 {
		t.Errorf("bad ids made %d requests: %+v", len(seen), seen)
	}
}

// TestIDsAreOnePathSegment: an id is sent escaped, as itself: not read as an escape
// ("%2e%2e" is not "..", "a%2Fb" is not a/b) and never dropping the path ("50%").
func TestIDsAreOnePathSegment(t *testing.T) {
	server, rec := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		writeJSON(w, http.StatusOK, map[string]any{"restore_points": []any{}})
	})
	c := newClient(t, fastConfig(server.URL+"/api/"))
	for _, id := range []string{"prj_1", "50%", "a%2Fb", "%2e%2e", "a b", "é", "a;b", "a+b"} {
		before := len(rec.requests())
		if _, err := c.ListRestorePoints(context.Background(), id); err != nil {
			t.Errorf("%q: %v", id, err)
			continue
		}
		seen := rec.requests()[before]
		want := "/api/v1/projects/" + id + "/restore-points"
		if seen.Path != want {
			t.Errorf("id %q reached path %q (escaped %q), want %q", id, seen.Path, seen.EscapedPath, want)
		}
	}
	before := len(rec.requests())
	if err := c.DeleteRestorePoint(context.Background(), "prj_1", "rp%2F2"); err != nil {
		t.Fatal(err)
	}
	if seen := rec.requests()[before]; seen.Path != "/api/v1/projects/prj_1/restore-points/rp%2F2" || seen.Method != "DELETE" {
		t.Errorf("DeleteRestorePoint reached %s %q", seen.Method, seen.Path)
	}
	before = len(rec.requests())
	if _, err := c.ListJobs(context.Background(), "prj_1", 7); err != nil {
		t.Fatal(err)
	}
	if seen := rec.requests()[before]; seen.Path != "/api/v1/projects/prj_1/jobs" || seen.Query != "limit=7" {
		t.Errorf("ListJobs reached %q ? %q", seen.Path, seen.Query)
	}
}

// ---------------------------------------------------------------- jobs

type jobScript struct {
	mu    sync.Mutex
	steps []map[string]any
	polls int
}

func (s *jobScript) handler(t *testing.T) func(w http.ResponseWriter, r *http.Request, n int) {
	return func(w http.ResponseWriter, r *http.Request, n int) {
		if r.Method != "GET" || r.URL.Path != "/v1/jobs/job_7" {
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		step := s.steps[min(s.polls, len(s.steps)-1)]
		s.polls++
		job := map[string]any{"id": "job_7", "type": "restore", "max_attempts": 3}
		for k, v := range step {
			job[k] = v
		}
		writeJSON(w, http.StatusOK, map[string]any{"job": job})
	}
}

func TestWaitForJobPollsUntilCompletedCallingOnUpdatePerChange(t *testing.T) {
	progress := func(step string, done int) map[string]any {
		return map[string]any{"step": step, "bytes_done": done, "bytes_total": 100}
	}
	script := &jobScript{steps: []map[string]any{
		{"state": "pending", "attempts": 0},
		{"state": "pending", "attempts": 0},
		{"state": "running", "attempts": 1, "progress": progress("download", 10)},
		{"state": "running", "attempts": 1, "progress": progress("download", 10)},
		{"state": "running", "attempts": 1, "progress": progress("download", 60)},
		{"state": "running", "attempts": 1, "progress": progress("restore", 100)},
		{"state": "running", "attempts": 1, "progress": progress("restore", 100)},
		{"state": "completed", "attempts": 1, "preview_database_id": "pdb_1", "result": map[string]any{"preview_database_id": "pdb_1"}},
	}}
	server, _ := serve(t, script.handler(t))
	c := newClient(t, fastConfig(server.URL))
	var updates []string
	job, err := c.WaitForJob(context.Background(), "job_7", func(job *Job) {
		updates = append(updates, ProgressText(job))
	})
	if err != nil {
		t.Fatalf("WaitForJob: %v", err)
	}
	if job.State != JobCompleted || job.ResultString("preview_database_id") != "pdb_1" || job.PreviewDatabaseID == nil || *job.PreviewDatabaseID != "pdb_1" {
		t.Errorf("job %+v", job)
	}
	if script.polls != len(script.steps) {
		t.Errorf("%d polls, want %d", script.polls, len(script.steps))
	}
	want := []string{
		"job job_7 pending (attempt 0/3)",
		"job job_7 running (attempt 1/3): download 10/100",
		"job job_7 running (attempt 1/3): download 60/100",
		"job job_7 running (attempt 1/3): restore 100/100",
		"job job_7 completed (attempt 1/3)",
	}
	if strings.Join(updates, "\n") != strings.Join(want, "\n") {
		t.Errorf("onUpdate saw\n%s\nwant\n%s", strings.Join(updates, "\n"), strings.Join(want, "\n"))
	}
}

func TestWaitForJobFailedHasTheErrorAndTheStderrTail(t *testing.T) {
	var stderr []string
	for i := 1; i <= 30; i++ {
		stderr = append(stderr, fmt.Sprintf("stderr line %02d", i))
	}
	script := &jobScript{steps: []map[string]any{
		{"state": "running", "attempts": 1},
		{
			"state": "failed", "attempts": 3, "error": "checksum mismatch in blob bk_1",
			"retry_classification": "permanent", "last_exit_code": 2,
			"last_stderr": strings.Join(stderr, "\n") + "\n",
		},
	}}
	server, _ := serve(t, script.handler(t))
	c := newClient(t, fastConfig(server.URL))
	job, err := c.WaitForJob(context.Background(), "job_7", nil)
	var failed *JobFailedError
	if !errors.As(err, &failed) || job == nil || job.State != JobFailed {
		t.Fatalf("err = %v, job = %+v; want a JobFailedError", err, job)
	}
	text := err.Error()
	for _, want := range []string{"job job_7 (restore) failed after 3 attempt(s)", "[permanent]", "checksum mismatch in blob bk_1", "exit code 2", "stderr (last lines):", "stderr line 11", "stderr line 30"} {
		if !strings.Contains(text, want) {
			t.Errorf("the failure does not say %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "stderr line 10") || strings.Contains(text, "stdout") {
		t.Errorf("the failure says more than the tail:\n%s", text)
	}
}

func TestWaitForJobStopsWhenTheContextIsDone(t *testing.T) {
	script := &jobScript{steps: []map[string]any{{"state": "running", "attempts": 1}}}
	server, _ := serve(t, script.handler(t))
	c := newClient(t, fastConfig(server.URL))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	started := time.Now()
	_, err := c.WaitForJob(ctx, "job_7", nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "job job_7 is still running") {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(started); took > 2*time.Second {
		t.Errorf("stopping took %v", took)
	}
}

func TestWaitForJobTimeoutDuringAPollNamesTheJob(t *testing.T) {
	release := make(chan struct{})
	server, _ := serve(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			writeJSON(w, http.StatusOK, map[string]any{"job": map[string]any{"id": "job_7", "type": "backup", "state": "pending"}})
			return
		}
		<-release // the second poll hangs until the test ends
	})
	defer close(release)
	c := newClient(t, fastConfig(server.URL))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.WaitForJob(ctx, "job_7", nil)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "job job_7 is still pending") {
		t.Fatalf("err = %v", err)
	}
}

func TestTail(t *testing.T) {
	if got := Tail("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("Tail = %q", got)
	}
	if got := Tail("a", 5); got != "a" {
		t.Errorf("Tail = %q", got)
	}
}
