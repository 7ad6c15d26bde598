package integration_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/tusgate/tusgate/apivideo/apivideotest"
	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/store"
)

// firstAttemptFault returns a fault hook that gives f to the first request
// for each part of token listed in parts; later attempts go through.
func firstAttemptFault(token string, f apivideotest.Fault, parts ...int) func(apivideotest.FaultRequest) apivideotest.Fault {
	var mu sync.Mutex
	seen := map[int]bool{}
	return func(r apivideotest.FaultRequest) apivideotest.Fault {
		if !r.IsUpload() || r.Token != token {
			return apivideotest.Fault{}
		}
		mu.Lock()
		defer mu.Unlock()
		for _, k := range parts {
			if r.Part == k && !seen[k] {
				seen[k] = true
				return f
			}
		}
		return apivideotest.Fault{}
	}
}

// api.video misbehaves (5xx, cut connections, 429, slow answers, lost
// answers, a revoked token); the upload is still delivered as exactly one
// identical video, or fails with a clear reason when it cannot be.
func TestFaultAPIVideo(t *testing.T) {
	t.Parallel()

	// 30% of the upload requests answer 503 (seeded; the first request,
	// part 1 alone, is one of them) over a 17 MiB upload of 4 parts.
	t.Run("random 5xx", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			emu.FailRandomly(0.3, 21, apivideotest.StatusFault(http.StatusServiceUnavailable))
			gw := startGateway(t, emu, gatewayOptions{Store: kind})
			token := emu.CreateToken(time.Hour)
			data := testData(410, 17*mib)
			u := create(t, gw, int64(len(data)), meta(token))
			upload(t, gw, u, data, 4*mib)
			finishDelivered(t, emu, gw, token, data, uploadID(t, u))
			failed := 0
			for _, r := range uploadRequests(emu, token) {
				if r.Status >= 500 {
					failed++
				}
			}
			if failed == 0 {
				t.Errorf("upload requests answered 5xx: got 0, want some (seed 21 fails the first)")
			}
			t.Logf("%d upload requests, %d answered 503", len(uploadRequests(emu, token)), failed)
		})
	})

	// The connection is cut after 1 MiB of the body of the first attempt of
	// parts 1, 2 and 3: api.video stores nothing, each part is sent again.
	t.Run("connections cut mid-body", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			token := emu.CreateToken(time.Hour)
			emu.InjectFault(firstAttemptFault(token, apivideotest.CutFault(mib), 1, 2, 3))
			gw := startGateway(t, emu, gatewayOptions{Store: kind})
			data := testData(411, 12*mib)
			u := create(t, gw, int64(len(data)), meta(token))
			upload(t, gw, u, data, 4*mib)
			finishDelivered(t, emu, gw, token, data, uploadID(t, u))
			for k := 1; k <= 3; k++ {
				reqs := partRequests(emu, token, k)
				if len(reqs) != 2 || !reqs[0].Cut || reqs[0].Accepted || !reqs[1].Accepted {
					t.Errorf("part %d: got %d requests, want 2 (cut, then accepted)", k, len(reqs))
				}
			}
		})
	})

	// A burst of three 429s with X-RateLimit-Retry-After: 1 (part 1 goes
	// alone, so they hit it in a row): each retry waits at least 1 s.
	t.Run("429 burst", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			emu.FailNext(3, apivideotest.RateLimitFault(time.Second))
			gw := startGateway(t, emu, gatewayOptions{Store: kind})
			token := emu.CreateToken(time.Hour)
			data := testData(412, 12*mib)
			u := create(t, gw, int64(len(data)), meta(token))
			upload(t, gw, u, data, 4*mib)
			finishDelivered(t, emu, gw, token, data, uploadID(t, u))
			reqs := uploadRequests(emu, token)
			limited := 0
			for i, r := range reqs {
				if r.Status != http.StatusTooManyRequests {
					continue
				}
				limited++
				if i+1 == len(reqs) {
					t.Fatalf("request %d got 429 and was the last one", r.Seq)
				}
				if gap := reqs[i+1].Time.Sub(r.Time); gap < time.Second {
					t.Errorf("request after the 429 of request %d came %v later, want at least 1s (X-RateLimit-Retry-After)", r.Seq, gap)
				}
			}
			if limited != 3 {
				t.Errorf("requests answered 429: got %d, want 3", limited)
			}
		})
	})

	// api.video holds the first attempt of parts 2 and 3 (in flight
	// together) for 3 s: the gateway waits for the answers rather than
	// giving up, and sends each part once.
	t.Run("3s latency", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			token := emu.CreateToken(time.Hour)
			emu.InjectFault(firstAttemptFault(token, apivideotest.DelayFault(3*time.Second), 2, 3))
			gw := startGateway(t, emu, gatewayOptions{Store: kind})
			data := testData(413, 12*mib)
			u := create(t, gw, int64(len(data)), meta(token))
			upload(t, gw, u, data, 4*mib)
			finishDelivered(t, emu, gw, token, data, uploadID(t, u))
			reqs := uploadRequests(emu, token)
			if len(reqs) != 3 {
				t.Fatalf("upload requests: got %d, want 3 (one per part)", len(reqs))
			}
			if p3, p2 := reqs[2], reqs[1]; p3.Time.Sub(p2.Time) >= 3*time.Second {
				t.Errorf("part 3 went %v after part 2, want while part 2 was held (parallel parts)", p3.Time.Sub(p2.Time))
			}
		})
	})

	// The token is revoked after api.video accepted part 1: the rest of the
	// video is still accepted (completion window) and delivered.
	t.Run("token revoked after part 1", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			gw := startGateway(t, emu, gatewayOptions{Store: kind})
			token := emu.CreateToken(time.Hour)
			data := testData(414, 12*mib)
			u := create(t, gw, int64(len(data)), meta(token))
			id := uploadID(t, u)
			patchRange(t, gw, u, data, 0, 6*mib, mib)
			waitStatus(t, gw, id, func(s gateway.Status) bool { return s.Parts.Delivered == 1 })
			emu.RevokeToken(token)
			revoked := time.Now()
			upload(t, gw, u, data, mib)
			finishDelivered(t, emu, gw, token, data, id)
			for _, r := range uploadRequests(emu, token) {
				if r.Part > 1 && r.Time.Before(revoked) {
					t.Errorf("part %d was sent before the token was revoked", r.Part)
				}
			}
		})
	})

	// The token is revoked after the upload started but before part 1 was
	// sent: the upload fails with token_rejected, PATCH and HEAD answer
	// 410, and there is no video.
	t.Run("token revoked before part 1", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			gw := startGateway(t, emu, gatewayOptions{Store: kind})
			token := emu.CreateToken(time.Hour)
			data := testData(415, 12*mib)
			u := create(t, gw, int64(len(data)), meta(token))
			patchRange(t, gw, u, data, 0, mib, mib)
			emu.RevokeToken(token)
			patchRange(t, gw, u, data, mib, 6*mib, mib)
			finishFailed(t, emu, gw, token, u, store.ReasonTokenRejected)
			if n := len(videosOf(emu, token)); n != 0 {
				t.Errorf("emulator videos: got %d, want 0", n)
			}
		})
	})

	// api.video stores part 2 but the answer is lost (connection closed):
	// the re-sent part collides ("already sent"), which proves api.video
	// has it, and it counts as delivered. One video.
	t.Run("part 2 answer lost", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			token := emu.CreateToken(time.Hour)
			emu.InjectFault(firstAttemptFault(token, apivideotest.LostAnswerFault(), 2))
			gw := startGateway(t, emu, gatewayOptions{Store: kind})
			data := testData(416, 12*mib)
			u := create(t, gw, int64(len(data)), meta(token))
			upload(t, gw, u, data, 4*mib)
			finishDelivered(t, emu, gw, token, data, uploadID(t, u))
			reqs := partRequests(emu, token, 2)
			if len(reqs) != 2 || !reqs[0].Accepted || !reqs[0].Cut || reqs[1].Status != http.StatusBadRequest {
				t.Errorf("part 2: got %d requests, want 2 (stored with its answer lost, then a 400 collision)", len(reqs))
			}
		})
	})

	// api.video stores part 1 but the answer is lost: the gateway cannot
	// know the videoId, so the re-sent part 1 starts a second video (the
	// README's unavoidable gap, without any crash). The delivered video is
	// complete and identical; the first holds part 1 only.
	t.Run("part 1 answer lost", func(t *testing.T) {
		t.Parallel()
		emu := newEmulator(t)
		token := emu.CreateToken(time.Hour)
		emu.InjectFault(firstAttemptFault(token, apivideotest.LostAnswerFault(), 1))
		gw := startGateway(t, emu, gatewayOptions{Store: "embedded"})
		data := testData(417, 12*mib)
		u := create(t, gw, int64(len(data)), meta(token))
		upload(t, gw, u, data, 4*mib)
		st, raw := waitDelivered(t, gw, uploadID(t, u))
		checkNoToken(t, token, map[string]string{"gateway logs": gw.Output(), "status JSON": string(raw)})
		checkGap(t, emu, token, data, st)
	})
}

// checkGap checks the outcome of the unavoidable gap: two videos for token,
// the first incomplete with part 1 of data only, the second complete,
// identical to data and the one the status st names.
func checkGap(t *testing.T, emu *apivideotest.Server, token string, data []byte, st gateway.Status) {
	t.Helper()
	videos := videosOf(emu, token)
	if len(videos) != 2 {
		t.Fatalf("emulator videos for the token: got %d, want 2 (the unavoidable gap)", len(videos))
	}
	orphan, v := videos[0], videos[1]
	if orphan.Complete || len(orphan.Parts) != 1 || orphan.Parts[0].Number != 1 || orphan.Parts[0].SHA256 != sha256Hex(data[:partSize]) {
		t.Errorf("first video: got complete %v with %d parts, want incomplete with part 1 only (the first %d bytes)", orphan.Complete, len(orphan.Parts), partSize)
	}
	if st.VideoID == nil || *st.VideoID != v.ID {
		t.Errorf("status videoId: got %s, want the second video %s", ptrString(st.VideoID), v.ID)
	}
	if !v.Complete || v.SHA256 != sha256Hex(data) {
		t.Errorf("second video: got complete %v, SHA-256 %s, want complete and %s", v.Complete, v.SHA256, sha256Hex(data))
	}
}
