package integration_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/redistest"
	"github.com/tusgate/tusgate/internal/s3test"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/redislock"
	"github.com/tusgate/tusgate/store/redisstore"
)

// scaleOutLease is the --lease-duration of the scale-out instances: a part
// held by a dead instance is sent again by another one soon after.
const scaleOutLease = 2 * time.Second

// scaleOutLockExpiry is how long a dead instance's tusd lock blocks its
// upload (cmd/tusgate uses the Redis locker's default expiry).
const scaleOutLockExpiry = redislock.DefaultExpiry

// TestScaleOut runs three gateway instances that share one data directory
// (the shared-volume deployment) and one Redis database, each with its own
// instance id, and checks that a client may send each request of an upload
// to any instance, that an instance's running PATCH yields promptly to a
// request on another, and that the survivors finish the work of a killed
// instance: its upload and the part it was sending.
//
// The subtests share the instances and run in order; the last one kills an
// instance.
func TestScaleOut(t *testing.T) {
	t.Parallel()
	c := startScaleOut(t, 3, scaleOutOptions{})
	t.Run("round robin", func(t *testing.T) { scaleOutRoundRobin(t, c) })
	t.Run("lock handoff", func(t *testing.T) { scaleOutLockHandoff(t, c) })
	t.Run("kill mid upload and mid forward", func(t *testing.T) { scaleOutKill(t, c) })
}

// TestScaleOutS3 is TestScaleOut with the upload bytes in S3 (a gofakes3
// server on loopback) instead of a shared directory: each instance has a
// data directory of its own, for its temporary files only.
func TestScaleOutS3(t *testing.T) {
	t.Parallel()
	c := startScaleOut(t, 3, scaleOutOptions{S3: true})
	t.Run("part 1 forwarded while the PATCH runs", func(t *testing.T) { scaleOutLiveForward(t, c) })
	t.Run("round robin", func(t *testing.T) { scaleOutRoundRobin(t, c) })
	t.Run("lock handoff", func(t *testing.T) { scaleOutLockHandoff(t, c) })
	t.Run("kill mid upload and mid forward", func(t *testing.T) { scaleOutKill(t, c) })
}

// TestScaleOutS3RedisCluster is TestScaleOutS3 on a Redis Cluster of three
// masters (started by the test) instead of one Redis.
func TestScaleOutS3RedisCluster(t *testing.T) {
	t.Parallel()
	c := startScaleOut(t, 3, scaleOutOptions{S3: true, RedisCluster: true})
	t.Run("round robin", func(t *testing.T) { scaleOutRoundRobin(t, c) })
	t.Run("kill mid upload and mid forward", func(t *testing.T) { scaleOutKill(t, c) })
}

// scaleOutOptions chooses the shared services of a scale-out test.
type scaleOutOptions struct {
	// S3 keeps the upload bytes in a loopback S3 server instead of a
	// shared data directory.
	S3 bool
	// RedisCluster uses a 3-master Redis Cluster instead of one Redis.
	RedisCluster bool
}

// scaleOutCluster is a set of gateway instances sharing one Redis (or Redis
// Cluster) and one data store (a directory or an S3 bucket), forwarding to
// one emulator.
type scaleOutCluster struct {
	emu      *apivideotest.Server
	gws      []*gatewayProc
	redisURL string
	cluster  bool
	// bytes reads the shared data store as the instances do.
	bytes gateway.Backend
}

// startScaleOut starts n instances (through startGateway, whose data dir,
// store and instance id the arguments override).
func startScaleOut(t *testing.T, n int, opts scaleOutOptions) *scaleOutCluster {
	t.Helper()
	c := &scaleOutCluster{emu: newEmulator(t), cluster: opts.RedisCluster}
	var shared, env []string
	if opts.RedisCluster {
		c.redisURL = redistest.StartCluster(t, 3).URL()
		shared = append(shared, "--redis-url", c.redisURL, "--redis-cluster")
	} else {
		c.redisURL = "redis://" + redisAddr() + "/" + strconv.Itoa(claimRedisDB(t))
		shared = append(shared, "--redis-url", c.redisURL)
	}
	var dataDir string
	if opts.S3 {
		srv := s3test.Start(t)
		shared = append(shared, "--s3-bucket", srv.Bucket(), "--s3-endpoint", srv.Endpoint(), "--s3-region", s3test.Region)
		env = srv.Env()
		c.bytes = s3Backend(t, srv)
	} else {
		dataDir = t.TempDir()
		shared = append(shared, "--data-dir", dataDir)
		be, err := gateway.NewDiskBackend(filepath.Join(dataDir, "uploads"))
		if err != nil {
			t.Fatal(err)
		}
		c.bytes = be
	}
	run := strings.ToLower(rand.Text()[:6])
	for i := range n {
		id := fmt.Sprintf("scaleout-%s-%c", run, 'a'+i)
		gw := startGateway(t, c.emu, gatewayOptions{Store: "embedded", Env: env, Args: append(slices.Clone(shared),
			"--instance-id", id,
			"--lease-duration", scaleOutLease.String(),
			"--part-size", "5MiB",
		)})
		gw.InstanceID = id
		if dataDir != "" {
			gw.DataDir = dataDir
		}
		c.gws = append(c.gws, gw)
	}
	return c
}

