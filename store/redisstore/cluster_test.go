package redisstore_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tusgate/tusgate/internal/redistest"
	"github.com/tusgate/tusgate/internal/testwait"
	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/redisstore"
	"github.com/tusgate/tusgate/store/storetest"
)

// openClusterStore opens a store on c with a private prefix (cleaned up
// through admin) and closes it when t ends.
func openClusterStore(t *testing.T, c *redistest.Cluster, admin *redis.ClusterClient) (*redisstore.Store, string) {
	t.Helper()
	return openClusterStoreWith(t, c, redistest.Prefix(t, admin))
}

// openClusterStoreWith opens a store on c with prefix and closes it when t
// ends.
func openClusterStoreWith(t *testing.T, c *redistest.Cluster, prefix string) (*redisstore.Store, string) {
	t.Helper()
	s, err := redisstore.OpenCluster(t.Context(), c.URL(), prefix)
	if err != nil {
		t.Fatalf("OpenCluster(%s): %v", c.URL(), err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s, prefix
}

// idsBySlot returns, for every slot first, first+stride, … below 16384, an
// upload id whose record key lands in that slot.
func idsBySlot(stride int) map[int]string {
	ids := make(map[int]string)
	want := (redistest.Slots + stride - 1) / stride
	for n := 0; len(ids) < want; n++ {
		id := "u" + strconv.Itoa(n)
		if slot := redistest.Slot(id); slot%stride == 0 {
			if _, ok := ids[slot]; !ok {
				ids[slot] = id
			}
		}
	}
	return ids
}

// TestCluster runs the store on a real 3-master Redis Cluster.
func TestCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	admin := c.Client(t)

	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) store.Store {
			s, _ := openClusterStore(t, c, admin)
			return s
		})
	})

	t.Run("Keys", func(t *testing.T) {
		s, prefix := openClusterStore(t, c, admin)
		if err := s.Create(t.Context(), &store.Upload{ID: "abc", State: store.StateReceiving}); err != nil {
			t.Fatalf("Create: %v", err)
		}
		for _, key := range []string{prefix + ":upload:{abc}", prefix + ":active", prefix + ":dataset"} {
			m := c.MasterOf(key)
			if n, err := c.NodeClient(t, m).Exists(t.Context(), key).Result(); err != nil || n != 1 {
				t.Errorf("EXISTS %s on master %d: got %d, %v, want 1", key, m, n, err)
			}
		}
		// The slot markers: one per 1024 slots, so every master holds some.
		perMaster := make([]int, c.Masters())
		seen := make(map[int]bool)
		for i := range c.Masters() {
			keys, err := c.NodeClient(t, i).Keys(t.Context(), prefix+":dataset:*").Result()
			if err != nil {
				t.Fatalf("KEYS on master %d: %v", i, err)
			}
			for _, key := range keys {
				slot, err := admin.ClusterKeySlot(t.Context(), key).Result()
				if err != nil {
					t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
				}
				if slot%1024 != 0 {
					t.Errorf("marker %s in slot %d, want a multiple of 1024", key, slot)
				}
				seen[int(slot)] = true
				perMaster[i]++
			}
		}
		if len(seen) != 16 {
			t.Errorf("marker slots: got %d distinct, want 16", len(seen))
		}
		for i, n := range perMaster {
			if n == 0 {
				t.Errorf("master %d holds no dataset marker", i)
			}
		}
	})

	t.Run("SpreadAndUpdateAcrossSlots", func(t *testing.T) {
		// One upload in every 16th slot: 1024 slots spread over every
		// master's range. (All 16384 take ~10 s under -race, and slots
		// differ only by where they route.)
		const stride = 16
		s, prefix := openClusterStore(t, c, admin)
		ids := idsBySlot(stride)
		start := time.Now()
		jobs := make(chan int)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for slot := range jobs {
					id := ids[slot]
					if err := s.Create(t.Context(), storetest.FullUpload(id)); err != nil {
						t.Errorf("Create(%s): %v", id, err)
						continue
					}
					u, err := s.Update(t.Context(), id, func(u *store.Upload) error {
						u.Received = int64(slot)
						return nil
					})
					if err != nil {
						t.Errorf("Update(%s) in slot %d: %v", id, slot, err)
						continue
					}
					if u.Received != int64(slot) {
						t.Errorf("Update(%s): Received %d, want %d", id, u.Received, slot)
					}
				}
			})
		}
		for slot := range ids {
			jobs <- slot
		}
		close(jobs)
		wg.Wait()
		t.Logf("Create+Update of %d uploads, one per %d slots: %v", len(ids), stride, time.Since(start))

		// Each record sits on the master that serves its slot.
		perMaster := make([]int, c.Masters())
		for i := range c.Masters() {
			n, err := c.NodeClient(t, i).Eval(t.Context(),
				`return #redis.call("KEYS", ARGV[1])`, nil, prefix+":upload:*").Int()
			if err != nil {
				t.Fatalf("count records on master %d: %v", i, err)
			}
			perMaster[i] = n
		}
		for i, n := range perMaster {
			first, last := c.SlotRange(i)
			want := 0
			for slot := range ids {
				if slot >= first && slot <= last {
					want++
				}
			}
			if n != want || n == 0 {
				t.Errorf("records on master %d: got %d, want %d (one per sampled slot it serves)", i, n, want)
			}
		}
		active, err := s.ListActive(t.Context())
		if err != nil {
			t.Fatalf("ListActive: %v", err)
		}
		if len(active) != len(ids) {
			t.Errorf("ListActive: got %d ids, want %d", len(active), len(ids))
		}
	})

	t.Run("OpenRefusesClusterNode", func(t *testing.T) {
		prefix := redistest.Prefix(t, admin)
		s, err := redisstore.Open(t.Context(), "redis://"+c.Addrs()[0], prefix)
		if err == nil {
			s.Close()
			t.Fatalf("Open on a cluster node: got nil error, want one")
		}
		if !strings.Contains(err.Error(), "Cluster") {
			t.Errorf("Open on a cluster node: error %q does not say it is a cluster", err)
		}
	})
}

