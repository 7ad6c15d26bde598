package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
)

// fakeInspector stands in for api.video's GET /upload-tokens/{token}.
type fakeInspector struct {
	deadline time.Time
	err      error
	// block makes every lookup wait for its context to end.
	block bool

	mu    sync.Mutex
	calls []string
}

func (f *fakeInspector) TokenDeadline(ctx context.Context, token string) (time.Time, error) {
	f.mu.Lock()
	f.calls = append(f.calls, token)
	f.mu.Unlock()
	if f.block {
		<-ctx.Done()
		return time.Time{}, fmt.Errorf("GET /upload-tokens/%s: %w", token, ctx.Err())
	}
	return f.deadline, f.err
}

func (f *fakeInspector) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// assertNothingCreated fails if the data dir holds a file or the store an upload.
func (h *harness) assertNothingCreated(t *testing.T) {
	t.Helper()
	if entries, _ := os.ReadDir(h.dataDir); len(entries) != 0 {
		t.Errorf("data dir: got %d entries, want none", len(entries))
	}
	if ids, err := h.st.ListActive(t.Context()); err != nil || len(ids) != 0 {
		t.Errorf("active records: got %v (%v), want none", ids, err)
	}
}

func TestTokenInspector(t *testing.T) {
	t.Parallel()
	const token = "to1InspectedTokenXYZ"
	deadline := testNow.Add(2 * time.Hour)
	// tokenExpiresAt disagrees with api.video: api.video wins.
	meta := map[string]string{"token": token, "tokenExpiresAt": testNow.Add(30 * time.Minute).Format(time.RFC3339), "filename": "a.mp4"}
	tests := []struct {
		name         string
		insp         *fakeInspector
		cfg          func(*gateway.Config)
		want         int
		wantBody     string
		wantDeadline time.Time
	}{
		{name: "known with deadline", insp: &fakeInspector{deadline: deadline}, want: http.StatusCreated, wantDeadline: deadline},
		{name: "known without deadline", insp: &fakeInspector{}, want: http.StatusCreated},
		{
			name:     "unknown",
			insp:     &fakeInspector{err: fmt.Errorf("GET /upload-tokens/%s: 404: %w", token, gateway.ErrUnknownToken)},
			want:     http.StatusForbidden,
			wantBody: "ERR_TOKEN_UNKNOWN: the upload token is unknown to api.video or expired",
		},
		{
			name:     "outage",
			insp:     &fakeInspector{err: fmt.Errorf("GET https://ws.api.video/upload-tokens/%s: connection refused", token)},
			want:     http.StatusServiceUnavailable,
			wantBody: "ERR_TOKEN_CHECK_UNAVAILABLE",
		},
		{
			name:     "lookup timeout",
			insp:     &fakeInspector{block: true},
			cfg:      func(c *gateway.Config) { c.TokenLookupTimeout = 20 * time.Millisecond },
			want:     http.StatusServiceUnavailable,
			wantBody: "ERR_TOKEN_CHECK_UNAVAILABLE",
		},
		{
			name:     "past deadline",
			insp:     &fakeInspector{deadline: testNow.Add(-time.Second)},
			want:     http.StatusBadRequest,
			wantBody: "ERR_TOKEN_EXPIRED: token expired at 2030-01-02T03:04:04Z",
		},
		{
			name:     "deadline too close",
			insp:     &fakeInspector{deadline: testNow.Add(time.Minute)},
			cfg:      func(c *gateway.Config) { c.TokenMinLifetime = 5 * time.Minute },
			want:     http.StatusBadRequest,
			wantBody: "less than 5m0s from now",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *gateway.Config) {
				c.TokenRequired = false
				c.Tokens = tt.insp
				if tt.cfg != nil {
					tt.cfg(c)
				}
			})
			resp, body := h.do(t, http.MethodPost, h.endpoint, map[string]string{
				"Tus-Resumable": "1.0.0", "Upload-Length": "10", "Upload-Metadata": tusclient.EncodeMetadata(meta),
			}, nil)
			if resp.StatusCode != tt.want {
				t.Fatalf("POST: got %d %q, want %d", resp.StatusCode, body, tt.want)
			}
			if calls := tt.insp.Calls(); len(calls) != 1 || calls[0] != token {
				t.Errorf("inspector calls: got %d (token passed: %v), want 1 with the token", len(calls), len(calls) > 0 && calls[0] == token)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("body: got %q, want it to contain %q", body, tt.wantBody)
			}
			if strings.Contains(body, token) {
				t.Errorf("body reveals the token: %q", body)
			}
			h.assertNoSecret(t, token)
			if resp.StatusCode == http.StatusServiceUnavailable {
				if got := resp.Header.Get("Retry-After"); got == "" {
					t.Errorf("Retry-After: got none, want a delay")
				} else if _, err := strconv.Atoi(got); err != nil {
					t.Errorf("Retry-After: got %q, want seconds", got)
				}
			}
			if resp.StatusCode != http.StatusCreated {
				h.assertNothingCreated(t)
				return
			}
			id := idOf(resp.Header.Get("Location"))
			rec := h.record(t, id)
			if !rec.TokenDeadline.Equal(tt.wantDeadline) || rec.TokenManaged || rec.Token.Reveal() != token {
				t.Errorf("record: got deadline %v managed %v token kept %v, want deadline %v, delegated, token kept",
					rec.TokenDeadline, rec.TokenManaged, rec.Token.Reveal() == token, tt.wantDeadline)
			}
			_, st, _ := h.status(t, id)
			var want any
			if !tt.wantDeadline.IsZero() {
				want = tt.wantDeadline.Format(time.RFC3339)
			}
			if st["tokenDeadline"] != want {
				t.Errorf("status tokenDeadline: got %v, want %v", st["tokenDeadline"], want)
			}
		})
	}
}

