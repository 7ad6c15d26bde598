package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tusgate/tusgate/gateway"
	"github.com/tusgate/tusgate/store"
)

// sse is one server-sent event.
type sse struct {
	ID, Event, Data string
}

// eventStream opens GET /uploads/{id}/events and returns a channel of its
// events, closed when the stream ends.
func (h *harness) eventStream(t *testing.T, id string, header map[string]string) (*http.Response, <-chan sse) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, h.srv.URL+"/uploads/"+id+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	ch := make(chan sse, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		var ev sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.Event != "" {
					ch <- ev
				}
				ev = sse{}
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.Data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return resp, ch
}

// nextEvent waits for the next event of ch.
func nextEvent(t *testing.T, ch <-chan sse) (sse, bool) {
	t.Helper()
	select {
	case ev, ok := <-ch:
		return ev, ok
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
		return sse{}, false
	}
}

// statusUntil reads "status" events until pred holds for one.
func statusUntil(t *testing.T, ch <-chan sse, what string, pred func(gateway.Status) bool) gateway.Status {
	t.Helper()
	for {
		ev, ok := nextEvent(t, ch)
		if !ok {
			t.Fatalf("stream ended before %s", what)
		}
		if ev.Event != "status" {
			t.Fatalf("waiting for %s: got event %q (%s)", what, ev.Event, ev.Data)
		}
		var s gateway.Status
		if err := json.Unmarshal([]byte(ev.Data), &s); err != nil {
			t.Fatalf("status event data %q: %v", ev.Data, err)
		}
		if pred(s) {
			return s
		}
	}
}

func fastEvents(c *gateway.Config) { c.EventsInterval = 5 * time.Millisecond }

// The stream reports the gateway leg as bytes arrive and the api.video leg
// as parts are delivered, then ends with "end" once the upload is terminal.
func TestEventsFollowBothLegs(t *testing.T) {
	h := newHarness(t, fastEvents)
	const size = 12 * MiB
	data := randomData(size)
	uploadURL, id := h.create(t, size, map[string]string{"filename": "a.mp4"})
	resp, ch := h.eventStream(t, id, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	first := statusUntil(t, ch, "the first status", func(gateway.Status) bool { return true })
	if first.ID != id || first.Received != 0 || first.State != store.StateReceiving {
		t.Fatalf("first status: %+v", first)
	}
	if _, err := h.client.Patch(t.Context(), uploadURL, 0, bytes.NewReader(data[:6*MiB]), 6*MiB, -1); err != nil {
		t.Fatal(err)
	}
	statusUntil(t, ch, "6 MiB received", func(s gateway.Status) bool { return s.Received == 6*MiB })
	if _, err := h.client.Patch(t.Context(), uploadURL, 6*MiB, bytes.NewReader(data[6*MiB:]), size-6*MiB, -1); err != nil {
		t.Fatal(err)
	}
	statusUntil(t, ch, "every byte received", func(s gateway.Status) bool { return s.Received == size })

	// The forwarder's side, as it records deliveries.
	now := testNow
	deliver := func(k int) {
		t.Helper()
		if _, err := h.st.Update(t.Context(), id, func(u *store.Upload) error {
			if _, err := u.Claim(k, "test", now.Add(time.Minute), now); err != nil {
				return err
			}
			return u.Deliver(k, "vi123", store.Assets{}, now)
		}); err != nil {
			t.Fatalf("deliver part %d: %v", k, err)
		}
	}
	deliver(1)
	statusUntil(t, ch, "part 1 delivered", func(s gateway.Status) bool { return s.Parts.Delivered == 1 && s.Delivered == 5*MiB })
	deliver(2)
	deliver(3)
	last := statusUntil(t, ch, "delivered", func(s gateway.Status) bool { return s.State == store.StateDelivered })
	if last.VideoID == nil || *last.VideoID != "vi123" {
		t.Errorf("last status videoId: %v", last.VideoID)
	}
	if ev, ok := nextEvent(t, ch); !ok || ev.Event != "end" {
		t.Fatalf("after the terminal status: got %+v (open %v), want an end event", ev, ok)
	}
	if ev, ok := nextEvent(t, ch); ok {
		t.Fatalf("stream still open after end: %+v", ev)
	}
}

// Unknown uploads get 404 JSON; a disallowed origin 403; a state-store
// failure mid-stream an "unavailable" event, then the stream closes.
func TestEventsErrors(t *testing.T) {
	h := newHarness(t, func(c *gateway.Config) {
		fastEvents(c)
		c.CORSOrigins = []string{"https://app.example"}
	})
	resp, body := h.do(t, http.MethodGet, h.srv.URL+"/uploads/nope/events", nil, nil)
	if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "not_found") {
		t.Errorf("unknown upload: %d %s", resp.StatusCode, body)
	}
	_, id := h.create(t, MiB, map[string]string{"filename": "a.mp4"})
	resp, body = h.do(t, http.MethodGet, h.srv.URL+"/uploads/"+id+"/events", map[string]string{"Origin": "https://evil.example"}, nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "origin_not_allowed") {
		t.Errorf("disallowed origin: %d %s", resp.StatusCode, body)
	}

	resp, ch := h.eventStream(t, id, map[string]string{"Origin": "https://app.example"})
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "https://app.example" {
		t.Errorf("Access-Control-Allow-Origin: got %q", got)
	}
	statusUntil(t, ch, "the first status", func(gateway.Status) bool { return true })
	h.st.failGet.Store(true)
	ev, ok := nextEvent(t, ch)
	if !ok || ev.Event != "unavailable" {
		t.Fatalf("after a store failure: got %+v (open %v), want an unavailable event", ev, ok)
	}
	if ev, ok := nextEvent(t, ch); ok {
		t.Fatalf("stream still open after unavailable: %+v", ev)
	}
}
