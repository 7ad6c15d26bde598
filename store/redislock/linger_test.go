package redislock_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/internal/redistest"
	"github.com/tusgate/tusgate/store/redislock"
)

func TestLingerReleasedOnRequest(t *testing.T) { testLingerReleasedOnRequest(t, singleNode()) }

func TestLingerEnds(t *testing.T) { testLingerEnds(t, singleNode()) }

func TestLingeringLockLost(t *testing.T) { testLingeringLockLost(t, singleNode()) }

func TestLingeringHolderDies(t *testing.T) { testLingeringHolderDies(t, singleNode()) }

func TestCloseReleasesLingeringLocks(t *testing.T) {
	testCloseReleasesLingeringLocks(t, singleNode())
}

func TestLingerCancelledContext(t *testing.T) { testLingerCancelledContext(t, singleNode()) }

func TestContendedLockDoesNotLinger(t *testing.T) { testContendedLockDoesNotLinger(t, singleNode()) }

// exists reports whether key exists.
func exists(t *testing.T, client redis.UniversalClient, key string) bool {
	t.Helper()
	n, err := client.Exists(t.Context(), key).Result()
	if err != nil {
		t.Fatalf("EXISTS %s: %v", key, err)
	}
	return n == 1
}

// testLingerReleasedOnRequest: a lock that lingers on A (for a minute) goes
// to B as soon as B asks, and A's next lock then asks B in turn instead of
// taking the lease it dropped.
func testLingerReleasedOnRequest(t *testing.T, b backend) {
	checkNoLeaks(t)
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	// Default expiry (10s), renewal every 3.3s: a prompt acquisition can
	// only come from the release request.
	lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix), redislock.WithLinger(time.Minute))
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix), redislock.WithLinger(time.Minute))
	key := prefix + ":lock:{up}"

	mustUnlock(t, mustLock(t, lockerA, "up", nil))
	if !exists(t, clientB, key) {
		t.Fatalf("lock key after A's Unlock: gone, want it kept (lingering)")
	}
	start := time.Now()
	asked := newSignal()
	lkB := mustLockYielding(t, lockerB, "up", asked)
	if elapsed, limit := time.Since(start), 2*time.Second; elapsed > limit {
		t.Errorf("B acquired a lingering lock after %v, want under %v", elapsed, limit)
	}

	// A's lease is gone: its next lock must ask B.
	lkA := mustLock(t, lockerA, "up", nil)
	if !asked.fired() {
		t.Errorf("A acquired while B held the lock, without asking B")
	}
	mustUnlock(t, lkA)
	mustUnlock(t, lkB) // already unlocked in its callback: a no-op
}

// testLingerEnds: a lingering lock that no one takes is released at the end
// of the linger time, long before its expiry.
func testLingerEnds(t *testing.T, b backend) {
	checkNoLeaks(t)
	client := b.newClient(t)
	prefix := newPrefix(t, client)
	locker := newLocker(t, client, redislock.WithPrefix(prefix),
		redislock.WithExpiry(time.Minute), redislock.WithLinger(50*time.Millisecond))
	key, channel := prefix+":lock:{up}", prefix+":release:{up}"

	mustUnlock(t, mustLock(t, locker, "up", nil))
	waitFor(t, 5*time.Second, "the lingering lock to be released", func() bool {
		return !exists(t, client, key) && numSub(t, client, channel)[channel] == 0
	})
}

