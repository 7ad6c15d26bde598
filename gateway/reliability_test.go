package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
)

// patchHeader is the header of a raw tus PATCH at off.
func patchHeader(off int64) map[string]string {
	return map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Offset": strconv.FormatInt(off, 10), "Content-Type": "application/offset+octet-stream",
	}
}

var tusHeader = map[string]string{"Tus-Resumable": "1.0.0"}

// fileSize returns the size of upload id's data file.
func (h *harness) fileSize(t *testing.T, id string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(h.dataDir, id))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// touch sets the modification time of upload id's data file: the moment its
// last byte arrived, on the injected clock's timeline.
func (h *harness) touch(t *testing.T, id string, at time.Time) {
	t.Helper()
	if err := os.Chtimes(filepath.Join(h.dataDir, id), at, at); err != nil {
		t.Fatal(err)
	}
}

// tamper changes the record of id behind the gateway's back.
func (h *harness) tamper(t *testing.T, id string, fn func(*store.Upload)) {
	t.Helper()
	if _, err := h.st.Store.Update(t.Context(), id, func(u *store.Upload) error { fn(u); return nil }); err != nil {
		t.Fatalf("tamper with record %s: %v", id, err)
	}
}

// assertUnavailable checks a 503 with Retry-After and, unless HEAD, the
// state store message.
func assertUnavailable(t *testing.T, what string, resp *http.Response, body string) {
	t.Helper()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("%s: got status %d (body %q), want 503", what, resp.StatusCode, body)
	}
	if got := resp.Header.Get("Retry-After"); got != "5" {
		t.Errorf("%s: Retry-After got %q, want 5", what, got)
	}
	if resp.Request.Method != http.MethodHead && !strings.Contains(body, "state store unavailable, retry later") {
		t.Errorf("%s: body got %q, want it to say the state store is unavailable", what, body)
	}
	if strings.Contains(body, "injected") {
		t.Errorf("%s: body %q reveals the internal error", what, body)
	}
}

