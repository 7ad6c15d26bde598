package gateway_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
)

func TestUploadInChunksRecordsPartBoundaries(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 12 * MiB
	data := randomData(size)
	u, id := h.create(t, size, map[string]string{"filename": "clip.mp4", "filetype": "video/mp4"})

	if got := h.record(t, id); got.State != store.StateReceiving || got.Size != size || got.Plan != testPlan || got.Filename != "clip.mp4" || got.Filetype != "video/mp4" {
		t.Fatalf("record after creation: got %+v", got)
	}
	wantReceived := func(off int64) int64 {
		switch {
		case off == size:
			return size
		case off >= 10*MiB:
			return 10 * MiB
		case off >= 5*MiB:
			return 5 * MiB
		}
		return 0
	}
	for off := int64(0); off < size; off += MiB {
		got, err := h.client.Patch(t.Context(), u, off, bytes.NewReader(data[off:off+MiB]), MiB, -1)
		if err != nil {
			t.Fatalf("PATCH at %d: %v", off, err)
		}
		if got != off+MiB {
			t.Fatalf("PATCH at %d: offset got %d, want %d", off, got, off+MiB)
		}
		rec := h.record(t, id)
		if want := wantReceived(off + MiB); rec.Received != want {
			t.Errorf("after %d MiB: record Received got %d, want %d", (off+MiB)/MiB, rec.Received, want)
		}
		if _, st, _ := h.status(t, id); st["received"] != float64(off+MiB) {
			t.Errorf("after %d MiB: status received got %v, want %d", (off+MiB)/MiB, st["received"], off+MiB)
		}
	}

	info, err := h.client.Head(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	if info.Offset != size || info.Length != size {
		t.Errorf("HEAD: got offset %d length %d, want %d and %d", info.Offset, info.Length, size, size)
	}
	want := []notification{
		{ID: id, State: store.StateReceiving}, // creation
		{ID: id, Received: 5 * MiB, State: store.StateReceiving},
		{ID: id, Received: 10 * MiB, State: store.StateReceiving},
		{ID: id, Received: size, Complete: true, State: store.StateReceiving},
	}
	if got := h.n.For(id); !equalNotifications(got, want) {
		t.Errorf("notifications: got %+v, want %+v", got, want)
	}
	if got := h.readAll(t, id, size); !bytes.Equal(got, data) {
		t.Errorf("stored bytes differ from the uploaded ones")
	}
	code, st, _ := h.status(t, id)
	if code != http.StatusOK || st["size"] != float64(size) || st["received"] != float64(size) || st["state"] != "receiving" {
		t.Errorf("status: got %d %v", code, st)
	}
	if parts, _ := st["parts"].(map[string]any); parts["total"] != float64(3) || parts["delivered"] != float64(0) {
		t.Errorf("status parts: got %v, want total 3, delivered 0", st["parts"])
	}
	if st["filename"] != "clip.mp4" || st["error"] != nil || st["videoId"] != nil || st["tokenDeadline"] != nil {
		t.Errorf("status fields: got %v", st)
	}
}

func equalNotifications(a, b []notification) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDeferredLength(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 12 * MiB
	data := randomData(size)
	u, id := h.create(t, tusclient.Deferred, map[string]string{"filename": "live.webm"})

	rec := h.record(t, id)
	if !rec.SizeDeferred {
		t.Fatalf("record SizeDeferred: got false, want true")
	}
	_, st, _ := h.status(t, id)
	if st["size"] != nil || st["parts"].(map[string]any)["total"] != nil {
		t.Errorf("status while deferred: got size %v parts %v, want nulls", st["size"], st["parts"])
	}

	// Five MiB exactly: part 1 may still be the last one, so nothing is recorded.
	for off := int64(0); off < 5*MiB; off += MiB {
		if _, err := h.client.Patch(t.Context(), u, off, bytes.NewReader(data[off:off+MiB]), MiB, -1); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.record(t, id).Received; got != 0 {
		t.Errorf("after exactly 5 MiB deferred: Received got %d, want 0", got)
	}
	if _, err := h.client.Patch(t.Context(), u, 5*MiB, bytes.NewReader(data[5*MiB:6*MiB]), MiB, -1); err != nil {
		t.Fatal(err)
	}
	if got := h.record(t, id).Received; got <= 5*MiB || got > 6*MiB {
		t.Errorf("after 6 MiB deferred: Received got %d, want in (5 MiB, 6 MiB]", got)
	}
	if err := h.client.Upload(t.Context(), u, bytes.NewReader(data), size, MiB); err != nil {
		t.Fatal(err)
	}
	rec = h.record(t, id)
	if rec.SizeDeferred || rec.Size != size || !rec.Complete || rec.Received != size {
		t.Errorf("record after upload: got deferred %v size %d complete %v received %d", rec.SizeDeferred, rec.Size, rec.Complete, rec.Received)
	}
	got := h.n.For(id)
	if len(got) != 5 {
		t.Fatalf("notifications: got %+v, want 5 (creation, two boundaries, length, completion)", got)
	}
	if got[0].Received != 0 || !got[0].SizeDeferred {
		t.Errorf("creation notification: got %+v, want nothing received, size deferred", got[0])
	}
	got = got[1:]
	if !got[0].SizeDeferred || got[0].Received <= 5*MiB || !got[1].SizeDeferred || got[1].Received <= 10*MiB {
		t.Errorf("boundary notifications: got %+v", got[:2])
	}
	if got[2].SizeDeferred || got[2].Complete {
		t.Errorf("length notification: got %+v, want size known, not complete", got[2])
	}
	if !got[3].Complete || got[3].Received != size {
		t.Errorf("completion notification: got %+v", got[3])
	}
	if !bytes.Equal(h.readAll(t, id, size), data) {
		t.Errorf("stored bytes differ from the uploaded ones")
	}
}

func TestDeclareZeroLengthFails(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	u, id := h.create(t, tusclient.Deferred, nil)
	_, err := h.client.Patch(t.Context(), u, 0, nil, 0, 0)
	if code := tusclient.StatusCode(err); code != http.StatusBadRequest {
		t.Fatalf("PATCH Upload-Length 0: got %d (%v), want 400", code, err)
	}
	if rec := h.record(t, id); rec.State != store.StateFailed || rec.Error.Reason != store.ReasonEmptyUpload {
		t.Errorf("record: got state %s error %+v, want failed empty_upload", rec.State, rec.Error)
	}
}

func TestCreationWithUpload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 6 * MiB
	data := randomData(size)
	u, off, err := h.client.CreateWithUpload(t.Context(), h.endpoint, size, map[string]string{"name": "a.mov", "type": "video/quicktime"}, data[:5*MiB+1])
	if err != nil {
		t.Fatal(err)
	}
	id := idOf(u)
	if off != 5*MiB+1 {
		t.Errorf("offset after creation-with-upload: got %d, want %d", off, 5*MiB+1)
	}
	rec := h.record(t, id)
	if rec.Received != 5*MiB+1 || rec.Filename != "a.mov" || rec.Filetype != "video/quicktime" {
		t.Errorf("record: got received %d filename %q filetype %q", rec.Received, rec.Filename, rec.Filetype)
	}
	if err := h.client.Upload(t.Context(), u, bytes.NewReader(data), size, 4*MiB); err != nil {
		t.Fatal(err)
	}
	if rec := h.record(t, id); !rec.Complete {
		t.Errorf("record Complete: got false, want true")
	}
}

func TestTokenNeverEchoed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *gateway.Config) { c.TokenRequired = true })
	const token = "to1SecretTokenValueXYZ"
	deadline := testNow.Add(time.Hour)
	u, id := h.create(t, 2*MiB, map[string]string{
		"token":          token,
		"tokenExpiresAt": deadline.Format(time.RFC3339),
		"filename":       "movie.mp4",
		"title":          "My movie",
	})
	if err := h.client.Upload(t.Context(), u, bytes.NewReader(randomData(2*MiB)), 2*MiB, MiB); err != nil {
		t.Fatal(err)
	}
	info, err := h.client.Head(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.Metadata["token"]; ok {
		t.Errorf("HEAD Upload-Metadata has token")
	}
	if _, ok := info.Metadata["tokenExpiresAt"]; ok {
		t.Errorf("HEAD Upload-Metadata has tokenExpiresAt")
	}
	if info.Metadata["filename"] != "movie.mp4" || info.Metadata["title"] != "My movie" {
		t.Errorf("HEAD Upload-Metadata: got %v, want filename and title kept", info.Metadata)
	}
	b64 := base64.StdEncoding.EncodeToString([]byte(token))
	for k, vs := range info.Header {
		for _, v := range vs {
			if strings.Contains(v, token) || strings.Contains(v, b64) {
				t.Errorf("HEAD header %s reveals the token", k)
			}
		}
	}
	_, st, body := h.status(t, id)
	if strings.Contains(body, token) || strings.Contains(body, b64) {
		t.Errorf("status body reveals the token: %s", body)
	}
	if st["tokenDeadline"] != deadline.Format(time.RFC3339) {
		t.Errorf("status tokenDeadline: got %v, want %s", st["tokenDeadline"], deadline.Format(time.RFC3339))
	}
	rec := h.record(t, id)
	if rec.Token.Reveal() != token || !rec.TokenDeadline.Equal(deadline) {
		t.Errorf("record token/deadline: got %v %v", rec.Token.Reveal() == token, rec.TokenDeadline)
	}
	if rec.Metadata["title"] != "My movie" || rec.Metadata["token"] != "" || rec.Metadata["filename"] != "" {
		t.Errorf("record metadata: got %v, want only title", rec.Metadata)
	}
	entries, err := os.ReadDir(h.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if b, err := os.ReadFile(h.dataDir + "/" + e.Name()); err == nil && strings.HasSuffix(e.Name(), ".info") && bytes.Contains(b, []byte(token)) {
			t.Errorf("tusd info file %s holds the token", e.Name())
		}
	}
	h.assertNoSecret(t, token)
}