// TestClusterFailures drives a store through a slot that is not served
// (CLUSTERDOWN), a master that crashes and one that restarts empty.
func TestClusterFailures(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	admin := c.Client(t)
	// P:active and P:dataset on one master, which the failures spare:
	// while the master of P:active is down, every Create, Update and
	// Delete fails (see the package doc).
	prefix := redistest.Prefix(t, admin)
	for c.MasterOf(prefix+":active") != c.MasterOf(prefix+":dataset") {
		prefix = redistest.Prefix(t, admin)
	}
	s, _ := openClusterStoreWith(t, c, prefix)
	ctx := t.Context()

	// One upload on each master.
	ids := make([]string, c.Masters())
	for _, id := range idsBySlot(64) {
		if m := c.MasterOf(id); ids[m] == "" {
			ids[m] = id
		}
	}
	for _, id := range ids {
		if err := s.Create(ctx, storetest.FullUpload(id)); err != nil {
			t.Fatalf("Create(%s): %v", id, err)
		}
	}
	// The victim does not hold P:dataset: only the slot markers can see
	// it lose its data.
	victim := (c.MasterOf(prefix+":dataset") + 1) % c.Masters()
	t.Logf("P:dataset and P:active on master %d, victim master %d", c.MasterOf(prefix+":dataset"), victim)
	other := ids[(victim+1)%c.Masters()]
	update := func(ctx context.Context, id string) error {
		_, err := s.Update(ctx, id, func(u *store.Upload) error { u.Attempts++; return nil })
		return err
	}
	get := func(ctx context.Context, id string) error { _, err := s.Get(ctx, id); return err }
	// unavailable checks that call fails with ErrUnavailable within limit.
	unavailable := func(t *testing.T, what string, limit time.Duration, call func(context.Context) error) {
		t.Helper()
		start := time.Now()
		err := call(ctx)
		elapsed := time.Since(start)
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("%s: got %v, want ErrUnavailable", what, err)
		}
		if elapsed > limit {
			t.Errorf("%s: failed after %v, want within %v", what, elapsed, limit)
		}
		t.Logf("%s: %v after %v", what, err, elapsed)
	}

	t.Run("SlotMigration", func(t *testing.T) {
		const src, dst = 0, 2
		id := ""
		for n := 0; id == ""; n++ {
			if cand := "mig" + strconv.Itoa(n); c.MasterOf(cand) == src && redistest.Slot(cand)%64 != 0 {
				id = cand
			}
		}
		slot, key := redistest.Slot(id), prefix+":upload:{"+id+"}"
		// A store whose node clients count the redirections they meet.
		var redirects atomic.Int32
		client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true})
		defer client.Close()
		client.OnNewNode(func(node *redis.Client) {
			node.AddHook(redirectCounter(func() { redirects.Add(1) }))
		})
		ms := redisstore.New(client, prefix)
		if err := ms.Create(ctx, storetest.FullUpload(id)); err != nil {
			t.Fatalf("Create(%s): %v", id, err)
		}
		nodeIDs := make([]string, c.Masters())
		for i := range nodeIDs {
			var err error
			if nodeIDs[i], err = c.NodeClient(t, i).ClusterMyID(ctx).Result(); err != nil {
				t.Fatalf("CLUSTER MYID: %v", err)
			}
		}
		srcNode, dstNode := c.NodeClient(t, src), c.NodeClient(t, dst)
		_, dstPort, _ := net.SplitHostPort(c.Addrs()[dst])
		for _, step := range []struct {
			node *redis.Client
			args []any
		}{
			{dstNode, []any{"CLUSTER", "SETSLOT", slot, "IMPORTING", nodeIDs[src]}},
			{srcNode, []any{"CLUSTER", "SETSLOT", slot, "MIGRATING", nodeIDs[dst]}},
			{srcNode, []any{"MIGRATE", "127.0.0.1", dstPort, "", 0, 5000, "KEYS", key}},
		} {
			if err := step.node.Do(ctx, step.args...).Err(); err != nil {
				t.Fatalf("%v: %v", step.args, err)
			}
		}
		// go-redis follows ASK for plain commands.
		if _, err := ms.Get(ctx, id); err != nil {
			t.Errorf("Get during the migration: %v", err)
		}
		// A transaction cannot follow ASK (WATCH would need ASKING):
		// Update retries until the migration ends. A ClusterClient.Watch
		// meets at most four redirections before it gives up: after five,
		// one has given up for sure.
		base := redirects.Load()
		done := make(chan error, 1)
		go func() {
			_, err := ms.Update(ctx, id, func(u *store.Upload) error { u.Attempts = 42; return nil })
			done <- err
		}()
		waitFor(t, 10*time.Second, "five redirections met by Update", func() bool {
			select {
			case err := <-done:
				t.Fatalf("Update returned %v after %d redirections, before the migration ended", err, redirects.Load()-base)
			default:
			}
			return redirects.Load()-base >= 5
		})
		for _, i := range []int{dst, src, 1} {
			if err := c.NodeClient(t, i).Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", nodeIDs[dst]).Err(); err != nil {
				t.Fatalf("CLUSTER SETSLOT %d NODE on master %d: %v", slot, i, err)
			}
		}
		if err := <-done; err != nil {
			t.Fatalf("Update across the migration: %v", err)
		}
		u, err := s.Get(ctx, id)
		if err != nil || u.Attempts != 42 {
			t.Fatalf("Get after the migration: got %+v, %v, want Attempts 42", u, err)
		}
		if n, err := dstNode.Exists(ctx, key).Result(); err != nil || n != 1 {
			t.Errorf("EXISTS %s on the new master: got %d, %v, want 1", key, n, err)
		}
	})

	t.Run("SlotNotServed", func(t *testing.T) {
		id := ids[victim]
		slot := redistest.Slot(id)
		node := c.NodeClient(t, victim)
		if err := node.Do(ctx, "CLUSTER", "DELSLOTS", slot).Err(); err != nil {
			t.Fatalf("CLUSTER DELSLOTS %d: %v", slot, err)
		}
		unavailable(t, "Get on a slot not served", 5*time.Second, func(ctx context.Context) error { return get(ctx, id) })
		unavailable(t, "Update on a slot not served", 5*time.Second, func(ctx context.Context) error { return update(ctx, id) })
		if err := node.Do(ctx, "CLUSTER", "ADDSLOTS", slot).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTS %d: %v", slot, err)
		}
		waitFor(t, 10*time.Second, "Update after the slot is served again", func() bool {
			return update(ctx, id) == nil
		})
	})

	t.Run("MasterDown", func(t *testing.T) {
		c.Kill(t, victim)
		id := ids[victim]
		var wg sync.WaitGroup
		wg.Go(func() {
			unavailable(t, "Get on a dead master", 5*time.Second, func(ctx context.Context) error { return get(ctx, id) })
		})
		wg.Go(func() {
			unavailable(t, "Update on a dead master", 5*time.Second, func(ctx context.Context) error { return update(ctx, id) })
		})
		wg.Go(func() { unavailable(t, "Ping with a dead master", 5*time.Second, s.Ping) })
		wg.Wait()
		// The other masters still serve their slots (the cluster marks the
		// dead master failed only after cluster-node-timeout, 15 s).
		if err := update(ctx, other); err != nil {
			t.Errorf("Update(%s) on a live master: %v", other, err)
		}
	})

	t.Run("MasterRestartsEmpty", func(t *testing.T) {
		c.Restart(t, victim)
		if err := get(ctx, ids[victim]); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Get of a record the master lost: got %v, want ErrNotFound", err)
		}
		if err := get(ctx, other); err != nil {
			t.Errorf("Get(%s) on a master that kept its data: %v", other, err)
		}
		err := s.Ping(ctx)
		if !errors.Is(err, store.ErrDatasetLost) || !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("Ping after a master restarted empty: got %v, want ErrDatasetLost and ErrUnavailable", err)
		}
		if !strings.Contains(err.Error(), "persistence") {
			t.Errorf("error %q does not tell the operator why", err)
		}
		err = s.Create(ctx, storetest.FullUpload("after-loss"))
		if !errors.Is(err, store.ErrDatasetLost) {
			t.Errorf("Create after a master restarted empty: got %v, want ErrDatasetLost", err)
		}
		// A restarted gateway adopts the dataset as it is now.
		fresh, err := redisstore.OpenCluster(ctx, c.URL(), prefix)
		if err != nil {
			t.Fatalf("OpenCluster after the loss: %v", err)
		}
		defer fresh.Close()
		if err := fresh.Create(ctx, storetest.FullUpload(ids[victim])); err != nil {
			t.Errorf("Create on a fresh store: %v", err)
		}
		if err := fresh.Ping(ctx); err != nil {
			t.Errorf("Ping of a fresh store: %v", err)
		}
	})
}

