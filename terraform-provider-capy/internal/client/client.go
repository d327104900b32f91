// Package client speaks CapyDB's restore surface over HTTP, as pulumi_capy's CapyClient
// does: to hosted CapyDB and to a self-hosted `capy serve` alike.
//
// Every POST carries an Idempotency-Key, the same one on each retry of that call, so
// every call may be retried: on connection errors, 429 and 5xx (but 501), with
// exponential backoff and jitter, honouring Retry-After, within a total deadline. Other
// 4xx are never retried. The API key travels only in the Authorization header; it is in
// no log line and no error (a server that echoes it has it replaced by asterisks).
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	mathrand "math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultAPIURL is hosted CapyDB's API.
const DefaultAPIURL = "https://capydb.dev/api/capydb"

// Config says where the API is and how to call it.
type Config struct {
	BaseURL    string // with or without a final /v1
	APIKey     string
	UserAgent  string
	HTTPClient *http.Client
	// retries: MaxAttempts in all, the n-th delay drawn from [d/2, d] with
	// d = min(MaxDelay, BaseDelay * 2^(n-1)), a Retry-After replacing it, all within Deadline
	MaxAttempts int
	BaseDelay   time.Duration
	MaxDelay    time.Duration
	Deadline    time.Duration
	// job polling: the first interval, growing by half each time up to PollCap
	PollStart time.Duration
	PollCap   time.Duration
	// Debug, when set, receives one line per call (never a secret)
	Debug func(ctx context.Context, msg string, fields map[string]any)
}

// Client is safe for concurrent use.
type Client struct {
	base   *url.URL
	key    string
	cfg    Config
	http   *http.Client
	server struct {
		mu    sync.Mutex
		known bool
		is    bool
	}
}

// New checks the configuration and returns a client; it calls nothing yet.
func New(cfg Config) (*Client, error) {
	raw := strings.TrimSpace(cfg.BaseURL)
	if raw == "" {
		raw = DefaultAPIURL
	}
	base, err := url.Parse(NormalizeURL(raw))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("api_url %q is not an http(s) URL (e.g. http://127.0.0.1:8080 for a local capy serve)", redactURL(raw))
	}
	if base.User != nil {
		return nil, errors.New("api_url must not carry credentials: give the key in api_key or CAPYDB_API_KEY")
	}
	key := strings.TrimSpace(cfg.APIKey)
	if strings.ContainsAny(key, " \t\r\n") {
		return nil, errors.New("api_key contains whitespace: check CAPYDB_API_KEY")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 120 * time.Second}
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "terraform-provider-capy"
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.BaseDelay <= 0 {
		cfg.BaseDelay = 500 * time.Millisecond
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 10 * time.Second
	}
	if cfg.Deadline <= 0 {
		cfg.Deadline = 60 * time.Second
	}
	if cfg.PollStart <= 0 {
		cfg.PollStart = 250 * time.Millisecond
	}
	if cfg.PollCap <= 0 {
		cfg.PollCap = 5 * time.Second
	}
	return &Client{base: base, key: key, cfg: cfg, http: cfg.HTTPClient}, nil
}

// NormalizeURL is the base URL paths are joined to: no trailing slashes and no final
// /v1 (`capy serve` prints http://HOST:PORT/v1, and users paste it).
func NormalizeURL(raw string) string {
	u := strings.TrimRight(strings.TrimSpace(raw), "/")
	if strings.HasSuffix(u, "/v1") {
		u = strings.TrimRight(strings.TrimSuffix(u, "/v1"), "/")
	}
	return u
}

// BaseURL is the normalized base URL (never with credentials).
func (c *Client) BaseURL() string { return c.base.String() }

// ---------------------------------------------------------------- errors

// APIError is an answer of 400 or more.
type APIError struct {
	StatusCode int
	Method     string
	URL        string // scheme, host and path only
	Message    string
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	message := e.Message
	if message == "" {
		message = http.StatusText(e.StatusCode)
	}
	return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode), message)
}

