package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/testwait"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/boltstore"
)

const MiB = 1 << 20

// testPlan has 5 MiB parts, so a 12 MiB upload has boundaries at 5 and 10 MiB.
var testPlan = store.Plan{FirstPartSize: 5 * MiB, PartSize: 5 * MiB}

// faultStore is the real embedded store with switchable failures, each
// failing the way an unreachable store does (store.ErrUnavailable).
type faultStore struct {
	store.Store
	failPing   atomic.Bool
	failCreate atomic.Bool
	failGet    atomic.Bool
	failUpdate atomic.Bool
	failList   atomic.Bool
	failDelete atomic.Bool
	// failUpdates makes the next n Updates fail.
	failUpdates atomic.Int64
	// beforeUpdate, when set, runs once before the next Update: it lets a
	// test change the record between the gateway's Get and its Update.
	beforeUpdate atomic.Pointer[func()]
}

// errInjected is the failure faultStore injects.
var errInjected = fmt.Errorf("injected failure: %w", store.ErrUnavailable)

func (f *faultStore) Update(ctx context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error) {
	if hook := f.beforeUpdate.Swap(nil); hook != nil {
		(*hook)()
	}
	if f.failUpdate.Load() || f.failUpdates.Add(-1) >= 0 {
		return nil, fmt.Errorf("update %s: %w", id, errInjected)
	}
	f.failUpdates.Store(0)
	return f.Store.Update(ctx, id, fn)
}

func (f *faultStore) Get(ctx context.Context, id string) (*store.Upload, error) {
	if f.failGet.Load() {
		return nil, fmt.Errorf("get %s: %w", id, errInjected)
	}
	return f.Store.Get(ctx, id)
}

func (f *faultStore) ListActive(ctx context.Context) ([]string, error) {
	if f.failList.Load() {
		return nil, fmt.Errorf("list active: %w", errInjected)
	}
	return f.Store.ListActive(ctx)
}

func (f *faultStore) Delete(ctx context.Context, id string) error {
	if f.failDelete.Load() {
		return fmt.Errorf("delete %s: %w", id, errInjected)
	}
	return f.Store.Delete(ctx, id)
}

// clock is a settable clock, safe to read from the server's goroutines.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.Set(t)
	return c
}

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func (f *faultStore) Ping(ctx context.Context) error {
	if f.failPing.Load() {
		return fmt.Errorf("ping: injected failure: %w", store.ErrUnavailable)
	}
	return f.Store.Ping(ctx)
}

func (f *faultStore) Create(ctx context.Context, u *store.Upload) error {
	if f.failCreate.Load() {
		return fmt.Errorf("create: injected failure: %w", store.ErrUnavailable)
	}
	return f.Store.Create(ctx, u)
}

// notification is the record as it was when Notify was called.
type notification struct {
	ID           string
	Received     int64
	Complete     bool
	SizeDeferred bool
	State        store.State
}

// recorder is a Notifier that snapshots the record at each call.
type recorder struct {
	ctx context.Context
	st  store.Store
	mu  sync.Mutex
	got []notification
}

func (r *recorder) Notify(id string) {
	n := notification{ID: id}
	if u, err := r.st.Get(r.ctx, id); err == nil {
		n.Received, n.Complete, n.SizeDeferred, n.State = u.Received, u.Complete, u.SizeDeferred, u.State
	}
	r.mu.Lock()
	r.got = append(r.got, n)
	r.mu.Unlock()
}

func (r *recorder) For(id string) []notification {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []notification
	for _, n := range r.got {
		if n.ID == id {
			out = append(out, n)
		}
	}
	return out
}

type harness struct {
	gw       *gateway.Gateway
	srv      *httptest.Server
	st       *faultStore
	n        *recorder
	logs     *observer.ObservedLogs
	client   *tusclient.Client
	endpoint string
	dataDir  string
	now      time.Time
}