func TestStateStoreOutage(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 12 * MiB
	data := randomData(size)

	h.st.failCreate.Store(true)
	resp, body := h.do(t, http.MethodPost, h.endpoint, map[string]string{"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(size)}, nil)
	assertUnavailable(t, "POST with the store down", resp, body)
	h.st.failCreate.Store(false)

	u, id := h.create(t, size, nil)
	h.st.failGet.Store(true)
	resp, body = h.do(t, http.MethodPatch, u, patchHeader(0), bytes.NewReader(data[:MiB]))
	assertUnavailable(t, "PATCH with the store down", resp, body)
	resp, body = h.do(t, http.MethodHead, u, tusHeader, nil)
	assertUnavailable(t, "HEAD with the store down", resp, body)
	h.st.failGet.Store(false)
	if got := h.fileSize(t, id); got != 0 {
		t.Fatalf("data file after refused PATCH: got %d bytes, want 0", got)
	}

	// The store fails when the first part boundary (5 MiB) is crossed.
	h.st.failUpdate.Store(true)
	resp, body = h.do(t, http.MethodPatch, u, patchHeader(0), bytes.NewReader(data))
	assertUnavailable(t, "PATCH across a boundary with the store failing", resp, body)
	written := h.fileSize(t, id)
	if written < 5*MiB || written >= size {
		t.Fatalf("data file after the failed PATCH: got %d bytes, want the first part at least and not all", written)
	}
	if got := h.readAll(t, id, written); !bytes.Equal(got, data[:written]) {
		t.Fatalf("data file after the failed PATCH: bytes differ from the uploaded prefix")
	}
	resp, body = h.do(t, http.MethodHead, u, tusHeader, nil)
	assertUnavailable(t, "HEAD while the store still fails updates", resp, body)
	if rec := h.record(t, id); rec.Received != 0 {
		t.Fatalf("record during the outage: Received got %d, want 0", rec.Received)
	}

	// The store is back: HEAD records the bytes in the file and reports them.
	h.st.failUpdate.Store(false)
	info, err := h.client.Head(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	if info.Offset != written {
		t.Errorf("HEAD after the outage: offset got %d, want %d (the bytes in the file)", info.Offset, written)
	}
	if rec := h.record(t, id); rec.Received != written || rec.Complete {
		t.Errorf("record after HEAD: got received %d complete %v, want %d, false", rec.Received, rec.Complete, written)
	}
	if err := h.client.Upload(t.Context(), u, bytes.NewReader(data), size, 4*MiB); err != nil {
		t.Fatal(err)
	}
	if rec := h.record(t, id); !rec.Complete || rec.Received != size || rec.State != store.StateReceiving {
		t.Errorf("record after the resumed upload: got complete %v received %d state %s", rec.Complete, rec.Received, rec.State)
	}
	if !bytes.Equal(h.readAll(t, id, size), data) {
		t.Errorf("stored bytes differ from the uploaded ones")
	}
	got := h.n.For(id)
	want := []notification{
		{ID: id, State: store.StateReceiving},
		{ID: id, Received: written, State: store.StateReceiving},
		{ID: id, Received: 12 * MiB, Complete: true, State: store.StateReceiving},
	}
	// Between the catch-up and the completion, the 10 MiB boundary.
	if len(got) != 4 || got[2].Received < 10*MiB || got[2].Complete {
		t.Fatalf("notifications: got %+v, want creation, catch-up at %d, the 10 MiB boundary, completion", got, written)
	}
	if got = append(got[:2], got[3]); !equalNotifications(got, want) {
		t.Errorf("notifications: got %+v, want %+v", got, want)
	}
}

func TestStoreFailsAtCompletion(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 3 * MiB
	data := randomData(size)
	u, id := h.create(t, size, nil)
	h.st.failUpdates.Store(1) // the completion record
	resp, body := h.do(t, http.MethodPatch, u, patchHeader(0), bytes.NewReader(data))
	assertUnavailable(t, "PATCH completing the upload with the store failing", resp, body)
	if rec := h.record(t, id); rec.Complete {
		t.Fatalf("record: got complete, want not yet")
	}
	info, err := h.client.Head(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	if info.Offset != size {
		t.Errorf("HEAD: offset got %d, want %d", info.Offset, size)
	}
	if rec := h.record(t, id); !rec.Complete || rec.Received != size {
		t.Errorf("record after HEAD: got complete %v received %d, want complete", rec.Complete, rec.Received)
	}
	if got := h.n.For(id); len(got) != 2 || !got[1].Complete {
		t.Errorf("notifications: got %+v, want creation and completion", got)
	}
}

func TestCreationWithUploadStoreFailure(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	data := randomData(6 * MiB)
	h.st.failUpdates.Store(1) // the 5 MiB boundary
	header := map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(len(data)), "Content-Type": "application/offset+octet-stream",
	}
	resp, body := h.do(t, http.MethodPost, h.endpoint, header, bytes.NewReader(data))
	assertUnavailable(t, "creation-with-upload across a boundary with the store failing", resp, body)
	if entries, _ := os.ReadDir(h.dataDir); len(entries) != 0 {
		t.Errorf("data dir: got %d entries, want none (the client never learnt the URL)", len(entries))
	}
	if ids, err := h.st.ListActive(t.Context()); err != nil || len(ids) != 0 {
		t.Errorf("active records: got %v (%v), want none", ids, err)
	}
}

func TestReconcile(t *testing.T) {
	t.Parallel()
	data := randomData(12 * MiB)
	tests := []struct {
		name string
		// setup creates an upload through the handler and damages it.
		setup func(t *testing.T, h *harness) string
		// want checks the record; changed says whether a notification is due.
		want    func(t *testing.T, rec *store.Upload)
		changed bool
	}{
		{
			name: "data file missing",
			setup: func(t *testing.T, h *harness) string {
				u, id := h.create(t, 12*MiB, nil)
				if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data[:6*MiB]), 6*MiB, -1); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(filepath.Join(h.dataDir, id)); err != nil {
					t.Fatal(err)
				}
				return id
			},
			want:    wantDataLost,
			changed: true,
		},
		{
			name: "info file missing",
			setup: func(t *testing.T, h *harness) string {
				_, id := h.create(t, 12*MiB, nil)
				if err := os.Remove(filepath.Join(h.dataDir, id+".info")); err != nil {
					t.Fatal(err)
				}
				return id
			},
			want:    wantDataLost,
			changed: true,
		},
		{
			name: "complete in the file, not in the record",
			setup: func(t *testing.T, h *harness) string {
				u, id := h.create(t, 6*MiB, nil)
				if err := h.client.Upload(t.Context(), u, bytes.NewReader(data[:6*MiB]), 6*MiB, 6*MiB); err != nil {
					t.Fatal(err)
				}
				h.tamper(t, id, func(r *store.Upload) { r.Received, r.Complete = 5*MiB, false })
				return id
			},
			want: func(t *testing.T, rec *store.Upload) {
				if !rec.Complete || rec.Received != 6*MiB || rec.State != store.StateReceiving {
					t.Errorf("got complete %v received %d state %s, want complete, %d", rec.Complete, rec.Received, rec.State, 6*MiB)
				}
			},
			changed: true,
		},
		{
			name: "boundary in the file, not in the record",
			setup: func(t *testing.T, h *harness) string {
				u, id := h.create(t, 12*MiB, nil)
				if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data[:7*MiB]), 7*MiB, -1); err != nil {
					t.Fatal(err)
				}
				h.tamper(t, id, func(r *store.Upload) { r.Received = 0 })
				return id
			},
			want: func(t *testing.T, rec *store.Upload) {
				if rec.Complete || rec.Received != 7*MiB {
					t.Errorf("got complete %v received %d, want not complete, %d", rec.Complete, rec.Received, 7*MiB)
				}
			},
			changed: true,
		},
		{
			name: "boundary of a deferred-length upload",
			setup: func(t *testing.T, h *harness) string {
				u, id := h.create(t, tusclient.Deferred, nil)
				if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data[:6*MiB]), 6*MiB, -1); err != nil {
					t.Fatal(err)
				}
				h.tamper(t, id, func(r *store.Upload) { r.Received = 0 })
				return id
			},
			want: func(t *testing.T, rec *store.Upload) {
				if rec.Complete || rec.Received != 6*MiB || !rec.SizeDeferred {
					t.Errorf("got complete %v received %d deferred %v, want %d, deferred", rec.Complete, rec.Received, rec.SizeDeferred, 6*MiB)
				}
			},
			changed: true,
		},
		{
			name: "complete record, data file cut short",
			setup: func(t *testing.T, h *harness) string {
				u, id := h.create(t, 6*MiB, nil)
				if err := h.client.Upload(t.Context(), u, bytes.NewReader(data[:6*MiB]), 6*MiB, 6*MiB); err != nil {
					t.Fatal(err)
				}
				if err := os.Truncate(filepath.Join(h.dataDir, id), 2*MiB); err != nil {
					t.Fatal(err)
				}
				return id
			},
			want:    wantDataLost,
			changed: true,
		},
		{
			name: "up to date",
			setup: func(t *testing.T, h *harness) string {
				u, id := h.create(t, 12*MiB, nil)
				if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data[:7*MiB]), 7*MiB, -1); err != nil {
					t.Fatal(err)
				}
				return id
			},
			want: func(t *testing.T, rec *store.Upload) {
				if rec.State != store.StateReceiving || rec.Received < 5*MiB || rec.Complete {
					t.Errorf("got state %s received %d complete %v, want unchanged", rec.State, rec.Received, rec.Complete)
				}
			},
		},
		{
			name: "terminal record left alone",
			setup: func(t *testing.T, h *harness) string {
				_, id := h.create(t, 12*MiB, nil)
				h.tamper(t, id, func(r *store.Upload) { _ = r.Fail(store.ReasonTokenRejected, "api.video rejected the token", testNow) })
				if err := os.Remove(filepath.Join(h.dataDir, id)); err != nil {
					t.Fatal(err)
				}
				return id
			},
			want: func(t *testing.T, rec *store.Upload) {
				if rec.State != store.StateFailed || rec.Error.Reason != store.ReasonTokenRejected {
					t.Errorf("got state %s error %+v, want failed token_rejected", rec.State, rec.Error)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, nil)
			id := tt.setup(t, h)
			before := len(h.n.For(id))
			if err := h.gw.Reconcile(t.Context()); err != nil {
				t.Fatalf("Reconcile: %v", err)
			}
			tt.want(t, h.record(t, id))
			notes := h.n.For(id)[before:]
			if want := map[bool]int{true: 1, false: 0}[tt.changed]; len(notes) != want {
				t.Errorf("notifications from Reconcile: got %+v, want %d", notes, want)
			}
			// A second run finds nothing to do.
			if err := h.gw.Reconcile(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := len(h.n.For(id)) - before - len(notes); got != 0 {
				t.Errorf("second Reconcile: got %d notifications, want 0", got)
			}
		})
	}
}

func TestReconcileStoreDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.create(t, 10, nil)
	h.st.failList.Store(true)
	if err := h.gw.Reconcile(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Reconcile with the store down: got %v, want store.ErrUnavailable", err)
	}
	h.st.failList.Store(false)
	h.st.failGet.Store(true)
	if err := h.gw.Reconcile(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Reconcile with Get failing: got %v, want store.ErrUnavailable", err)
	}
}

// clockHarness is a harness whose gateway runs on clk.
func clockHarness(t *testing.T, clk *clock, mod func(*gateway.Config)) *harness {
	t.Helper()
	return newHarness(t, func(c *gateway.Config) {
		c.Now = clk.Now
		if mod != nil {
			mod(c)
		}
	})
}

func TestStalled(t *testing.T) {
	t.Parallel()
	clk := newClock(testNow)
	h := clockHarness(t, clk, func(c *gateway.Config) { c.IdleTimeout = time.Minute })
	const size = 6 * MiB
	data := randomData(size)
	u, id := h.create(t, size, nil)
	cur := id
	stalled := func() any {
		t.Helper()
		_, st, _ := h.status(t, cur)
		return st["stalled"]
	}

	steps := []struct {
		name string
		act  func()
		want bool
	}{
		{"just created", func() {}, false},
		{"no byte for 59s after creation", func() { clk.Add(59 * time.Second) }, false},
		{"no byte for 1m after creation", func() { clk.Add(time.Second) }, true},
		{"a byte arrives", func() {
			if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data[:MiB]), MiB, -1); err != nil {
				t.Fatal(err)
			}
			h.touch(t, id, clk.Now())
		}, false},
		{"59s later", func() { clk.Add(59 * time.Second) }, false},
		{"61s later", func() { clk.Add(2 * time.Second) }, true},
		{"resumed", func() {
			if _, err := h.client.Patch(t.Context(), u, MiB, bytes.NewReader(data[MiB:2*MiB]), MiB, -1); err != nil {
				t.Fatalf("PATCH on a stalled upload: %v", err)
			}
			h.touch(t, id, clk.Now())
		}, false},
		{"complete", func() {
			if err := h.client.Upload(t.Context(), u, bytes.NewReader(data), size, size); err != nil {
				t.Fatal(err)
			}
			clk.Add(time.Hour)
		}, false},
	}
	for _, s := range steps {
		s.act()
		if got := stalled(); got != s.want {
			t.Errorf("%s: stalled got %v, want %v", s.name, got, s.want)
		}
	}

	// A terminal upload is never stalled.
	_, id2 := h.create(t, size, nil)
	h.tamper(t, id2, func(r *store.Upload) { _ = r.Fail(store.ReasonTokenRejected, "rejected", clk.Now()) })
	clk.Add(time.Hour)
	cur = id2
	if got := stalled(); got != false {
		t.Errorf("failed upload: stalled got %v, want false", got)
	}
}

