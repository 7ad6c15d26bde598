package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Slots is the number of Redis Cluster hash slots.
const Slots = 16384

// Bounds of cluster start-up.
const (
	// startTimeout bounds the start of one redis-server process.
	startTimeout = 10 * time.Second
	// readyTimeout bounds the wait for every node to report a healthy
	// cluster. A fresh master keeps cluster_state:fail for 2 s after it
	// starts (CLUSTER_WRITABLE_DELAY in Redis' cluster.c), so this is the
	// floor of StartCluster and Restart.
	readyTimeout = 20 * time.Second
	pollInterval = 5 * time.Millisecond
	startTries   = 5
)

// Cluster is a Redis Cluster of masters (no replicas) run by local
// redis-server processes on 127.0.0.1, without persistence, for one test.
// StartCluster makes one; its processes are killed when the test ends.
// Master i serves the slots [i*Slots/n, (i+1)*Slots/n) of n masters.
type Cluster struct {
	t     testing.TB
	mu    sync.Mutex // guards the nodes' processes
	nodes []*clusterNode
}

// clusterNode is one master: fixed ports and files, and its current process.
type clusterNode struct {
	port, busPort int
	dir           string // --dir and the log
	conf          string // --cluster-config-file
	log           string
	first, last   int // slots
	proc          *exec.Cmd
	exited        chan struct{} // closed when proc has exited
}

func (n *clusterNode) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// StartCluster starts masters redis-server processes in cluster mode on free
// loopback ports, splits the 16384 slots among them, joins them into one
// cluster and waits until every node reports cluster_state:ok and knows
// every master. It skips t when redis-server is not on PATH or older than
// 7.0 (it needs --cluster-port and CLUSTER ADDSLOTSRANGE). Start-up takes a
// little over 2 s: Redis keeps a new master's cluster state "fail" for 2 s.
func StartCluster(t testing.TB, masters int) *Cluster {
	t.Helper()
	if masters < 1 {
		t.Fatalf("StartCluster: %d masters, want at least 1", masters)
	}
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skipf("redis-server not on PATH: %v", err)
	}
	out, err := exec.Command("redis-server", "--version").Output()
	if err != nil {
		t.Fatalf("redis-server --version: %v", err)
	}
	if v, ok := serverMajor(string(out)); !ok || v < 7 {
		t.Skipf("StartCluster needs redis-server 7.0 or later, have %q", strings.TrimSpace(string(out)))
	}
	c := &Cluster{t: t, nodes: make([]*clusterNode, masters)}
	for i := range c.nodes {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("node-%d", i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatalf("StartCluster: %v", err)
		}
		c.nodes[i] = &clusterNode{
			dir:   dir,
			conf:  filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", i)),
			log:   filepath.Join(dir, "redis.log"),
			first: i * Slots / masters,
			last:  (i+1)*Slots/masters - 1,
		}
	}
	// After t.TempDir, so that the processes are gone before their
	// directories are removed.
	t.Cleanup(c.stopAll)

	// Start the processes in parallel: each waits for its PING.
	errs := make([]error, masters)
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Go(func() { errs[i] = c.startFresh(n) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("StartCluster: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), readyTimeout)
	defer cancel()
	admins := make([]*redis.Client, masters)
	for i, n := range c.nodes {
		admins[i] = redis.NewClient(&redis.Options{Addr: n.addr(), ContextTimeoutEnabled: true})
		defer admins[i].Close()
	}
	for i, n := range c.nodes {
		a := admins[i]
		// A distinct epoch per master spares the cluster the epoch
		// collision dance (redis-cli --cluster create does the same).
		if err := a.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			t.Fatalf("StartCluster: node %d: CLUSTER SET-CONFIG-EPOCH: %v", i, err)
		}
		if err := a.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", n.first, n.last).Err(); err != nil {
			t.Fatalf("StartCluster: node %d: CLUSTER ADDSLOTSRANGE %d %d: %v", i, n.first, n.last, err)
		}
	}
	// Every pair meets directly: no waiting for gossip to spread addresses.
	for i := range c.nodes {
		for _, m := range c.nodes[i+1:] {
			if err := admins[i].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", m.port, m.busPort).Err(); err != nil {
				t.Fatalf("StartCluster: node %d: CLUSTER MEET %s: %v", i, m.addr(), err)
			}
		}
	}
	if err := c.waitHealthy(ctx); err != nil {
		t.Fatalf("StartCluster: %v\n%s", err, c.logs())
	}
	return c
}

