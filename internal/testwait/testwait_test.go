package testwait_test

import (
	"testing"
	"time"

	"github.com/tusgate/tusgate/internal/testwait"
)

func TestForReturnsOnceTrue(t *testing.T) {
	n := 0
	testwait.For(t, 10*time.Second, "three polls", func() bool { n++; return n >= 3 })
	if n != 3 {
		t.Errorf("polled %d times, want 3", n)
	}
}

// recorder is a testing.TB whose Fatalf is recorded and ends the goroutine.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = format
	panic(r)
}

func TestForFailsAtTheDeadline(t *testing.T) {
	r := &recorder{TB: t}
	start := time.Now()
	func() {
		defer func() {
			if p := recover(); p != r {
				panic(p)
			}
		}()
		testwait.For(r, 50*time.Millisecond, "never", func() bool { return false })
	}()
	if r.failed == "" {
		t.Fatal("For returned for a condition that never held")
	}
	if took := time.Since(start); took < 50*time.Millisecond || took > 5*time.Second {
		t.Errorf("failed after %v, want just after the 50ms timeout", took)
	}
}