// openStore opens the instances' state store.
func (c *scaleOutCluster) openStore(t *testing.T) *redisstore.Store {
	t.Helper()
	open := redisstore.Open
	if c.cluster {
		open = redisstore.OpenCluster
	}
	rs, err := open(t.Context(), c.redisURL, "")
	if err != nil {
		t.Fatalf("open the Redis store: %v", err)
	}
	t.Cleanup(func() { rs.Close() })
	return rs
}

// gw returns instance i (modulo the number of instances).
func (c *scaleOutCluster) gw(i int) *gatewayProc { return c.gws[i%len(c.gws)] }

// on rewrites uploadURL to point at instance i.
func (c *scaleOutCluster) on(t *testing.T, i int, uploadURL string) string {
	t.Helper()
	u, err := url.Parse(uploadURL)
	if err != nil {
		t.Fatalf("parse upload URL %q: %v", uploadURL, err)
	}
	return c.gw(i).URL + u.Path
}

// index returns the position of the instance whose id is id, or -1.
func (c *scaleOutCluster) index(id string) int {
	for i, gw := range c.gws {
		if gw.InstanceID == id {
			return i
		}
	}
	return -1
}

// roundRobin sends data[from:to] in 1 MiB PATCHes, the first to instance
// start and each next one to the next instance; after each PATCH it asks
// yet another instance for the offset with HEAD. It is safe to call from
// several goroutines (it returns errors instead of failing the test).
func (c *scaleOutCluster) roundRobin(ctx context.Context, t *testing.T, uploadURL string, data []byte, from, to int64, start int) error {
	n := start
	for off := from; off < to; n++ {
		k := min(mib, to-off)
		gw := c.gw(n)
		got, err := gw.Tus.Patch(ctx, c.on(t, n, uploadURL), off, bytes.NewReader(data[off:off+k]), k, -1)
		if err != nil {
			return fmt.Errorf("PATCH [%d, %d) on instance %s: %w", off, off+k, gw.InstanceID, err)
		}
		if got != off+k {
			return fmt.Errorf("offset after PATCH [%d, %d) on instance %s: got %d, want %d", off, off+k, gw.InstanceID, got, off+k)
		}
		off = got
		other := c.gw(n + 1)
		info, err := other.Tus.Head(ctx, c.on(t, n+1, uploadURL))
		if err != nil {
			return fmt.Errorf("HEAD on instance %s after PATCH on %s: %w", other.InstanceID, gw.InstanceID, err)
		}
		if info.Offset != off {
			return fmt.Errorf("HEAD on instance %s after PATCH on %s: got offset %d, want %d", other.InstanceID, gw.InstanceID, info.Offset, off)
		}
	}
	return nil
}

// checkNoTokenAnywhere fails the test if token appears in any instance's
// logs.
func (c *scaleOutCluster) checkNoTokenAnywhere(t *testing.T, token string) {
	t.Helper()
	logs := map[string]string{}
	for _, gw := range c.gws {
		logs["logs of instance "+gw.InstanceID] = gw.Output()
	}
	checkNoToken(t, token, logs)
}

// scaleOutLogLine is the part of a gateway's JSON log line the tests read.
type scaleOutLogLine struct {
	Msg  string `json:"msg"`
	ID   string `json:"id"`
	Part int    `json:"part"`
}

// scaleOutDelivered returns the parts of upload id that gw logged as
// delivered ("part delivered", debug level), and whether it logged the
// upload as delivered.
func scaleOutDelivered(gw *gatewayProc, id string) (parts []int, upload bool) {
	sc := bufio.NewScanner(strings.NewReader(gw.Output()))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var l scaleOutLogLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.ID != id {
			continue
		}
		switch l.Msg {
		case "part delivered":
			parts = append(parts, l.Part)
		case "upload delivered":
			upload = true
		}
	}
	return parts, upload
}

