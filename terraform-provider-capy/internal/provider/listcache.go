package provider

import (
	"context"
	"sync"
	"time"

	"github.com/pulumi-capy/terraform-provider-capy/internal/client"
)

// listTTL is how long a project's listing answers reads. Terraform calls Read once per
// resource, each its own RPC, concurrently (-parallelism, 10 by default), all in one
// provider process per plan: the first Read of a project lists it, the others of the
// same refresh share that one call instead of making one each. Every write of this
// process forgets the listings of its project first, so a plan never reads its own
// writes stale.
const listTTL = 10 * time.Second

type listEntry struct {
	done  chan struct{}
	value any
	err   error
	at    time.Time
}

type listCache struct {
	mu      sync.Mutex
	entries map[string]*listEntry
	now     func() time.Time
}

func newListCache() *listCache {
	return &listCache{entries: map[string]*listEntry{}, now: time.Now}
}

// forget drops the listings of kind ("restore-points", "backups", "previews") of a
// project; with no kinds, all of them.
func (c *listCache) forget(projectID string, kinds ...string) {
	if len(kinds) == 0 {
		kinds = []string{"restore-points", "backups", "previews"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, kind := range kinds {
		delete(c.entries, kind+"/"+projectID)
	}
}

// cachedList returns the project's listing of kind, fetching it once for every caller
// that asks meanwhile; a failed fetch is not kept.
func cachedList[T any](ctx context.Context, c *listCache, kind, projectID string, fetch func(context.Context, string) ([]T, error)) ([]T, error) {
	key := kind + "/" + projectID
	c.mu.Lock()
	entry, ok := c.entries[key]
	if ok {
		select {
		case <-entry.done:
			if entry.err != nil || c.now().Sub(entry.at) > listTTL {
				ok = false
			}
		default: // being fetched: wait for it
		}
	}
	if !ok {
		entry = &listEntry{done: make(chan struct{})}
		c.entries[key] = entry
		c.mu.Unlock()
		entry.value, entry.err = fetch(ctx, projectID)
		entry.at = c.now()
		close(entry.done)
	} else {
		c.mu.Unlock()
		select {
		case <-entry.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if entry.err != nil {
		return nil, entry.err
	}
	return entry.value.([]T), nil
}

// listed is the item of a listing whose id is id, or nil.
func listed[T any](items []T, id string, idOf func(*T) string) *T {
	for i := range items {
		if idOf(&items[i]) == id {
			return &items[i]
		}
	}
	return nil
}

// findListed is the object id in the project's listing of kind, read through the cache;
// nil and no error when it is not listed or the project itself is gone (404): a Read
// forgets it either way.
func findListed[T any](ctx context.Context, c *listCache, kind, projectID, id string, fetch func(context.Context, string) ([]T, error), idOf func(*T) string) (*T, error) {
	items, err := cachedList(ctx, c, kind, projectID, fetch)
	if client.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return listed(items, id, idOf), nil
}
