package redislock_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tus/tusd/v2/pkg/handler"

	"github.com/tusgate/tusgate/internal/redistest"
	"github.com/tusgate/tusgate/internal/testwait"
	"github.com/tusgate/tusgate/store/redislock"
)

// backend makes clients of one Redis deployment: the shared test server, or
// a Redis Cluster.
type backend struct {
	// newClient returns a new client, closed when t ends: one per
	// simulated gateway process.
	newClient func(t *testing.T) redis.UniversalClient
	cluster   *redistest.Cluster // nil for the single server
}

// singleNode is the shared test Redis server.
func singleNode() backend {
	return backend{newClient: func(t *testing.T) redis.UniversalClient { return redistest.Client(t) }}
}

// clusterBackend is the Redis Cluster c.
func clusterBackend(c *redistest.Cluster) backend {
	return backend{
		newClient: func(t *testing.T) redis.UniversalClient { return c.Client(t) },
		cluster:   c,
	}
}

func newPrefix(t *testing.T, client redis.UniversalClient) string { return redistest.Prefix(t, client) }

// newLocker returns a Locker on client, closed when t ends (before client
// is, when client was made first), failing t if Close fails.
func newLocker(t testing.TB, client redis.UniversalClient, opts ...redislock.Option) *redislock.Locker {
	t.Helper()
	locker := redislock.New(client, opts...)
	t.Cleanup(func() {
		if err := locker.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return locker
}

// suiteTest is a test that runs on every backend.
type suiteTest struct {
	name string
	fn   func(*testing.T, backend)
}

// suite lists the tests that run on every backend: each has a TestX for the
// single server, and TestCluster runs them all on a cluster.
func suite() []suiteTest {
	return []suiteTest{
		{"KeysAndUnlock", testKeysAndUnlock},
		{"MutualExclusion", testMutualExclusion},
		{"TakeoverFromDeadHolder", testTakeoverFromDeadHolder},
		{"LostLockCallsRequestRelease", testLostLockCallsRequestRelease},
		{"ReleaseRequestAcrossInstances", testReleaseRequestAcrossInstances},
		{"RequestBeforeHolderSubscribed", testRequestBeforeHolderSubscribed},
		{"RequestKeySeenAtRenewal", testRequestKeySeenAtRenewal},
		{"GlobCharactersInIDs", testGlobCharactersInIDs},
		{"OddIDs", testOddIDs},
		{"LockTimeout", testLockTimeout},
		{"ManyLocksShareOneSubscription", testManyLocksShareOneSubscription},
		{"TusdPatchInterruptedByHeadOnOtherInstance", testTusdPatchInterruptedByHeadOnOtherInstance},
		{"LingerReleasedOnRequest", testLingerReleasedOnRequest},
		{"LingerEnds", testLingerEnds},
		{"LingeringLockLost", testLingeringLockLost},
		{"LingeringHolderDies", testLingeringHolderDies},
		{"CloseReleasesLingeringLocks", testCloseReleasesLingeringLocks},
		{"LingerCancelledContext", testLingerCancelledContext},
		{"ContendedLockDoesNotLinger", testContendedLockDoesNotLinger},
		{"TusdPatchesAlternateInstances", testTusdPatchesAlternateInstances},
	}
}

func TestKeysAndUnlock(t *testing.T) { testKeysAndUnlock(t, singleNode()) }

func TestMutualExclusion(t *testing.T) { testMutualExclusion(t, singleNode()) }

func TestTakeoverFromDeadHolder(t *testing.T) { testTakeoverFromDeadHolder(t, singleNode()) }

func TestLostLockCallsRequestRelease(t *testing.T) { testLostLockCallsRequestRelease(t, singleNode()) }

func TestReleaseRequestAcrossInstances(t *testing.T) {
	testReleaseRequestAcrossInstances(t, singleNode())
}

func TestRequestBeforeHolderSubscribed(t *testing.T) {
	testRequestBeforeHolderSubscribed(t, singleNode())
}

func TestRequestKeySeenAtRenewal(t *testing.T) { testRequestKeySeenAtRenewal(t, singleNode()) }

func TestGlobCharactersInIDs(t *testing.T) { testGlobCharactersInIDs(t, singleNode()) }

func TestOddIDs(t *testing.T) { testOddIDs(t, singleNode()) }

func TestLockTimeout(t *testing.T) { testLockTimeout(t, singleNode()) }

func TestManyLocksShareOneSubscription(t *testing.T) {
	testManyLocksShareOneSubscription(t, singleNode())
}

func TestTusdPatchInterruptedByHeadOnOtherInstance(t *testing.T) {
	testTusdPatchInterruptedByHeadOnOtherInstance(t, singleNode())
}

// checkNoLeaks fails t if, when t ends, a goroutine of package redislock is
// still running after a grace period. Call it first in a test, so its
// cleanup runs last.
func checkNoLeaks(t testing.TB) {
	t.Helper()
	t.Cleanup(func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			leaked := ourGoroutines()
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("got %d goroutines of redislock still running, want 0:\n%s", len(leaked), strings.Join(leaked, "\n\n"))
				return
			}
			<-tick.C
		}
	})
}

