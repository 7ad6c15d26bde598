package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
)

// This file holds the helpers of the fault-injection suite (faults_*_test.go).

// gate holds the requests a fault hook sends to it until the test opens it.
// It is opened when the test ends, so the emulator can close.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

// newGate returns a closed gate; create it after the emulator so that its
// cleanup (opening it) runs before the emulator's Close.
func newGate(t *testing.T) *gate {
	g := &gate{ch: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

// open lets every held request (and every later one) through.
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// hold blocks until the gate is open. The emulator calls fault hooks
// synchronously on the request's goroutine before it reads the body, and
// without its lock held, so a hook may block there.
func (g *gate) hold() { <-g.ch }

// holdPart makes the emulator hold the first request for part k of token
// at g (before reading its body). Later requests go through.
func holdPart(emu *apivideotest.Server, token string, k int, g *gate) {
	var mu sync.Mutex
	held := false
	emu.InjectFault(func(r apivideotest.FaultRequest) apivideotest.Fault {
		if !r.IsUpload() || r.Token != token || r.Part != k {
			return apivideotest.Fault{}
		}
		mu.Lock()
		first := !held
		held = true
		mu.Unlock()
		if first {
			g.hold()
		}
		return apivideotest.Fault{}
	})
}

// partRequests returns the emulator's upload requests for part k of token.
func partRequests(emu *apivideotest.Server, token string, k int) []apivideotest.Request {
	return slices.DeleteFunc(uploadRequests(emu, token), func(r apivideotest.Request) bool { return r.Part != k })
}

// partSeen reports whether the emulator received a request for part k of
// token.
func partSeen(emu *apivideotest.Server, token string, k int) bool {
	return len(partRequests(emu, token, k)) > 0
}

// requestDone reports whether request seq of the emulator was answered (or
// its connection cut).
func requestDone(emu *apivideotest.Server, seq int) bool {
	reqs := emu.Requests()
	return seq < len(reqs) && (reqs[seq].Status != 0 || reqs[seq].Cut)
}

// fileSize returns the size of the data file of upload id in the gateway's
// data directory (tusd's disk store), or -1 when it does not exist.
func fileSize(t *testing.T, gw *gatewayProc, id string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(gw.DataDir, "uploads", id))
	if errors.Is(err, os.ErrNotExist) {
		return -1
	}
	if err != nil {
		t.Fatalf("stat the data file of upload %s: %v", id, err)
	}
	return fi.Size()
}

// finishDelivered waits until upload id is delivered and checks the suite's
// end condition: the emulator holds exactly one video for token, complete
// and identical to data, and neither the gateway's logs nor the status
// carry the token.
func finishDelivered(t *testing.T, emu *apivideotest.Server, gw *gatewayProc, token string, data []byte, id string) gateway.Status {
	t.Helper()
	st, raw := waitDelivered(t, gw, id)
	checkDelivered(t, emu, token, data, st)
	checkNoToken(t, token, map[string]string{"gateway logs": gw.Output(), "status JSON": string(raw)})
	return st
}

// finishFailed waits until upload id failed and checks the end condition of
// a case that must fail: error.reason is reason, PATCH and HEAD answer 410,
// the emulator holds no complete video for token, and neither the logs nor
// the status carry the token.
func finishFailed(t *testing.T, emu *apivideotest.Server, gw *gatewayProc, token, uploadURL, reason string) {
	t.Helper()
	id := uploadID(t, uploadURL)
	st, raw := waitStatus(t, gw, id, func(s gateway.Status) bool { return s.State == store.StateFailed })
	if st.Error == nil || st.Error.Reason != reason || st.Error.Message == "" {
		t.Errorf("status of the failed upload: got %s, want error.reason %s and a message", raw, reason)
	}
	_, err := gw.Tus.Patch(t.Context(), uploadURL, st.Received, bytes.NewReader([]byte{0}), 1, -1)
	if code := tusclient.StatusCode(err); code != http.StatusGone {
		t.Errorf("PATCH after the failure: got %d (%v), want 410", code, err)
	}
	_, err = gw.Tus.Head(t.Context(), uploadURL)
	if code := tusclient.StatusCode(err); code != http.StatusGone {
		t.Errorf("HEAD after the failure: got %d (%v), want 410", code, err)
	}
	for _, v := range videosOf(emu, token) {
		if v.Complete {
			t.Errorf("emulator video %s of the failed upload: got complete, want none or incomplete", v.ID)
		}
	}
	checkNoToken(t, token, map[string]string{"gateway logs": gw.Output(), "status JSON": string(raw)})
}

// tusFailure is one failed request of a resumingClient.
type tusFailure struct {
	// Method is HEAD or PATCH.
	Method string
	// Status is the HTTP status, 0 when no answer came (network error).
	Status int
	// RetryAfter is the Retry-After header of the answer.
	RetryAfter string
	// Err is the error's text.
	Err string
}

func (f tusFailure) String() string {
	if f.Status == 0 {
		return f.Method + ": " + f.Err
	}
	return fmt.Sprintf("%s: %d (Retry-After %q)", f.Method, f.Status, f.RetryAfter)
}

// resumingClient uploads like a browser's tus client: PATCHes from the
// offset it knows, and after any failure it may retry (no answer, 5xx, 409,
// 423) it waits (100 ms doubling to 1 s; it notes Retry-After but does not
// wait that long, to keep the tests fast), asks HEAD for the offset and
// goes on. Other answers (400, 404, 410, …) end the upload.
type resumingClient struct {
	tus   *tusclient.Client
	chunk int64

	mu       sync.Mutex
	failures []tusFailure
}

// newResumingClient returns a client for gw sending chunk-byte PATCHes.
func newResumingClient(gw *gatewayProc, chunk int64) *resumingClient {
	return &resumingClient{tus: gw.Tus, chunk: chunk}
}

// Failures returns the failures seen so far.
func (c *resumingClient) Failures() []tusFailure {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.failures)
}

