package webhook_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tusgate/tusgate/internal/redistest"
	"github.com/tusgate/tusgate/store"
	"github.com/tusgate/tusgate/store/redisstore"
	"github.com/tusgate/tusgate/webhook"
)

// checkRequest verifies the signature and headers of a request and returns
// its payload.
func checkRequest(t *testing.T, r request) webhook.Payload {
	t.Helper()
	if !webhook.Verify(secret, r.body, r.header.Get(webhook.HeaderSignature)) {
		t.Errorf("request %d: signature %q does not verify", r.n, r.header.Get(webhook.HeaderSignature))
	}
	var p webhook.Payload
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("request %d: body %s: %v", r.n, r.body, err)
	}
	for h, want := range map[string]string{
		"Content-Type":          "application/json",
		"User-Agent":            "tusgate",
		webhook.HeaderEventID:   p.ID,
		webhook.HeaderEventType: string(p.Type),
		webhook.HeaderSignature: webhook.Sign(secret, r.body),
	} {
		if got := r.header.Get(h); got != want || got == "" {
			t.Errorf("request %d: %s = %q, want %q", r.n, h, got, want)
		}
	}
	if n, err := strconv.Atoi(r.header.Get(webhook.HeaderAttempt)); err != nil || n < 1 {
		t.Errorf("request %d: %s = %q, want a positive number", r.n, webhook.HeaderAttempt, r.header.Get(webhook.HeaderAttempt))
	}
	return p
}