// ourGoroutines returns the stacks of running goroutines with a frame in
// package redislock (not redislock_test).
func ourGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var ours []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "tusgate/store/redislock.") {
			ours = append(ours, g)
		}
	}
	return ours
}

// waitFor polls cond until it holds (see testwait.For).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, timeout, what, cond)
}

// mustLock locks id on locker within 10s or fails t.
func mustLock(t testing.TB, locker *redislock.Locker, id string, requestRelease func()) handler.Lock {
	t.Helper()
	lk, err := locker.NewLock(id)
	if err != nil {
		t.Fatalf("NewLock(%q): %v", id, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := lk.Lock(ctx, requestRelease); err != nil {
		t.Fatalf("Lock(%q): got %v, want nil", id, err)
	}
	return lk
}

// mustLockYielding locks id on locker within 10s or fails t; the lock fires
// called and unlocks itself (from its callback) when asked to release.
func mustLockYielding(t *testing.T, locker *redislock.Locker, id string, called *signal) handler.Lock {
	t.Helper()
	lk, err := locker.NewLock(id)
	if err != nil {
		t.Fatalf("NewLock(%q): %v", id, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = lk.Lock(ctx, func() {
		called.fire()
		if err := lk.Unlock(); err != nil {
			t.Errorf("Unlock(%q) in requestRelease: %v", id, err)
		}
	})
	if err != nil {
		t.Fatalf("Lock(%q): got %v, want nil", id, err)
	}
	return lk
}

// mustUnlock unlocks lk or fails t.
func mustUnlock(t testing.TB, lk handler.Lock) {
	t.Helper()
	if err := lk.Unlock(); err != nil {
		t.Errorf("Unlock: got %v, want nil", err)
	}
}

// signal is a channel closed at most once.
type signal struct {
	once sync.Once
	ch   chan struct{}
}

func newSignal() *signal { return &signal{ch: make(chan struct{})} }

func (s *signal) fire() { s.once.Do(func() { close(s.ch) }) }

func (s *signal) fired() bool {
	select {
	case <-s.ch:
		return true
	default:
		return false
	}
}

// waitSignal fails t unless s fires within timeout.
func waitSignal(t *testing.T, s *signal, timeout time.Duration, what string) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-s.ch:
	case <-timer.C:
		t.Fatalf("%s: not called within %v", what, timeout)
	}
}

func testKeysAndUnlock(t *testing.T, b backend) {
	checkNoLeaks(t)
	client := b.newClient(t)
	prefix := newPrefix(t, client)
	locker := newLocker(t, client, redislock.WithPrefix(prefix), redislock.WithExpiry(2*time.Second))

	lk := mustLock(t, locker, "abc", nil)
	key := prefix + ":lock:{abc}"
	ttl, err := client.PTTL(t.Context(), key).Result()
	if err != nil {
		t.Fatalf("PTTL %s: %v", key, err)
	}
	if ttl <= 0 || ttl > 2*time.Second {
		t.Errorf("TTL of %s: got %v, want in (0, 2s]", key, ttl)
	}
	if err := lk.Lock(t.Context(), nil); !errors.Is(err, redislock.ErrAlreadyLocked) {
		t.Errorf("second Lock on the same lock: got %v, want ErrAlreadyLocked", err)
	}
	mustUnlock(t, lk)
	// The process keeps the lock for the linger time (DefaultLinger).
	if n, err := client.Exists(t.Context(), key).Result(); err != nil || n != 1 {
		t.Errorf("EXISTS %s right after Unlock: got %d, %v, want 1 (lingering)", key, n, err)
	}
	if err := lk.Unlock(); err != nil {
		t.Errorf("second Unlock: got %v, want nil", err)
	}
	if err := locker.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if n, err := client.Exists(t.Context(), key).Result(); err != nil || n != 0 {
		t.Errorf("EXISTS %s after Close: got %d, %v, want 0", key, n, err)
	}
	if _, err := locker.NewLock(""); err == nil {
		t.Errorf("NewLock(\"\"): got nil error, want one")
	}

	// Without lingering, Unlock deletes the key at once.
	noLinger := newLocker(t, client, redislock.WithPrefix(prefix), redislock.WithLinger(0))
	mustUnlock(t, mustLock(t, noLinger, "abc", nil))
	if n, err := client.Exists(t.Context(), key).Result(); err != nil || n != 0 {
		t.Errorf("EXISTS %s after Unlock with WithLinger(0): got %d, %v, want 0", key, n, err)
	}
}

func testMutualExclusion(t *testing.T, b backend) {
	checkNoLeaks(t)
	const (
		workers    = 8 // per instance
		iterations = 20
	)
	admin := b.newClient(t)
	prefix := newPrefix(t, admin)
	counterKey := prefix + ":counter"
	var holders, overlaps atomic.Int32

	var wg sync.WaitGroup
	for range 2 {
		client := b.newClient(t)
		locker := newLocker(t, client, redislock.WithPrefix(prefix),
			redislock.WithPollInterval(time.Millisecond, 10*time.Millisecond))
		for range workers {
			wg.Go(func() {
				for range iterations {
					lk, err := locker.NewLock("shared")
					if err != nil {
						t.Errorf("NewLock: %v", err)
						return
					}
					ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
					err = lk.Lock(ctx, func() {})
					cancel()
					if err != nil {
						t.Errorf("Lock: got %v, want nil", err)
						return
					}
					if n := holders.Add(1); n != 1 {
						overlaps.Add(1)
					}
					// Read, yield, write: a second holder would lose an update.
					v, err := client.Get(t.Context(), counterKey).Int()
					if err != nil && !errors.Is(err, redis.Nil) {
						t.Errorf("GET counter: %v", err)
					}
					runtime.Gosched()
					if err := client.Set(t.Context(), counterKey, v+1, 0).Err(); err != nil {
						t.Errorf("SET counter: %v", err)
					}
					holders.Add(-1)
					if err := lk.Unlock(); err != nil {
						t.Errorf("Unlock: %v", err)
					}
				}
			})
		}
	}
	wg.Wait()

	got, err := admin.Get(t.Context(), counterKey).Int()
	if err != nil {
		t.Fatalf("GET counter: %v", err)
	}
	if want := 2 * workers * iterations; got != want {
		t.Errorf("counter: got %d, want %d (lost updates)", got, want)
	}
	if n := overlaps.Load(); n != 0 {
		t.Errorf("times two holders overlapped: got %d, want 0", n)
	}
}

func testTakeoverFromDeadHolder(t *testing.T, b backend) {
	checkNoLeaks(t)
	// Each Redis call of a Locker is bounded by the renew interval
	// (expiry/3): keep it well above the latency of a loaded test machine.
	const expiry = time.Second
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix), redislock.WithExpiry(expiry))
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix), redislock.WithExpiry(expiry))

	lost := newSignal()
	lkA := mustLock(t, lockerA, "up", lost.fire)
	// A "dies": its client is gone, so it can neither renew nor unlock.
	if err := clientA.Close(); err != nil {
		t.Fatalf("close client A: %v", err)
	}

	start := time.Now()
	lkB := mustLock(t, lockerB, "up", nil)
	if elapsed, limit := time.Since(start), expiry+time.Second; elapsed > limit {
		t.Errorf("takeover took %v, want at most %v", elapsed, limit)
	}
	// The dead holder's renewal fails: it must ask tusd to stop.
	waitSignal(t, lost, 2*time.Second, "requestRelease of the holder that lost its lock")

	if err := lkA.Unlock(); err == nil {
		t.Errorf("Unlock with a closed client: got nil error, want one")
	}
	mustUnlock(t, lkB)
}

