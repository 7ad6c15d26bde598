// Package redistest gives tests a client of the test Redis server, private
// key prefixes that are cleaned up when the test ends, and throwaway Redis
// Clusters of local redis-server processes (StartCluster).
package redistest

import (
	"context"
	"crypto/rand"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"
)

// Addr is the test Redis address: TUSGATE_TEST_REDIS_ADDR, default
// 127.0.0.1:6379 (scripts/test.sh starts a server when none answers).
func Addr() string {
	if addr := os.Getenv("TUSGATE_TEST_REDIS_ADDR"); addr != "" {
		return addr
	}
	return "127.0.0.1:6379"
}

// Client returns a new client of the test Redis, closed when t ends; each
// call gets its own connections, as separate gateway processes would.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: Addr(), ContextTimeoutEnabled: true, PoolSize: 64})
	t.Cleanup(func() { _ = client.Close() })
	if err := client.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("test Redis at %s (set TUSGATE_TEST_REDIS_ADDR): %v", Addr(), err)
	}
	return client
}

// Prefix returns a random key prefix whose keys are deleted when t ends.
// client may be a single-node client or a *redis.ClusterClient; on a
// cluster every master is scanned. client must still be open when t's
// cleanups run (register Prefix after the client's own cleanup, as calling
// it after Client or Cluster.Client does).
func Prefix(t testing.TB, client redis.UniversalClient) string {
	t.Helper()
	prefix := "tusgate-test-" + rand.Text()
	t.Cleanup(func() {
		ctx := context.WithoutCancel(t.Context())
		if cc, ok := client.(*redis.ClusterClient); ok {
			err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
				// DEL through the cluster client: it follows a slot
				// that moved since the SCAN.
				deleteMatching(ctx, t, node, cc, prefix)
				return nil
			})
			if err != nil {
				t.Errorf("clean up %s:* on every master: %v", prefix, err)
			}
			return
		}
		deleteMatching(ctx, t, client, client, prefix)
	})
	return prefix
}

// deleteMatching deletes the keys that start with prefix+":" found by
// SCAN on server, through client.
func deleteMatching(ctx context.Context, t testing.TB, server, client redis.Cmdable, prefix string) {
	iter := server.Scan(ctx, 0, prefix+":*", 100).Iterator()
	for iter.Next(ctx) {
		if err := client.Del(ctx, iter.Val()).Err(); err != nil {
			t.Errorf("clean up %s: %v", iter.Val(), err)
		}
	}
	if err := iter.Err(); err != nil {
		t.Errorf("clean up %s:*: %v", prefix, err)
	}
}