// UnreachableError is a call that never got an answer (after its retries).
type UnreachableError struct {
	Method, URL string
	Err         error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s %s: %v; check api_url (or CAPYDB_API_URL) and that the service is up", e.Method, e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// IsNotFound says whether err is a 404.
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsConflict says whether err is a 409.
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict) }

func hasStatus(err error, status int) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.StatusCode == status
}

// ---------------------------------------------------------------- transport

func retryable(status int) bool {
	return status == http.StatusTooManyRequests || (status >= 500 && status != http.StatusNotImplemented)
}

func newIdempotencyKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// do sends one call, with retries, and decodes the JSON answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	// JoinPath takes its elements as already escaped: an id is escaped first, or "50%"
	// would lose the whole path and "a%2Fb" or "%2e%2e" would name another resource.
	segments := strings.Split(path, "/")
	for i, part := range segments {
		segments[i] = url.PathEscape(part)
	}
	target := c.base.JoinPath(segments...)
	target.RawQuery = query.Encode()
	// String() puts the "/" between host and path that JoinPath leaves out of Path
	// when the base URL has none (concatenated, "http://host:8080v1/…" did not parse)
	display := redactURL((&url.URL{Scheme: target.Scheme, Host: target.Host, Path: target.Path, RawPath: target.RawPath}).String())
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("%s %s: encoding the request: %w", method, display, err)
		}
	}
	idempotencyKey := ""
	if method == http.MethodPost {
		idempotencyKey = newIdempotencyKey()
	}
	started := time.Now()
	for attempt := 1; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, target.String(), bytes.NewReader(payload))
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, display, err)
		}
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", c.cfg.UserAgent)
		if payload != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if c.key != "" {
			req.Header.Set("Authorization", "Bearer "+c.key)
		}
		if idempotencyKey != "" {
			req.Header.Set("Idempotency-Key", idempotencyKey)
		}
		var failure error
		var retryAfter time.Duration = -1
		resp, err := c.http.Do(req)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("%s %s: %w", method, display, ctx.Err())
			}
			failure = &UnreachableError{Method: method, URL: display, Err: c.scrub(err)}
		} else {
			data, readErr := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
			_ = resp.Body.Close()
			c.debug(ctx, "capy API call", map[string]any{"method": method, "url": display, "status": resp.StatusCode, "attempt": attempt})
			switch {
			case readErr != nil:
				failure = &UnreachableError{Method: method, URL: display, Err: c.scrub(readErr)}
			case resp.StatusCode < 400 && len(data) > maxAnswer:
				return fmt.Errorf("%s %s: the answer is larger than %d MiB", method, display, maxAnswer>>20)
			case resp.StatusCode < 400:
				if out == nil || len(bytes.TrimSpace(data)) == 0 {
					return nil
				}
				if err := json.Unmarshal(data, out); err != nil {
					return fmt.Errorf("%s %s: the answer is not the JSON expected: %v", method, display, err)
				}
				return nil
			default:
				apiErr := &APIError{StatusCode: resp.StatusCode, Method: method, URL: display, Message: c.message(data, resp.StatusCode)}
				if !retryable(resp.StatusCode) {
					return apiErr
				}
				retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
				apiErr.RetryAfter = max(retryAfter, 0)
				failure = apiErr
			}
		}
		wait, ok := c.nextDelay(attempt, time.Since(started), retryAfter)
		if !ok {
			return failure
		}
		c.debug(ctx, "capy API call retried", map[string]any{"method": method, "url": display, "attempt": attempt, "wait": wait.String(), "error": failure.Error()})
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return fmt.Errorf("%s %s: %w (last error: %v)", method, display, ctx.Err(), failure)
		case <-timer.C:
		}
	}
}

// maxAnswer is the largest answer body read.
const maxAnswer = 64 << 20