func testLostLockCallsRequestRelease(t *testing.T, b backend) {
	checkNoLeaks(t)
	client := b.newClient(t)
	prefix := newPrefix(t, client)
	// Renewal every 333ms; each Redis call is bounded by that too.
	locker := newLocker(t, client, redislock.WithPrefix(prefix), redislock.WithExpiry(time.Second))

	lost := newSignal()
	lk := mustLock(t, locker, "up", lost.fire)
	key := prefix + ":lock:{up}"
	// Another holder took over (as after an expiry during a long pause).
	if err := client.Set(t.Context(), key, "intruder", 10*time.Second).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	waitSignal(t, lost, 2*time.Second, "requestRelease of the holder that lost its lock")
	mustUnlock(t, lk)
	if got, err := client.Get(t.Context(), key).Result(); err != nil || got != "intruder" {
		t.Errorf("GET %s after Unlock of a lost lock: got %q, %v, want %q (not ours to delete)", key, got, err, "intruder")
	}
}

func testReleaseRequestAcrossInstances(t *testing.T, b backend) {
	tests := []struct {
		name string
		// unlockInCallback: the callback calls Unlock itself; otherwise the
		// holder's own goroutine does, as tusd's PATCH handler does.
		unlockInCallback bool
	}{
		{"unlock in callback", true},
		{"unlock by holder goroutine", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkNoLeaks(t)
			clientA, clientB := b.newClient(t), b.newClient(t)
			prefix := newPrefix(t, clientB)
			// The default expiry (10s) and renew interval (3.3s): a prompt
			// acquisition can only come from the Pub/Sub request.
			lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix))
			lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix))

			called := newSignal()
			var holderDone sync.WaitGroup
			if tt.unlockInCallback {
				mustLockYielding(t, lockerA, "up", called)
			} else {
				lkA := mustLock(t, lockerA, "up", called.fire)
				holderDone.Go(func() {
					<-called.ch
					if err := lkA.Unlock(); err != nil {
						t.Errorf("Unlock: %v", err)
					}
				})
			}

			start := time.Now()
			lkB := mustLock(t, lockerB, "up", nil)
			if elapsed, limit := time.Since(start), 2*time.Second; elapsed > limit {
				t.Errorf("B acquired after %v, want under %v", elapsed, limit)
			}
			if !called.fired() {
				t.Errorf("B acquired before A's requestRelease ran")
			}
			holderDone.Wait()
			mustUnlock(t, lkB)
		})
	}
}

