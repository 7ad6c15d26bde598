// Package redistest gives tests a client of the test Redis server and
// private key prefixes that are cleaned up when the test ends.
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
func Prefix(t testing.TB, client *redis.Client) string {
	t.Helper()
	prefix := "tusgate-test-" + rand.Text()
	t.Cleanup(func() {
		ctx := context.WithoutCancel(t.Context())
		iter := client.Scan(ctx, 0, prefix+":*", 100).Iterator()
		for iter.Next(ctx) {
			if err := client.Del(ctx, iter.Val()).Err(); err != nil {
				t.Errorf("clean up %s: %v", iter.Val(), err)
			}
		}
		if err := iter.Err(); err != nil {
			t.Errorf("clean up %s:*: %v", prefix, err)
		}
	})
	return prefix
}