// nextDelay is how long to wait before the next attempt, or false to give up.
func (c *Client) nextDelay(failed int, elapsed, retryAfter time.Duration) (time.Duration, bool) {
	if failed >= c.cfg.MaxAttempts {
		return 0, false
	}
	wait := retryAfter
	if wait < 0 {
		// BaseDelay << shift is computed only where it cannot overflow: a wrapped
		// shift can come out positive and small (a 17 s ceiling falling to 2 s).
		ceiling := c.cfg.MaxDelay
		if shift := failed - 1; shift < 63 && c.cfg.BaseDelay <= c.cfg.MaxDelay>>shift {
			ceiling = c.cfg.BaseDelay << shift
		}
		wait = ceiling/2 + time.Duration(mathrand.Int64N(int64(ceiling/2)+1))
	}
	// compared without adding: elapsed + a huge Retry-After overflows to negative
	if wait > c.cfg.Deadline-elapsed {
		return 0, false
	}
	return wait, true
}

// parseRetryAfter reads delta-seconds or an HTTP date; -1 when absent or unreadable.
func parseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return -1
	}
	if seconds, err := strconv.ParseFloat(value, 64); err == nil {
		switch {
		case math.IsNaN(seconds):
			return -1
		case seconds <= 0:
			return 0
		case seconds >= float64(math.MaxInt64/int64(time.Second)):
			// converted, it would overflow (to a negative: no wait at all)
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(seconds * float64(time.Second))
	}
	if when, err := http.ParseTime(value); err == nil {
		return max(when.Sub(now), 0)
	}
	return -1
}

// message is the error body's message ({"error": …}), or its text, without the key.
func (c *Client) message(data []byte, status int) string {
	var body struct {
		Error any `json:"error"`
	}
	message := ""
	if err := json.Unmarshal(data, &body); err == nil && body.Error != nil {
		switch value := body.Error.(type) {
		case string:
			message = value
		default:
			encoded, _ := json.Marshal(value)
			message = string(encoded)
		}
	} else {
		// redacted before it is cut, or a key across the cut would leave its head
		message = c.redact(strings.TrimSpace(strings.ToValidUTF8(string(data), "\uFFFD")))
		if len(message) > 300 {
			if runes := []rune(message); len(runes) > 300 {
				message = string(runes[:300]) + "…"
			}
		}
	}
	message = c.redact(message)
	if status == http.StatusUnauthorized && c.key == "" {
		if message == "" {
			message = "unauthorized"
		}
		message += " (no API key was configured: set api_key or CAPYDB_API_KEY)"
	}
	return message
}

func (c *Client) redact(text string) string {
	if c.key != "" {
		text = strings.ReplaceAll(text, c.key, "**********")
	}
	return text
}

func (c *Client) scrub(err error) error {
	text := c.redact(err.Error())
	if text == err.Error() {
		return err
	}
	return errors.New(text)
}

func (c *Client) debug(ctx context.Context, msg string, fields map[string]any) {
	if c.cfg.Debug != nil {
		c.cfg.Debug(ctx, msg, fields)
	}
}

// redactURL drops user info and query from a URL for messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(an unreadable URL)"
	}
	u.User = nil
	if at := strings.LastIndex(u.Opaque, "@"); at >= 0 {
		// "admin:secret@host:8080" parses as scheme "admin", opaque "secret@host:8080"
		u.Opaque = u.Opaque[at+1:]
	}
	u.RawQuery = ""
	u.Fragment = ""
	return u.String()
}

func segment(value string) (string, error) {
	if value == "" || value == "." || value == ".." || strings.ContainsAny(value, "/?#") {
		return "", fmt.Errorf("invalid id %q: an id is one path segment, not empty, '.' or '..'", value)
	}
	return value, nil
}

func projectPath(projectID string, rest ...string) (string, error) {
	id, err := segment(projectID)
	if err != nil {
		return "", err
	}
	for _, part := range rest {
		if part == "" {
			return "", errors.New("invalid id: empty")
		}
	}
	return strings.Join(append([]string{"v1", "projects", id}, rest...), "/"), nil
}