func TestUploadExpiresHeader(t *testing.T) {
	t.Parallel()
	clk := newClock(testNow)
	const expiry = 6 * time.Hour
	h := clockHarness(t, clk, func(c *gateway.Config) { c.UploadExpiry = expiry })
	httpDate := func(at time.Time) string { return at.Add(expiry).UTC().Format(http.TimeFormat) }
	mtime := func(id string) time.Time {
		t.Helper()
		fi, err := os.Stat(filepath.Join(h.dataDir, id))
		if err != nil {
			t.Fatal(err)
		}
		return fi.ModTime()
	}

	resp, _ := h.do(t, http.MethodOptions, h.endpoint, nil, nil)
	ext := resp.Header.Get("Tus-Extension")
	for _, want := range []string{"creation", "creation-with-upload", "termination", "creation-defer-length", "expiration"} {
		if !strings.Contains(ext, want) {
			t.Errorf("OPTIONS Tus-Extension: got %q, want it to list %s", ext, want)
		}
	}

	const size = 3 * MiB
	data := randomData(size)
	resp, body := h.do(t, http.MethodPost, h.endpoint, map[string]string{"Tus-Resumable": "1.0.0", "Upload-Length": strconv.Itoa(size)}, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: got %d %q", resp.StatusCode, body)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	u := loc.String()
	id := idOf(u)
	if got, want := resp.Header.Get("Upload-Expires"), httpDate(clk.Now()); got != want {
		t.Errorf("POST Upload-Expires: got %q, want %q (creation + expiry)", got, want)
	}

	clk.Add(time.Hour)
	resp, body = h.do(t, http.MethodHead, u, tusHeader, nil)
	if got, want := resp.Header.Get("Upload-Expires"), httpDate(testNow); resp.StatusCode != http.StatusOK || got != want {
		t.Errorf("HEAD before any byte: got %d Upload-Expires %q, want 200 %q (creation + expiry)", resp.StatusCode, got, want)
	}

	resp, body = h.do(t, http.MethodPatch, u, patchHeader(0), bytes.NewReader(data[:MiB]))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH: got %d %q", resp.StatusCode, body)
	}
	if got, want := resp.Header.Get("Upload-Expires"), httpDate(mtime(id)); got != want {
		t.Errorf("PATCH Upload-Expires: got %q, want %q (last write + expiry)", got, want)
	}
	h.touch(t, id, clk.Now())
	resp, _ = h.do(t, http.MethodHead, u, tusHeader, nil)
	if got, want := resp.Header.Get("Upload-Expires"), httpDate(clk.Now()); got != want {
		t.Errorf("HEAD after a byte: Upload-Expires got %q, want %q (last write + expiry)", got, want)
	}

	resp, _ = h.do(t, http.MethodPatch, u, patchHeader(MiB), bytes.NewReader(data[MiB:]))
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Expires") != "" {
		t.Errorf("PATCH completing the upload: got %d Upload-Expires %q, want 204 without", resp.StatusCode, resp.Header.Get("Upload-Expires"))
	}
	resp, _ = h.do(t, http.MethodHead, u, tusHeader, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Upload-Expires") != "" {
		t.Errorf("HEAD of a complete upload: got %d Upload-Expires %q, want 200 without", resp.StatusCode, resp.Header.Get("Upload-Expires"))
	}

	// Creation with upload: the bytes just written count.
	u2, _, err := h.client.CreateWithUpload(t.Context(), h.endpoint, size, nil, data[:MiB])
	if err != nil {
		t.Fatal(err)
	}
	info, err := h.client.Head(t.Context(), u2)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.Header.Get("Upload-Expires"), httpDate(mtime(idOf(u2))); got != want {
		t.Errorf("HEAD after creation-with-upload: Upload-Expires got %q, want %q", got, want)
	}
}