// testLingeringLockLost: a lingering lock that someone else took over (as
// after an expiry during a long pause) is dropped at the next renewal, and
// the process's next lock waits for the new holder instead of taking it.
func testLingeringLockLost(t *testing.T, b backend) {
	checkNoLeaks(t)
	client := b.newClient(t)
	prefix := newPrefix(t, client)
	// Renewal every 333ms.
	locker := newLocker(t, client, redislock.WithPrefix(prefix),
		redislock.WithExpiry(time.Second), redislock.WithLinger(time.Minute))
	key, channel := prefix+":lock:{up}", prefix+":release:{up}"

	mustUnlock(t, mustLock(t, locker, "up", nil))
	if err := client.Set(t.Context(), key, "intruder", 10*time.Second).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	waitFor(t, 3*time.Second, "the lost lingering lock to be dropped", func() bool {
		return numSub(t, client, channel)[channel] == 0
	})
	lk, err := locker.NewLock("up")
	if err != nil {
		t.Fatalf("NewLock: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := lk.Lock(ctx, nil); !errors.Is(err, handler.ErrLockTimeout) {
		t.Errorf("Lock of a lock held by an intruder: got %v, want ErrLockTimeout", err)
		mustUnlock(t, lk)
	}
	if got, err := client.Get(t.Context(), key).Result(); err != nil || got != "intruder" {
		t.Errorf("GET %s: got %q, %v, want %q", key, got, err, "intruder")
	}
}

// testLingeringHolderDies: a process that dies while its lock lingers
// blocks the upload for at most the expiry, as a holder that dies does.
func testLingeringHolderDies(t *testing.T, b backend) {
	checkNoLeaks(t)
	const expiry = time.Second
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	// Not newLocker: Close may fail with A's client closed.
	lockerA := redislock.New(clientA, redislock.WithPrefix(prefix), redislock.WithExpiry(expiry), redislock.WithLinger(time.Minute))
	t.Cleanup(func() { _ = lockerA.Close() })
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix), redislock.WithExpiry(expiry))

	mustUnlock(t, mustLock(t, lockerA, "up", nil))
	// A "dies": its client is gone, so it can neither renew nor release.
	if err := clientA.Close(); err != nil {
		t.Fatalf("close client A: %v", err)
	}
	start := time.Now()
	lkB := mustLock(t, lockerB, "up", nil)
	if elapsed, limit := time.Since(start), expiry+time.Second; elapsed > limit {
		t.Errorf("takeover of a dead process's lingering lock took %v, want at most %v", elapsed, limit)
	}
	mustUnlock(t, lkB)
}

// testCloseReleasesLingeringLocks: Close deletes the lingering locks at
// once and leaves their channels; a lock held during Close stays held, and
// its Unlock then releases at once.
func testCloseReleasesLingeringLocks(t *testing.T, b backend) {
	checkNoLeaks(t)
	client := b.newClient(t)
	prefix := newPrefix(t, client)
	locker := newLocker(t, client, redislock.WithPrefix(prefix), redislock.WithLinger(time.Minute))
	lingering, held := prefix+":lock:{a}", prefix+":lock:{b}"
	channel := prefix + ":release:{a}"

	mustUnlock(t, mustLock(t, locker, "a", nil))
	lk := mustLock(t, locker, "b", nil)
	if !exists(t, client, lingering) || numSub(t, client, channel)[channel] != 1 {
		t.Fatalf("lock of a after Unlock: want it kept and subscribed (lingering)")
	}
	if err := locker.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if exists(t, client, lingering) {
		t.Errorf("lingering lock after Close: still there, want it deleted")
	}
	if n := numSub(t, client, channel)[channel]; n != 0 {
		t.Errorf("subscribers of %s after Close: got %d, want 0", channel, n)
	}
	if !exists(t, client, held) {
		t.Errorf("held lock after Close: gone, want it kept until its Unlock")
	}
	mustUnlock(t, lk)
	if exists(t, client, held) {
		t.Errorf("lock unlocked after Close: still there, want it deleted at once")
	}
	// Lock still works after Close, without lingering.
	mustUnlock(t, mustLock(t, locker, "a", nil))
	if exists(t, client, lingering) {
		t.Errorf("lock unlocked after Close: still there, want it deleted at once")
	}
}