func TestCreationErrors(t *testing.T) {
	t.Parallel()
	const token = "to1ValidToken"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name     string
		cfg      func(*gateway.Config)
		header   map[string]string
		want     int
		wantBody string
		secret   string // must not appear in the body
	}{
		{
			name:     "missing token in delegated mode",
			cfg:      func(c *gateway.Config) { c.TokenRequired = true },
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "filename " + b64("a.mp4")},
			want:     http.StatusBadRequest,
			wantBody: "Upload-Metadata must include the api.video upload token as `token` (delegated mode)",
		},
		{
			name:     "value not base64",
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "filename " + b64("a") + ",token not*base64"},
			want:     http.StatusBadRequest,
			wantBody: "entry 2 (key \"token\")",
			secret:   "not*base64",
		},
		{
			name:     "three parts",
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "filename YQ== YQ=="},
			want:     http.StatusBadRequest,
			wantBody: "entry 1",
		},
		{
			name:     "empty entry",
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "filename YQ==,,title YQ=="},
			want:     http.StatusBadRequest,
			wantBody: "entry 2 is empty",
		},
		{
			name:     "duplicate key",
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "a YQ==,a Yg=="},
			want:     http.StatusBadRequest,
			wantBody: "appears twice",
		},
		{
			name:     "non-ASCII key",
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "fé YQ=="},
			want:     http.StatusBadRequest,
			wantBody: "entry 1",
		},
		{
			name:     "zero length",
			header:   map[string]string{"Upload-Length": "0"},
			want:     http.StatusBadRequest,
			wantBody: "at least 1",
		},
		{
			name:     "above MaxSize",
			cfg:      func(c *gateway.Config) { c.MaxSize = 20 * MiB },
			header:   map[string]string{"Upload-Length": strconv.Itoa(20*MiB + 1)},
			want:     http.StatusRequestEntityTooLarge,
			wantBody: "exceeds the maximum upload size of 20971520 bytes (20 MiB)",
		},
		{
			name:     "above the default 30 GiB",
			header:   map[string]string{"Upload-Length": strconv.FormatInt(store.MaxVideoSize+1, 10)},
			want:     http.StatusRequestEntityTooLarge,
			wantBody: "(30 GiB)",
		},
		{
			name:     "above what 10,000 parts hold",
			cfg:      func(c *gateway.Config) { c.MaxSize = 100 << 30 },
			header:   map[string]string{"Upload-Length": strconv.FormatInt(testPlan.End(store.MaxParts)+1, 10)},
			want:     http.StatusRequestEntityTooLarge,
			wantBody: "10000 parts of 5.0 MiB",
		},
		{
			name:     "expired token",
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "token " + b64(token) + ",tokenExpiresAt " + b64(testNow.Add(-time.Minute).Format(time.RFC3339))},
			want:     http.StatusBadRequest,
			wantBody: "token expired at 2030-01-02T03:03:05Z",
			secret:   token,
		},
		{
			name:     "token too close to expiry",
			cfg:      func(c *gateway.Config) { c.TokenMinLifetime = 10 * time.Minute },
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "token " + b64(token) + ",tokenExpiresAt " + b64(testNow.Add(time.Minute).Format(time.RFC3339))},
			want:     http.StatusBadRequest,
			wantBody: "less than 10m0s from now",
		},
		{
			name:     "malformed tokenExpiresAt",
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "token " + b64(token) + ",tokenExpiresAt " + b64("tomorrow")},
			want:     http.StatusBadRequest,
			wantBody: "RFC 3339",
			secret:   token,
		},
		{
			name:     "token with a space",
			header:   map[string]string{"Upload-Length": "10", "Upload-Metadata": "token " + b64("to1 abc")},
			want:     http.StatusBadRequest,
			wantBody: "ERR_INVALID_TOKEN",
			secret:   "to1 abc",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, tt.cfg)
			header := map[string]string{"Tus-Resumable": "1.0.0"}
			for k, v := range tt.header {
				header[k] = v
			}
			resp, body := h.do(t, http.MethodPost, h.endpoint, header, nil)
			if resp.StatusCode != tt.want {
				t.Errorf("status: got %d, want %d (body %q)", resp.StatusCode, tt.want, body)
			}
			if !strings.Contains(body, tt.wantBody) {
				t.Errorf("body: got %q, want it to contain %q", body, tt.wantBody)
			}
			if tt.secret != "" && strings.Contains(body, tt.secret) {
				t.Errorf("body %q reveals %q", body, tt.secret)
			}
			if got := resp.Header.Get("Tus-Resumable"); got != "1.0.0" {
				t.Errorf("Tus-Resumable: got %q, want 1.0.0", got)
			}
			if entries, _ := os.ReadDir(h.dataDir); len(entries) != 0 {
				t.Errorf("data dir: got %d entries, want none", len(entries))
			}
			if ids, err := h.st.ListActive(t.Context()); err != nil || len(ids) != 0 {
				t.Errorf("active records: got %v (%v), want none", ids, err)
			}
		})
	}
}

func TestCreateStoreFailureRemovesFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.st.failCreate.Store(true)
	_, err := h.client.Create(t.Context(), h.endpoint, 10, nil)
	if code := tusclient.StatusCode(err); code != http.StatusServiceUnavailable {
		t.Fatalf("create with a failing store: got %d (%v), want 503", code, err)
	}
	if strings.Contains(err.Error(), "injected") {
		t.Errorf("error body reveals the internal error: %v", err)
	}
	if entries, _ := os.ReadDir(h.dataDir); len(entries) != 0 {
		t.Errorf("data dir: got %d entries, want none", len(entries))
	}
}

func TestWrongOffset(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	u, _ := h.create(t, 10, nil)
	_, err := h.client.Patch(t.Context(), u, 3, strings.NewReader("abc"), 3, -1)
	if code := tusclient.StatusCode(err); code != http.StatusConflict {
		t.Errorf("PATCH at a wrong offset: got %d (%v), want 409", code, err)
	}
}

func TestStatusUnknown(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	code, st, _ := h.status(t, "0123456789abcdef0123456789abcdef")
	if code != http.StatusNotFound {
		t.Errorf("status of an unknown id: got %d, want 404", code)
	}
	if e, _ := st["error"].(map[string]any); e["code"] != "not_found" {
		t.Errorf("body: got %v, want error.code not_found", st)
	}
}