func TestExpireUploads(t *testing.T) {
	t.Parallel()
	clk := newClock(testNow)
	h := clockHarness(t, clk, func(c *gateway.Config) { c.UploadExpiry = 24 * time.Hour })
	data := randomData(6 * MiB)
	const size = 6 * MiB

	abandoned, abandonedID := h.create(t, size, nil)
	if _, err := h.client.Patch(t.Context(), abandoned, 0, bytes.NewReader(data[:MiB]), MiB, -1); err != nil {
		t.Fatal(err)
	}
	h.touch(t, abandonedID, clk.Now())
	empty, emptyID := h.create(t, size, nil)
	recent, recentID := h.create(t, size, nil)
	if _, err := h.client.Patch(t.Context(), recent, 0, bytes.NewReader(data[:MiB]), MiB, -1); err != nil {
		t.Fatal(err)
	}
	complete, completeID := h.create(t, size, nil)
	if err := h.client.Upload(t.Context(), complete, bytes.NewReader(data), size, size); err != nil {
		t.Fatal(err)
	}
	h.touch(t, completeID, clk.Now())

	clk.Add(23 * time.Hour)
	h.touch(t, recentID, clk.Now())
	if n, err := h.gw.ExpireUploads(t.Context()); n != 0 || err != nil {
		t.Fatalf("ExpireUploads after 23h: got %d, %v, want 0, nil", n, err)
	}
	clk.Add(time.Hour)
	n, err := h.gw.ExpireUploads(t.Context())
	if n != 2 || err != nil {
		t.Fatalf("ExpireUploads after 24h: got %d, %v, want 2 (the abandoned and the empty upload), nil", n, err)
	}
	for _, id := range []string{abandonedID, emptyID} {
		if _, err := h.st.Get(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("record of expired upload %s: got %v, want store.ErrNotFound", id, err)
		}
		for _, name := range []string{id, id + ".info"} {
			if _, err := os.Stat(filepath.Join(h.dataDir, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("file %s of an expired upload: got %v, want it removed", name, err)
			}
		}
		if got := h.n.For(id); len(got) == 0 || got[len(got)-1].State != "" {
			t.Errorf("notifications of expired upload %s: got %+v, want a last one after the record is gone", id, got)
		}
		if code, _, _ := h.status(t, id); code != http.StatusNotFound {
			t.Errorf("status of expired upload %s: got %d, want 404", id, code)
		}
	}
	for _, u := range []string{abandoned, empty} {
		resp, _ := h.do(t, http.MethodHead, u, tusHeader, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("HEAD on an expired upload: got %d, want 404", resp.StatusCode)
		}
	}
	resp, body := h.do(t, http.MethodPatch, abandoned, patchHeader(MiB), bytes.NewReader(data[MiB:2*MiB]))
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "upload not found") {
		t.Errorf("PATCH on an expired upload: got %d %q, want 404 upload not found", resp.StatusCode, body)
	}

	// The recent upload resumes; the complete one waits for the forwarder.
	if err := h.client.Upload(t.Context(), recent, bytes.NewReader(data), size, size); err != nil {
		t.Errorf("resume the recent upload: %v", err)
	}
	if rec := h.record(t, completeID); !rec.Complete || rec.State != store.StateReceiving {
		t.Errorf("complete upload: got complete %v state %s", rec.Complete, rec.State)
	}
	if got := h.readAll(t, completeID, size); !bytes.Equal(got, data) {
		t.Errorf("complete upload: bytes differ")
	}
	clk.Add(100 * time.Hour)
	if n, err := h.gw.ExpireUploads(t.Context()); n != 0 || err != nil {
		t.Errorf("ExpireUploads with only complete uploads left: got %d, %v, want 0, nil", n, err)
	}

	h.st.failList.Store(true)
	if _, err := h.gw.ExpireUploads(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("ExpireUploads with the store down: got %v, want store.ErrUnavailable", err)
	}
}

