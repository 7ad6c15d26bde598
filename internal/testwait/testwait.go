// Package testwait waits in tests for a condition, with a deadline: the
// one way tests here wait for something (never a bare sleep).
package testwait

import (
	"context"
	"testing"
	"time"
)

// Interval is how often For checks its condition.
const Interval = 5 * time.Millisecond

// For polls cond every Interval until it holds. It fails t (naming what)
// when timeout passes first, or when t's context ends (the test is over).
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if Until(t.Context(), timeout, cond) {
		return
	}
	if err := t.Context().Err(); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}

// Until polls cond every Interval until it holds (true), or until timeout
// passes or ctx ends (false). It fails no test, so a goroutine other than
// the test's (a request body's Read, say) may wait with it.
func Until(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return false
		}
	}
	return true
}