func TestFailedAndTerminatedRecords(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	u, id := h.create(t, 2*MiB, nil)
	if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(randomData(MiB)), MiB, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.Update(t.Context(), id, func(r *store.Upload) error {
		return r.Fail(store.ReasonTokenExpired, "the upload token expired before part 1 was sent", testNow)
	}); err != nil {
		t.Fatal(err)
	}
	resp, body := h.do(t, http.MethodPatch, u, map[string]string{
		"Tus-Resumable": "1.0.0", "Upload-Offset": strconv.Itoa(MiB), "Content-Type": "application/offset+octet-stream",
	}, bytes.NewReader(randomData(MiB)))
	if resp.StatusCode != http.StatusGone {
		t.Errorf("PATCH on a failed upload: got %d, want 410", resp.StatusCode)
	}
	if want := "upload failed: token_expired: the upload token expired before part 1 was sent"; !strings.Contains(body, want) {
		t.Errorf("PATCH body: got %q, want it to contain %q", body, want)
	}
	if got := resp.Header.Get("Tus-Resumable"); got != "1.0.0" {
		t.Errorf("Tus-Resumable: got %q, want 1.0.0", got)
	}
	resp, _ = h.do(t, http.MethodHead, u, map[string]string{"Tus-Resumable": "1.0.0"}, nil)
	if resp.StatusCode != http.StatusGone {
		t.Errorf("HEAD on a failed upload: got %d, want 410", resp.StatusCode)
	}
	_, st, _ := h.status(t, id)
	if e, _ := st["error"].(map[string]any); st["state"] != "failed" || e["reason"] != "token_expired" {
		t.Errorf("status: got %v", st)
	}

	u2, id2 := h.create(t, 10, nil)
	if _, err := h.st.Update(t.Context(), id2, func(r *store.Upload) error { return r.Terminate(testNow) }); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.Head(t.Context(), u2); tusclient.StatusCode(err) != http.StatusNotFound {
		t.Errorf("HEAD on a terminated upload: got %v, want 404", err)
	}
}

func TestForwarderFailureStopsRunningPatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 12 * MiB
	data := randomData(size)
	u, id := h.create(t, size, nil)
	if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data[:2*MiB]), 2*MiB, -1); err != nil {
		t.Fatal(err)
	}
	// The forwarder fails the upload while the client is still sending.
	if _, err := h.st.Update(t.Context(), id, func(r *store.Upload) error {
		return r.Fail(store.ReasonTokenRejected, "api.video rejected the token", testNow)
	}); err != nil {
		t.Fatal(err)
	}
	_, err := h.client.Patch(t.Context(), u, 2*MiB, bytes.NewReader(data[2*MiB:]), size-2*MiB, -1)
	if code := tusclient.StatusCode(err); code != http.StatusGone {
		t.Errorf("PATCH across a boundary of a failed upload: got %d (%v), want 410", code, err)
	}
}

func TestDeleteTerminates(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	u, id := h.create(t, 2*MiB, nil)
	if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(randomData(MiB)), MiB, -1); err != nil {
		t.Fatal(err)
	}
	if err := h.client.Delete(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if rec := h.record(t, id); rec.State != store.StateTerminated {
		t.Errorf("record state: got %s, want terminated", rec.State)
	}
	if got := h.n.For(id); len(got) != 2 || got[0].State != store.StateReceiving || got[1].State != store.StateTerminated {
		t.Errorf("notifications: got %+v, want creation, then one with state terminated", got)
	}
	if _, err := h.client.Head(t.Context(), u); tusclient.StatusCode(err) != http.StatusNotFound {
		t.Errorf("HEAD after DELETE: got %v, want 404", err)
	}
	if _, err := h.gw.Source().OpenRange(t.Context(), id, 0, 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("OpenRange after DELETE: got %v, want store.ErrNotFound", err)
	}
	if entries, _ := os.ReadDir(h.dataDir); len(entries) != 0 {
		t.Errorf("data dir after DELETE: got %d entries, want none", len(entries))
	}
}

func TestReadiness(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	resp, body := h.do(t, http.MethodGet, h.srv.URL+"/healthz", nil, nil)
	if resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Errorf("healthz: got %d %q, want 200 ok", resp.StatusCode, body)
	}
	if resp, body := h.do(t, http.MethodGet, h.srv.URL+"/readyz", nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("readyz: got %d %s, want 200", resp.StatusCode, body)
	}
	h.st.failPing.Store(true)
	resp, body = h.do(t, http.MethodGet, h.srv.URL+"/readyz", nil, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"store":"state store ping failed"`) || !strings.Contains(body, `"dataDir":"ok"`) {
		t.Errorf("readyz with a failing store: got %d %s, want 503 naming the store", resp.StatusCode, body)
	}
	h.st.failPing.Store(false)
	if err := os.RemoveAll(h.dataDir); err != nil {
		t.Fatal(err)
	}
	resp, body = h.do(t, http.MethodGet, h.srv.URL+"/readyz", nil, nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"dataDir":"data directory is not writable"`) {
		t.Errorf("readyz without a data dir: got %d %s, want 503 naming the data dir", resp.StatusCode, body)
	}
}

