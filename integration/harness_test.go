package integration_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mathrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/testwait"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
)

const (
	mib = 1 << 20
	// partSize is the --part-size every gateway runs with (and api.video's
	// first part size), so small uploads have several parts.
	partSize = 5 * mib

	// startTimeout bounds a gateway's start (until /healthz answers).
	startTimeout = 30 * time.Second
	// stopTimeout bounds a gateway's exit after SIGTERM or SIGKILL.
	stopTimeout = 30 * time.Second
	// statusTimeout bounds waitStatus and the other condition waits.
	statusTimeout = 30 * time.Second
	// pollInterval is how often a condition is checked.
	pollInterval = 20 * time.Millisecond

	// redisLockKey marks a Redis logical database as taken by a test; it is
	// outside the gateway's "tusgate:" key space.
	redisLockKey = "tusgate-integration:lock"
	// redisLockTTL frees a database whose test process died.
	redisLockTTL = 10 * time.Minute
)

// tusgateBin is the path of the gateway binary built by TestMain; it is set
// once, before any test runs, and never changed.
var tusgateBin string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

// runTests builds the gateway binary into a temporary directory, runs the
// tests and removes the directory.
func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "tusgate-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin, err := buildGateway(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	tusgateBin = bin
	return m.Run()
}

// buildGateway builds cmd/tusgate into dir (with the race detector when the
// tests have it) and returns the binary's path.
func buildGateway(dir string) (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside a module")
	}
	bin := filepath.Join(dir, "tusgate")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/tusgate")
	cmd := exec.Command("go", args...)
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return bin, nil
}

// forEachStore runs test as a parallel subtest per state store kind:
// "embedded" (bbolt in the data dir) and "redis".
func forEachStore(t *testing.T, test func(t *testing.T, kind string)) {
	t.Helper()
	for _, kind := range [...]string{"embedded", "redis"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			test(t, kind)
		})
	}
}

// logBuffer collects a process's output; it is safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// gatewayOptions tunes startGateway.
type gatewayOptions struct {
	// Store is "embedded" or "redis".
	Store string
	// Args are extra command-line arguments.
	Args []string
	// Env are extra environment variables (KEY=value).
	Env []string
}

// gatewayProc is a running (or stopped) tusgate process. Its methods are
// called from the test goroutine only.
type gatewayProc struct {
	t *testing.T
	// URL is the gateway's base URL (http://127.0.0.1:port).
	URL string
	// Endpoint is the tus creation URL.
	Endpoint string
	// DataDir is the gateway's --data-dir.
	DataDir string
	// InstanceID is the gateway's --instance-id, kept across restarts.
	InstanceID string
	// Tus is a tus client for the gateway.
	Tus *tusclient.Client
	// HTTP is the plain HTTP client behind Tus.
	HTTP *http.Client

	transport *http.Transport
	args, env []string
	out       *logBuffer
	cur       *process
	starts    int
}

// process is one run of the binary. done is closed once cmd.Wait returned
// (and err is set).
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// startGateway starts the gateway binary against the emulator emu and waits
// until /healthz answers. The process is killed when t ends, and its output
// is logged if t failed.
func startGateway(t *testing.T, emu *apivideotest.Server, opts gatewayOptions) *gatewayProc {
	t.Helper()
	port := freePort(t)
	dataDir := t.TempDir()
	id := "test-" + strings.ToLower(rand.Text()[:10])
	args := []string{
		"--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--data-dir", dataDir,
		"--apivideo-url", emu.URL,
		"--part-size", "5MiB",
		"--log-level", "debug",
		"--instance-id", id,
	}
	switch opts.Store {
	case "embedded":
	case "redis":
		db := claimRedisDB(t)
		args = append(args, "--redis-url", "redis://"+redisAddr()+"/"+strconv.Itoa(db))
	default:
		t.Fatalf("startGateway: unknown store %q", opts.Store)
	}
	args = append(args, opts.Args...)

	tr := &http.Transport{MaxIdleConnsPerHost: 8, ResponseHeaderTimeout: time.Minute}
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	gw := &gatewayProc{
		t:          t,
		URL:        base,
		Endpoint:   base + "/files/",
		DataDir:    dataDir,
		InstanceID: id,
		Tus:        &tusclient.Client{HTTPClient: hc},
		HTTP:       hc,
		transport:  tr,
		args:       args,
		env:        append(hermeticEnv(), opts.Env...),
		out:        &logBuffer{},
	}
	t.Cleanup(func() {
		if gw.cur != nil {
			gw.signalAndWait(syscall.SIGKILL)
		}
		tr.CloseIdleConnections()
		if strings.Contains(gw.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector found a data race in the gateway (see its output)")
		}
		if t.Failed() {
			t.Logf("gateway output (%s):\n%s", strings.Join(gw.args, " "), gw.out.String())
		}
	})
	gw.start()
	return gw
}