// testLingerCancelledContext: Lock with a context already done fails with
// ErrLockTimeout even when the process keeps the lock lingering.
func testLingerCancelledContext(t *testing.T, b backend) {
	checkNoLeaks(t)
	client := b.newClient(t)
	prefix := newPrefix(t, client)
	locker := newLocker(t, client, redislock.WithPrefix(prefix), redislock.WithLinger(time.Minute))

	mustUnlock(t, mustLock(t, locker, "up", nil))
	lk, err := locker.NewLock("up")
	if err != nil {
		t.Fatalf("NewLock: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := lk.Lock(ctx, nil); !errors.Is(err, handler.ErrLockTimeout) {
		t.Errorf("Lock with a cancelled context on a lingering lock: got %v, want ErrLockTimeout", err)
		mustUnlock(t, lk)
	}
	mustUnlock(t, mustLock(t, locker, "up", nil))
}

// testContendedLockDoesNotLinger: once another process asked for its
// lingering lock, a process releases that upload's locks at Unlock, so
// requests that alternate between processes do not wait for a linger to be
// cut short each time.
func testContendedLockDoesNotLinger(t *testing.T, b backend) {
	checkNoLeaks(t)
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix), redislock.WithLinger(time.Minute))
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix), redislock.WithLinger(time.Minute))
	key := prefix + ":lock:{up}"

	mustUnlock(t, mustLock(t, lockerA, "up", nil)) // lingers on A
	mustUnlock(t, mustLock(t, lockerB, "up", nil)) // A drops it; it lingers on B
	if !exists(t, clientA, key) {
		t.Fatalf("lock key after B's Unlock: gone, want it kept (B was never asked)")
	}
	mustUnlock(t, mustLock(t, lockerA, "up", nil))
	if exists(t, clientA, key) {
		t.Errorf("lock key after A's Unlock of an upload B asked for: still there, want it deleted at once")
	}
	// Another upload still lingers on A.
	mustUnlock(t, mustLock(t, lockerA, "other", nil))
	if !exists(t, clientA, prefix+":lock:{other}") {
		t.Errorf("lock key of an upload no one else asked for: gone, want it kept (lingering)")
	}
}

// TestLingerMutualExclusionInProcess: many locks of one process on one
// upload, each asking the holder to release as tusd's requests do, never
// overlap, and every one gets the lock (most of them handed over inside the
// process).
func TestLingerMutualExclusionInProcess(t *testing.T) {
	checkNoLeaks(t)
	const (
		workers    = 8
		iterations = 50
	)
	client := redistest.Client(t)
	prefix := newPrefix(t, client)
	locker := newLocker(t, client, redislock.WithPrefix(prefix))
	var holders, overlaps, taken atomic.Int32
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range iterations {
				lk := mustLock(t, locker, "shared", func() {})
				if holders.Add(1) != 1 {
					overlaps.Add(1)
				}
				runtime.Gosched()
				holders.Add(-1)
				taken.Add(1)
				mustUnlock(t, lk)
			}
		})
	}
	wg.Wait()
	if n := overlaps.Load(); n != 0 {
		t.Errorf("times two locks of one process overlapped: got %d, want 0", n)
	}
	if got, want := taken.Load(), int32(workers*iterations); got != want {
		t.Errorf("locks taken: got %d, want %d", got, want)
	}
}

// TestLingeringLockUnrenewable: a lingering lock that cannot be renewed
// (Redis is gone) is not taken over once it may expire before its next
// renewal: Lock then goes to Redis, and times out.
func TestLingeringLockUnrenewable(t *testing.T) {
	checkNoLeaks(t)
	r := startPrivateRedis(t)
	// Renewal every 333ms; the lock lives 1s after the last one.
	locker := newLocker(t, r.client(t), redislock.WithExpiry(time.Second), redislock.WithLinger(time.Minute))
	mustUnlock(t, mustLock(t, locker, "up", nil))
	r.kill()
	waitFor(t, 5*time.Second, "a Lock to stop taking over the unrenewable lingering lock", func() bool {
		lk, err := locker.NewLock("up")
		if err != nil {
			t.Fatalf("NewLock: %v", err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		err = lk.Lock(ctx, nil)
		switch {
		case err == nil:
			mustUnlock(t, lk) // taken over: the lease still looks valid
			return false
		case errors.Is(err, handler.ErrLockTimeout):
			return true
		default:
			t.Fatalf("Lock with Redis gone: got %v, want nil or ErrLockTimeout", err)
			return false
		}
	})
}
