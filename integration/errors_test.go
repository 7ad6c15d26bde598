package integration_test

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/tusclient"
	"github.com/tusgate/tusgate/store"
)

// rawPost sends a tus creation request with the given Upload-Metadata header
// value and returns the status and body.
func rawPost(t *testing.T, gw *gatewayProc, metadata string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, gw.Endpoint, nil)
	if err != nil {
		t.Fatalf("creation request: %v", err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Length", "1048576")
	req.Header.Set("Upload-Metadata", metadata)
	resp, err := gw.HTTP.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", gw.Endpoint, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// Bad requests get clear 4xx answers, and an upload whose token api.video
// rejects ends failed (token_rejected) and answers 410 to further tus
// requests, while a concurrent upload with a valid token is delivered.
func TestBadInput(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		gw := startGateway(t, emu, gatewayOptions{Store: kind})

		t.Run("creation", func(t *testing.T) {
			_, err := gw.Tus.Create(t.Context(), gw.Endpoint, mib, map[string]string{"filename": "video.mp4"})
			if code := tusclient.StatusCode(err); code != http.StatusBadRequest {
				t.Errorf("create without token: got %d (%v), want 400", code, err)
			} else if body := err.(*tusclient.HTTPError).Body; !strings.Contains(body, "token") {
				t.Errorf("create without token: body %q does not mention the token", body)
			}
			if code, body := rawPost(t, gw, "token not-base64!!"); code != http.StatusBadRequest {
				t.Errorf("create with malformed Upload-Metadata: got %d %q, want 400", code, body)
			}
			if code, body := rawPost(t, gw, "filename dmlkZW8ubXA0,token"); code != http.StatusBadRequest {
				t.Errorf("create with an empty token: got %d %q, want 400", code, body)
			}
		})

		t.Run("wrong offset", func(t *testing.T) {
			u := create(t, gw, mib, meta(emu.CreateToken(time.Hour)))
			_, err := gw.Tus.Patch(t.Context(), u, 100, bytes.NewReader(make([]byte, 10)), 10, -1)
			if code := tusclient.StatusCode(err); code != http.StatusConflict {
				t.Errorf("PATCH at offset 100 of an empty upload: got %d (%v), want 409", code, err)
			}
		})

		t.Run("rejected token", func(t *testing.T) {
			good := emu.CreateToken(time.Hour)
			revoked := emu.CreateToken(time.Hour)
			emu.RevokeToken(revoked)
			unknown := "to" + strings.Repeat("x", 22)
			goodData := testData(70, 12*mib)

			// The valid upload runs concurrently with the rejected ones.
			gu := create(t, gw, int64(len(goodData)), meta(good))
			done := make(chan error, 1)
			go func() { // owned by this test: it receives from done below
				done <- gw.Tus.Upload(t.Context(), gu, bytes.NewReader(goodData), int64(len(goodData)), mib)
			}()

			for _, bad := range []struct{ name, token string }{{"revoked", revoked}, {"unknown", unknown}} {
				data := testData(71, 6*mib)
				u := create(t, gw, int64(len(data)), meta(bad.token))
				id := uploadID(t, u)
				patchRange(t, gw, u, data, 0, partSize, mib)
				st, raw := waitStatus(t, gw, id, func(s gateway.Status) bool { return s.State == store.StateFailed })
				if st.Error == nil || st.Error.Reason != store.ReasonTokenRejected || st.Error.Message == "" {
					t.Errorf("%s token: status %s, want error.reason %s and a message", bad.name, raw, store.ReasonTokenRejected)
				}
				checkNoToken(t, bad.token, map[string]string{"status JSON": string(raw)})
				_, err := gw.Tus.Patch(t.Context(), u, partSize, bytes.NewReader(data[partSize:]), int64(len(data))-partSize, -1)
				if code := tusclient.StatusCode(err); code != http.StatusGone {
					t.Errorf("%s token: PATCH after the failure: got %d (%v), want 410", bad.name, code, err)
				}
				_, err = gw.Tus.Head(t.Context(), u)
				if code := tusclient.StatusCode(err); code != http.StatusGone {
					t.Errorf("%s token: HEAD after the failure: got %d (%v), want 410", bad.name, code, err)
				}
				if n := len(videosOf(emu, bad.token)); n != 0 {
					t.Errorf("%s token: emulator videos: got %d, want 0", bad.name, n)
				}
			}

			if err := <-done; err != nil {
				t.Fatalf("concurrent valid upload: %v", err)
			}
			st, _ := waitDelivered(t, gw, uploadID(t, gu))
			checkDelivered(t, emu, good, goodData, st)
			checkNoToken(t, revoked, map[string]string{"gateway logs": gw.Output()})
			checkNoToken(t, unknown, map[string]string{"gateway logs": gw.Output()})
		})
	})
}

// Transient api.video failures (500 twice, then 429 with a 1 s
// X-RateLimit-Retry-After) are retried, honouring the retry delay, and the
// upload is delivered as one identical video.
func TestTransientFaults(t *testing.T) {
	t.Parallel()
	forEachStore(t, func(t *testing.T, kind string) {
		emu := newEmulator(t)
		emu.FailNext(2, apivideotest.StatusFault(http.StatusInternalServerError))
		emu.FailNext(1, apivideotest.RateLimitFault(time.Second))
		gw := startGateway(t, emu, gatewayOptions{Store: kind})
		token := emu.CreateToken(time.Hour)
		data := testData(8, 7*mib)

		u := create(t, gw, int64(len(data)), meta(token))
		upload(t, gw, u, data, mib)
		st, _ := waitDelivered(t, gw, uploadID(t, u))
		checkDelivered(t, emu, token, data, st)

		reqs := uploadRequests(emu, token)
		wantStatus := []int{500, 500, 429, 201, 201}
		if len(reqs) != len(wantStatus) {
			t.Fatalf("upload requests: got %d, want %d", len(reqs), len(wantStatus))
		}
		for i, r := range reqs {
			if r.Status != wantStatus[i] {
				t.Errorf("upload request %d (part %d): got status %d, want %d", i, r.Part, r.Status, wantStatus[i])
			}
		}
		if gap := reqs[3].Time.Sub(reqs[2].Time); gap < time.Second {
			t.Errorf("request after the 429 came %v after it, want at least 1s (X-RateLimit-Retry-After)", gap)
		}
	})
}