// stored returns how many bytes of upload id the shared data store holds
// (read without tusd, so no running PATCH is interrupted), or -1 when it has
// none.
func (c *scaleOutCluster) stored(t *testing.T, id string) int64 {
	t.Helper()
	n, err := c.bytes.Offset(t.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return -1
	}
	if err != nil {
		t.Fatalf("offset of upload %s in the shared data store: %v", id, err)
	}
	return n
}

// errScaleOutStalled is the body error of a stalled PATCH the client gives
// up on.
var errScaleOutStalled = errors.New("client gave up on the stalled PATCH")

// scaleOutStallingReader yields the first n bytes of r, then blocks until gate
// opens and fails: a client whose PATCH stalls mid-body.
type scaleOutStallingReader struct {
	r    *bytes.Reader
	n    int64
	gate *gate
}

func (s *scaleOutStallingReader) Read(p []byte) (int, error) {
	if s.n <= 0 {
		<-s.gate.ch
		return 0, errScaleOutStalled
	}
	p = p[:min(int64(len(p)), s.n)]
	n, err := s.r.Read(p)
	s.n -= int64(n)
	return n, err
}

// scaleOutPatchResult is how a PATCH sent in the background ended.
type scaleOutPatchResult struct {
	err error
	at  time.Time
}

// stalledPatch starts a PATCH of data[from:] to instance i that sends n
// bytes and then stalls until gate opens. The result arrives on the
// returned channel; the test must receive it.
func (c *scaleOutCluster) stalledPatch(t *testing.T, i int, uploadURL string, data []byte, from, n int64, gate *gate) <-chan scaleOutPatchResult {
	t.Helper()
	target, gw := c.on(t, i, uploadURL), c.gw(i)
	done := make(chan scaleOutPatchResult, 1)
	go func() { // owned by the test: it receives from done
		body := &scaleOutStallingReader{r: bytes.NewReader(data[from:]), n: n, gate: gate}
		_, err := gw.Tus.Patch(t.Context(), target, from, body, int64(len(data))-from, -1)
		done <- scaleOutPatchResult{err: err, at: time.Now()}
	}()
	return done
}

// scaleOutAwaitPatch waits for the background PATCH's result.
func scaleOutAwaitPatch(t *testing.T, done <-chan scaleOutPatchResult, what string) scaleOutPatchResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(statusTimeout):
		t.Fatalf("%s: the PATCH did not end within %v", what, statusTimeout)
		return scaleOutPatchResult{}
	}
}

