package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// Defaults of the status event stream (GET /uploads/{id}/events).
const (
	defaultEventsInterval = 500 * time.Millisecond
	// eventsHeartbeat is how often an idle stream sends a comment, so
	// proxies and browsers keep it open.
	eventsHeartbeat = 15 * time.Second
	// eventsRetry is the reconnection delay the stream asks EventSource
	// clients to use, in milliseconds.
	eventsRetry = 2000
)

// handleEvents serves GET /uploads/{id}/events: a server-sent events stream
// of the upload's status (the JSON of GET /uploads/{id}), for the progress
// of both legs: `received` (client → gateway) and `delivered` (gateway →
// api.video). An event "status" is sent at once and whenever the status
// changes (checked every Config.EventsInterval); when the upload reaches a
// terminal state (delivered, failed, terminated) a last "status" event is
// followed by an event "end" and the stream closes, so EventSource clients
// know not to reconnect. An idle stream sends a comment every 15 s. Errors
// before the stream starts are JSON, as for GET /uploads/{id}; a state-store
// failure mid-stream sends an event "unavailable" and closes the stream
// (EventSource reconnects after the advertised retry delay).
func (g *Gateway) handleEvents(w http.ResponseWriter, r *http.Request) {
	if !g.allowCORS(w, r) {
		writeJSON(w, http.StatusForbidden, jsonError{jsonErrorBody{"origin_not_allowed", "request origin is not allowed"}})
		return
	}
	ctx := r.Context()
	id := r.PathValue("id")
	grant, err := g.grantFor(r, true)
	if err != nil {
		writeStatusError(w, err)
		return
	}
	s, err := g.loadStatus(ctx, id, grant)
	if err != nil {
		writeStatusError(w, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	ew := &eventWriter{w: w, rc: rc}
	ew.raw("retry: " + strconv.Itoa(eventsRetry) + "\n\n")

	tick := time.NewTicker(g.cfg.EventsInterval)
	defer tick.Stop()
	var last []byte
	lastWrite := time.Now()
	for {
		data, err := json.Marshal(s)
		if err != nil {
			g.logger(ctx).Error("events: encode status", zap.String("id", id), zap.Error(err))
			return
		}
		if !bytes.Equal(data, last) {
			ew.event("status", data)
			last, lastWrite = data, time.Now()
		}
		if s.State.Terminal() {
			ew.event("end", []byte("{}"))
			return
		}
		if time.Since(lastWrite) >= eventsHeartbeat {
			ew.raw(": keep-alive\n\n")
			lastWrite = time.Now()
		}
		if ew.err != nil {
			return // the client went away
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if s, err = g.loadStatus(ctx, id, grant); err != nil {
			if ctx.Err() == nil {
				ew.event("unavailable", []byte(`{"error":{"code":"unavailable","message":"state store unavailable, retry later"}}`))
			}
			return
		}
	}
}

// eventWriter writes server-sent events and flushes each one. The first
// error is kept and later writes are skipped.
type eventWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	n   int
	err error
}

// event writes one event with an increasing id. data is one line of JSON.
func (e *eventWriter) event(name string, data []byte) {
	e.n++
	e.raw(fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", e.n, name, data))
}

func (e *eventWriter) raw(s string) {
	if e.err != nil {
		return
	}
	if _, e.err = e.w.Write([]byte(s)); e.err == nil {
		e.err = e.rc.Flush()
	}
}