func (c *resumingClient) note(method string, err error) {
	f := tusFailure{Method: method, Err: err.Error()}
	if he, ok := errors.AsType[*tusclient.HTTPError](err); ok {
		f.Status, f.RetryAfter = he.StatusCode, he.Header.Get("Retry-After")
	}
	c.mu.Lock()
	c.failures = append(c.failures, f)
	c.mu.Unlock()
}

func retryable(err error) bool {
	switch code := tusclient.StatusCode(err); {
	case code == 0:
		return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
	case code >= 500, code == http.StatusConflict, code == http.StatusLocked:
		return true
	}
	return false
}

// Upload asks HEAD for the offset and sends the rest of data until the
// server has all of it, retrying as described on the type, for at most
// within.
func (c *resumingClient) Upload(ctx context.Context, uploadURL string, data []byte, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	size := int64(len(data))
	var off int64
	known := false
	const minDelay, maxDelay = 100 * time.Millisecond, time.Second
	delay := minDelay
	for {
		var err error
		method := http.MethodHead
		if !known {
			var info tusclient.Info
			if info, err = c.tus.Head(ctx, uploadURL); err == nil {
				off, known = info.Offset, true
			}
		}
		if err == nil {
			if off >= size {
				return nil
			}
			method = http.MethodPatch
			n := min(c.chunk, size-off)
			var got int64
			if got, err = c.tus.Patch(ctx, uploadURL, off, bytes.NewReader(data[off:off+n]), n, -1); err == nil {
				off, delay = got, minDelay
				continue
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("upload did not finish within %v (at offset %d; failures: %v): %w", within, off, c.Failures(), err)
		}
		c.note(method, err)
		if !retryable(err) {
			return err
		}
		known = false
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		delay = min(2*delay, maxDelay)
	}
}

// gatedReader yields the first n bytes of r, then waits for release before
// yielding the rest; it fails if done is closed first.
type gatedReader struct {
	r       io.Reader
	n       int64
	release <-chan struct{}
	done    <-chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.n <= 0 {
		select {
		case <-g.release:
		case <-g.done:
			return 0, errClientGaveUp
		}
		return g.r.Read(p)
	}
	p = p[:min(int64(len(p)), g.n)]
	n, err := g.r.Read(p)
	g.n -= int64(n)
	return n, err
}

// readyz fetches GET /readyz and returns the status and body.
func readyz(t *testing.T, gw *gatewayProc) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+"/readyz", nil)
	if err != nil {
		t.Fatalf("readyz request: %v", err)
	}
	resp, err := gw.HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET /readyz: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// statusField returns the raw value of key in a status JSON, and whether
// the key is present.
func statusField(t *testing.T, raw []byte, key string) (json.RawMessage, bool) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("decode status %s: %v", raw, err)
	}
	v, ok := m[key]
	return v, ok
}

// pid returns the process id of the running gateway.
func (g *gatewayProc) pid() int {
	g.t.Helper()
	if g.cur == nil {
		g.t.Fatal("gateway: not running")
	}
	return g.cur.cmd.Process.Pid
}