func TestTokenInspectorNotAskedWithoutToken(t *testing.T) {
	t.Parallel()
	insp := &fakeInspector{err: gateway.ErrUnknownToken}
	h := newHarness(t, func(c *gateway.Config) { c.Tokens = insp })
	_, id := h.create(t, 10, map[string]string{"filename": "a.mp4"})
	if calls := insp.Calls(); len(calls) != 0 {
		t.Errorf("inspector calls: got %d, want 0", len(calls))
	}
	if rec := h.record(t, id); !rec.TokenManaged {
		t.Errorf("record TokenManaged: got false, want true")
	}
}

func TestManagedMode(t *testing.T) {
	t.Parallel()
	const token = "to1DelegatedToken"
	tests := []struct {
		name        string
		meta        map[string]string
		wantManaged bool
		wantToken   string
	}{
		{"no token", map[string]string{"filename": "a.mp4", "tokenExpiresAt": testNow.Add(time.Hour).Format(time.RFC3339)}, true, ""},
		{"client token", map[string]string{"filename": "a.mp4", "token": token}, false, token},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *gateway.Config) { c.TokenRequired = false })
			u, id := h.create(t, 2*MiB, tt.meta)
			rec := h.record(t, id)
			if rec.TokenManaged != tt.wantManaged || rec.Token.Reveal() != tt.wantToken || !rec.TokenDeadline.IsZero() || rec.TokenMints != 0 {
				t.Errorf("record: got managed %v, token %q, deadline %v, mints %d; want managed %v, token %q, no deadline, no mints",
					rec.TokenManaged, rec.Token, rec.TokenDeadline, rec.TokenMints, tt.wantManaged, store.Secret(tt.wantToken))
			}
			if err := h.client.Upload(t.Context(), u, bytes.NewReader(randomData(2*MiB)), 2*MiB, MiB); err != nil {
				t.Fatal(err)
			}
			if rec := h.record(t, id); !rec.Complete || rec.State != store.StateReceiving {
				t.Errorf("record after upload: got complete %v state %s, want complete, receiving", rec.Complete, rec.State)
			}
		})
	}
}