// redirectCounter is a go-redis hook that calls found for every MOVED or
// ASK reply.
type redirectCounter func()

func (h redirectCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redirectCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		_, moved := redis.IsMovedError(err)
		_, ask := redis.IsAskError(err)
		if moved || ask {
			h()
		}
		return err
	}
}

func (h redirectCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// waitFor polls cond until it holds (see testwait.For).
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, timeout, what, cond)
}

func TestOpenClusterErrors(t *testing.T) {
	t.Parallel()
	const pw = "s3cretPassw0rd"
	t.Run("unreachable", func(t *testing.T) {
		start := time.Now()
		s, err := redisstore.OpenCluster(t.Context(), "redis://:"+pw+"@"+closedAddr(t)+"?addr="+closedAddr(t), "")
		if err == nil {
			s.Close()
			t.Fatalf("OpenCluster of closed ports: got nil error")
		}
		if !errors.Is(err, store.ErrUnavailable) {
			t.Errorf("got %v, want ErrUnavailable", err)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("error %q contains the password", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v, want a quick failure", d)
		}
	})
	t.Run("not a cluster", func(t *testing.T) {
		s, err := redisstore.OpenCluster(t.Context(), "redis://"+redisAddr(), "")
		if err == nil {
			s.Close()
			t.Fatalf("OpenCluster of a single node: got nil error")
		}
		if !strings.Contains(err.Error(), "cluster support disabled") {
			t.Errorf("OpenCluster of a single node: error %q does not say why", err)
		}
	})
	for _, raw := range []string{
		"redis://:" + pw + "@127.0.0.1:6379?addr=nohostport",
		"redis://:" + pw + "@127.0.0.1:6379?nosuchoption=1",
		"redis://:" + pw + "@127.0.0.1:6379?dial_timeout=forever",
		"http://:" + pw + "@127.0.0.1:6379",
		"redis://:" + pw + "%zz@127.0.0.1:6379",
		"redis://:" + pw + "@[::1:6379",
	} {
		t.Run("bad URL", func(t *testing.T) {
			s, err := redisstore.OpenCluster(t.Context(), raw, "")
			if err == nil {
				s.Close()
				t.Fatalf("OpenCluster(%q) succeeded, want an error", raw)
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q contains the password", err)
			}
		})
	}
}

// replyErr is a Redis error reply.
type replyErr string

func (e replyErr) Error() string { return string(e) }
func (replyErr) RedisError()     {}

func TestErrorClassification(t *testing.T) {
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		err         error
		ctx         context.Context
		unavailable bool
		notFound    bool
	}{
		{err: replyErr("CLUSTERDOWN The cluster is down"), unavailable: true},
		{err: replyErr("CLUSTERDOWN Hash slot not served"), unavailable: true},
		{err: replyErr("TRYAGAIN Multiple keys request during rehashing of slot"), unavailable: true},
		{err: replyErr("MOVED 3999 127.0.0.1:6381"), unavailable: true},
		{err: replyErr("ASK 3999 127.0.0.1:6381"), unavailable: true},
		{err: replyErr("LOADING Redis is loading the dataset in memory"), unavailable: true},
		{err: replyErr("READONLY You can't write against a read only replica."), unavailable: true},
		{err: replyErr("MASTERDOWN Link with MASTER is down"), unavailable: true},
		{err: replyErr("CROSSSLOT Keys in request don't hash to the same slot"), unavailable: false},
		{err: replyErr("WRONGTYPE Operation against a key holding the wrong kind of value"), unavailable: false},
		{err: &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, unavailable: true},
		{err: redis.ErrClosed, unavailable: true},
		{err: redis.Nil, notFound: true},
		{err: context.Canceled, ctx: cancelled, unavailable: false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			ctx := tt.ctx
			if ctx == nil {
				ctx = t.Context()
			}
			err := redisstore.Wrap(ctx, "op", tt.err)
			if got := errors.Is(err, store.ErrUnavailable); got != tt.unavailable {
				t.Errorf("errors.Is(%v, ErrUnavailable): got %v, want %v", err, got, tt.unavailable)
			}
			if got := errors.Is(err, store.ErrNotFound); got != tt.notFound {
				t.Errorf("errors.Is(%v, ErrNotFound): got %v, want %v", err, got, tt.notFound)
			}
			if !tt.notFound && !errors.Is(err, tt.err) {
				t.Errorf("%v does not wrap %v", err, tt.err)
			}
			if !strings.HasPrefix(err.Error(), "op: ") {
				t.Errorf("error %q lacks the operation", err)
			}
		})
	}
}
