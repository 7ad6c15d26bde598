// Package testwait waits in tests for a condition, with a deadline: the
// one way tests here wait for something (never a bare sleep).
package testwait

import (
	"testing"
	"time"
)

// Interval is how often For checks its condition.
const Interval = 5 * time.Millisecond

// For polls cond every Interval until it holds. It fails t (naming what)
// when timeout passes first, or when t's context ends (the test is over).
func For(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatalf("waiting for %s: %v", what, t.Context().Err())
		}
	}
}