func testRequestBeforeHolderSubscribed(t *testing.T, b backend) {
	checkNoLeaks(t)
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix))
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix))
	reqKey := prefix + ":lockreq:{up}"

	type result struct {
		lk      handler.Lock
		err     error
		elapsed time.Duration
	}
	bDone := make(chan result, 1)
	var bRunning sync.WaitGroup
	var once sync.Once
	// Between A's SET NX and its SUBSCRIBE, B asks for the lock: B's PUBLISH
	// reaches nobody.
	redislock.SetAfterAcquireHook(lockerA, func(string) {
		once.Do(func() {
			bRunning.Go(func() {
				lk, err := lockerB.NewLock("up")
				if err != nil {
					bDone <- result{err: err}
					return
				}
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				start := time.Now()
				err = lk.Lock(ctx, nil)
				bDone <- result{lk, err, time.Since(start)}
			})
			waitFor(t, 5*time.Second, "B's release request recorded", func() bool {
				n, err := clientA.Exists(t.Context(), reqKey).Result()
				return err == nil && n == 1
			})
		})
	})

	called := newSignal()
	mustLockYielding(t, lockerA, "up", called)
	res := <-bDone
	bRunning.Wait()
	if res.err != nil {
		t.Fatalf("B's Lock: got %v, want nil", res.err)
	}
	// Well under the renew interval (3.3s): the request was not lost.
	if limit := 2 * time.Second; res.elapsed > limit {
		t.Errorf("B acquired after %v, want under %v", res.elapsed, limit)
	}
	if !called.fired() {
		t.Errorf("B acquired before A's requestRelease ran")
	}
	mustUnlock(t, res.lk)
}