// hermeticEnv is the test's environment without TUSGATE_ variables, so the
// gateway sees only the settings a test gives it.
func hermeticEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "TUSGATE_") })
}

// start runs the binary and waits until /healthz answers.
func (g *gatewayProc) start() {
	g.t.Helper()
	if g.cur != nil {
		g.t.Fatal("gateway: start while running")
	}
	g.starts++
	fmt.Fprintf(g.out, "==== start %d\n", g.starts)
	cmd := exec.Command(tusgateBin, g.args...)
	cmd.Env = g.env
	cmd.Stdout, cmd.Stderr = g.out, g.out
	if err := cmd.Start(); err != nil {
		g.t.Fatalf("start gateway: %v", err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	g.cur = p
	go func() { // owned by p: Stop, Kill and the cleanup wait for done
		p.err = cmd.Wait()
		close(p.done)
	}()

	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if g.healthy() {
			return
		}
		select {
		case <-p.done:
			g.cur = nil
			g.t.Fatalf("gateway exited before answering /healthz: %v", p.err)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("gateway did not answer /healthz within %v", startTimeout)
		}
	}
}

func (g *gatewayProc) healthy() bool {
	ctx, cancel := context.WithTimeout(g.t.Context(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := g.HTTP.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// signalAndWait sends sig and waits for the process to exit; it returns the
// exit error (nil for status 0).
func (g *gatewayProc) signalAndWait(sig syscall.Signal) error {
	g.t.Helper()
	p := g.cur
	if p == nil {
		g.t.Fatal("gateway: not running")
	}
	g.cur = nil
	defer g.transport.CloseIdleConnections() // they point at a dead process
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		fmt.Fprintf(g.out, "==== exit after %v: %v\n", sig, p.err)
		return p.err
	case <-time.After(stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		g.t.Fatalf("gateway did not exit within %v of %v", stopTimeout, sig)
		return nil
	}
}

// Stop sends SIGTERM and fails the test unless the gateway exits with
// status 0.
func (g *gatewayProc) Stop() {
	g.t.Helper()
	err := g.signalAndWait(syscall.SIGTERM)
	var exit *exec.ExitError
	switch {
	case err == nil:
	case raceEnabled && errors.As(err, &exit) && exit.ExitCode() == 66:
		g.t.Errorf("gateway exit after SIGTERM: got %v, want status 0 (66: the race detector found a data race, see WARNING: DATA RACE in the gateway output)", err)
	default:
		g.t.Errorf("gateway exit after SIGTERM: got %v, want status 0", err)
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (g *gatewayProc) Kill() {
	g.t.Helper()
	_ = g.signalAndWait(syscall.SIGKILL)
}

// Restart starts the stopped gateway again with the same settings (port,
// data dir, store, instance id).
func (g *gatewayProc) Restart() {
	g.t.Helper()
	g.start()
}

// Output returns everything the gateway wrote to stdout and stderr so far.
func (g *gatewayProc) Output() string { return g.out.String() }

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func redisAddr() string {
	if addr := os.Getenv("TUSGATE_TEST_REDIS_ADDR"); addr != "" {
		return addr
	}
	return "127.0.0.1:6379"
}

// claimRedisDB claims a Redis logical database (1..15) for t, clears the
// gateway's keys in it, and clears and frees it again when t ends.
func claimRedisDB(t *testing.T) int {
	t.Helper()
	token := rand.Text()
	deadline := time.Now().Add(statusTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		for db := 1; db < 16; db++ {
			client := redis.NewClient(&redis.Options{Addr: redisAddr(), DB: db})
			ok, err := client.SetNX(t.Context(), redisLockKey, token, redisLockTTL).Result()
			if err != nil {
				_ = client.Close()
				t.Fatalf("claim Redis database %d at %s (set TUSGATE_TEST_REDIS_ADDR): %v", db, redisAddr(), err)
			}
			if !ok {
				_ = client.Close()
				continue
			}
			clearGatewayKeys(t, client)
			t.Cleanup(func() {
				ctx := context.WithoutCancel(t.Context())
				clearGatewayKeys(t, client)
				// Delete the lock only if it is still ours.
				release := redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
				if err := release.Run(ctx, client, []string{redisLockKey}, token).Err(); err != nil {
					t.Errorf("free Redis database %d: %v", db, err)
				}
				_ = client.Close()
			})
			return db
		}
		if time.Now().After(deadline) {
			t.Fatalf("no free Redis database (1..15) at %s within %v", redisAddr(), statusTimeout)
		}
		<-tick.C
	}
}

// clearGatewayKeys deletes every tusgate:* key of the client's database.
func clearGatewayKeys(t *testing.T, client *redis.Client) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	iter := client.Scan(ctx, 0, "tusgate:*", 100).Iterator()
	for iter.Next(ctx) {
		if err := client.Del(ctx, iter.Val()).Err(); err != nil {
			t.Errorf("delete Redis key %s: %v", iter.Val(), err)
		}
	}
	if err := iter.Err(); err != nil {
		t.Errorf("scan Redis keys tusgate:*: %v", err)
	}
}

// newEmulator starts an api.video emulator closed when t ends.
func newEmulator(t *testing.T) *apivideotest.Server {
	t.Helper()
	emu := apivideotest.NewServer()
	t.Cleanup(emu.Close)
	return emu
}

// testData returns n pseudo-random bytes from seed (the same every run).
func testData(seed uint64, n int64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	_, _ = mathrand.NewChaCha8(s).Read(b) // never fails
	return b
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// meta returns upload metadata with the token and a file name.
func meta(token string) map[string]string {
	return map[string]string{"token": token, "filename": "video.mp4", "filetype": "video/mp4"}
}

// uploadID returns the tus id of an upload URL (its last path segment).
func uploadID(t *testing.T, uploadURL string) string {
	t.Helper()
	u, err := url.Parse(uploadURL)
	if err != nil {
		t.Fatalf("parse upload URL %q: %v", uploadURL, err)
	}
	return path.Base(u.Path)
}

// create creates an upload of size bytes (or tusclient.Deferred).
func create(t *testing.T, gw *gatewayProc, size int64, metadata map[string]string) string {
	t.Helper()
	u, err := gw.Tus.Create(t.Context(), gw.Endpoint, size, metadata)
	if err != nil {
		t.Fatalf("create upload of %d bytes: %v", size, err)
	}
	return u
}

// patchRange sends data[from:to] in PATCHes of at most chunk bytes.
func patchRange(t *testing.T, gw *gatewayProc, uploadURL string, data []byte, from, to, chunk int64) {
	t.Helper()
	for off := from; off < to; {
		n := min(chunk, to-off)
		got, err := gw.Tus.Patch(t.Context(), uploadURL, off, bytes.NewReader(data[off:off+n]), n, -1)
		if err != nil {
			t.Fatalf("PATCH [%d, %d): %v", off, off+n, err)
		}
		if got != off+n {
			t.Fatalf("offset after PATCH [%d, %d): got %d, want %d", off, off+n, got, off+n)
		}
		off = got
	}
}

// upload sends whatever the gateway does not have yet of data, resuming from
// the offset HEAD reports.
func upload(t *testing.T, gw *gatewayProc, uploadURL string, data []byte, chunk int64) {
	t.Helper()
	if err := gw.Tus.Upload(t.Context(), uploadURL, bytes.NewReader(data), int64(len(data)), chunk); err != nil {
		t.Fatalf("upload %d bytes: %v", len(data), err)
	}
}

// getStatus fetches GET /uploads/{id}: the HTTP status, the decoded body
// (when 200) and the raw body.
func getStatus(t *testing.T, gw *gatewayProc, id string) (int, gateway.Status, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, gw.URL+"/uploads/"+id, nil)
	if err != nil {
		t.Fatalf("status request: %v", err)
	}
	resp, err := gw.HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET /uploads/%s: %v", id, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET /uploads/%s: read body: %v", id, err)
	}
	var st gateway.Status
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatalf("GET /uploads/%s: decode %s: %v", id, raw, err)
		}
	}
	return resp.StatusCode, st, raw
}

// waitStatus polls the status of upload id until pred holds, and returns
// that status and its raw JSON. It fails the test with the last status when
// the deadline passes or the upload reaches a terminal state pred rejects.
func waitStatus(t *testing.T, gw *gatewayProc, id string, pred func(gateway.Status) bool) (gateway.Status, []byte) {
	t.Helper()
	deadline := time.Now().Add(statusTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		code, st, raw := getStatus(t, gw, id)
		if code == http.StatusOK && pred(st) {
			return st, raw
		}
		if code == http.StatusOK && st.State.Terminal() {
			t.Fatalf("upload %s reached %s, which does not satisfy the wait: %s", id, st.State, raw)
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload %s: condition not met within %v; last status %d: %s", id, statusTimeout, code, raw)
		}
		<-tick.C
	}
}

// waitDelivered waits until upload id is delivered.
func waitDelivered(t *testing.T, gw *gatewayProc, id string) (gateway.Status, []byte) {
	t.Helper()
	return waitStatus(t, gw, id, func(s gateway.Status) bool { return s.State == store.StateDelivered })
}

// waitFor polls cond until it holds (see testwait.For).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, statusTimeout, what, cond)
}