func TestNotifyOnCreation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	_, id := h.create(t, 10, nil)
	// The recorder reads the record when notified: the state shows it existed.
	want := []notification{{ID: id, State: store.StateReceiving}}
	if got := h.n.For(id); !equalNotifications(got, want) {
		t.Errorf("notifications after creation: got %+v, want %+v", got, want)
	}

	// Creation-with-upload: the creation comes first, then the completion.
	u, _, err := h.client.CreateWithUpload(t.Context(), h.endpoint, 3, nil, []byte("abc"))
	if err != nil {
		t.Fatal(err)
	}
	id2 := idOf(u)
	want = []notification{{ID: id2, State: store.StateReceiving}, {ID: id2, Received: 3, Complete: true, State: store.StateReceiving}}
	if got := h.n.For(id2); !equalNotifications(got, want) {
		t.Errorf("notifications after creation-with-upload: got %+v, want %+v", got, want)
	}

	// A refused creation notifies nobody.
	h.st.failCreate.Store(true)
	if _, err := h.client.Create(t.Context(), h.endpoint, 10, nil); tusclient.StatusCode(err) != http.StatusServiceUnavailable {
		t.Fatalf("create with a failing store: got %v, want 503", err)
	}
	h.n.mu.Lock()
	n := len(h.n.got)
	h.n.mu.Unlock()
	if n != 3 {
		t.Errorf("notifications in all: got %d, want 3", n)
	}
}

// patchReq sends a raw PATCH of body at off.
func (h *harness) patchReq(t *testing.T, u string, off int64, body []byte) (*http.Response, string) {
	t.Helper()
	return h.do(t, http.MethodPatch, u, map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Offset": strconv.FormatInt(off, 10), "Content-Type": "application/offset+octet-stream",
	}, bytes.NewReader(body))
}

