package redislock_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"
	"golang.org/x/exp/slog"

	"github.com/tusgate/tusgate/store/redislock"
)

// newTusServer serves a tusd handler at /files/ on dir, locking with locker.
func newTusServer(t *testing.T, dir string, locker *redislock.Locker) *httptest.Server {
	t.Helper()
	composer := handler.NewStoreComposer()
	filestore.New(dir).UseIn(composer)
	locker.UseIn(composer)
	h, err := handler.NewUnroutedHandler(handler.Config{
		BasePath:      "/files/",
		StoreComposer: composer,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("tusd handler: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /files/{$}", h.PostFile)
	mux.Handle("HEAD /files/{id}", http.StripPrefix("/files/", http.HandlerFunc(h.HeadFile)))
	mux.Handle("PATCH /files/{id}", http.StripPrefix("/files/", http.HandlerFunc(h.PatchFile)))
	srv := httptest.NewServer(h.Middleware(mux))
	t.Cleanup(srv.Close)
	return srv
}

// testTusdPatchInterruptedByHeadOnOtherInstance runs two tusd handlers on
// one upload directory, each with its own Locker and Redis client: a PATCH
// stalled on A is interrupted by a HEAD on B, which answers with the offset.
func testTusdPatchInterruptedByHeadOnOtherInstance(t *testing.T, b backend) {
	checkNoLeaks(t)
	dir := t.TempDir()
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	srvA := newTusServer(t, dir, newLocker(t, clientA, redislock.WithPrefix(prefix)))
	srvB := newTusServer(t, dir, newLocker(t, clientB, redislock.WithPrefix(prefix)))

	// Create a 1000-byte upload on A.
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, srvA.URL+"/files/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", "1000")
	resp, err := srvA.Client().Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: got status %d, want 201", resp.StatusCode)
	}
	id := path.Base(resp.Header.Get("Location"))

	// PATCH on A: send half of the body, then stall.
	body, bodyW := io.Pipe()
	defer bodyW.Close()
	req, err = http.NewRequestWithContext(t.Context(), http.MethodPatch, srvA.URL+"/files/"+id, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = 1000
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", "0")
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	type patchResult struct {
		status int
		body   string
		err    error
	}
	patchDone := make(chan patchResult, 1)
	go func() {
		resp, err := srvA.Client().Do(req)
		if err != nil {
			patchDone <- patchResult{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		patchDone <- patchResult{status: resp.StatusCode, body: string(b)}
	}()
	if _, err := bodyW.Write([]byte(strings.Repeat("x", 500))); err != nil {
		t.Fatalf("write half the PATCH body: %v", err)
	}
	waitFor(t, 5*time.Second, "500 bytes on disk", func() bool {
		fi, err := os.Stat(filepath.Join(dir, id))
		return err == nil && fi.Size() == 500
	})

	// HEAD on B: takes the lock from A's PATCH.
	req, err = http.NewRequestWithContext(t.Context(), http.MethodHead, srvB.URL+"/files/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	start := time.Now()
	resp, err = srvB.Client().Do(req)
	if err != nil {
		t.Fatalf("HEAD: %v", err)
	}
	_ = resp.Body.Close()
	if elapsed, limit := time.Since(start), 3*time.Second; elapsed > limit {
		t.Errorf("HEAD took %v, want under %v (the lock expiry is 10s)", elapsed, limit)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD: got status %d, want 200", resp.StatusCode)
	}
	if got := resp.Header.Get("Upload-Offset"); got != "500" {
		t.Errorf("HEAD Upload-Offset: got %q, want %q", got, "500")
	}

	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case res := <-patchDone:
		// The server may close the connection before the client reads the
		// answer; when it does answer, it is tusd's interruption error.
		if res.err == nil && (res.status != http.StatusBadRequest || !strings.Contains(res.body, "ERR_UPLOAD_INTERRUPTED")) {
			t.Errorf("interrupted PATCH: got %d %q, want 400 ERR_UPLOAD_INTERRUPTED", res.status, res.body)
		}
	case <-timer.C:
		t.Fatalf("the PATCH on A did not end after the HEAD on B")
	}
}

// tusRequest sends a tus request to srv for path (under /files/) and
// returns the response, its body read and closed.
func tusRequest(t *testing.T, srv *httptest.Server, method, path string, header map[string]string, body string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+"/files/"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp
}

// createUpload creates an upload of size bytes on srv and returns its id.
func createUpload(t *testing.T, srv *httptest.Server, size int) string {
	t.Helper()
	resp := tusRequest(t, srv, http.MethodPost, "", map[string]string{"Upload-Length": strconv.Itoa(size)}, "")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: got status %d, want 201", resp.StatusCode)
	}
	return path.Base(resp.Header.Get("Location"))
}

// patch sends n bytes at offset to upload id on srv and checks the answer.
func patch(t *testing.T, srv *httptest.Server, id string, offset, n int) {
	t.Helper()
	resp := tusRequest(t, srv, http.MethodPatch, id, map[string]string{
		"Upload-Offset": strconv.Itoa(offset),
		"Content-Type":  "application/offset+octet-stream",
	}, strings.Repeat("x", n))
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH at %d: got status %d, want 204", offset, resp.StatusCode)
	}
	if got, want := resp.Header.Get("Upload-Offset"), strconv.Itoa(offset+n); got != want {
		t.Fatalf("PATCH at %d: got Upload-Offset %q, want %q", offset, got, want)
	}
}

func TestTusdPatchesAlternateInstances(t *testing.T) {
	testTusdPatchesAlternateInstances(t, singleNode())
}

// testTusdPatchesAlternateInstances: PATCHes and HEADs of one upload go to
// two instances in turn, each of which keeps the lock lingering for a
// minute after every request: each request gets the lock from the other
// instance at once.
func testTusdPatchesAlternateInstances(t *testing.T, b backend) {
	checkNoLeaks(t)
	dir := t.TempDir()
	clientA, clientB := b.newClient(t), b.newClient(t)
	prefix := newPrefix(t, clientB)
	srvA := newTusServer(t, dir, newLocker(t, clientA, redislock.WithPrefix(prefix), redislock.WithLinger(time.Minute)))
	srvB := newTusServer(t, dir, newLocker(t, clientB, redislock.WithPrefix(prefix), redislock.WithLinger(time.Minute)))

	const chunk = 100
	id := createUpload(t, srvA, 4*chunk)
	for i, srv := range []*httptest.Server{srvA, srvB, srvA, srvB} {
		start := time.Now()
		if i > 0 {
			resp := tusRequest(t, srv, http.MethodHead, id, nil, "")
			if got, want := resp.Header.Get("Upload-Offset"), strconv.Itoa(i*chunk); resp.StatusCode != http.StatusOK || got != want {
				t.Fatalf("HEAD %d: got %d, Upload-Offset %q, want 200, %q", i, resp.StatusCode, got, want)
			}
		}
		patch(t, srv, id, i*chunk, chunk)
		if elapsed, limit := time.Since(start), 3*time.Second; elapsed > limit {
			t.Errorf("HEAD and PATCH %d took %v, want under %v (the linger is a minute)", i, elapsed, limit)
		}
	}
}

// TestTusdConsecutivePatchesSendNoLockCommand: tusd PATCHes of one upload
// on one instance, one after the other, send no Redis command after the
// first (the instance's data store is on disk, so every Redis command
// would be the locker's).
func TestTusdConsecutivePatchesSendNoLockCommand(t *testing.T) {
	checkNoLeaks(t)
	r := startPrivateRedis(t)
	m := r.monitor(t)
	srv := newTusServer(t, t.TempDir(), newLocker(t, r.client(t), redislock.WithExpiry(quietExpiry)))

	const chunk, patches = 100, 10
	id := createUpload(t, srv, patches*chunk)
	patch(t, srv, id, 0, chunk)
	if n := m.count(); n == 0 {
		t.Fatalf("Redis commands for the first PATCH: got 0, want some (is the counter broken?)")
	}
	for i := 1; i < patches; i++ {
		resp := tusRequest(t, srv, http.MethodHead, id, nil, "")
		if got, want := resp.Header.Get("Upload-Offset"), strconv.Itoa(i*chunk); got != want {
			t.Fatalf("HEAD: got Upload-Offset %q, want %q", got, want)
		}
		patch(t, srv, id, i*chunk, chunk)
	}
	if n := m.count(); n != 0 {
		t.Errorf("Redis commands for %d more HEAD and PATCH pairs: got %d, want 0", patches-1, n)
	}
}