// Three uploads at once, each PATCH on the next instance and each HEAD on
// yet another: all delivered, and the forwarding is spread.
func scaleOutRoundRobin(t *testing.T, c *scaleOutCluster) {
	sizes := []int64{12 * mib, 14*mib + 512<<10 + 7, 17*mib - 1}
	type job struct {
		token, url, id string
		data           []byte
	}
	jobs := make([]job, len(sizes))
	for i, size := range sizes {
		token := c.emu.CreateToken(time.Hour)
		data := testData(uint64(900+i), size)
		u := create(t, c.gw(i), size, meta(token))
		jobs[i] = job{token: token, url: u, id: uploadID(t, u), data: data}
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, len(jobs))
	for i, j := range jobs {
		wg.Go(func() { errs[i] = c.roundRobin(t.Context(), t, j.url, j.data, 0, int64(len(j.data)), i) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("upload %d: %v", i, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("3 uploads sent round robin in %v", time.Since(start).Round(time.Millisecond))

	for i, j := range jobs {
		st, raw := waitDelivered(t, c.gw(i+2), j.id)
		checkDelivered(t, c.emu, j.token, j.data, st)
		checkNoToken(t, j.token, map[string]string{"status JSON": string(raw)})
		c.checkNoTokenAnywhere(t, j.token)
	}
	t.Logf("delivered %v after the start", time.Since(start).Round(time.Millisecond))

	// The emulator cannot tell the instances apart: the logs can.
	busy := 0
	for _, gw := range c.gws {
		var parts, uploads int
		for _, j := range jobs {
			p, done := scaleOutDelivered(gw, j.id)
			parts += len(p)
			if done {
				uploads++
			}
		}
		t.Logf("instance %s delivered %d parts and finished %d uploads", gw.InstanceID, parts, uploads)
		if parts > 0 {
			busy++
		}
	}
	if busy < 2 {
		t.Errorf("instances that delivered parts: got %d, want at least 2 (the forwarding is not spread)", busy)
	}
}

// One PATCH for the whole upload, stalled after part 1's bytes: api.video
// accepts part 1 while the PATCH is still open (tusd's S3 store alone could
// not read the upload before it is finished). The client then resumes on
// another instance.
func scaleOutLiveForward(t *testing.T, c *scaleOutCluster) {
	token := c.emu.CreateToken(time.Hour)
	data := testData(905, 12*mib)
	size := int64(len(data))
	u := create(t, c.gw(0), size, meta(token))
	id := uploadID(t, u)

	gate := newGate(t)
	done := c.stalledPatch(t, 0, u, data, 0, 5*mib, gate)
	waitFor(t, "api.video to accept part 1 while the PATCH runs", func() bool {
		for _, r := range partRequests(c.emu, token, 1) {
			if r.Accepted {
				return true
			}
		}
		return false
	})
	select {
	case r := <-done:
		t.Fatalf("the PATCH ended (%v) before part 1 was accepted: the test proves nothing", r.err)
	default:
	}
	gate.open()
	scaleOutAwaitPatch(t, done, "live forward")

	info, err := c.gw(1).Tus.Head(t.Context(), c.on(t, 1, u))
	if err != nil {
		t.Fatalf("HEAD on instance B: %v", err)
	}
	if info.Offset != 5*mib {
		t.Errorf("offset after the stalled PATCH: got %d, want %d", info.Offset, 5*mib)
	}
	patchRange(t, c.gw(1), c.on(t, 1, u), data, info.Offset, size, 4*mib)
	st, _ := waitDelivered(t, c.gw(2), id)
	checkDelivered(t, c.emu, token, data, st)
}

// A PATCH stalled mid-body on instance A yields at once to a HEAD for the
// same upload on instance B, which answers with the offset A reached; the
// client resumes on B. The stall comes at a part boundary, where the S3
// backend commits (on disk every byte is durable at once).
func scaleOutLockHandoff(t *testing.T, c *scaleOutCluster) {
	const a, b = 0, 1
	token := c.emu.CreateToken(time.Hour)
	data := testData(910, 12*mib)
	size := int64(len(data))
	u := create(t, c.gw(a), size, meta(token))
	id := uploadID(t, u)

	gate := newGate(t)
	const sent = 5 * mib
	done := c.stalledPatch(t, a, u, data, 0, sent, gate)
	waitFor(t, "instance A to store the 5 MiB sent", func() bool { return c.stored(t, id) == sent })

	asked := time.Now()
	info, err := c.gw(b).Tus.Head(t.Context(), c.on(t, b, u))
	headTook := time.Since(asked)
	r := scaleOutAwaitPatch(t, done, "lock handoff")
	gate.open()
	patchTook := r.at.Sub(asked)
	t.Logf("HEAD on B answered after %v; the PATCH on A ended %v after the HEAD was sent: %v", headTook.Round(time.Millisecond), patchTook.Round(time.Millisecond), r.err)
	if err != nil {
		t.Fatalf("HEAD on instance B during the stalled PATCH on A: %v", err)
	}
	if info.Offset != sent {
		t.Errorf("offset from B: got %d, want %d (every byte A received)", info.Offset, sent)
	}
	if limit := scaleOutLockExpiry / 4; headTook > limit || patchTook > limit {
		t.Errorf("handoff: HEAD on B took %v and the PATCH on A ended after %v, want both under %v (the lock expiry is %v)", headTook, patchTook, limit, scaleOutLockExpiry)
	}
	if r.err == nil {
		t.Errorf("stalled PATCH on A: got success, want it interrupted")
	} else if errors.Is(r.err, errScaleOutStalled) {
		t.Errorf("stalled PATCH on A: got %v, want it ended by the gateway before the client gave up", r.err)
	}

	patchRange(t, c.gw(b), c.on(t, b, u), data, info.Offset, size, mib)
	st, raw := waitDelivered(t, c.gw(b+1), id)
	checkDelivered(t, c.emu, token, data, st)
	checkNoToken(t, token, map[string]string{"status JSON": string(raw)})
	c.checkNoTokenAnywhere(t, token)
}

// Instance A is killed while the client is PATCHing through it and while it
// streams part 2 (the emulator holds that request until the kill, then cuts
// it: api.video stores nothing). The client resumes on B; B or C sends
// part 2 again once A's lease expired.
func scaleOutKill(t *testing.T, c *scaleOutCluster) {
	token := c.emu.CreateToken(time.Hour)
	data := testData(920, 17*mib)
	size := int64(len(data))

	gate := newGate(t)
	var held atomic.Bool
	c.emu.InjectFault(func(r apivideotest.FaultRequest) apivideotest.Fault {
		if !r.IsUpload() || r.Token != token || r.Part != 2 || !held.CompareAndSwap(false, true) {
			return apivideotest.Fault{}
		}
		<-gate.ch // the emulator calls hooks without its lock held
		return apivideotest.CutFault(0)
	})
	t.Cleanup(func() { c.emu.InjectFault(nil) })

	u := create(t, c.gw(2), size, meta(token))
	id := uploadID(t, u)
	if err := c.roundRobin(t.Context(), t, u, data, 0, 11*mib, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "part 2 to reach api.video", held.Load)

	// A is whichever instance holds the lease of part 2.
	rec, err := c.openStore(t).Get(t.Context(), id)
	if err != nil {
		t.Fatalf("get the record of upload %s: %v", id, err)
	}
	a := c.index(rec.InFlight[2].Owner)
	if a < 0 {
		t.Fatalf("lease of part 2: got owner %q, want one of the instances", rec.InFlight[2].Owner)
	}
	A, B, C := c.gw(a), c.gw(a+1), c.gw(a+2)
	t.Logf("instance A (sending part 2): %s", A.InstanceID)

	// The stall comes at a part boundary, where the S3 backend commits.
	const reached = 15 * mib
	done := c.stalledPatch(t, a, u, data, 11*mib, reached-11*mib, gate)
	waitFor(t, "instance A to store the 15 MiB sent", func() bool { return c.stored(t, id) == reached })
	killed := time.Now()
	A.Kill()
	// The client notices nothing until it writes again: unblock its body
	// (net/http waits for the body writer before it reports the dead
	// connection). This also lets the emulator cut A's part-2 request.
	gate.open()
	r := scaleOutAwaitPatch(t, done, "kill")
	if code := tusclient.StatusCode(r.err); r.err == nil || code != 0 {
		t.Errorf("PATCH cut by the kill: got status %d (%v), want no answer", code, r.err)
	}

	// The client resumes on B. A's tusd lock lives until it expires.
	info, err := B.Tus.Head(t.Context(), c.on(t, a+1, u))
	t.Logf("HEAD on B answered %v after the kill", time.Since(killed).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("HEAD on instance B after the kill: %v", err)
	}
	if info.Offset != reached {
		t.Errorf("offset from B after the kill: got %d, want %d (every byte A stored)", info.Offset, reached)
	}
	patchRange(t, B, c.on(t, a+1, u), data, info.Offset, size, mib)
	st, raw := waitDelivered(t, C, id)
	checkDelivered(t, c.emu, token, data, st)
	checkNoToken(t, token, map[string]string{"status JSON": string(raw)})
	c.checkNoTokenAnywhere(t, token)

	// Part 2: A's request (cut), then one from B or C after the lease.
	reqs := uploadRequests(c.emu, token)
	var part1, part2 []apivideotest.Request
	for _, q := range reqs {
		switch q.Part {
		case 1:
			part1 = append(part1, q)
		case 2:
			part2 = append(part2, q)
		}
	}
	if len(part1) != 1 {
		t.Errorf("part 1 requests: got %d, want 1", len(part1))
	}
	if len(part2) != 2 || part2[0].Accepted || !part2[1].Accepted {
		t.Errorf("part 2 requests: got %d (%+v), want 2: A's, cut, then an accepted one", len(part2), part2)
	} else {
		resent := part2[1].Time.Sub(killed)
		t.Logf("part 2 re-sent %v after the kill (lease %v)", resent.Round(time.Millisecond), scaleOutLease)
		// The lease runs out at most one lease after the kill, and the
		// survivors look again every lease (their resync period).
		if limit := 3 * scaleOutLease; resent < 0 || resent > limit {
			t.Errorf("part 2 re-sent %v after the kill, want within %v (lease and resync %v)", resent, limit, scaleOutLease)
		}
	}
	if parts, _ := scaleOutDelivered(A, id); slices.Contains(parts, 2) {
		t.Errorf("instance A logged part 2 as delivered, want B or C")
	}
	var by []string
	for _, gw := range []*gatewayProc{B, C} {
		parts, _ := scaleOutDelivered(gw, id)
		if slices.Contains(parts, 2) {
			by = append(by, gw.InstanceID)
		}
	}
	if len(by) != 1 {
		t.Errorf("instances that logged part 2 delivered: got %v, want exactly one of B, C", by)
	} else {
		t.Logf("part 2 delivered by %s", by[0])
	}
}