func TestOpenRangeWhileIncomplete(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 12 * MiB
	data := randomData(size)
	u, id := h.create(t, size, nil)
	if _, err := h.client.Patch(t.Context(), u, 0, bytes.NewReader(data[:7*MiB]), 7*MiB, -1); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		off, n  int64
		wantErr error
	}{
		{0, 5 * MiB, nil},
		{3*MiB + 17, 4*MiB - 17, nil},
		{7 * MiB, 0, nil},
		{6 * MiB, 2 * MiB, gateway.ErrNotReceived},
	}
	for _, tt := range tests {
		rc, err := h.gw.Source().OpenRange(t.Context(), id, tt.off, tt.n)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("OpenRange(%d, %d): got error %v, want %v", tt.off, tt.n, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data[tt.off:tt.off+tt.n]) {
			t.Errorf("OpenRange(%d, %d): bytes differ", tt.off, tt.n)
		}
	}
	if _, err := h.gw.Source().OpenRange(t.Context(), "nope", 0, 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("OpenRange of an unknown upload: got %v, want store.ErrNotFound", err)
	}
	if got, err := h.gw.Source().Offset(t.Context(), id); err != nil || got != 7*MiB {
		t.Errorf("Received: got %d, %v, want %d", got, err, 7*MiB)
	}
}

func TestInterruptedPatchResumes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 12 * MiB
	const sent = 3*MiB + 123
	data := randomData(size)
	u, id := h.create(t, size, nil)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := h.client.Patch(ctx, u, 0, &stallingReader{ctx: ctx, data: data[:sent]}, size, -1)
		done <- err
	}()
	waitFor(t, "the stalled PATCH's bytes to be written", func() bool { return h.received(t, id) == sent })
	// The forwarder can read the bytes while the PATCH is still running.
	rc, err := h.gw.Source().OpenRange(t.Context(), id, 0, sent)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data[:sent]) {
		t.Errorf("OpenRange during the PATCH: bytes differ (%v)", err)
	}

	cancel() // the client drops the connection mid-body
	if err := <-done; err == nil {
		t.Fatal("interrupted PATCH: got no error")
	}
	info, err := h.client.Head(t.Context(), u)
	if err != nil {
		t.Fatal(err)
	}
	if info.Offset != sent {
		t.Errorf("HEAD after the interruption: offset got %d, want %d", info.Offset, sent)
	}
	if err := h.client.Upload(t.Context(), u, bytes.NewReader(data), size, 4*MiB); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.readAll(t, id, size), data) {
		t.Errorf("resumed upload: stored bytes differ from the uploaded ones")
	}
	if rec := h.record(t, id); !rec.Complete || rec.Received != size {
		t.Errorf("record: got complete %v received %d", rec.Complete, rec.Received)
	}
}

func TestShutdownEndsRunningPatch(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const size = 8 * MiB
	const sent = 2 * MiB
	data := randomData(size)
	_, id := h.create(t, size, nil)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h.gw.Handler(), BaseContext: h.gw.BaseContext(t.Context()), ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(h.gw.Shutdown)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	u := "http://" + ln.Addr().String() + "/files/" + id

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := h.client.Patch(ctx, u, 0, &stallingReader{ctx: ctx, data: data[:sent]}, size, -1)
		done <- err
	}()
	waitFor(t, "the PATCH's bytes to be written", func() bool {
		n, err := h.gw.Source().Offset(t.Context(), id)
		return err == nil && n == sent
	})
	shutdownCtx, cancelShutdown := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancelShutdown()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: got %v, want ErrServerClosed", err)
	}
	cancel()
	err = <-done
	if code := tusclient.StatusCode(err); code != http.StatusServiceUnavailable {
		t.Errorf("PATCH during shutdown: got %v, want 503", err)
	}
	info, err := h.client.Head(t.Context(), h.endpoint+id)
	if err != nil {
		t.Fatal(err)
	}
	if info.Offset != sent {
		t.Errorf("offset after shutdown: got %d, want %d", info.Offset, sent)
	}
}