// TestDeliversEveryEvent runs three uploads through their lives and checks
// that every event reaches the receiver once, in order per upload, signed,
// with the documented body.
func TestDeliversEveryEvent(t *testing.T) {
	st := newBolt(t)
	rc := newReceiver(t, nil)
	reg := prometheus.NewRegistry()
	d := newDispatcher(t, webhook.Config{URL: rc.url(), Secret: secret, MinBackoff: 10 * time.Millisecond, Registerer: reg}, st)
	run(t, d)

	now := time.Now()
	assets := store.Assets{
		Player:    "https://embed.api.video/vod/vi1",
		HLS:       "https://vod.api.video/vod/vi1/hls/manifest.m3u8",
		Thumbnail: "https://vod.api.video/vod/vi1/thumbnail.jpg",
		MP4:       "https://vod.api.video/vod/vi1/mp4/source.mp4",
	}
	steps := []struct {
		id string
		fn func(*store.Upload) error
	}{
		{"ok", func(u *store.Upload) error { return u.RecordReceived(12*mib, true, now) }},
		{"ok", func(u *store.Upload) error { return u.Deliver(1, "vi1", store.Assets{}, now) }},
		{"ok", func(u *store.Upload) error { return u.Deliver(2, "", store.Assets{}, now) }},
		{"ok", func(u *store.Upload) error { return u.Deliver(3, "", assets, now) }},
		{"bad", func(u *store.Upload) error {
			return u.Fail(store.ReasonTokenRejected, "api.video refused the token", now)
		}},
		{"gone", func(u *store.Upload) error { return u.Terminate(now) }},
	}
	for _, id := range []string{"ok", "bad", "gone"} {
		u := hookedUpload(id, now)
		if id == "gone" {
			u.SizeDeferred, u.Size = true, 0
		}
		mustCreate(t, st, u)
		d.Notify(id)
	}
	for _, s := range steps {
		mustUpdate(t, st, s.id, s.fn)
		d.Notify(s.id)
	}
	waitFor(t, "every event delivered", func() bool { return rc.count() >= 7 && outboxEmpty(t, st, "ok", "bad", "gone")() })

	reqs := rc.all()
	if len(reqs) != 7 {
		t.Errorf("receiver got %d requests, want 7", len(reqs))
	}
	byUpload := map[string][]webhook.Payload{}
	ids := map[string]bool{}
	for _, r := range reqs {
		p := checkRequest(t, r)
		if ids[p.ID] {
			t.Errorf("event id %s delivered twice", p.ID)
		}
		ids[p.ID] = true
		if r.header.Get(webhook.HeaderAttempt) != "1" {
			t.Errorf("%s: attempt header %q, want 1", p.Type, r.header.Get(webhook.HeaderAttempt))
		}
		if bytes.Contains(r.body, []byte("to1tcmSFHeYY5KzyhOqVKMKb")) {
			t.Errorf("%s body holds the api.video token", p.Type)
		}
		byUpload[p.Upload.ID] = append(byUpload[p.Upload.ID], p)
	}
	wantTypes := map[string][]store.EventType{
		"ok":   {store.EventUploadCreated, store.EventUploadReceived, store.EventVideoDelivered},
		"bad":  {store.EventUploadCreated, store.EventUploadFailed},
		"gone": {store.EventUploadCreated, store.EventUploadTerminated},
	}
	for id, want := range wantTypes {
		var got []store.EventType
		for _, p := range byUpload[id] {
			got = append(got, p.Type)
		}
		if !slices.Equal(got, want) {
			t.Errorf("upload %s: events %v, want %v (in order)", id, got, want)
		}
	}

	created := byUpload["ok"][0]
	if created.Upload.State != store.StateReceiving || created.Upload.Received != 0 || created.Video != nil || created.Error != nil ||
		*created.Upload.Filename != "holiday.mp4" || *created.Upload.Filetype != "video/mp4" || created.Upload.Metadata["userId"] != "42" {
		t.Errorf("upload.created payload = %+v", created)
	}
	received := byUpload["ok"][1]
	if received.Upload.Received != 12*mib || *received.Upload.Size != 12*mib {
		t.Errorf("upload.received payload: received %d of %v, want %d", received.Upload.Received, received.Upload.Size, 12*mib)
	}
	delivered := byUpload["ok"][2]
	if delivered.Upload.State != store.StateDelivered || delivered.Upload.Delivered != 12*mib || delivered.Video == nil ||
		delivered.Video.VideoID != "vi1" || *delivered.Video.Assets.Player != assets.Player || *delivered.Video.Assets.HLS != assets.HLS ||
		*delivered.Video.Assets.Thumbnail != assets.Thumbnail || *delivered.Video.Assets.MP4 != assets.MP4 {
		t.Errorf("video.delivered payload = %+v, video %+v", delivered, delivered.Video)
	}
	failed := byUpload["bad"][1]
	if failed.Upload.State != store.StateFailed || failed.Error == nil || failed.Error.Reason != store.ReasonTokenRejected ||
		failed.Error.Message != "api.video refused the token" {
		t.Errorf("upload.failed payload = %+v, error %+v", failed, failed.Error)
	}
	if term := byUpload["gone"][1]; term.Upload.State != store.StateTerminated || term.Upload.Size != nil {
		t.Errorf("upload.terminated payload of a deferred-length upload: state %s, size %v; want terminated, null", term.Upload.State, term.Upload.Size)
	}

	// Delivered events leave the records; the terminal ones leave the list.
	active, err := st.ListActive(t.Context())
	if err != nil || len(active) != 0 {
		t.Errorf("ListActive = %v, %v; want none (every upload terminal, every event delivered)", active, err)
	}
	if got := counter(t, reg, "delivered"); got != 7 {
		t.Errorf("deliveries{delivered} = %v, want 7", got)
	}
	waitFor(t, "queue depth 0", func() bool { return gauge(t, reg, "tusgate_webhook_queue_depth") == 0 })
}

