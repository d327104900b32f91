package provider

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingFetch lists a project as ["<project>#<n>"], n counting its calls; while gate
// is not nil each call waits for it to close.
type countingFetch struct {
	calls atomic.Int32
	gate  chan struct{}
	fail  atomic.Bool
}

func (f *countingFetch) fetch(ctx context.Context, projectID string) ([]string, error) {
	n := f.calls.Add(1)
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.fail.Load() {
		return nil, fmt.Errorf("list %s: 503 Service Unavailable", projectID)
	}
	return []string{fmt.Sprintf("%s#%d", projectID, n)}, nil
}

func TestCachedListOneFetchForFiftyConcurrentCallers(t *testing.T) {
	cache := newListCache()
	fetch := &countingFetch{gate: make(chan struct{})}
	const callers = 50
	var started, done sync.WaitGroup
	results := make([][]string, callers)
	errs := make([]error, callers)
	started.Add(callers)
	done.Add(callers)
	for i := range callers {
		go func() {
			defer done.Done()
			started.Done()
			results[i], errs[i] = cachedList(context.Background(), cache, "restore-points", "prj_1", fetch.fetch)
		}()
	}
	started.Wait()
	// the callers are in (or about to be in) cachedList while the fetch is held open
	time.Sleep(50 * time.Millisecond)
	close(fetch.gate)
	done.Wait()
	if n := fetch.calls.Load(); n != 1 {
		t.Fatalf("%d callers made %d fetches, want 1", callers, n)
	}
	for i := range callers {
		if errs[i] != nil || len(results[i]) != 1 || results[i][0] != "prj_1#1" {
			t.Errorf("caller %d got %v, %v", i, results[i], errs[i])
		}
	}
	// another project, and another kind of the same project, are listings of their own
	if got, _ := cachedList(context.Background(), cache, "restore-points", "prj_2", fetch.fetch); got[0] != "prj_2#2" {
		t.Errorf("prj_2 got %v", got)
	}
	if got, _ := cachedList(context.Background(), cache, "backups", "prj_1", fetch.fetch); got[0] != "prj_1#3" {
		t.Errorf("backups of prj_1 got %v", got)
	}
}

func TestCachedListForget(t *testing.T) {
	cache := newListCache()
	fetch := &countingFetch{}
	list := func(kind, project string) string {
		t.Helper()
		got, err := cachedList(context.Background(), cache, kind, project, fetch.fetch)
		if err != nil || len(got) != 1 {
			t.Fatalf("cachedList(%s, %s) = %v, %v", kind, project, got, err)
		}
		return got[0]
	}
	list("restore-points", "prj_1")
	list("backups", "prj_1")
	list("previews", "prj_1")
	list("restore-points", "prj_2")
	if n := fetch.calls.Load(); n != 4 {
		t.Fatalf("%d fetches, want 4", n)
	}
	if list("restore-points", "prj_1") != "prj_1#1" {
		t.Error("a second call fetched again")
	}

	cache.forget("prj_1", "restore-points")
	if got := list("restore-points", "prj_1"); got != "prj_1#5" {
		t.Errorf("after forget: %s, want a new fetch", got)
	}
	if list("backups", "prj_1") != "prj_1#2" || list("restore-points", "prj_2") != "prj_2#4" {
		t.Error("forgetting prj_1's restore points forgot another listing")
	}

	cache.forget("prj_1") // every kind
	if list("restore-points", "prj_1") != "prj_1#6" || list("backups", "prj_1") != "prj_1#7" || list("previews", "prj_1") != "prj_1#8" {
		t.Error("forget with no kinds kept a listing of the project")
	}
	if list("restore-points", "prj_2") != "prj_2#4" {
		t.Error("forgetting prj_1 forgot prj_2")
	}
}

func TestCachedListKeepsNoFailedFetch(t *testing.T) {
	cache := newListCache()
	fetch := &countingFetch{}
	fetch.fail.Store(true)
	if got, err := cachedList(context.Background(), cache, "restore-points", "prj_1", fetch.fetch); err == nil || got != nil {
		t.Fatalf("a failed fetch gave %v, %v", got, err)
	}
	if _, err := cachedList(context.Background(), cache, "restore-points", "prj_1", fetch.fetch); err == nil || fetch.calls.Load() != 2 {
		t.Fatalf("the second call: %v after %d fetches; a failure must be fetched again", err, fetch.calls.Load())
	}
	fetch.fail.Store(false)
	got, err := cachedList(context.Background(), cache, "restore-points", "prj_1", fetch.fetch)
	if err != nil || got[0] != "prj_1#3" {
		t.Fatalf("after the failures: %v, %v", got, err)
	}
}

func TestCachedListExpiresAfterTTL(t *testing.T) {
	cache := newListCache()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cache.now = func() time.Time { return now }
	fetch := &countingFetch{}
	list := func() string {
		got, err := cachedList(context.Background(), cache, "restore-points", "prj_1", fetch.fetch)
		if err != nil {
			t.Fatal(err)
		}
		return got[0]
	}
	list()
	now = now.Add(listTTL)
	if got := list(); got != "prj_1#1" {
		t.Errorf("at exactly the TTL: %s, want the cached listing", got)
	}
	now = now.Add(time.Millisecond)
	if got := list(); got != "prj_1#2" {
		t.Errorf("past the TTL: %s, want a new fetch", got)
	}
	now = now.Add(listTTL / 2)
	if got := list(); got != "prj_1#2" {
		t.Errorf("within the new listing's TTL: %s", got)
	}
}

func TestCachedListWaiterStopsWithItsContext(t *testing.T) {
	cache := newListCache()
	fetch := &countingFetch{gate: make(chan struct{})}
	defer close(fetch.gate)
	first := make(chan error, 1)
	go func() {
		_, err := cachedList(context.Background(), cache, "restore-points", "prj_1", fetch.fetch)
		first <- err
	}()
	for fetch.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := cachedList(ctx, cache, "restore-points", "prj_1", fetch.fetch); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a waiter whose context ended got %v", err)
	}
	if n := fetch.calls.Load(); n != 1 {
		t.Errorf("%d fetches, want the one in flight", n)
	}
}
