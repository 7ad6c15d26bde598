package redislock_test

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/store/redislock"
)

// TestLeasesRunNoGoroutine: a lease, held or lingering, runs no goroutine
// of its own (its renewal and linger end are timers), so many open
// uploads cost a Locker only the hub's goroutine.
func TestLeasesRunNoGoroutine(t *testing.T) {
	checkNoLeaks(t)
	const leases, most = 200, 20
	client := startPrivateRedis(t).client(t)
	locker := newLocker(t, client, redislock.WithExpiry(quietExpiry), redislock.WithLinger(quietExpiry))

	base := runtime.NumGoroutine()
	held := make([]handler.Lock, leases)
	for i := range held {
		held[i] = mustLock(t, locker, "up"+strconv.Itoa(i), nil)
	}
	nHeld := runtime.NumGoroutine() - base
	if nHeld >= most {
		t.Errorf("goroutines added by %d held locks: got %d, want fewer than %d", leases, nHeld, most)
	}
	for _, lk := range held {
		mustUnlock(t, lk)
	}
	nLinger := runtime.NumGoroutine() - base
	if nLinger >= most {
		t.Errorf("goroutines added by %d lingering leases: got %d, want fewer than %d", leases, nLinger, most)
	}
	t.Logf("goroutines added by %d leases: %d held, %d lingering", leases, nHeld, nLinger)
	n, err := client.Exists(t.Context(), redislock.DefaultPrefix+":lock:{up0}", redislock.DefaultPrefix+":lock:{up199}").Result()
	if err != nil || n != 2 {
		t.Errorf("lock keys of lingering leases: got %d, %v, want 2", n, err)
	}
}

// TestRenewalTimerKeepsRenewing: the renewal timer, re-armed after each
// renewal, keeps a held lock and a lingering one alive over many expiries.
func TestRenewalTimerKeepsRenewing(t *testing.T) {
	checkNoLeaks(t)
	const expiry, watch = 300 * time.Millisecond, 1500 * time.Millisecond
	client := startPrivateRedis(t).client(t)
	locker := newLocker(t, client, redislock.WithExpiry(expiry), redislock.WithLinger(time.Minute))

	held := mustLock(t, locker, "held", nil)
	mustUnlock(t, mustLock(t, locker, "lingering", nil))
	keys := []string{redislock.DefaultPrefix + ":lock:{held}", redislock.DefaultPrefix + ":lock:{lingering}"}
	start := time.Now()
	var missing int64
	waitFor(t, watch+5*time.Second, "five expiries to pass", func() bool {
		n, err := client.Exists(t.Context(), keys...).Result()
		if err != nil {
			t.Fatalf("EXISTS: %v", err)
		}
		if n != int64(len(keys)) {
			missing = int64(len(keys)) - n
			return true
		}
		return time.Since(start) >= watch
	})
	if missing != 0 {
		t.Errorf("lock keys gone %v after locking (expiry %v): got %d, want 0", time.Since(start).Round(time.Millisecond), expiry, missing)
	}
	mustUnlock(t, held)
}