func TestTokenDeadlinePassed(t *testing.T) {
	t.Parallel()
	const size = 8 * MiB
	deadline := testNow.Add(time.Hour)
	const wantMsg = "upload failed: deadline_missed: the upload token expired at 2030-01-02T04:04:05Z before the first part reached api.video"
	tests := []struct {
		name string
		meta map[string]string
		// prepare changes the record once 6 MiB are in.
		prepare    func(*store.Upload, time.Time) error
		wantFailed bool
	}{
		{
			name:       "delegated, part 1 not delivered",
			meta:       map[string]string{"token": "to1Delegated", "tokenExpiresAt": deadline.Format(time.RFC3339)},
			wantFailed: true,
		},
		{
			name: "delegated, part 1 delivered",
			meta: map[string]string{"token": "to1Delegated", "tokenExpiresAt": deadline.Format(time.RFC3339)},
			prepare: func(u *store.Upload, now time.Time) error {
				if _, err := u.Claim(1, "fwd", now.Add(time.Minute), now); err != nil {
					return err
				}
				return u.Deliver(1, "vi1", store.Assets{}, now)
			},
		},
		{
			name: "managed, minted token expired",
			meta: nil,
			prepare: func(u *store.Upload, now time.Time) error {
				return u.SetToken("to1Minted", deadline, now)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := newClock(testNow)
			h := newHarness(t, func(c *gateway.Config) {
				c.TokenRequired = false
				c.Now = clk.Now
			})
			data := randomData(size)
			u, id := h.create(t, size, tt.meta)
			if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data[:6*MiB]), 6*MiB, -1); err != nil {
				t.Fatal(err)
			}
			if tt.prepare != nil {
				if _, err := h.st.Update(t.Context(), id, func(r *store.Upload) error { return tt.prepare(r, clk.Now()) }); err != nil {
					t.Fatal(err)
				}
			}
			received := h.record(t, id).Received
			clk.Set(deadline.Add(time.Second))

			resp, body := h.patchReq(t, u, 6*MiB, data[6*MiB:7*MiB])
			if !tt.wantFailed {
				if resp.StatusCode != http.StatusNoContent {
					t.Errorf("PATCH after the deadline: got %d %q, want 204", resp.StatusCode, body)
				}
				if info, err := h.client.Head(t.Context(), u); err != nil || info.Offset != 7*MiB {
					t.Errorf("HEAD after the deadline: got %+v, %v, want offset %d", info, err, 7*MiB)
				}
				if rec := h.record(t, id); rec.State.Terminal() {
					t.Errorf("record: got state %s error %+v, want not terminal", rec.State, rec.Error)
				}
				return
			}
			if resp.StatusCode != http.StatusGone || !strings.Contains(body, wantMsg) {
				t.Errorf("PATCH after the deadline: got %d %q, want 410 containing %q", resp.StatusCode, body, wantMsg)
			}
			if resp, _ := h.do(t, http.MethodHead, u, map[string]string{"Tus-Resumable": "1.0.0"}, nil); resp.StatusCode != http.StatusGone {
				t.Errorf("HEAD after the deadline: got %d, want 410", resp.StatusCode)
			}
			rec := h.record(t, id)
			if rec.State != store.StateFailed || rec.Error == nil || rec.Error.Reason != store.ReasonDeadlineMissed {
				t.Errorf("record: got state %s error %+v, want failed deadline_missed", rec.State, rec.Error)
			}
			if rec.Received != received {
				t.Errorf("record Received: got %d, want %d (no bytes taken after the failure)", rec.Received, received)
			}
			if n, err := h.gw.Source().Offset(t.Context(), id); err != nil || n != 6*MiB {
				t.Errorf("bytes in the data store: got %d, %v, want %d", n, err, 6*MiB)
			}
			got := h.n.For(id)
			if n := len(got); n == 0 || got[n-1].State != store.StateFailed {
				t.Errorf("notifications: got %+v, want the last with state failed", got)
			}
			_, st, _ := h.status(t, id)
			if e, _ := st["error"].(map[string]any); st["state"] != "failed" || e["reason"] != "deadline_missed" {
				t.Errorf("status: got %v, want failed with reason deadline_missed", st)
			}
		})
	}
}

// The forwarder's timer fails the upload between the gateway's read of the
// record and its update: the client gets 410 with the forwarder's reason.
func TestTokenDeadlineFailedByForwarderFirst(t *testing.T) {
	t.Parallel()
	clk := newClock(testNow)
	h := newHarness(t, func(c *gateway.Config) { c.Now = clk.Now })
	deadline := testNow.Add(time.Hour)
	u, id := h.create(t, 10, map[string]string{"token": "to1Delegated", "tokenExpiresAt": deadline.Format(time.RFC3339)})
	notified := len(h.n.For(id))
	clk.Set(deadline)
	race := func() {
		if _, err := h.st.Store.Update(t.Context(), id, func(r *store.Upload) error {
			return r.Fail(store.ReasonDeadlineMissed, "failed by the forwarder", deadline)
		}); err != nil {
			t.Errorf("fail by the forwarder: %v", err)
		}
	}
	h.st.beforeUpdate.Store(&race)
	resp, body := h.patchReq(t, u, 0, []byte("abc"))
	if want := "upload failed: deadline_missed: failed by the forwarder"; resp.StatusCode != http.StatusGone || !strings.Contains(body, want) {
		t.Errorf("PATCH: got %d %q, want 410 containing %q", resp.StatusCode, body, want)
	}
	if h.st.beforeUpdate.Load() != nil {
		t.Errorf("the gateway did not try to fail the upload")
	}
	if rec := h.record(t, id); rec.Error == nil || rec.Error.Message != "failed by the forwarder" {
		t.Errorf("record error: got %+v, want the forwarder's", rec.Error)
	}
	if got := h.n.For(id); len(got) != notified {
		t.Errorf("notifications: got %d, want %d (the gateway failed nothing)", len(got), notified)
	}
}