// serverMajor returns the major version in the output of
// redis-server --version ("Redis server v=7.0.15 sha=…").
func serverMajor(out string) (int, bool) {
	_, rest, ok := strings.Cut(out, "v=")
	if !ok {
		return 0, false
	}
	major, _, _ := strings.Cut(rest, ".")
	v, err := strconv.Atoi(major)
	return v, err == nil
}

// startFresh picks free ports for n and starts it, trying other ports when
// the process cannot bind them.
func (c *Cluster) startFresh(n *clusterNode) error {
	var errs []error
	for range startTries {
		port, err := freePort()
		if err != nil {
			return err
		}
		bus, err := freePort()
		if err != nil {
			return err
		}
		n.port, n.busPort = port, bus
		err = c.start(n)
		if err == nil {
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("start redis-server %d times: %w", startTries, errors.Join(errs...))
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// start runs redis-server for n on its ports and files and waits until it
// answers PING (or exits, e.g. because a port was taken meanwhile).
func (c *Cluster) start(n *clusterNode) error {
	cmd := exec.Command("redis-server",
		"--port", strconv.Itoa(n.port),
		"--bind", "127.0.0.1",
		"--cluster-enabled", "yes",
		"--cluster-port", strconv.Itoa(n.busPort),
		"--cluster-config-file", n.conf,
		"--dir", n.dir,
		"--save", "",
		"--appendonly", "no",
		"--logfile", n.log,
	)
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	c.mu.Lock()
	n.proc, n.exited = cmd, exited
	c.mu.Unlock()

	client := redis.NewClient(&redis.Options{Addr: n.addr(), MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	defer client.Close()
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.t.Context()), time.Second)
		err := client.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			c.kill(n)
			return fmt.Errorf("redis-server on %s did not answer within %v: %w\n%s", n.addr(), startTimeout, err, tail(n.log))
		}
		select {
		case <-exited:
			c.kill(n)
			return fmt.Errorf("redis-server on %s exited at start:\n%s", n.addr(), tail(n.log))
		case <-tick.C:
		}
	}
}

// waitHealthy waits until every running node reports cluster_state:ok, knows
// exactly the cluster's masters, all connected, and sees every slot served.
func (c *Cluster) waitHealthy(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.addr(), MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
		defer clients[i].Close()
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var problem error
		for i, client := range clients {
			if err := nodeHealthy(ctx, client, len(c.nodes)); err != nil {
				problem = fmt.Errorf("node %d (%s): %w", i, c.nodes[i].addr(), err)
				break
			}
		}
		if problem == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not healthy: %w (%w)", problem, ctx.Err())
		case <-tick.C:
		}
	}
}

// nodeHealthy reports why the node client talks to does not yet see a
// healthy cluster of masters, or nil.
func nodeHealthy(ctx context.Context, client *redis.Client, masters int) error {
	info, err := client.ClusterInfo(ctx).Result()
	if err != nil {
		return err
	}
	fields := map[string]string{}
	for line := range strings.Lines(info) {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			fields[k] = v
		}
	}
	want := map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_ok":       strconv.Itoa(Slots),
		"cluster_known_nodes":    strconv.Itoa(masters),
		"cluster_size":           strconv.Itoa(masters),
		"cluster_slots_pfail":    "0",
		"cluster_slots_fail":     "0",
		"cluster_slots_assigned": strconv.Itoa(Slots),
	}
	for k, v := range want {
		if fields[k] != v {
			return fmt.Errorf("CLUSTER INFO %s:%s, want %s", k, fields[k], v)
		}
	}
	nodes, err := client.ClusterNodes(ctx).Result()
	if err != nil {
		return err
	}
	for line := range strings.Lines(nodes) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		if flags := f[2]; !strings.Contains(flags, "master") || strings.Contains(flags, "fail") ||
			strings.Contains(flags, "handshake") || strings.Contains(flags, "noaddr") || f[7] != "connected" {
			return fmt.Errorf("CLUSTER NODES: %s", strings.TrimSpace(line))
		}
	}
	return nil
}

// Addrs returns the masters' addresses (host:port), master 0 first.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.addr()
	}
	return addrs
}

