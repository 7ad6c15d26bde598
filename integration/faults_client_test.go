package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/internal/testwait"
	"github.com/tusgate/tusgate/internal/tusclient"
)

// The client misbehaves: its connection is cut several times, it goes
// quiet for longer than --idle-timeout, or it disappears and another client
// resumes with only the upload URL. Each time the upload is delivered as
// one identical video.
func TestFaultClient(t *testing.T) {
	t.Parallel()

	// Three PATCHes cut mid-body (two body errors, one cancelled request),
	// across both part boundaries; after each the client asks HEAD for the
	// offset and goes on from there.
	t.Run("connection cut several times", func(t *testing.T) {
		t.Parallel()
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			gw := startGateway(t, emu, gatewayOptions{Store: kind})
			token := emu.CreateToken(time.Hour)
			data := testData(430, 12*mib)
			size := int64(len(data))
			u := create(t, gw, size, meta(token))
			id := uploadID(t, u)

			var off int64
			cuts := []struct {
				sent   int64
				cancel bool
			}{{3 * mib, false}, {4 * mib, true}, {4 * mib, false}}
			for i, c := range cuts {
				ctx, cancel := context.WithCancel(t.Context())
				body := &failingReader{r: bytes.NewReader(data[off:]), limit: c.sent}
				// The cut comes once the gateway holds the bytes sent, so
				// its PATCH is running when the client goes: a PATCH the
				// gateway only reached after the client gave up would
				// store nothing and could still interrupt a later request.
				want := off + c.sent
				body.atLimit = func() {
					testwait.Until(t.Context(), 10*time.Second, func() bool {
						return received(gw, id) >= want
					})
				}
				if c.cancel {
					body.cancel, body.ctx = cancel, ctx
				}
				_, err := gw.Tus.Patch(ctx, u, off, body, size-off, -1)
				cancel()
				if err == nil {
					t.Fatalf("cut %d: PATCH got success, want an error", i+1)
				}
				before := off
				waitFor(t, "HEAD to report the bytes of the cut PATCH", func() bool {
					info, err := gw.Tus.Head(t.Context(), u)
					if err != nil {
						t.Fatalf("HEAD after cut %d: %v", i+1, err)
					}
					off = info.Offset
					return off > before
				})
				if off > before+c.sent {
					t.Fatalf("offset after cut %d: got %d, want at most %d", i+1, off, before+c.sent)
				}
				t.Logf("cut %d: %d of %d bytes sent arrived", i+1, off-before, c.sent)
			}
			upload(t, gw, u, data, mib)
			finishDelivered(t, emu, gw, token, data, id)
		})
	})

	// The client stops for longer than --idle-timeout (2 s) with 7 of 12
	// MiB sent: the status reports "stalled": true, no sooner than 2 s after
	// the last byte; the client then resumes and the upload is delivered.
	t.Run("pause beyond idle timeout", func(t *testing.T) {
		t.Parallel()
		const idle = 2 * time.Second
		forEachStore(t, func(t *testing.T, kind string) {
			emu := newEmulator(t)
			gw := startGateway(t, emu, gatewayOptions{Store: kind, Args: []string{"--idle-timeout", idle.String()}})
			token := emu.CreateToken(time.Hour)
			data := testData(431, 12*mib)
			u := create(t, gw, int64(len(data)), meta(token))
			id := uploadID(t, u)
			patchRange(t, gw, u, data, 0, 6*mib, mib)
			lastStart := time.Now()
			patchRange(t, gw, u, data, 6*mib, 7*mib, mib)

			_, _, raw := getStatus(t, gw, id)
			v, ok := statusField(t, raw, "stalled")
			if !ok {
				t.Fatalf("status: no \"stalled\" field: %s", raw)
			}
			if string(v) != "false" && time.Since(lastStart) < idle {
				t.Errorf("status right after a PATCH: got stalled %s, want false", v)
			}
			deadline := time.Now().Add(idle + 10*time.Second)
			tick := time.NewTicker(pollInterval)
			defer tick.Stop()
			for {
				_, _, raw = getStatus(t, gw, id)
				v, _ = statusField(t, raw, "stalled")
				if string(v) == "true" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("status %v after the last byte: got %s, want stalled true", time.Since(lastStart).Round(time.Millisecond), raw)
				}
				<-tick.C
			}
			if gap := time.Since(lastStart); gap < idle {
				t.Errorf("stalled after %v, want no sooner than the %v idle timeout", gap, idle)
			}
			var st gateway.Status
			_, st, raw = getStatus(t, gw, id)
			if st.State.Terminal() {
				t.Fatalf("stalled upload: got %s, want it still resumable", raw)
			}

			upload(t, gw, u, data, mib)
			finishDelivered(t, emu, gw, token, data, id)
			_, _, raw = getStatus(t, gw, id)
			if v, _ := statusField(t, raw, "stalled"); string(v) != "false" {
				t.Errorf("status after delivery: got stalled %s, want false", v)
			}
		})
	})

	// The first client stalls mid-PATCH and never comes back; a second
	// client, with nothing but the upload URL and its own connections, asks
	// HEAD (which ends the stalled PATCH) and sends the rest. The stall comes
	// before (3 of 12 MiB) or after (7 of 12 MiB) part 1's boundary.
	for _, stall := range []int64{3 * mib, 7 * mib} {
		t.Run(fmt.Sprintf("resumed by another client at %d MiB", stall/mib), func(t *testing.T) {
			t.Parallel()
			forEachStore(t, func(t *testing.T, kind string) {
				emu := newEmulator(t)
				gw := startGateway(t, emu, gatewayOptions{Store: kind})
				token := emu.CreateToken(time.Hour)
				data := testData(432, 12*mib)
				size := int64(len(data))
				u := create(t, gw, size, meta(token))
				id := uploadID(t, u)
				patchRange(t, gw, u, data, 0, stall-2*mib, mib)

				release := make(chan struct{})
				defer close(release)
				patchErr := make(chan error, 1)
				go func() { // owned by the test: it receives from patchErr below
					body := &blockingReader{r: bytes.NewReader(data[stall-2*mib:]), limit: 2 * mib, release: release}
					_, err := gw.Tus.Patch(t.Context(), u, stall-2*mib, body, size-stall+2*mib, -1)
					patchErr <- err
				}()
				waitFor(t, "the gateway to write the bytes sent", func() bool { return fileSize(t, gw, id) == stall })

				tr := &http.Transport{}
				defer tr.CloseIdleConnections()
				other := &tusclient.Client{HTTPClient: &http.Client{Transport: tr, Timeout: time.Minute}}
				info, err := other.Head(t.Context(), u)
				if err != nil {
					t.Fatalf("HEAD from the second client: %v", err)
				}
				if info.Offset != stall || info.Length != size {
					t.Errorf("HEAD from the second client: got offset %d length %d, want %d and %d", info.Offset, info.Length, stall, size)
				}
				select {
				case err := <-patchErr:
					if err == nil {
						t.Errorf("the first client's stalled PATCH: got success, want an error")
					}
				case <-time.After(statusTimeout):
					t.Fatalf("the first client's stalled PATCH did not end within %v of the second client's HEAD", statusTimeout)
				}
				if err := other.Upload(t.Context(), u, bytes.NewReader(data), size, 2*mib); err != nil {
					t.Fatalf("upload from the second client: %v", err)
				}
				finishDelivered(t, emu, gw, token, data, id)
			})
		})
	}
}

// received returns the bytes the status API reports received for upload
// id, or -1 when it cannot tell. It fails no test: request bodies call it.
func received(gw *gatewayProc, id string) int64 {
	resp, err := http.Get(gw.URL + "/uploads/" + id)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var st gateway.Status
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
		return -1
	}
	return st.Received
}