func TestExpireUploadsRecordDeleteFails(t *testing.T) {
	t.Parallel()
	clk := newClock(testNow)
	h := clockHarness(t, clk, nil)
	u, id := h.create(t, 10, nil)
	clk.Add(25 * time.Hour)
	h.st.failDelete.Store(true)
	if n, err := h.gw.ExpireUploads(t.Context()); n != 0 || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("ExpireUploads with Delete failing: got %d, %v, want 0, store.ErrUnavailable", n, err)
	}
	h.st.failDelete.Store(false)
	// The next run finishes the job.
	if n, err := h.gw.ExpireUploads(t.Context()); n != 1 || err != nil {
		t.Fatalf("ExpireUploads once the store is back: got %d, %v, want 1, nil", n, err)
	}
	if _, err := h.client.Head(t.Context(), u); tusclient.StatusCode(err) != http.StatusNotFound {
		t.Errorf("HEAD: got %v, want 404", err)
	}
	if _, err := h.st.Get(t.Context(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("record: got %v, want store.ErrNotFound", err)
	}
}

func TestRunJanitor(t *testing.T) {
	t.Parallel()
	clk := newClock(testNow)
	h := clockHarness(t, clk, nil)
	_, id := h.create(t, 10, nil)
	clk.Add(24 * time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.gw.RunJanitor(ctx, 5*time.Millisecond)
	}()
	waitFor(t, "the janitor to expire the upload", func() bool {
		_, err := h.st.Get(t.Context(), id)
		return errors.Is(err, store.ErrNotFound)
	})
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("RunJanitor did not return after its context ended")
	}
	if got := h.logs.FilterMessage("expired abandoned uploads").Len(); got == 0 {
		t.Errorf("janitor logs: got no count of expired uploads")
	}
}

