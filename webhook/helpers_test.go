package webhook_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tusgate/tusgate/internal/testwait"
	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/boltstore"
	"github.com/tusgate/tusgate/webhook"
)

const mib = 1 << 20

var secret = []byte("whsec_test_5c4f0e1d")

// request is one request a receiver got.
type request struct {
	n      int // 1-based
	body   []byte
	header http.Header
	at     time.Time
}

// receiver is the platform's webhook endpoint, on 127.0.0.1.
type receiver struct {
	srv *httptest.Server
	// respond answers request n (1-based); nil: 204.
	respond func(w http.ResponseWriter, r *http.Request, n int)

	mu   sync.Mutex
	reqs []request
	n    atomic.Int64
}

func newReceiver(t *testing.T, respond func(w http.ResponseWriter, r *http.Request, n int)) *receiver {
	t.Helper()
	rc := &receiver{respond: respond}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n := int(rc.n.Add(1))
		rc.mu.Lock()
		rc.reqs = append(rc.reqs, request{n: n, body: body, header: r.Header.Clone(), at: time.Now()})
		rc.mu.Unlock()
		if rc.respond == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		rc.respond(w, r, n)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) url() string { return rc.srv.URL + "/hook" }

func (rc *receiver) all() []request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]request(nil), rc.reqs...)
}

func (rc *receiver) count() int { return int(rc.n.Load()) }

// waitFor polls cond until it holds (see testwait.For).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testwait.For(t, 15*time.Second, what, cond)
}

func openBolt(t *testing.T, path string) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

// newBolt returns a fresh embedded store, closed when t ends.
func newBolt(t *testing.T) *boltstore.Store {
	t.Helper()
	s := openBolt(t, filepath.Join(t.TempDir(), "state.db"))
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// hookedUpload returns a 12 MiB receiving upload (three 5 MiB-plan parts)
// with webhooks on: its outbox holds upload.created.
func hookedUpload(id string, now time.Time) *store.Upload {
	u := &store.Upload{
		ID:               id,
		State:            store.StateReceiving,
		Size:             12 * mib,
		Plan:             store.Plan{FirstPartSize: store.MinPartSize, PartSize: store.MinPartSize},
		CompletionWindow: 24 * time.Hour,
		Token:            "to1tcmSFHeYY5KzyhOqVKMKb",
		Filename:         "holiday.mp4",
		Filetype:         "video/mp4",
		Metadata:         map[string]string{"userId": "42"},
		CreatedAt:        now,
		UpdatedAt:        now,
	}
	u.EnableWebhooks(now)
	return u
}

type updater interface {
	Create(ctx context.Context, u *store.Upload) error
	Get(ctx context.Context, id string) (*store.Upload, error)
	Update(ctx context.Context, id string, fn func(*store.Upload) error) (*store.Upload, error)
	ListActive(ctx context.Context) ([]string, error)
}

func mustCreate(t *testing.T, st updater, u *store.Upload) {
	t.Helper()
	if err := st.Create(t.Context(), u); err != nil {
		t.Fatalf("Create(%s): %v", u.ID, err)
	}
}

func mustUpdate(t *testing.T, st updater, id string, fn func(*store.Upload) error) *store.Upload {
	t.Helper()
	u, err := st.Update(t.Context(), id, fn)
	if err != nil {
		t.Fatalf("Update(%s): %v", id, err)
	}
	return u
}

func mustGet(t *testing.T, st updater, id string) *store.Upload {
	t.Helper()
	u, err := st.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return u
}

// outboxEmpty reports whether every listed upload's outbox is empty.
func outboxEmpty(t *testing.T, st updater, ids ...string) func() bool {
	return func() bool {
		for _, id := range ids {
			u, err := st.Get(t.Context(), id)
			if err != nil {
				t.Errorf("Get(%s): %v", id, err)
				return true
			}
			if len(u.Outbox) > 0 {
				return false
			}
		}
		return true
	}
}

func newDispatcher(t *testing.T, cfg webhook.Config, st webhook.Store) *webhook.Dispatcher {
	t.Helper()
	d, err := webhook.New(cfg, st)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return d
}

// run starts d.Run; the returned stop cancels it and waits for Run to
// return (also at the end of the test).
func run(t *testing.T, d *webhook.Dispatcher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			timer := time.NewTimer(15 * time.Second)
			defer timer.Stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-timer.C:
				t.Errorf("Run did not return within 15s of its context's end")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// clock is a fake clock, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// counter returns the value of tusgate_webhook_deliveries_total{outcome}.
func counter(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "tusgate_webhook_deliveries_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no tusgate_webhook_deliveries_total{outcome=%q}", outcome)
	return 0
}

// gauge returns the value of the gauge name.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