// uploadRequests returns the emulator's POST /upload requests made with token.
func uploadRequests(emu *apivideotest.Server, token string) []apivideotest.Request {
	var out []apivideotest.Request
	for _, r := range emu.Requests() {
		if r.Method == http.MethodPost && r.Path == "/upload" && r.Token == token {
			out = append(out, r)
		}
	}
	return out
}

// partAccepted reports whether the emulator accepted part k sent with token.
func partAccepted(emu *apivideotest.Server, token string, k int) bool {
	for _, r := range uploadRequests(emu, token) {
		if r.Part == k && r.Accepted {
			return true
		}
	}
	return false
}

// videosOf returns the emulator's videos started with token.
func videosOf(emu *apivideotest.Server, token string) []apivideotest.VideoInfo {
	var out []apivideotest.VideoInfo
	for _, v := range emu.Videos() {
		if v.Token == token {
			out = append(out, v)
		}
	}
	return out
}

// wantParts is the number of api.video parts of a size-byte upload.
func wantParts(size int64) int {
	if size <= partSize {
		return 1
	}
	return 1 + int((size-partSize+partSize-1)/partSize)
}

// checkDelivered asserts that st is the delivered status of data and that
// the emulator holds exactly one complete video for token, byte-identical to
// data, whose chunks follow the part plan. It returns the video.
func checkDelivered(t *testing.T, emu *apivideotest.Server, token string, data []byte, st gateway.Status) apivideotest.VideoInfo {
	t.Helper()
	size := int64(len(data))
	parts := wantParts(size)
	if st.State != store.StateDelivered {
		t.Errorf("state: got %s, want %s", st.State, store.StateDelivered)
	}
	if st.Size == nil || *st.Size != size {
		t.Errorf("size: got %v, want %d", ptrString(st.Size), size)
	}
	if st.Delivered != size {
		t.Errorf("delivered: got %d, want %d", st.Delivered, size)
	}
	if st.Parts.Total == nil || *st.Parts.Total != parts || st.Parts.Delivered != parts {
		t.Errorf("parts: got {total: %v, delivered: %d}, want {total: %d, delivered: %d}", ptrString(st.Parts.Total), st.Parts.Delivered, parts, parts)
	}
	if st.Error != nil {
		t.Errorf("error: got %+v, want none", *st.Error)
	}

	videos := videosOf(emu, token)
	if len(videos) != 1 {
		t.Fatalf("emulator videos for the token: got %d, want 1", len(videos))
	}
	v := videos[0]
	if st.VideoID == nil || *st.VideoID != v.ID {
		t.Errorf("videoId: got %v, want %s", ptrString(st.VideoID), v.ID)
	}
	if !v.Complete {
		t.Errorf("emulator video complete: got false, want true (%d bytes, %d parts)", v.Size, len(v.Parts))
	}
	if v.Size != size {
		t.Errorf("emulator video size: got %d, want %d", v.Size, size)
	}
	if want := sha256Hex(data); v.SHA256 != want {
		t.Errorf("emulator video SHA-256: got %s, want %s", v.SHA256, want)
	}
	if !bytes.Equal(v.Bytes(), data) {
		t.Errorf("emulator video bytes differ from the source (%d bytes, want %d)", len(v.Bytes()), size)
	}
	if v.Form != "part" || v.TotalParts != parts || len(v.Parts) != parts {
		t.Errorf("emulator video: got form %s, %d of %d parts, want form part, %d of %d", v.Form, len(v.Parts), v.TotalParts, parts, parts)
	}
	for _, p := range v.Parts {
		if p.Number == 1 && p.Size != min(size, partSize) {
			t.Errorf("part 1 size: got %d, want %d", p.Size, min(size, partSize))
		}
	}
	for _, r := range uploadRequests(emu, token) {
		if !r.Accepted {
			continue
		}
		want := v.ID
		if r.Part == 1 {
			want = ""
		}
		if r.VideoID != want {
			t.Errorf("request %d (part %d) videoId: got %q, want %q", r.Seq, r.Part, r.VideoID, want)
		}
	}
	return v
}

func ptrString[T any](p *T) string {
	if p == nil {
		return "null"
	}
	return fmt.Sprint(*p)
}

// checkNoToken fails the test if token appears in any of the texts.
func checkNoToken(t *testing.T, token string, texts map[string]string) {
	t.Helper()
	for name, text := range texts {
		if strings.Contains(text, token) {
			t.Errorf("%s contains the upload token", name)
		}
	}
}

// allocatedBytes returns the bytes of disk the file at path holds (its
// blocks, not its size: holes punched in it hold none).
func allocatedBytes(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return st.Blocks * 512
}