// TestRetriesUntilDelivered makes the receiver fail three times: the event
// is retried with growing waits, the same id and body, and delivered once.
func TestRetriesUntilDelivered(t *testing.T) {
	const failures = 3
	const minBackoff = 40 * time.Millisecond
	st := newBolt(t)
	var (
		mu      sync.Mutex
		seen    store.Event // the event as stored when the last request came
		seenErr error
	)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n <= failures {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		u, err := st.Get(r.Context(), "u1")
		mu.Lock()
		if seenErr = err; err == nil && len(u.Outbox) > 0 {
			seen = u.Outbox[0]
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	reg := prometheus.NewRegistry()
	d := newDispatcher(t, webhook.Config{URL: rc.url(), Secret: secret, MinBackoff: minBackoff, MaxBackoff: time.Second,
		Owner: "gw-a", Registerer: reg}, st)
	mustCreate(t, st, hookedUpload("u1", time.Now()))
	run(t, d)
	d.Notify("u1")
	waitFor(t, "the event delivered", outboxEmpty(t, st, "u1"))

	reqs := rc.all()
	if len(reqs) != failures+1 {
		t.Fatalf("receiver got %d requests, want %d", len(reqs), failures+1)
	}
	first := checkRequest(t, reqs[0])
	for i, r := range reqs {
		p := checkRequest(t, r)
		if p.ID != first.ID || !bytes.Equal(r.body, reqs[0].body) {
			t.Errorf("attempt %d: event %s, body changed %t; want the same event and body", i+1, p.ID, !bytes.Equal(r.body, reqs[0].body))
		}
		if got := r.header.Get(webhook.HeaderAttempt); got != strconv.Itoa(i+1) {
			t.Errorf("attempt %d: %s = %s", i+1, webhook.HeaderAttempt, got)
		}
		if i > 0 {
			// The wait after failure i is at least half its ceiling
			// minBackoff·2^(i-1): 20, 40, 80 ms.
			gap, floor := r.at.Sub(reqs[i-1].at), minBackoff<<(i-1)/2
			if gap < floor {
				t.Errorf("wait before attempt %d = %v, want ≥ %v (growing backoff)", i+1, gap, floor)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if seenErr != nil {
		t.Fatalf("receiver: Get: %v", seenErr)
	}
	if seen.Attempts != failures || seen.LastError != "HTTP 500 Internal Server Error" || seen.Lease.Owner != "gw-a" {
		t.Errorf("stored event during the last attempt: attempts %d, last error %q, lease %+v; want %d, HTTP 500, held by gw-a",
			seen.Attempts, seen.LastError, seen.Lease, failures)
	}
	if f, ok := counter(t, reg, "failed"), counter(t, reg, "delivered"); f != failures || ok != 1 {
		t.Errorf("deliveries: failed %v, delivered %v; want %d, 1", f, ok, failures)
	}
}

func TestBackoffBounds(t *testing.T) {
	d := newDispatcher(t, webhook.Config{URL: "http://127.0.0.1:1/", Secret: secret, MinBackoff: time.Second, MaxBackoff: time.Minute}, newBolt(t))
	for n := 1; n <= 12; n++ {
		ceil := min(time.Second<<(n-1), time.Minute)
		for range 200 {
			if got := d.Backoff(n); got < ceil/2 || got > ceil {
				t.Fatalf("Backoff(%d) = %v, want within [%v, %v]", n, got, ceil/2, ceil)
			}
		}
	}
}

// TestRetryAfter checks that a 429 or 503 with Retry-After delays the next
// attempt at least that long, in the record, and that nothing is sent
// before.
func TestRetryAfter(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 7, 52, 49, 0, time.UTC)
	tests := []struct {
		name     string
		status   int
		header   string
		minWait  time.Duration
		maxWait  time.Duration
		honoured bool
	}{
		{"429 seconds", http.StatusTooManyRequests, "120", 120 * time.Second, 120 * time.Second, true},
		{"503 HTTP date", http.StatusServiceUnavailable, t0.Add(300 * time.Second).Format(http.TimeFormat), 300 * time.Second, 300 * time.Second, true},
		{"429 capped", http.StatusTooManyRequests, "999999", webhook.MaxRetryAfter, webhook.MaxRetryAfter, true},
		{"500 ignores it", http.StatusInternalServerError, "120", 0, time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newBolt(t)
			rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
				if n == 1 {
					w.Header().Set("Retry-After", tt.header)
					w.WriteHeader(tt.status)
					return
				}
				w.WriteHeader(http.StatusOK)
			})
			clk := newClock(t0)
			d := newDispatcher(t, webhook.Config{URL: rc.url(), Secret: secret, MinBackoff: 500 * time.Millisecond,
				MaxBackoff: time.Second, Now: clk.Now}, st)
			mustCreate(t, st, hookedUpload("u1", t0))

			next := d.Process(t.Context(), "u1")
			if rc.count() != 1 {
				t.Fatalf("requests after the first look: %d, want 1", rc.count())
			}
			wait := next.Sub(t0)
			if wait < tt.minWait || wait > tt.maxWait {
				t.Errorf("next attempt after %v, want within [%v, %v]", wait, tt.minWait, tt.maxWait)
			}
			if ev := mustGet(t, st, "u1").Outbox[0]; !ev.NextAttempt.Equal(next) || ev.Attempts != 1 {
				t.Errorf("stored event: next %v, attempts %d; want %v, 1 (the schedule survives a restart)", ev.NextAttempt, ev.Attempts, next)
			}
			if !tt.honoured {
				return
			}
			clk.Set(next.Add(-time.Second))
			if again := d.Process(t.Context(), "u1"); !again.Equal(next) || rc.count() != 1 {
				t.Errorf("a second before the time: next %v, requests %d; want %v, 1 (nothing sent)", again, rc.count(), next)
			}
			clk.Set(next)
			if again := d.Process(t.Context(), "u1"); !again.IsZero() || rc.count() != 2 {
				t.Errorf("at the time: next %v, requests %d; want zero, 2", again, rc.count())
			}
			if got := mustGet(t, st, "u1").Outbox; len(got) != 0 {
				t.Errorf("outbox after delivery = %+v, want empty", got)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tt := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"-5", 0},
		{"7", 7 * time.Second},
		{" 30 ", 30 * time.Second},
		{"1e3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), webhook.MaxRetryAfter},
		{"9999999999999", webhook.MaxRetryAfter},
	} {
		if got := webhook.ParseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// TestSurvivesRestart stops a dispatcher while an event waits for its retry,
// reopens the store file as a new process would, and checks that a new
// dispatcher delivers the events of the (terminal) upload without being
// told about it, keeping the stored schedule.
func TestSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st := openBolt(t, path)
	var up sync.Mutex
	healthy := false
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		up.Lock()
		defer up.Unlock()
		if !healthy {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	now := time.Now()
	mustCreate(t, st, hookedUpload("u1", now))
	mustUpdate(t, st, "u1", func(u *store.Upload) error { return u.Fail(store.ReasonDataLost, "gone", now) })
	events := mustGet(t, st, "u1").Outbox

	cfg := webhook.Config{URL: rc.url(), Secret: secret, MinBackoff: 400 * time.Millisecond, MaxBackoff: 400 * time.Millisecond, Owner: "gw-a"}
	stop := run(t, newDispatcher(t, cfg, st))
	waitFor(t, "a failed attempt recorded", func() bool {
		u := mustGet(t, st, "u1")
		return len(u.Outbox) == 2 && u.Outbox[0].Attempts >= 1
	})
	stop()
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	failedAttempts := rc.count()

	// A new process: the store file reopened, a new dispatcher that nobody
	// notifies.
	up.Lock()
	healthy = true
	up.Unlock()
	st = openBolt(t, path)
	t.Cleanup(func() { _ = st.Close() })
	pendingEv := mustGet(t, st, "u1").Outbox[0]
	if pendingEv.ID != events[0].ID || pendingEv.Lease != (store.Lease{}) || pendingEv.NextAttempt.IsZero() {
		t.Fatalf("after reopen the event is %+v; want %s, no lease, a next attempt", pendingEv, events[0].ID)
	}
	cfg.Owner = "gw-b"
	run(t, newDispatcher(t, cfg, st))
	waitFor(t, "the pending events delivered after the restart", outboxEmpty(t, st, "u1"))

	reqs := rc.all()[failedAttempts:]
	var got []string
	for _, r := range reqs {
		got = append(got, checkRequest(t, r).ID)
	}
	if want := []string{events[0].ID, events[1].ID}; !slices.Equal(got, want) {
		t.Errorf("after the restart the receiver got events %v, want %v", got, want)
	}
	if len(reqs) > 0 && reqs[0].at.Before(pendingEv.NextAttempt) {
		t.Errorf("first request after the restart at %v, before the stored next attempt %v", reqs[0].at, pendingEv.NextAttempt)
	}
	active, err := st.ListActive(t.Context())
	if err != nil || len(active) != 0 {
		t.Errorf("ListActive = %v, %v; want none", active, err)
	}
}

// TestStopMidSend stops a dispatcher while its request hangs: the event's
// lease is released, without counting an attempt, so another dispatcher
// sends it at once.
func TestStopMidSend(t *testing.T) {
	st := newBolt(t)
	hung := make(chan struct{})
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			close(hung)
			<-r.Context().Done()
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	mustCreate(t, st, hookedUpload("u1", time.Now()))
	cfg := webhook.Config{URL: rc.url(), Secret: secret, Owner: "gw-a", Timeout: time.Minute}
	stop := run(t, newDispatcher(t, cfg, st))
	select {
	case <-hung:
	case <-time.After(15 * time.Second):
		t.Fatal("no request within 15s")
	}
	stop()
	ev := mustGet(t, st, "u1").Outbox[0]
	if ev.Lease != (store.Lease{}) || ev.Attempts != 0 {
		t.Fatalf("after the stop the event is %+v; want no lease, no attempt counted", ev)
	}
	cfg.Owner = "gw-b"
	run(t, newDispatcher(t, cfg, st))
	waitFor(t, "the event delivered by the second dispatcher", outboxEmpty(t, st, "u1"))
	if rc.count() != 2 {
		t.Errorf("receiver got %d requests, want 2", rc.count())
	}
}

// TestTwoDispatchersShareRedis runs two dispatchers (two gateway instances)
// on one Redis, both told about every upload: each event is delivered, and
// thanks to the claims, exactly once.
func TestTwoDispatchersShareRedis(t *testing.T) {
	const uploads = 20
	admin := redistest.Client(t)
	prefix := redistest.Prefix(t, admin)
	a := redisstore.New(redistest.Client(t), prefix)
	b := redisstore.New(redistest.Client(t), prefix)

	var mu sync.Mutex
	got := map[string]int{}
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		mu.Lock()
		got[r.Header.Get(webhook.HeaderEventID)]++
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	cfg := webhook.Config{URL: rc.url(), Secret: secret, MinBackoff: 10 * time.Millisecond, Resync: 50 * time.Millisecond}
	cfg.Owner = "gw-a"
	da := newDispatcher(t, cfg, a)
	cfg.Owner = "gw-b"
	db := newDispatcher(t, cfg, b)
	run(t, da)
	run(t, db)

	now := time.Now()
	var ids []string
	want := map[string]bool{}
	for i := range uploads {
		id := fmt.Sprintf("u%02d", i)
		ids = append(ids, id)
		created := hookedUpload(id, now)
		mustCreate(t, a, created)
		// A resync may deliver the created event before the update below, so
		// the update's outbox need not hold it: take each upload's events from
		// both snapshots.
		u := mustUpdate(t, b, id, func(u *store.Upload) error { return u.RecordReceived(12*mib, true, now) })
		for _, e := range append(created.Outbox, u.Outbox...) {
			want[e.ID] = true
		}
		da.Notify(id)
		db.Notify(id)
	}
	waitFor(t, "every event delivered", outboxEmpty(t, a, ids...))

	mu.Lock()
	defer mu.Unlock()
	if len(want) != 2*uploads {
		t.Fatalf("queued %d distinct events, want %d", len(want), 2*uploads)
	}
	for id := range want {
		if n := got[id]; n != 1 {
			t.Errorf("event %s delivered %d times, want 1", id, n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("receiver got %d distinct events, want %d", len(got), len(want))
	}
}

// TestNoSecretsInLogs uses a webhook URL with user info and a query token:
// neither, nor the signing secret, may appear in logs or stored errors.
func TestNoSecretsInLogs(t *testing.T) {
	const (
		user  = "hookuser"
		pass  = "hookPa55word"
		token = "qtok9f8e7d"
	)
	signing := []byte("whsec_never_logged_31337")
	secrets := []string{pass, token, string(signing), user}

	st := newBolt(t)
	var authOK, queryOK bool
	var mu sync.Mutex
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) {
		u, p, ok := r.BasicAuth()
		mu.Lock()
		authOK = ok && u == user && p == pass
		queryOK = r.URL.Query().Get("key") == token
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	withCreds := func(base string) string {
		return strings.Replace(base, "http://", "http://"+user+":"+pass+"@", 1) + "/hook?key=" + token
	}
	d := newDispatcher(t, webhook.Config{URL: withCreds(rc.srv.URL), Secret: signing, MinBackoff: 10 * time.Millisecond, Logger: log}, st)
	mustCreate(t, st, hookedUpload("u1", time.Now()))
	run(t, d)
	d.Notify("u1")
	waitFor(t, "delivery", outboxEmpty(t, st, "u1"))
	mu.Lock()
	if !authOK || !queryOK {
		t.Errorf("receiver: basic auth from the URL %t, query kept %t; want both", authOK, queryOK)
	}
	mu.Unlock()

	// A network failure (nothing listens), whose Go error quotes the URL.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	st2 := newBolt(t)
	d2 := newDispatcher(t, webhook.Config{URL: withCreds(closed), Secret: signing, Logger: log}, st2)
	mustCreate(t, st2, hookedUpload("u2", time.Now()))
	d2.Process(t.Context(), "u2")
	lastErr := mustGet(t, st2, "u2").Outbox[0].LastError
	if lastErr == "" {
		t.Fatalf("no error stored for a refused connection")
	}

	// A configuration error.
	_, err = webhook.New(webhook.Config{URL: "ftp://" + user + ":" + pass + "@example.com/?key=" + token, Secret: signing}, st)
	if err == nil {
		t.Fatalf("New accepted an ftp URL")
	}

	var all strings.Builder
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	for _, e := range logs.All() {
		buf, err := enc.EncodeEntry(e.Entry, e.Context)
		if err != nil {
			t.Fatal(err)
		}
		all.Write(buf.Bytes())
	}
	all.WriteString(lastErr)
	all.WriteString(err.Error())
	for _, s := range secrets {
		if strings.Contains(all.String(), s) {
			t.Errorf("logs or errors contain %q:\n%s", s, all.String())
		}
	}
	if !strings.Contains(all.String(), rc.srv.URL+"/hook") {
		t.Errorf("logs do not name the endpoint (redacted) %s/hook:\n%s", rc.srv.URL, all.String())
	}
	if !strings.Contains(lastErr, "refused") {
		t.Errorf("stored error %q does not say the connection was refused", lastErr)
	}
}

func TestVerify(t *testing.T) {
	body := []byte(`{"id":"evt_1","type":"upload.created"}`)
	sig := webhook.Sign(secret, body)
	if len(sig) != 64 || strings.ToLower(sig) != sig {
		t.Fatalf("Sign = %q, want 64 lowercase hex digits", sig)
	}
	for _, tt := range []struct {
		name   string
		secret []byte
		body   []byte
		header string
		want   bool
	}{
		{"valid", secret, body, sig, true},
		{"uppercase hex", secret, body, strings.ToUpper(sig), true},
		{"surrounding space", secret, body, " " + sig + " ", true},
		{"wrong secret", []byte("other"), body, sig, false},
		{"body changed", secret, append(bytes.Clone(body), ' '), sig, false},
		{"truncated", secret, body, sig[:62], false},
		{"not hex", secret, body, strings.Repeat("zz", 32), false},
		{"empty", secret, body, "", false},
		{"prefixed", secret, body, "sha256=" + sig, false},
	} {
		if got := webhook.Verify(tt.secret, tt.body, tt.header); got != tt.want {
			t.Errorf("%s: Verify = %t, want %t", tt.name, got, tt.want)
		}
	}
}

// TestMaxAge makes the receiver fail for ever: the event is retried until
// MaxAge after it happened, one last time at exactly MaxAge, then dropped
// with an error in the log.
func TestMaxAge(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)
	st := newBolt(t)
	rc := newReceiver(t, func(w http.ResponseWriter, r *http.Request, n int) { w.WriteHeader(http.StatusBadRequest) })
	clk := newClock(t0)
	core, logs := observer.New(zapcore.InfoLevel)
	reg := prometheus.NewRegistry()
	d := newDispatcher(t, webhook.Config{URL: rc.url(), Secret: secret, MaxAge: time.Hour, MinBackoff: 10 * time.Minute,
		MaxBackoff: 40 * time.Minute, Now: clk.Now, Logger: zap.New(core), Registerer: reg}, st)
	u := hookedUpload("u1", t0)
	mustCreate(t, st, u)
	mustUpdate(t, st, "u1", func(u *store.Upload) error { return u.Terminate(t0) })
	evID := u.Outbox[0].ID

	var times []time.Time
	for next := t0; !next.IsZero(); {
		if len(times) > 20 {
			t.Fatalf("still retrying after %d attempts", len(times))
		}
		clk.Set(next)
		times = append(times, next)
		if got := gauge(t, reg, "tusgate_webhook_oldest_event_age_seconds"); len(times) > 1 && got != next.Sub(t0).Seconds() {
			t.Errorf("oldest event age = %vs, want %vs", got, next.Sub(t0).Seconds())
		}
		next = d.Process(t.Context(), "u1")
		if !next.IsZero() && next.After(t0.Add(time.Hour)) {
			t.Fatalf("next attempt at %v, after the max age", next)
		}
	}
	// Both events (upload.created, then upload.terminated, which waited
	// behind it) are dropped at the end: the loop's last look dropped the
	// first and the second is, by then, as old.
	if got := mustGet(t, st, "u1"); len(got.Outbox) != 0 {
		t.Errorf("outbox after the max age = %+v, want empty", got.Outbox)
	}
	if last := times[len(times)-1]; !last.Equal(t0.Add(time.Hour)) {
		t.Errorf("last attempt at %v, want at the max age %v", last, t0.Add(time.Hour))
	}
	if len(times) < 3 {
		t.Errorf("%d attempts in the max age, want several", len(times))
	}
	dropped := logs.FilterMessageSnippet("dropped").FilterField(zap.String("event", evID)).All()
	if len(dropped) != 1 || dropped[0].Level != zapcore.ErrorLevel {
		t.Errorf("log lines about dropping %s: %v; want one error", evID, dropped)
	}
	if got := counter(t, reg, "dropped"); got != 2 {
		t.Errorf("deliveries{dropped} = %v, want 2", got)
	}
	active, err := st.ListActive(t.Context())
	if err != nil || len(active) != 0 {
		t.Errorf("ListActive = %v, %v; want none", active, err)
	}
}

// TestWebhooksOff: without a URL, events left in records (queued while
// webhooks were on) are kept until MaxAge, then dropped, so their terminal
// records leave the active list.
func TestWebhooksOff(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)
	st := newBolt(t)
	clk := newClock(t0.Add(time.Hour))
	reg := prometheus.NewRegistry()
	d := newDispatcher(t, webhook.Config{Now: clk.Now, Registerer: reg}, st)
	mustCreate(t, st, hookedUpload("u1", t0))
	mustUpdate(t, st, "u1", func(u *store.Upload) error { return u.Fail(store.ReasonDataLost, "gone", t0) })

	if next := d.Process(t.Context(), "u1"); !next.Equal(t0.Add(webhook.DefaultMaxAge)) {
		t.Errorf("next look = %v, want %v (the max age)", next, t0.Add(webhook.DefaultMaxAge))
	}
	if got := mustGet(t, st, "u1").Outbox; len(got) != 2 {
		t.Fatalf("outbox before the max age holds %d events, want 2", len(got))
	}
	clk.Set(t0.Add(webhook.DefaultMaxAge))
	if next := d.Process(t.Context(), "u1"); !next.IsZero() {
		t.Errorf("next look after dropping = %v, want zero", next)
	}
	if got := mustGet(t, st, "u1").Outbox; len(got) != 0 {
		t.Errorf("outbox after the max age = %+v, want empty", got)
	}
	active, err := st.ListActive(t.Context())
	if err != nil || len(active) != 0 {
		t.Errorf("ListActive = %v, %v; want none", active, err)
	}
	if got := counter(t, reg, "dropped"); got != 2 {
		t.Errorf("deliveries{dropped} = %v, want 2", got)
	}
}

func TestNewValidates(t *testing.T) {
	st := newBolt(t)
	for _, tt := range []struct {
		name string
		cfg  webhook.Config
		want string // in the error; "" for success
	}{
		{"off", webhook.Config{}, ""},
		{"https", webhook.Config{URL: "https://hooks.example.com/tusgate", Secret: secret}, ""},
		{"no secret", webhook.Config{URL: "https://hooks.example.com/tusgate"}, "secret is required"},
		{"ftp", webhook.Config{URL: "ftp://example.com/", Secret: secret}, "http or https"},
		{"relative", webhook.Config{URL: "/hook", Secret: secret}, "http or https"},
		{"no host", webhook.Config{URL: "http:///hook", Secret: secret}, "no host"},
		{"unparsable", webhook.Config{URL: "http://u:p@[::1/", Secret: secret}, "does not parse"},
		{"negative", webhook.Config{URL: "http://x/", Secret: secret, Timeout: -1}, "negative"},
		{"every problem", webhook.Config{URL: "ftp://x/", MaxAge: -1}, "secret is required"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := webhook.New(tt.cfg, st)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("New: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("New: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestPayloadJSON pins the documented body.
func TestPayloadJSON(t *testing.T) {
	created := time.Date(2026, 11, 27, 7, 52, 49, 0, time.FixedZone("UTC+1", 3600))
	u := &store.Upload{
		ID:       "5cec5ec8399270bef83dd460cb29bcf7",
		Filename: "holiday.mp4", Filetype: "video/mp4",
		Metadata:  map[string]string{"userId": "42"},
		CreatedAt: created,
		Token:     "to1secret",
	}
	ev := store.Event{
		ID: "evt_pw4bwvkkyc6xq7kwdkvuhulqje", Type: store.EventVideoDelivered, CreatedAt: created.Add(time.Second),
		State: store.StateDelivered, Size: 12582912, Received: 12582912, DeliveredBytes: 12582912,
		VideoID: "vi4k0jvEUuaTdRAEjQ4Jfrgz",
		Assets: store.Assets{
			Player:    "https://embed.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz",
			HLS:       "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/hls/manifest.m3u8",
			Thumbnail: "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/thumbnail.jpg",
			MP4:       "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/mp4/source.mp4",
		},
		Attempts: 3, LastError: "HTTP 500", Lease: store.Lease{Owner: "gw-a"},
	}
	want := `{
	  "id": "evt_pw4bwvkkyc6xq7kwdkvuhulqje",
	  "type": "video.delivered",
	  "createdAt": "2026-11-27T06:52:50Z",
	  "upload": {
	    "id": "5cec5ec8399270bef83dd460cb29bcf7",
	    "state": "delivered",
	    "size": 12582912,
	    "received": 12582912,
	    "delivered": 12582912,
	    "filename": "holiday.mp4",
	    "filetype": "video/mp4",
	    "metadata": {"userId": "42"},
	    "createdAt": "2026-11-27T06:52:49Z"
	  },
	  "video": {
	    "videoId": "vi4k0jvEUuaTdRAEjQ4Jfrgz",
	    "assets": {
	      "player": "https://embed.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz",
	      "hls": "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/hls/manifest.m3u8",
	      "thumbnail": "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/thumbnail.jpg",
	      "mp4": "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/mp4/source.mp4"
	    }
	  },
	  "error": null
	}`
	checkJSON(t, webhook.NewPayload(u, ev), want)

	// A failed deferred-length upload, before part 1: nulls.
	bare := &store.Upload{ID: "u2", CreatedAt: created}
	fev := store.Event{ID: "evt_2", Type: store.EventUploadFailed, CreatedAt: created, State: store.StateFailed, SizeDeferred: true,
		Received: 10, Error: store.Failure{Reason: store.ReasonDeadlineMissed, Message: "late"}}
	checkJSON(t, webhook.NewPayload(bare, fev), `{
	  "id": "evt_2", "type": "upload.failed", "createdAt": "2026-11-27T06:52:49Z",
	  "upload": {"id": "u2", "state": "failed", "size": null, "received": 10, "delivered": 0,
	             "filename": null, "filetype": null, "metadata": {}, "createdAt": "2026-11-27T06:52:49Z"},
	  "video": null,
	  "error": {"reason": "deadline_missed", "message": "late"}
	}`)
}

func checkJSON(t *testing.T, p webhook.Payload, want string) {
	t.Helper()
	data, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var got, exp any
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(want), &exp); err != nil {
		t.Fatalf("want: %v", err)
	}
	if !reflect.DeepEqual(got, exp) {
		t.Errorf("payload JSON:\n got  %s\n want %s", data, want)
	}
}
