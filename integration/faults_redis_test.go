package integration_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/internal/tusclient"
)

// The Redis state store is killed (SIGKILL) and restarted. Each case runs
// its own redis-server, with persistence (an fsync'd append-only file, so a
// restart keeps every acknowledged write) unless it says otherwise.
func TestFaultRedis(t *testing.T) {
	t.Parallel()

	// Redis dies while a PATCH is running (2 MiB into the upload, the client
	// then crosses the 5 MiB part boundary): the gateway answers 503 with
	// Retry-After rather than take bytes it cannot record; HEAD and PATCH
	// keep answering 503 while Redis is down, and /readyz 503. The client
	// retries with backoff; once Redis is back it resumes and the upload is
	// delivered.
	t.Run("down during receive", func(t *testing.T) {
		t.Parallel()
		rds := startRedis(t, true)
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--redis-url", rds.URL()}})
		token := emu.CreateToken(time.Hour)
		data := testData(420, 12*mib)
		size := int64(len(data))
		u := create(t, gw, size, meta(token))
		id := uploadID(t, u)

		// One PATCH for everything, held after 2 MiB until Redis is down.
		release := make(chan struct{})
		patchErr := make(chan error, 1)
		go func() { // owned by the test: it receives from patchErr below
			body := &gatedReader{r: bytes.NewReader(data), n: 2 * mib, release: release, done: t.Context().Done()}
			_, err := gw.Tus.Patch(t.Context(), u, 0, body, size, -1)
			patchErr <- err
		}()
		waitFor(t, "the gateway to write 2 MiB", func() bool { return fileSize(t, gw, id) == 2*mib })
		rds.Kill()
		down := time.Now()
		close(release)
		var err error
		select {
		case err = <-patchErr:
		case <-time.After(statusTimeout):
			t.Fatalf("the PATCH running when Redis died got no answer within %v", statusTimeout)
		}
		he, _ := err.(*tusclient.HTTPError)
		switch {
		case err == nil:
			t.Errorf("PATCH across a part boundary with Redis down: got success, want 503")
		case he != nil && (he.StatusCode != http.StatusServiceUnavailable || he.Header.Get("Retry-After") == ""):
			t.Errorf("PATCH across a part boundary with Redis down: got %d (Retry-After %q), want 503 with Retry-After", he.StatusCode, he.Header.Get("Retry-After"))
		case he == nil:
			// The answer can lose the race with the client still sending
			// the body (the gateway closes the connection after it).
			t.Logf("PATCH across a part boundary with Redis down: no answer (%v)", err)
		}
		t.Logf("the running PATCH ended %v after Redis died", time.Since(down).Round(time.Millisecond))
		kept := fileSize(t, gw, id)
		t.Logf("bytes kept when the PATCH ended: %d", kept)
		if kept < 2*mib || kept > partSize+mib {
			t.Errorf("data file after the PATCH: got %d bytes, want between %d and about %d (stopped at the part boundary)", kept, 2*mib, partSize)
		}

		client := newResumingClient(gw, mib)
		done := make(chan error, 1)
		go func() { // owned by the test: it receives from done below
			done <- client.Upload(t.Context(), u, data, 2*statusTimeout)
		}()
		waitFor(t, "the client to get two 503 answers", func() bool {
			n := 0
			for _, f := range client.Failures() {
				if f.Status == http.StatusServiceUnavailable {
					n++
				}
			}
			return n >= 2
		})
		t.Logf("two 503 answers %v after Redis died", time.Since(down).Round(time.Millisecond))
		if code, body := readyz(t, gw); code != http.StatusServiceUnavailable {
			t.Errorf("/readyz with Redis down: got %d %s, want 503", code, body)
		}
		rds.Start()
		back := time.Now()
		if err := <-done; err != nil {
			t.Fatalf("upload after Redis came back: %v", err)
		}
		// The running PATCH's upload lock (store/redislock) could not be
		// deleted while Redis was down: it blocks the upload until it
		// expires (10 s).
		t.Logf("upload finished %v after Redis came back", time.Since(back).Round(time.Millisecond))
		for _, f := range client.Failures() {
			if f.Status != http.StatusServiceUnavailable || f.RetryAfter == "" {
				t.Errorf("client failure while Redis was down: got %v, want 503 with Retry-After", f)
			}
		}
		t.Logf("client failures while Redis was down: %v", client.Failures())
		finishDelivered(t, emu, gw, token, data, id)
		if code, body := readyz(t, gw); code != http.StatusOK {
			t.Errorf("/readyz after Redis came back: got %d %s, want 200", code, body)
		}
	})

	// Redis dies while part 1 is streaming to api.video; api.video accepts
	// it (201) while Redis is down. The gateway keeps retrying to record the
	// videoId, Redis comes back, the record is written, the other parts
	// follow. One video.
	t.Run("down during forward", func(t *testing.T) {
		t.Parallel()
		sc := part1AcceptedWhileRedisDown(t, 421)
		rds, emu, gw, token, data, id := sc.rds, sc.emu, sc.gw, sc.token, sc.data, sc.id
		if partSeen(emu, token, 2) {
			t.Errorf("part 2 was sent before part 1's videoId was recorded")
		}
		rds.Start()
		finishDelivered(t, emu, gw, token, data, id)
		if n := len(partRequests(emu, token, 1)); n != 1 {
			t.Errorf("part 1 requests: got %d, want 1", n)
		}
	})

	// Redis restarts WITHOUT persistence (empty): the gateway notices that
	// its dataset marker is gone, /readyz answers 503 and the logs say why.
	// The upload's record is lost with the dataset: its status and HEAD
	// answer 404, and api.video never hears of it.
	t.Run("restart without persistence", func(t *testing.T) {
		t.Parallel()
		rds := startRedis(t, false)
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--redis-url", rds.URL()}})
		token := emu.CreateToken(time.Hour)
		data := testData(422, 12*mib)
		u := create(t, gw, int64(len(data)), meta(token))
		id := uploadID(t, u)
		patchRange(t, gw, u, data, 0, 3*mib, mib)
		if code, body := readyz(t, gw); code != http.StatusOK {
			t.Fatalf("/readyz before the restart: got %d %s, want 200", code, body)
		}

		rds.Kill()
		rds.Start()
		var body string
		waitFor(t, "/readyz to answer 503", func() bool {
			var code int
			code, body = readyz(t, gw)
			return code == http.StatusServiceUnavailable
		})
		if !strings.Contains(body, "store") {
			t.Errorf("/readyz body: got %s, want the failing store check", body)
		}
		waitFor(t, "the logs to explain the lost dataset", func() bool {
			return logsContain(gw, "dataset marker", "is gone", "persistence")
		})

		code, _, raw := getStatus(t, gw, id)
		_, headErr := gw.Tus.Head(t.Context(), u)
		_, patchErr := gw.Tus.Patch(t.Context(), u, 3*mib, bytes.NewReader(data[3*mib:4*mib]), mib, -1)
		t.Logf("after the dataset loss: GET /uploads/{id} %d %s; HEAD %d; PATCH %d", code, raw,
			tusclient.StatusCode(headErr), tusclient.StatusCode(patchErr))
		if code != http.StatusNotFound {
			t.Errorf("status of the lost upload: got %d %s, want 404", code, raw)
		}
		if n := len(uploadRequests(emu, token)); n != 0 {
			t.Errorf("upload requests to api.video: got %d, want 0", n)
		}
		checkNoToken(t, token, map[string]string{"gateway logs": gw.Output()})
		// New uploads are refused (503) rather than tracked on a dataset
		// that silently lost the others.
		if _, err := gw.Tus.Create(t.Context(), gw.Endpoint, mib, meta(emu.CreateToken(time.Hour))); tusclient.StatusCode(err) != http.StatusServiceUnavailable {
			t.Errorf("new upload after the dataset loss: got %v, want 503", err)
		}
	})
}
