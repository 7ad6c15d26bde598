package redistest_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tusgate/tusgate/internal/redistest"
)

func TestStartCluster(t *testing.T) {
	t.Parallel()
	start := time.Now()
	c := redistest.StartCluster(t, 3)
	t.Logf("StartCluster(3) took %v", time.Since(start))

	opts, err := redis.ParseClusterURL(c.URL())
	if err != nil {
		t.Fatalf("ParseClusterURL(%q): %v", c.URL(), err)
	}
	if !slices.Equal(opts.Addrs, c.Addrs()) {
		t.Errorf("addresses of URL %q: got %v, want %v", c.URL(), opts.Addrs, c.Addrs())
	}
	client := c.Client(t)
	shards, err := client.ClusterShards(t.Context()).Result()
	if err != nil {
		t.Fatalf("CLUSTER SHARDS: %v", err)
	}
	if len(shards) != 3 {
		t.Errorf("shards: got %d, want 3", len(shards))
	}

	// Every master gets keys; Slot and MasterOf agree with the servers.
	prefix := redistest.Prefix(t, client)
	nodes := make([]*redis.Client, c.Masters())
	for i := range nodes {
		nodes[i] = c.NodeClient(t, i)
	}
	perMaster := make([]int, c.Masters())
	for i := range 300 {
		key := fmt.Sprintf("%s:k:{%d}", prefix, i)
		if err := client.Set(t.Context(), key, "v", 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		slot, err := client.ClusterKeySlot(t.Context(), key).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %s: %v", key, err)
		}
		if got := redistest.Slot(key); got != int(slot) {
			t.Errorf("Slot(%q): got %d, want %d", key, got, slot)
		}
		m := c.MasterOf(key)
		if first, last := c.SlotRange(m); int(slot) < first || int(slot) > last {
			t.Errorf("MasterOf(%q) = %d serves [%d, %d], not slot %d", key, m, first, last, slot)
		}
		if n, err := nodes[m].Exists(t.Context(), key).Result(); err != nil || n != 1 {
			t.Errorf("EXISTS %s on master %d: got %d, %v, want 1", key, m, n, err)
		}
		perMaster[m]++
	}
	for i, n := range perMaster {
		if n == 0 {
			t.Errorf("master %d got no key of 300", i)
		}
	}
	for _, key := range []string{"", "a", "{}", "{}x", "x{}", "{a}b", "x{a}", "{{a}}", "a{b", "}{"} {
		slot, err := client.ClusterKeySlot(t.Context(), key).Result()
		if err != nil {
			t.Fatalf("CLUSTER KEYSLOT %q: %v", key, err)
		}
		if got := redistest.Slot(key); got != int(slot) {
			t.Errorf("Slot(%q): got %d, want %d", key, got, slot)
		}
	}
}

func TestPrefixOnCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	client := c.Client(t)
	var prefix string
	t.Run("use", func(t *testing.T) {
		prefix = redistest.Prefix(t, client)
		for i := range 100 {
			if err := client.Set(t.Context(), fmt.Sprintf("%s:k%d", prefix, i), "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	})
	for i := range c.Masters() {
		keys, err := c.NodeClient(t, i).Keys(t.Context(), prefix+":*").Result()
		if err != nil || len(keys) != 0 {
			t.Errorf("keys of %s on master %d after cleanup: got %v, %v, want none", prefix, i, keys, err)
		}
	}
}

func TestKillRestart(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	client := c.Client(t)
	key := "restart:{x}"
	m := c.MasterOf(key)
	if err := client.Set(t.Context(), key, "v", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	c.Kill(t, m)
	probe := redis.NewClient(&redis.Options{Addr: c.Addrs()[m], MaxRetries: -1, DialerRetries: 1})
	defer probe.Close()
	if err := probe.Ping(t.Context()).Err(); err == nil {
		t.Fatalf("PING of killed master %d: got nil error", m)
	}
	start := time.Now()
	c.Restart(t, m)
	t.Logf("Restart took %v", time.Since(start))
	// Back with its slots, without its data.
	if err := client.Get(t.Context(), key).Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET %s after the restart: got %v, want redis.Nil", key, err)
	}
	if err := client.Set(t.Context(), key, "w", 0).Err(); err != nil {
		t.Errorf("SET %s after the restart: %v", key, err)
	}
}