var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// newHarness starts a gateway on a real HTTP server with a real embedded
// store; mod may change the configuration.
func newHarness(t *testing.T, mod func(*gateway.Config)) *harness {
	t.Helper()
	bs, err := boltstore.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bs.Close() })
	st := &faultStore{Store: bs}
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{
		st:      st,
		n:       &recorder{ctx: t.Context(), st: st},
		logs:    logs,
		dataDir: filepath.Join(t.TempDir(), "uploads"),
		now:     testNow,
		client:  &tusclient.Client{},
	}
	cfg := gateway.Config{
		DataDir: h.dataDir,
		Plan:    testPlan,
		Now:     func() time.Time { return h.now },
		Logger:  zap.New(core),
	}
	if mod != nil {
		mod(&cfg)
	}
	h.gw, err = gateway.New(cfg, st, h.n)
	if err != nil {
		t.Fatal(err)
	}
	h.srv = httptest.NewUnstartedServer(h.gw.Handler())
	h.srv.Config.ConnContext = h.gw.ConnContext
	h.srv.Start()
	t.Cleanup(h.srv.Close)
	h.endpoint = h.srv.URL + "/files/"
	return h
}

// randomData returns n deterministic pseudo-random bytes.
func randomData(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1, 2, 3})
	_, _ = r.Read(b)
	return b
}

// idOf returns the upload id: the last path segment of its URL.
func idOf(uploadURL string) string {
	return uploadURL[strings.LastIndex(uploadURL, "/")+1:]
}

// do sends a raw request and returns the response with its body.
func (h *harness) do(t *testing.T, method, u string, header map[string]string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// status fetches GET /uploads/{id} as a generic JSON map and raw body.
func (h *harness) status(t *testing.T, id string) (int, map[string]any, string) {
	t.Helper()
	resp, body := h.do(t, http.MethodGet, h.srv.URL+"/uploads/"+id, nil, nil)
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil {
		t.Fatalf("status body %q: %v", body, err)
	}
	return resp.StatusCode, m, body
}

func (h *harness) record(t *testing.T, id string) *store.Upload {
	t.Helper()
	u, err := h.st.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("get record %s: %v", id, err)
	}
	return u
}

func (h *harness) create(t *testing.T, size int64, meta map[string]string) (string, string) {
	t.Helper()
	u, err := h.client.Create(t.Context(), h.endpoint, size, meta)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return u, idOf(u)
}

// readAll reads [0, n) of an upload through the DataSource.
func (h *harness) readAll(t *testing.T, id string, n int64) []byte {
	t.Helper()
	rc, err := h.gw.Source().OpenRange(t.Context(), id, 0, n)
	if err != nil {
		t.Fatalf("OpenRange(%s, 0, %d): %v", id, n, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertNoSecret fails if any log entry mentions secret.
func (h *harness) assertNoSecret(t *testing.T, secret string) {
	t.Helper()
	for _, e := range h.logs.All() {
		line := fmt.Sprintf("%s %v", e.Message, e.ContextMap())
		if strings.Contains(line, secret) {
			t.Errorf("log entry reveals the secret: %s", line)
		}
	}
}

// waitFor polls cond until it holds (see testwait.For).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 10*time.Second, what, cond)
}

// stallingReader returns data, then blocks until ctx is done.
type stallingReader struct {
	ctx  context.Context
	data []byte
}

func (s *stallingReader) Read(p []byte) (int, error) {
	if len(s.data) > 0 {
		n := copy(p, s.data)
		s.data = s.data[n:]
		return n, nil
	}
	<-s.ctx.Done()
	return 0, s.ctx.Err()
}

// rawPatch opens a connection to the gateway and sends the head of a PATCH of upload
// id from offset 0 announcing n bytes.
func (h *harness) rawPatch(t *testing.T, id string, n int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", h.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	req := fmt.Sprintf("PATCH /files/%s HTTP/1.1\r\nHost: %s\r\nTus-Resumable: 1.0.0\r\n"+
		"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: %d\r\n\r\n",
		id, h.srv.Listener.Addr(), n)
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	return conn
}

// received returns the bytes the status API reports for upload id.
func (h *harness) received(t *testing.T, id string) int {
	t.Helper()
	_, m, _ := h.status(t, id)
	got, _ := m["received"].(float64)
	return int(got)
}
