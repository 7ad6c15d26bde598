package redislock_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/store/redislock"
)

// An expiry of a minute renews every 20s: no renewal runs during these
// tests, so every command counted comes from Lock, Unlock or Close.
const quietExpiry = time.Minute

// TestConsecutiveLocksSendNoCommand: after the first lock of an upload, the
// next locks of that upload on the same process, one after the other, send
// no Redis command; Close then releases the lingering lock.
func TestConsecutiveLocksSendNoCommand(t *testing.T) {
	checkNoLeaks(t)
	r := startPrivateRedis(t)
	m := r.monitor(t)
	client := r.client(t)
	locker := newLocker(t, client, redislock.WithExpiry(quietExpiry))

	mustUnlock(t, mustLock(t, locker, "up", nil))
	if n := m.count(); n == 0 {
		t.Fatalf("Redis commands for the first lock: got 0, want some (is the counter broken?)")
	}
	const cycles = 19
	for range cycles {
		mustUnlock(t, mustLock(t, locker, "up", nil))
	}
	if n := m.count(); n != 0 {
		t.Errorf("Redis commands for %d more lock/unlock cycles of one upload: got %d, want 0", cycles, n)
	}

	if err := locker.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n, err := client.Exists(t.Context(), redislock.DefaultPrefix+":lock:{up}").Result(); err != nil || n != 0 {
		t.Errorf("lock key after Close: got %d, %v, want 0", n, err)
	}
}

// TestLocalWaiterTakesOverWithoutCommand: a second lock of the same process
// asks the holder directly (its requestRelease is called) and gets the lock
// at its Unlock, with no Redis command.
func TestLocalWaiterTakesOverWithoutCommand(t *testing.T) {
	checkNoLeaks(t)
	r := startPrivateRedis(t)
	m := r.monitor(t)
	locker := newLocker(t, r.client(t), redislock.WithExpiry(quietExpiry))

	asked := newSignal()
	first := mustLock(t, locker, "up", asked.fire)
	m.count()
	unlocked := make(chan struct{})
	go func() { // owned by the test: it receives from unlocked below
		defer close(unlocked)
		<-asked.ch
		mustUnlock(t, first)
	}()
	second := mustLock(t, locker, "up", nil)
	<-unlocked
	if n := m.count(); n != 0 {
		t.Errorf("Redis commands for a lock handed over inside the process: got %d, want 0", n)
	}
	mustUnlock(t, second)
}

// TestLocalWaiterTimesOut: a second lock of the same process whose holder
// does not release returns ErrLockTimeout when its context ends, with no
// Redis command, and the holder keeps its lock.
func TestLocalWaiterTimesOut(t *testing.T) {
	checkNoLeaks(t)
	r := startPrivateRedis(t)
	m := r.monitor(t)
	client := r.client(t)
	locker := newLocker(t, client, redislock.WithExpiry(quietExpiry))

	asked := newSignal()
	holder := mustLock(t, locker, "up", asked.fire) // never unlocks on request
	m.count()
	lk, err := locker.NewLock("up")
	if err != nil {
		t.Fatalf("NewLock: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if err := lk.Lock(ctx, nil); !errors.Is(err, handler.ErrLockTimeout) {
		t.Errorf("Lock while another lock of the process holds it: got %v, want ErrLockTimeout", err)
	}
	if !asked.fired() {
		t.Errorf("the holder's requestRelease was not called")
	}
	if n := m.count(); n != 0 {
		t.Errorf("Redis commands for a lock that waited inside the process: got %d, want 0", n)
	}
	if err := lk.Unlock(); err != nil {
		t.Errorf("Unlock of a lock that timed out: %v", err)
	}
	key := redislock.DefaultPrefix + ":lock:{up}"
	if n, err := client.Exists(t.Context(), key).Result(); err != nil || n != 1 {
		t.Errorf("lock key of the holder: got %d, %v, want 1", n, err)
	}
	mustUnlock(t, holder)
}

// BenchmarkRedisCommands reports the Redis commands (sent by clients, not
// those run inside scripts) per lock/unlock cycle of one upload: on one
// process, on one process without lingering (as every cycle cost before
// lingering), and alternating between two processes. Each figure includes
// the final release (Close). Run it with -benchtime=20x for 20 cycles.
func BenchmarkRedisCommands(b *testing.B) {
	cases := []struct {
		name      string
		processes int
		opts      []redislock.Option
	}{
		{"one-process", 1, nil},
		{"one-process-no-linger", 1, []redislock.Option{redislock.WithLinger(0)}},
		{"alternating-processes", 2, nil},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			r := startPrivateRedis(b)
			m := r.monitor(b)
			lockers := make([]*redislock.Locker, tc.processes)
			for i := range lockers {
				lockers[i] = redislock.New(r.client(b), tc.opts...)
			}
			m.count()
			n := 0
			for b.Loop() {
				mustUnlock(b, mustLock(b, lockers[n%len(lockers)], "up", nil))
				n++
			}
			for _, l := range lockers {
				if err := l.Close(); err != nil {
					b.Fatalf("Close: %v", err)
				}
			}
			b.ReportMetric(float64(m.count())/float64(n), "redis-cmds/op")
		})
	}
}