func testRequestKeySeenAtRenewal(t *testing.T, b backend) {
	checkNoLeaks(t)
	client := b.newClient(t)
	prefix := newPrefix(t, client)
	// Renewal every 333ms; each Redis call is bounded by that too.
	locker := newLocker(t, client, redislock.WithPrefix(prefix), redislock.WithExpiry(time.Second))

	asked := newSignal()
	lk := mustLock(t, locker, "up", asked.fire)
	defer mustUnlock(t, lk)
	// A waiter's request whose PUBLISH was lost (say, to a Pub/Sub
	// reconnect): only the request key remains.
	if err := client.Set(t.Context(), prefix+":lockreq:{up}", "other-waiter", 5*time.Second).Err(); err != nil {
		t.Fatalf("SET request key: %v", err)
	}
	waitSignal(t, asked, 2*time.Second, "requestRelease after a request seen at renewal")
}

func testGlobCharactersInIDs(t *testing.T, b backend) {
	tests := []struct {
		id, sibling string // a PSUBSCRIBE on id would match sibling's channel
	}{
		{"up*", "upload"},
		{"up?", "upx"},
		{"up[abc]", "upa"},
		{"*", "anything"},
		{"up[", "up[x"},
		{"{x}*", "{x}y"},
		{`up\*`, "up*"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			checkNoLeaks(t)
			clientA, clientB := b.newClient(t), b.newClient(t)
			prefix := newPrefix(t, clientB)
			lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix))
			lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix))

			// A holds both; each callback unlocks its own lock.
			idCalled, siblingCalled := newSignal(), newSignal()
			mustLockYielding(t, lockerA, tt.id, idCalled)
			mustLockYielding(t, lockerA, tt.sibling, siblingCalled)

			b1 := mustLock(t, lockerB, tt.sibling, nil)
			if !siblingCalled.fired() {
				t.Errorf("B acquired %q before its holder was asked to release", tt.sibling)
			}
			if idCalled.fired() {
				t.Errorf("holder of %q was asked to release for %q", tt.id, tt.sibling)
			}
			b2 := mustLock(t, lockerB, tt.id, nil)
			if !idCalled.fired() {
				t.Errorf("B acquired %q before its holder was asked to release", tt.id)
			}
			mustUnlock(t, b1)
			mustUnlock(t, b2)
		})
	}
}

