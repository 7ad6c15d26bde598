package redislock_test

import (
	"context"
	"crypto/rand"
	"strconv"
	"testing"
	"time"

	"github.com/tusgate/tusgate/internal/redistest"
	"github.com/tusgate/tusgate/store/redislock"
)

// TestCluster runs the whole suite, then the tests about node boundaries, on
// a real 3-master Redis Cluster. The subtests run one after the other (the
// goroutine leak checks need that) and each uses its own prefix and clients.
func TestCluster(t *testing.T) {
	c := redistest.StartCluster(t, 3)
	b := clusterBackend(c)
	for _, tt := range suite() {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, b) })
	}
	t.Run("ReleaseRequestAcrossNodes", func(t *testing.T) { testReleaseRequestAcrossNodes(t, c) })
	// Last: it kills a master.
	t.Run("SubscriptionNodeDies", func(t *testing.T) { testSubscriptionNodeDies(t, c) })
}

// idsOnTwoMasters returns two upload ids whose keys live on different
// masters of c.
func idsOnTwoMasters(c *redistest.Cluster) (id1, id2 string) {
	id1 = "up0"
	for n := 1; ; n++ {
		id2 = "up" + strconv.Itoa(n)
		if c.MasterOf("{"+id2+"}") != c.MasterOf("{"+id1+"}") {
			return id1, id2
		}
	}
}

// testReleaseRequestAcrossNodes: a holder whose shared Pub/Sub connection
// went to one master (for its first lock) hears the release request for a
// lock on another master, published there by the waiter's acquire script.
func testReleaseRequestAcrossNodes(t *testing.T, c *redistest.Cluster) {
	checkNoLeaks(t)
	b := clusterBackend(c)
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	// Default expiry (10s), renew interval 3.3s: a prompt acquisition can
	// only come from Pub/Sub.
	lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix))
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix))
	id1, id2 := idsOnTwoMasters(c)
	m1, m2 := c.MasterOf("{"+id1+"}"), c.MasterOf("{"+id2+"}")

	lk1 := mustLock(t, lockerA, id1, nil) // opens A's Pub/Sub connection, to m1
	defer mustUnlock(t, lk1)
	called := newSignal()
	mustLockYielding(t, lockerA, id2, called)

	// The subscription to id2's channel is on m1, not on m2 where the
	// waiter's script will PUBLISH.
	ch2 := prefix + ":release:{" + id2 + "}"
	for _, tc := range []struct {
		master int
		want   int64
	}{{m1, 1}, {m2, 0}} {
		subs, err := c.NodeClient(t, tc.master).PubSubNumSub(t.Context(), ch2).Result()
		if err != nil {
			t.Fatalf("PUBSUB NUMSUB on master %d: %v", tc.master, err)
		}
		if subs[ch2] != tc.want {
			t.Fatalf("subscribers of %s on master %d: got %d, want %d", ch2, tc.master, subs[ch2], tc.want)
		}
	}

	start := time.Now()
	lkB := mustLock(t, lockerB, id2, nil)
	if elapsed, limit := time.Since(start), 2*time.Second; elapsed > limit {
		t.Errorf("B acquired after %v, want under %v (the request crossed no node?)", elapsed, limit)
	}
	if !called.fired() {
		t.Errorf("B acquired before A's requestRelease ran")
	}
	mustUnlock(t, lkB)
}

// testSubscriptionNodeDies: the master that carries a Locker's Pub/Sub
// connection crashes. Its locks there are lost (the holder is asked to
// release); a request for a lock on a live master still reaches the holder,
// at the latest through the request key at its next renewal.
func testSubscriptionNodeDies(t *testing.T, c *redistest.Cluster) {
	checkNoLeaks(t)
	b := clusterBackend(c)
	clientA, clientB := b.newClient(t), b.newClient(t)
	// No redistest.Prefix: its cleanup needs every master, and this
	// cluster ends with one dead.
	prefix := "tusgate-test-" + rand.Text()
	const expiry = 1500 * time.Millisecond // renew every 500ms
	lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix), redislock.WithExpiry(expiry))
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix), redislock.WithExpiry(expiry))
	id1, id2 := idsOnTwoMasters(c)
	m1 := c.MasterOf("{" + id1 + "}")

	lost1 := newSignal()
	lk1 := mustLock(t, lockerA, id1, lost1.fire) // A's Pub/Sub goes to m1
	asked2 := newSignal()
	mustLockYielding(t, lockerA, id2, asked2)

	c.Kill(t, m1)
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	lkB, err := lockerB.NewLock(id2)
	if err != nil {
		t.Fatalf("NewLock: %v", err)
	}
	if err := lkB.Lock(ctx, nil); err != nil {
		t.Fatalf("B's Lock of %s on a live master: %v", id2, err)
	}
	if elapsed, limit := time.Since(start), expiry+2*time.Second; elapsed > limit {
		t.Errorf("B acquired after %v, want under %v", elapsed, limit)
	}
	if !asked2.fired() {
		t.Errorf("B acquired before A's requestRelease ran")
	}
	mustUnlock(t, lkB)

	// A cannot renew id1 on the dead master: it must ask tusd to stop.
	waitSignal(t, lost1, expiry+5*time.Second, "requestRelease of a lock on a dead master")
	if err := lk1.Unlock(); err == nil {
		t.Errorf("Unlock of a lock on a dead master: got nil error, want one")
	}
}

// testOddIDs: ids that would break hash tags ('}' first) or that collide
// with their escaped form still lock, are asked to release across
// instances, and do not share locks with each other.
func testOddIDs(t *testing.T, b backend) {
	checkNoLeaks(t)
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	lockerA := newLocker(t, clientA, redislock.WithPrefix(prefix))
	lockerB := newLocker(t, clientB, redislock.WithPrefix(prefix))

	ids := []string{"}", "}abc", "%}abc", "%", "%%", "a}b", "{", "{}", "}{", "{a}", " "}
	// A holds all of them at once: a collision would make one Lock wait
	// for (and ask) another's holder.
	called := make(map[string]*signal)
	for _, id := range ids {
		called[id] = newSignal()
		mustLockYielding(t, lockerA, id, called[id])
	}
	for _, id := range ids {
		if called[id].fired() {
			t.Errorf("holder of %q was asked to release while A took the other ids", id)
		}
	}
	// B takes each in turn: only that id's holder is asked.
	for i, id := range ids {
		lk := mustLock(t, lockerB, id, nil)
		if !called[id].fired() {
			t.Errorf("B acquired %q before its holder was asked to release", id)
		}
		for _, other := range ids[i+1:] {
			if called[other].fired() {
				t.Errorf("holder of %q was asked to release for %q", other, id)
			}
		}
		mustUnlock(t, lk)
	}
}