// URL returns a cluster URL naming every master, as redis.ParseClusterURL
// reads it: redis://127.0.0.1:P0?addr=127.0.0.1:P1&addr=127.0.0.1:P2.
func (c *Cluster) URL() string {
	addrs := c.Addrs()
	var b strings.Builder
	b.WriteString("redis://" + addrs[0])
	for i, a := range addrs[1:] {
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
		b.WriteString("addr=" + a)
	}
	return b.String()
}

// Client returns a new cluster client of c, closed when t ends; each call
// gets its own connections, as separate gateway processes would.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true, PoolSize: 64})
	t.Cleanup(func() { _ = client.Close() })
	if err := client.Ping(t.Context()).Err(); err != nil {
		t.Fatalf("test Redis Cluster at %v: %v", c.Addrs(), err)
	}
	return client
}

// NodeClient returns a client of master i alone (no redirections), closed
// when t ends: for CLUSTER commands and for looking at one node's keys.
func (c *Cluster) NodeClient(t testing.TB, i int) *redis.Client {
	t.Helper()
	client := redis.NewClient(&redis.Options{Addr: c.nodes[i].addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = client.Close() })
	return client
}

// Masters returns the number of masters.
func (c *Cluster) Masters() int { return len(c.nodes) }

// MasterOf returns the index of the master that serves key's slot in the
// initial split (valid while the test moves no slots).
func (c *Cluster) MasterOf(key string) int {
	slot := Slot(key)
	for i, n := range c.nodes {
		if slot >= n.first && slot <= n.last {
			return i
		}
	}
	panic("unreachable: slot outside every range")
}

// SlotRange returns the first and last slot master i serves in the initial
// split.
func (c *Cluster) SlotRange(i int) (first, last int) { return c.nodes[i].first, c.nodes[i].last }

// Kill kills master i with SIGKILL, as a crash would, and waits until the
// process has exited. Its slots stay assigned to it: commands on them fail
// until Restart.
func (c *Cluster) Kill(t testing.TB, i int) {
	t.Helper()
	c.kill(c.nodes[i])
}

// Restart starts master i again after Kill, on the same ports and cluster
// config file, so it rejoins the cluster with its slots but with no data
// (there is no persistence), as a master restarted without a replica would.
// It waits until the whole cluster is healthy again (a little over 2 s, see
// StartCluster).
func (c *Cluster) Restart(t testing.TB, i int) {
	t.Helper()
	n := c.nodes[i]
	c.mu.Lock()
	running := n.proc != nil
	c.mu.Unlock()
	if running {
		t.Fatalf("Restart(%d): the node is running; Kill it first", i)
	}
	if err := c.start(n); err != nil {
		t.Fatalf("Restart(%d): %v", i, err)
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), readyTimeout)
	defer cancel()
	if err := c.waitHealthy(ctx); err != nil {
		t.Fatalf("Restart(%d): %v\n%s", i, err, c.logs())
	}
}

// kill kills n's process, if any, and waits for it to exit.
func (c *Cluster) kill(n *clusterNode) {
	c.mu.Lock()
	proc, exited := n.proc, n.exited
	n.proc, n.exited = nil, nil
	c.mu.Unlock()
	if proc == nil {
		return
	}
	_ = proc.Process.Kill()
	<-exited
}

// stopAll kills every process.
func (c *Cluster) stopAll() {
	for _, n := range c.nodes {
		if n != nil {
			c.kill(n)
		}
	}
}

// logs returns the end of every node's log, for failure messages.
func (c *Cluster) logs() string {
	var b strings.Builder
	for i, n := range c.nodes {
		fmt.Fprintf(&b, "--- node %d (%s) log:\n%s\n", i, n.addr(), tail(n.log))
	}
	return b.String()
}

// tail returns the last lines of the file at path.
func tail(path string) string {
	const keep = 20
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	lines = lines[max(0, len(lines)-keep):]
	return strings.Join(lines, "\n")
}

// Slot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of its
// hash tag (the part between the first '{' and the next '}', when not
// empty) or of the whole key, modulo 16384.
func Slot(key string) int {
	if s := strings.IndexByte(key, '{'); s >= 0 {
		if e := strings.IndexByte(key[s+1:], '}'); e > 0 {
			key = key[s+1 : s+1+e]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc) % Slots
}
