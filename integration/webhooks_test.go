package integration_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/webhook"
)

// A receiver that fails its first answer still gets every event of an
// upload once verified, in order, signed with --webhook-secret: created,
// received, delivered (with the video id), each with a unique id.
func TestWebhooksEndToEnd(t *testing.T) {
	t.Parallel()
	const secret = "integration-webhook-secret-0123456789abcdef"
	var mu sync.Mutex
	var got []webhook.Payload
	var failed bool
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || !webhook.Verify([]byte(secret), body, r.Header.Get("X-Tusgate-Signature")) {
			t.Errorf("webhook with a bad signature: %s", body)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if !failed {
			failed = true // the first delivery fails: it must be retried
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var p webhook.Payload
		if err := json.Unmarshal(body, &p); err != nil {
			t.Errorf("webhook body %s: %v", body, err)
		}
		if p.ID != r.Header.Get("X-Tusgate-Event-Id") {
			t.Errorf("event id %q, header %q", p.ID, r.Header.Get("X-Tusgate-Event-Id"))
		}
		got = append(got, p)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)

	emu := newEmulator(t)
	gw := startGateway(t, emu, gatewayOptions{Store: "embedded", Args: []string{"--webhook-url", recv.URL + "/hooks", "--webhook-secret", secret}})
	token := emu.CreateToken(time.Hour)
	data := testData(78, 6*mib)
	u := create(t, gw, int64(len(data)), meta(token))
	id := uploadID(t, u)
	patchRange(t, gw, u, data, 0, int64(len(data)), 2*mib)
	st, _ := waitDelivered(t, gw, id)

	var events []webhook.Payload
	waitFor(t, "three webhook events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		events = slices.Clone(got)
		return len(events) >= 3
	})
	var types []store.EventType
	ids := map[string]bool{}
	for _, e := range events {
		types = append(types, e.Type)
		ids[e.ID] = true
		if e.Upload.ID != id {
			t.Errorf("event %s for upload %q, want %q", e.Type, e.Upload.ID, id)
		}
	}
	want := []store.EventType{store.EventUploadCreated, store.EventUploadReceived, store.EventVideoDelivered}
	if !slices.Equal(types, want) || len(ids) != 3 {
		t.Fatalf("events: got %v (%d distinct ids), want %v with distinct ids", types, len(ids), want)
	}
	last := events[2]
	if last.Video == nil || st.VideoID == nil || last.Video.VideoID != *st.VideoID {
		t.Errorf("video.delivered video: got %+v, want id %v", last.Video, st.VideoID)
	}
	if out := gw.Output(); slices.ContainsFunc([]string{secret, token}, func(s string) bool { return strings.Contains(out, s) }) {
		t.Error("the gateway's output contains the webhook secret or the upload token")
	}
}