func testLockTimeout(t *testing.T, b backend) {
	checkNoLeaks(t)
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix))
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix))

	t.Run("expired context", func(t *testing.T) {
		lk, err := lockerB.NewLock("free")
		if err != nil {
			t.Fatalf("NewLock: %v", err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := lk.Lock(ctx, nil); !errors.Is(err, handler.ErrLockTimeout) {
			t.Errorf("Lock with a cancelled context: got %v, want ErrLockTimeout", err)
		}
		if n, err := clientB.Exists(t.Context(), prefix+":lock:{free}").Result(); err != nil || n != 0 {
			t.Errorf("lock key after a timed-out Lock: got %d, %v, want 0", n, err)
		}
	})

	t.Run("holder does not release", func(t *testing.T) {
		asked := newSignal()
		lkA := mustLock(t, lockerA, "held", asked.fire) // never unlocks on request
		defer mustUnlock(t, lkA)

		lk, err := lockerB.NewLock("held")
		if err != nil {
			t.Fatalf("NewLock: %v", err)
		}
		const timeout = 300 * time.Millisecond
		start := time.Now() // before the deadline is set
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		err = lk.Lock(ctx, nil)
		if !errors.Is(err, handler.ErrLockTimeout) {
			t.Errorf("Lock on a held lock: got %v, want ErrLockTimeout", err)
		}
		if elapsed := time.Since(start); elapsed < timeout {
			t.Errorf("Lock returned after %v, want at least %v", elapsed, timeout)
		}
		waitSignal(t, asked, 2*time.Second, "holder's requestRelease")
		reqKey := prefix + ":lockreq:{held}"
		if n, err := clientB.Exists(t.Context(), reqKey).Result(); err != nil || n != 0 {
			t.Errorf("request key after the waiter gave up: got %d, %v, want 0 (withdrawn)", n, err)
		}
		if n, err := clientB.Exists(t.Context(), prefix+":lock:{held}").Result(); err != nil || n != 1 {
			t.Errorf("lock key of the holder: got %d, %v, want 1", n, err)
		}
	})
}

func testManyLocksShareOneSubscription(t *testing.T, b backend) {
	checkNoLeaks(t)
	const locks = 20
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix))
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix))

	ids := make([]string, locks)
	called := make([]*signal, locks)
	held := make([]handler.Lock, locks)
	for i := range locks {
		ids[i] = "up" + string(rune('a'+i))
		called[i] = newSignal()
		held[i] = mustLock(t, lockerA, ids[i], called[i].fire)
	}
	// Every fourth lock is requested by B; its holder unlocks on request.
	var unlockers sync.WaitGroup
	for i := 0; i < locks; i += 4 {
		unlockers.Go(func() {
			<-called[i].ch
			mustUnlock(t, held[i])
		})
	}
	for i := 0; i < locks; i += 4 {
		mustUnlock(t, mustLock(t, lockerB, ids[i], nil))
	}
	unlockers.Wait()
	for i := range locks {
		if want := i%4 == 0; called[i].fired() != want {
			t.Errorf("requestRelease of %q called: got %v, want %v", ids[i], !want, want)
		}
		if i%4 != 0 {
			mustUnlock(t, held[i])
		}
	}
	channels := make([]string, locks)
	for i, id := range ids {
		channels[i] = prefix + ":release:{" + id + "}"
	}
	// Each lock lingers, on A or on B, still subscribed once.
	for ch, n := range numSub(t, clientB, channels...) {
		if n != 1 {
			t.Errorf("subscribers of %s after every Unlock: got %d, want 1 (the lingering holder)", ch, n)
		}
	}
	for _, l := range []*redislock.Locker{lockerA, lockerB} {
		if err := l.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	for ch, n := range numSub(t, clientB, channels...) {
		if n != 0 {
			t.Errorf("subscribers of %s after Close: got %d, want 0", ch, n)
		}
	}
}

// numSub returns the number of subscribers of each channel: on a cluster,
// summed over the masters (each counts only its own connections).
func numSub(t *testing.T, client redis.UniversalClient, channels ...string) map[string]int64 {
	t.Helper()
	cc, ok := client.(*redis.ClusterClient)
	if !ok {
		subs, err := client.PubSubNumSub(t.Context(), channels...).Result()
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB: %v", err)
		}
		return subs
	}
	var mu sync.Mutex
	total := make(map[string]int64)
	err := cc.ForEachMaster(t.Context(), func(ctx context.Context, node *redis.Client) error {
		subs, err := node.PubSubNumSub(ctx, channels...).Result()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for ch, n := range subs {
			total[ch] += n
		}
		return nil
	})
	if err != nil {
		t.Fatalf("PUBSUB NUMSUB on every master: %v", err)
	}
	return total
}