func TestDiskFull(t *testing.T) {
	t.Parallel()
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount a small tmpfs as a full-disk data dir (needs root and CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() {
		// Detached: tusd v2.9.1's filestore leaks the descriptor of an .info
		// file whose write failed (closed only by a finalizer), which would
		// keep the file system busy.
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	h := newHarness(t, func(c *gateway.Config) { c.DataDir = mnt })
	h.dataDir = mnt
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 3*MiB), 0o600); err != nil {
		t.Fatal(err)
	}

	const size = 7 * MiB
	data := randomData(size)
	u, id := h.create(t, size, nil)
	resp, body := h.do(t, http.MethodPatch, u, patchHeader(0), bytes.NewReader(data))
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Fatalf("PATCH larger than the free space: got %d %q, want 507", resp.StatusCode, body)
	}
	if resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "disk is full") {
		t.Errorf("507: got Retry-After %q body %q, want a delay and a body saying the disk is full", resp.Header.Get("Retry-After"), body)
	}
	info, err := h.client.Head(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	written := h.fileSize(t, id)
	if info.Offset != written || written == 0 || written >= size {
		t.Fatalf("HEAD after the full disk: offset got %d, file holds %d, want equal, some but not all of %d", info.Offset, written, size)
	}
	if !bytes.Equal(h.readAll(t, id, written), data[:written]) {
		t.Fatalf("bytes kept after the full disk differ from the uploaded prefix")
	}

	// No room for a new upload's .info file either.
	resp, body = h.do(t, http.MethodPost, h.endpoint, map[string]string{"Tus-Resumable": "1.0.0", "Upload-Length": "10"}, nil)
	if resp.StatusCode != http.StatusInsufficientStorage {
		t.Errorf("POST on a full disk: got %d %q, want 507", resp.StatusCode, body)
	}
	if entries, _ := os.ReadDir(mnt); len(entries) != 3 {
		t.Errorf("data dir after the refused creation: got %d entries, want 3 (filler, the upload and its .info)", len(entries))
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := h.client.Upload(t.Context(), u, bytes.NewReader(data), size, size); err != nil {
		t.Fatalf("resume once space is back: %v", err)
	}
	if !bytes.Equal(h.readAll(t, id, size), data) {
		t.Errorf("stored bytes differ from the uploaded ones")
	}
	if rec := h.record(t, id); !rec.Complete || rec.Received != size {
		t.Errorf("record: got complete %v received %d, want complete", rec.Complete, rec.Received)
	}
}

// wantDataLost checks that reconciliation failed the record as data_lost.
func wantDataLost(t *testing.T, rec *store.Upload) {
	t.Helper()
	if rec.State != store.StateFailed || rec.Error == nil || rec.Error.Reason != store.ReasonDataLost {
		t.Errorf("got state %s error %+v, want failed data_lost", rec.State, rec.Error)
	}
}