func TestRoutes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	u, _ := h.create(t, 10, nil)
	tests := []struct {
		method, url string
		want        int
	}{
		{http.MethodGet, u, http.StatusMethodNotAllowed},
		{http.MethodGet, h.endpoint, http.StatusMethodNotAllowed},
		{http.MethodPut, u, http.StatusMethodNotAllowed},
		{http.MethodOptions, h.endpoint, http.StatusOK},
		{http.MethodHead, h.endpoint + "0123456789abcdef0123456789abcdef", http.StatusNotFound},
	}
	for _, tt := range tests {
		resp, _ := h.do(t, tt.method, tt.url, map[string]string{"Tus-Resumable": "1.0.0"}, nil)
		if resp.StatusCode != tt.want {
			t.Errorf("%s %s: got %d, want %d", tt.method, tt.url, resp.StatusCode, tt.want)
		}
	}
	// POST to the base path without its trailing slash works too.
	u2, err := h.client.Create(t.Context(), strings.TrimSuffix(h.endpoint, "/"), 10, nil)
	if err != nil || !strings.HasPrefix(u2, h.endpoint) {
		t.Errorf("POST /files: got %q, %v", u2, err)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		origins    []string
		origin     string
		wantStatus int
		wantACAO   string
	}{
		{"same origin only", nil, "https://app.example", http.StatusOK, ""},
		{"allowed origin", []string{"https://app.example", "http://localhost:3000"}, "https://app.example", http.StatusOK, "https://app.example"},
		{"allowed port origin", []string{"https://app.example", "http://localhost:3000"}, "http://localhost:3000", http.StatusOK, "http://localhost:3000"},
		{"other origin", []string{"https://app.example"}, "https://app.example.evil", http.StatusForbidden, ""},
		{"any origin", []string{"*"}, "https://x.example", http.StatusOK, "https://x.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(c *gateway.Config) { c.CORSOrigins = tt.origins })
			resp, _ := h.do(t, http.MethodOptions, h.endpoint, map[string]string{
				"Origin": tt.origin, "Access-Control-Request-Method": "POST",
			}, nil)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("preflight: got %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tt.wantACAO {
				t.Errorf("preflight Access-Control-Allow-Origin: got %q, want %q", got, tt.wantACAO)
			}
			if tt.wantACAO == "" {
				return
			}
			resp, _ = h.do(t, http.MethodPost, h.endpoint, map[string]string{"Origin": tt.origin, "Tus-Resumable": "1.0.0", "Upload-Length": "10"}, nil)
			expose := resp.Header.Get("Access-Control-Expose-Headers")
			for _, want := range []string{"Location", "Upload-Offset", "Upload-Expires", "Retry-After"} {
				if !strings.Contains(expose, want) {
					t.Errorf("Access-Control-Expose-Headers: got %q, want it to list %s", expose, want)
				}
			}
			// Errors from the gateway's own checks carry CORS headers too.
			resp, _ = h.do(t, http.MethodPost, h.endpoint, map[string]string{"Origin": tt.origin, "Tus-Resumable": "1.0.0", "Upload-Length": "0"}, nil)
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Access-Control-Allow-Origin") != tt.origin {
				t.Errorf("rejected creation: got %d with ACAO %q, want 400 with %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), tt.origin)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  gateway.Config
		want string
	}{
		{"no data dir", gateway.Config{Plan: testPlan}, "data dir"},
		{"bad plan", gateway.Config{DataDir: t.TempDir(), Plan: store.Plan{FirstPartSize: 1, PartSize: 5 * MiB}}, "plan"},
		{"bad origin", gateway.Config{DataDir: t.TempDir(), Plan: testPlan, CORSOrigins: []string{"app.example"}}, "CORS origin"},
		{"clashing base path", gateway.Config{DataDir: t.TempDir(), Plan: testPlan, BasePath: "/uploads/"}, "base path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := gateway.New(tt.cfg, &faultStore{}, &recorder{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: got %v, want an error about %s", err, tt.want)
			}
		})
	}
}