// redisProc is a redis-server of a test's own, on a free port, restartable
// on the same port and directory.
type redisProc struct {
	t    *testing.T
	Port int
	args []string
	out  *logBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts a redis-server of the test's own on 127.0.0.1. With
// persistent set it keeps its data across restarts (append-only file,
// fsync'd on every write, in a temporary directory); without, a restart
// starts empty. It is killed when the test ends. The test is skipped when
// redis-server is not on PATH.
func startRedis(t *testing.T, persistent bool) *redisProc {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skipf("redis-server not on PATH: %v", err)
	}
	port := freePort(t)
	args := []string{bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", t.TempDir(),
		"--save", "", "--protected-mode", "no", "--daemonize", "no", "--logfile", ""}
	if persistent {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	} else {
		args = append(args, "--appendonly", "no")
	}
	r := &redisProc{t: t, Port: port, args: args, out: &logBuffer{}}
	t.Cleanup(func() {
		if r.cmd != nil {
			r.Kill()
		}
		if t.Failed() {
			t.Logf("redis-server output:\n%s", r.out.String())
		}
	})
	r.Start()
	return r
}

// URL is the redis:// URL of the server (database 0).
func (r *redisProc) URL() string { return "redis://127.0.0.1:" + strconv.Itoa(r.Port) + "/0" }

// Start starts the server and waits until it answers PING.
func (r *redisProc) Start() {
	r.t.Helper()
	if r.cmd != nil {
		r.t.Fatal("redis-server: start while running")
	}
	cmd := exec.Command(r.args[0], r.args[1:]...)
	cmd.Stdout, cmd.Stderr = r.out, r.out
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start redis-server: %v", err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	done := r.done
	go func() { // owned by r: Kill waits for done
		_ = cmd.Wait()
		close(done)
	}()
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(r.Port), MaxRetries: -1})
	defer client.Close()
	waitFor(r.t, "redis-server to answer PING", func() bool {
		select {
		case <-done:
			r.t.Fatalf("redis-server exited at start:\n%s", r.out.String())
		default:
		}
		ctx, cancel := context.WithTimeout(r.t.Context(), time.Second)
		defer cancel()
		return client.Ping(ctx).Err() == nil
	})
}

// Kill kills the server (SIGKILL) and waits for it to exit.
func (r *redisProc) Kill() {
	r.t.Helper()
	if r.cmd == nil {
		r.t.Fatal("redis-server: not running")
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
	r.cmd = nil
}

// logsContain reports whether the gateway's output contains every one of
// the strings.
func logsContain(gw *gatewayProc, strs ...string) bool {
	out := gw.Output()
	for _, s := range strs {
		if !strings.Contains(out, s) {
			return false
		}
	}
	return true
}

// onceFlag reports the first of several concurrent calls; it is safe for
// concurrent use.
type onceFlag struct{ n atomic.Int32 }

// first reports whether this is the first call of first.
func (o *onceFlag) first() bool { return o.n.Add(1) == 1 }

// done reports whether first was called.
func (o *onceFlag) done() bool { return o.n.Load() > 0 }

// killPID sends SIGKILL to process pid (a gateway this test started).
func killPID(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }

// redisDownScene is an upload whose part 1 api.video accepted while the
// gateway's Redis (the test's own, persistent) was down: the gateway is
// retrying to record the videoId.
type redisDownScene struct {
	rds   *redisProc
	emu   *apivideotest.Server
	gw    *gatewayProc
	token string
	data  []byte
	id    string
}

// part1AcceptedWhileRedisDown sends a 12 MiB upload, kills Redis while
// api.video holds part 1, then lets api.video accept it, and returns once
// the gateway logs that recording it failed.
func part1AcceptedWhileRedisDown(t *testing.T, seed uint64) redisDownScene {
	t.Helper()
	s := redisDownScene{rds: startRedis(t, true), emu: newEmulator(t)}
	g := newGate(t)
	s.token = s.emu.CreateToken(time.Hour)
	holdPart(s.emu, s.token, 1, g)
	s.gw = startGateway(t, s.emu, gatewayOptions{Store: "embedded", Args: []string{"--redis-url", s.rds.URL()}})
	s.data = testData(seed, 12*mib)
	u := create(t, s.gw, int64(len(s.data)), meta(s.token))
	s.id = uploadID(t, u)
	patchRange(t, s.gw, u, s.data, 0, int64(len(s.data)), 4*mib)
	waitFor(t, "part 1 to reach api.video", func() bool { return partSeen(s.emu, s.token, 1) })

	s.rds.Kill()
	g.open()
	waitFor(t, "api.video to accept part 1", func() bool { return partAccepted(s.emu, s.token, 1) })
	waitFor(t, "the gateway to fail recording part 1", func() bool { return logsContain(s.gw, "record delivered part; retrying") })
	return s
}
