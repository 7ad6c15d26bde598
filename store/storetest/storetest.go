// Package storetest is the conformance suite that every store.Store
// implementation must pass, in the style of testing/fstest.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tusgate/tusgate/store"
)

// Run runs the conformance suite. Every subtest calls open for a fresh, empty
// store; open is responsible for closing it (t.Cleanup) and for removing any
// data it leaves behind.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"Copies", testCopies},
		{"CreateExists", testCreateExists},
		{"NotFound", testNotFound},
		{"UpdateSaves", testUpdateSaves},
		{"UpdateError", testUpdateError},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"ConcurrentClaim", testConcurrentClaim},
		{"ListActive", testListActive},
		{"ListActiveOutbox", testListActiveOutbox},
		{"OutboxTransitions", testOutboxTransitions},
		{"ConcurrentEventClaim", testConcurrentEventClaim},
		{"ConcurrentAckAndEvent", testConcurrentAckAndEvent},
		{"Delete", testDelete},
		{"Ping", testPing},
		{"CancelledContext", testCancelledContext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// base is a fixed instant with a non-UTC zone and sub-millisecond digits, so
// a store that loses the instant shows up.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+2", 2*3600))

// FullUpload returns an upload with every field set to a non-zero value.
func FullUpload(id string) *store.Upload {
	return &store.Upload{
		ID:             id,
		State:          store.StateForwarding,
		Size:           123 << 20,
		SizeDeferred:   true,
		Received:       60 << 20,
		Complete:       true,
		Plan:           store.Plan{FirstPartSize: store.MinPartSize, PartSize: 50 << 20},
		Delivered:      []int{1, 3},
		DeliveredBytes: 55 << 20,
		InFlight: map[int]store.Lease{
			2: {Owner: "gw-a", Until: base.Add(time.Minute)},
			4: {Owner: "gw-b", Until: base.Add(2 * time.Minute)},
		},
		Uncertain: []int{5},
		VideoID:   "vi4k0jvEUuaTdRAEjQ4Jfrgz",
		Assets: store.Assets{
			Player:    "https://embed.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz",
			HLS:       "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/hls/manifest.m3u8",
			Thumbnail: "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/thumbnail.jpg",
			MP4:       "https://vod.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz/mp4/source.mp4",
		},
		Token:              "to1tcmSFHeYY5KzyhOqVKMKb",
		TokenDeadline:      base.Add(time.Hour),
		TokenManaged:       true,
		TokenMints:         2,
		CompletionWindow:   24 * time.Hour,
		CompletionDeadline: base.Add(24 * time.Hour),
		Attempts:           3,
		LastError:          "api.video: 503 Service Unavailable",
		Error:              &store.Failure{Reason: store.ReasonRejectedByAPIVideo, Message: "bad file"},
		Filename:           "holiday.mp4",
		Filetype:           "video/mp4",
		Metadata:           map[string]string{"tenant": "acme", "ref": "42"},
		Owner:              "user-7",
		CreatedAt:          base,
		UpdatedAt:          base.Add(time.Second),
		Webhooks:           true,
		Outbox: []store.Event{
			FullEvent("evt_full"),
			{ID: "evt_second", Type: store.EventUploadTerminated, CreatedAt: base.Add(3 * time.Second), State: store.StateTerminated},
		},
	}
}

// FullEvent returns a webhook event with every field set to a non-zero value.
func FullEvent(id string) store.Event {
	return store.Event{
		ID:             id,
		Type:           store.EventUploadFailed,
		CreatedAt:      base.Add(2 * time.Second),
		State:          store.StateFailed,
		Size:           123 << 20,
		SizeDeferred:   true,
		Received:       60 << 20,
		DeliveredBytes: 55 << 20,
		VideoID:        "vi4k0jvEUuaTdRAEjQ4Jfrgz",
		Assets:         store.Assets{Player: "https://embed.api.video/vod/vi4k0jvEUuaTdRAEjQ4Jfrgz"},
		Error:          store.Failure{Reason: store.ReasonRejectedByAPIVideo, Message: "bad file"},
		Attempts:       4,
		NextAttempt:    base.Add(time.Minute),
		LastError:      "HTTP 503 Service Unavailable",
		Lease:          store.Lease{Owner: "gw-a", Until: base.Add(30 * time.Second)},
	}
}

// newUpload returns a receiving upload of size bytes, all received, whose
// part 1 can be claimed.
func newUpload(id string, size int64) *store.Upload {
	return &store.Upload{
		ID:               id,
		State:            store.StateReceiving,
		Size:             size,
		Received:         size,
		Complete:         true,
		Plan:             store.Plan{FirstPartSize: store.MinPartSize, PartSize: store.MinPartSize},
		CompletionWindow: time.Hour,
		CreatedAt:        base,
		UpdatedAt:        base,
	}
}

// normalize returns a copy of u with times in UTC without monotonic readings
// and empty slices and maps as nil, so equal records compare DeepEqual.
func normalize(u *store.Upload) *store.Upload {
	c := u.Clone()
	utc := func(t *time.Time) { *t = t.UTC().Round(0) }
	utc(&c.TokenDeadline)
	utc(&c.CompletionDeadline)
	utc(&c.CreatedAt)
	utc(&c.UpdatedAt)
	for k, l := range c.InFlight {
		utc(&l.Until)
		c.InFlight[k] = l
	}
	for i := range c.Outbox {
		e := &c.Outbox[i]
		utc(&e.CreatedAt)
		utc(&e.NextAttempt)
		utc(&e.Lease.Until)
	}
	if len(c.Outbox) == 0 {
		c.Outbox = nil
	}
	if len(c.Delivered) == 0 {
		c.Delivered = nil
	}
	if len(c.InFlight) == 0 {
		c.InFlight = nil
	}
	if len(c.Metadata) == 0 {
		c.Metadata = nil
	}
	return c
}

func assertEqual(t *testing.T, got, want *store.Upload) {
	t.Helper()
	if g, w := normalize(got), normalize(want); !reflect.DeepEqual(g, w) {
		// %+v redacts the token, so compare it separately in the message.
		t.Errorf("record differs:\n got  %+v (token equal: %t)\n want %+v", g, g.Token == w.Token, w)
	}
}

func mustCreate(t *testing.T, s store.Store, u *store.Upload) {
	t.Helper()
	if err := s.Create(t.Context(), u); err != nil {
		t.Fatalf("Create(%q): %v", u.ID, err)
	}
}

func mustGet(t *testing.T, s store.Store, id string) *store.Upload {
	t.Helper()
	u, err := s.Get(t.Context(), id)
	if err != nil {
		t.Fatalf("Get(%q): %v", id, err)
	}
	return u
}

func mustUpdate(t *testing.T, s store.Store, id string, fn func(*store.Upload) error) *store.Upload {
	t.Helper()
	u, err := s.Update(t.Context(), id, fn)
	if err != nil {
		t.Fatalf("Update(%q): %v", id, err)
	}
	return u
}

func activeSet(t *testing.T, s store.Store) map[string]bool {
	t.Helper()
	ids, err := s.ListActive(t.Context())
	if err != nil {
		t.Fatalf("ListActive: %v", err)
	}
	set := map[string]bool{}
	for _, id := range ids {
		set[id] = true
	}
	return set
}

func testRoundTrip(t *testing.T, s store.Store) {
	full := FullUpload("full")
	// Guard: a field added to store.Upload must be added to FullUpload too.
	v := reflect.ValueOf(*full)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("FullUpload leaves field %s zero; set it so the round trip covers it", v.Type().Field(i).Name)
		}
	}
	v = reflect.ValueOf(full.Outbox[0])
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("FullEvent leaves field %s zero; set it so the round trip covers it", v.Type().Field(i).Name)
		}
	}
	tests := []struct {
		name string
		u    *store.Upload
	}{
		{"every field set", full},
		{"zero values", &store.Upload{ID: "zero"}},
		{"empty maps and slices", &store.Upload{ID: "empty", State: store.StateReceiving, Delivered: []int{}, InFlight: map[int]store.Lease{}, Metadata: map[string]string{}, Outbox: []store.Event{}}},
		{"terminal", &store.Upload{ID: "failed", State: store.StateFailed, Error: &store.Failure{Reason: store.ReasonTokenExpired}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustCreate(t, s, tt.u)
			got := mustGet(t, s, tt.u.ID)
			assertEqual(t, got, tt.u)
			if got.Token.Reveal() != tt.u.Token.Reveal() {
				t.Errorf("token round trip: got %d bytes, want %d", len(got.Token.Reveal()), len(tt.u.Token.Reveal()))
			}
			for k, l := range tt.u.InFlight {
				if !got.InFlight[k].Until.Equal(l.Until) {
					t.Errorf("lease %d until %v, want %v", k, got.InFlight[k].Until, l.Until)
				}
			}
			if !got.CreatedAt.Equal(tt.u.CreatedAt) || !got.TokenDeadline.Equal(tt.u.TokenDeadline) {
				t.Errorf("times: got created %v deadline %v, want %v %v", got.CreatedAt, got.TokenDeadline, tt.u.CreatedAt, tt.u.TokenDeadline)
			}
			if got.TokenDeadline.IsZero() != tt.u.TokenDeadline.IsZero() {
				t.Errorf("TokenDeadline.IsZero() = %t, want %t", got.TokenDeadline.IsZero(), tt.u.TokenDeadline.IsZero())
			}
		})
	}
}

func testCopies(t *testing.T, s store.Store) {
	in := FullUpload("copies")
	want := in.Clone()
	mustCreate(t, s, in)
	mutate := func(u *store.Upload) {
		u.State = store.StateTerminated
		u.Delivered[0] = 99
		u.InFlight[2] = store.Lease{Owner: "thief"}
		u.Metadata["tenant"] = "evil"
		u.Error.Message = "changed"
		u.Outbox[0].Attempts = 99
	}
	mutate(in)
	assertEqual(t, mustGet(t, s, "copies"), want)

	got := mustGet(t, s, "copies")
	mutate(got)
	assertEqual(t, mustGet(t, s, "copies"), want)

	updated := mustUpdate(t, s, "copies", func(u *store.Upload) error { u.Attempts++; return nil })
	want.Attempts++
	mutate(updated)
	assertEqual(t, mustGet(t, s, "copies"), want)
}

func testCreateExists(t *testing.T, s store.Store) {
	first := newUpload("dup", 1)
	mustCreate(t, s, first)
	second := FullUpload("dup")
	if err := s.Create(t.Context(), second); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second Create: got %v, want ErrExists", err)
	}
	assertEqual(t, mustGet(t, s, "dup"), first)
}

func testNotFound(t *testing.T, s store.Store) {
	if _, err := s.Get(t.Context(), "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get: got %v, want ErrNotFound", err)
	}
	called := false
	_, err := s.Update(t.Context(), "missing", func(*store.Upload) error { called = true; return nil })
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Update: got %v, want ErrNotFound", err)
	}
	if called {
		t.Errorf("Update called fn for a missing record")
	}
	if _, err := s.Get(t.Context(), "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Update: got %v, want ErrNotFound (Update must not create)", err)
	}
}

func testUpdateSaves(t *testing.T, s store.Store) {
	u := newUpload("upd", 2*store.MinPartSize)
	mustCreate(t, s, u)
	now := base.Add(time.Minute)
	got := mustUpdate(t, s, "upd", func(u *store.Upload) error {
		_, err := u.Claim(1, "gw-a", now.Add(time.Minute), now)
		return err
	})
	if got.State != store.StateForwarding || got.InFlight[1].Owner != "gw-a" {
		t.Errorf("Update returned state %s, lease %+v; want forwarding, lease of gw-a", got.State, got.InFlight[1])
	}
	assertEqual(t, mustGet(t, s, "upd"), got)
	got = mustUpdate(t, s, "upd", func(u *store.Upload) error {
		return u.Deliver(1, "vi1", store.Assets{Player: "p"}, now)
	})
	assertEqual(t, mustGet(t, s, "upd"), got)
	if got.VideoID != "vi1" || !got.IsDelivered(1) || len(got.InFlight) != 0 {
		t.Errorf("after Deliver: got video %q, delivered %v, in flight %v; want vi1, [1], none", got.VideoID, got.Delivered, got.InFlight)
	}
}

func testUpdateError(t *testing.T, s store.Store) {
	want := newUpload("err", 1)
	mustCreate(t, s, want)
	sentinel := errors.New("refused by fn")
	_, err := s.Update(t.Context(), "err", func(u *store.Upload) error {
		u.State = store.StateFailed
		u.Attempts = 7
		u.Metadata = map[string]string{"x": "y"}
		return fmt.Errorf("wrapped: %w", sentinel)
	})
	if !errors.Is(err, sentinel) {
		t.Errorf("Update: got %v, want the error fn returned", err)
	}
	assertEqual(t, mustGet(t, s, "err"), want)
	if !activeSet(t, s)["err"] {
		t.Errorf("a failed Update changed the active index")
	}
	// A transition's own error comes back too.
	_, err = s.Update(t.Context(), "err", func(u *store.Upload) error {
		return u.Renew(1, "nobody", base, base)
	})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("Update with Renew of an unleased part: got %v, want ErrConflict", err)
	}
}

func testConcurrentUpdates(t *testing.T, s store.Store) {
	const workers, each = 16, 25
	mustCreate(t, s, newUpload("count", 1))
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				if _, err := s.Update(t.Context(), "count", func(u *store.Upload) error {
					u.Attempts++
					return nil
				}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Update: %v", err)
	}
	if got := mustGet(t, s, "count").Attempts; got != workers*each {
		t.Errorf("Attempts = %d, want %d", got, workers*each)
	}
}

func testConcurrentClaim(t *testing.T, s store.Store) {
	const owners = 8
	mustCreate(t, s, newUpload("claim", store.MinPartSize+1))
	now := base.Add(time.Minute)
	var wg sync.WaitGroup
	results := make([]error, owners)
	for i := range owners {
		wg.Go(func() {
			_, results[i] = s.Update(t.Context(), "claim", func(u *store.Upload) error {
				_, err := u.Claim(1, fmt.Sprintf("gw-%d", i), now.Add(time.Minute), now)
				return err
			})
		})
	}
	wg.Wait()
	winner := -1
	for i, err := range results {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("owners %d and %d both claimed part 1", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("owner %d: got %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatalf("no owner claimed part 1")
	}
	got := mustGet(t, s, "claim")
	if want := fmt.Sprintf("gw-%d", winner); got.InFlight[1].Owner != want || len(got.InFlight) != 1 {
		t.Errorf("leases %+v, want one on part 1 for %s", got.InFlight, want)
	}
}

func testListActive(t *testing.T, s store.Store) {
	if got := activeSet(t, s); len(got) != 0 {
		t.Fatalf("fresh store: ListActive = %v, want none", slices.Sorted(maps.Keys(got)))
	}
	for _, u := range []*store.Upload{
		{ID: "recv", State: store.StateReceiving},
		{ID: "fwd", State: store.StateForwarding},
		{ID: "fwd2", State: store.StateForwarding},
		{ID: "done", State: store.StateDelivered},
		{ID: "failed", State: store.StateFailed},
		{ID: "gone", State: store.StateTerminated},
	} {
		mustCreate(t, s, u)
	}
	check := func(want ...string) {
		t.Helper()
		got := activeSet(t, s)
		if !maps.Equal(got, setOf(want)) {
			t.Errorf("ListActive = %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(slices.Values(want)))
		}
	}
	check("recv", "fwd", "fwd2")

	now := base
	mustUpdate(t, s, "recv", func(u *store.Upload) error { return u.Fail(store.ReasonDeadlineMissed, "late", now) })
	check("fwd", "fwd2")
	mustUpdate(t, s, "fwd", func(u *store.Upload) error { return u.Terminate(now) })
	check("fwd2")
	mustUpdate(t, s, "fwd2", func(u *store.Upload) error { u.State = store.StateDelivered; return nil })
	check()
	// Leaving a terminal state (an operator fix) puts the id back.
	mustUpdate(t, s, "done", func(u *store.Upload) error { u.State = store.StateReceiving; return nil })
	check("done")
}

// testListActiveOutbox checks the outbox rule of ListActive: a terminal
// upload stays listed while it holds webhook events, and leaves the list
// with its last one.
func testListActiveOutbox(t *testing.T, s store.Store) {
	check := func(want ...string) {
		t.Helper()
		got := activeSet(t, s)
		if !maps.Equal(got, setOf(want)) {
			t.Errorf("ListActive = %v, want %v", slices.Sorted(maps.Keys(got)), slices.Sorted(slices.Values(want)))
		}
	}
	now := base
	hooked := func(id string) *store.Upload {
		u := newUpload(id, store.MinPartSize+1)
		u.EnableWebhooks(now)
		return u
	}
	// Created terminal with a pending event: listed from the start.
	done := &store.Upload{ID: "done-pending", State: store.StateDelivered, Outbox: []store.Event{{ID: "evt_1", Type: store.EventVideoDelivered}}}
	mustCreate(t, s, done)
	mustCreate(t, s, hooked("hooked"))
	mustCreate(t, s, newUpload("plain", 1))
	check("done-pending", "hooked", "plain")

	// Failing queues upload.failed: the terminal record stays listed.
	got := mustUpdate(t, s, "hooked", func(u *store.Upload) error { return u.Fail(store.ReasonTokenRejected, "401", now) })
	if n := len(got.Outbox); n != 2 {
		t.Fatalf("outbox after Fail holds %d events, want 2 (created, failed)", n)
	}
	// Without webhooks, failing leaves the list as before.
	mustUpdate(t, s, "plain", func(u *store.Upload) error { return u.Fail(store.ReasonTokenRejected, "401", now) })
	check("done-pending", "hooked")

	// Acknowledging all but the last keeps it; the last one takes it out.
	mustUpdate(t, s, "hooked", func(u *store.Upload) error { return u.AckEvent(got.Outbox[0].ID) })
	check("done-pending", "hooked")
	mustUpdate(t, s, "hooked", func(u *store.Upload) error { return u.DropEvent(got.Outbox[1].ID) })
	check("done-pending")
	assertEqual(t, mustGet(t, s, "hooked"), func() *store.Upload {
		w := got.Clone()
		w.Outbox = nil
		return w
	}())

	// A terminated upload queues upload.terminated: back in the list.
	mustUpdate(t, s, "hooked", func(u *store.Upload) error { return u.Terminate(now) })
	check("done-pending", "hooked")
	mustUpdate(t, s, "done-pending", func(u *store.Upload) error { return u.AckEvent("evt_1") })
	check("hooked")
}

// testOutboxTransitions runs the delivery bookkeeping through the store.
func testOutboxTransitions(t *testing.T, s store.Store) {
	now := base
	u := newUpload("ob", 1)
	u.EnableWebhooks(now)
	mustCreate(t, s, u)
	got := mustGet(t, s, "ob")
	ev, _, ok := got.NextEvent("gw-a", now)
	if !ok || ev.Type != store.EventUploadCreated || ev.ID == "" {
		t.Fatalf("NextEvent after Create = %+v, %t; want upload.created", ev, ok)
	}
	until := now.Add(time.Minute)
	mustUpdate(t, s, "ob", func(u *store.Upload) error { return u.ClaimEvent(ev.ID, "gw-a", until, now) })
	if _, err := s.Update(t.Context(), "ob", func(u *store.Upload) error { return u.ClaimEvent(ev.ID, "gw-b", until, now) }); !errors.Is(err, store.ErrConflict) {
		t.Errorf("claim of a leased event by another owner: got %v, want ErrConflict", err)
	}
	next := now.Add(10 * time.Second)
	got = mustUpdate(t, s, "ob", func(u *store.Upload) error { return u.RetryEvent(ev.ID, "gw-a", next, "HTTP 500") })
	if e := got.Outbox[0]; e.Attempts != 1 || !e.NextAttempt.Equal(next) || e.LastError != "HTTP 500" || e.Lease != (store.Lease{}) {
		t.Errorf("after RetryEvent: %+v; want 1 attempt, next %v, the error, no lease", e, next)
	}
	assertEqual(t, mustGet(t, s, "ob"), got)
	if _, at, ok := mustGet(t, s, "ob").NextEvent("gw-b", now); ok || !at.Equal(next) {
		t.Errorf("NextEvent before the retry time: ok %t, at %v; want false, %v", ok, at, next)
	}
	mustUpdate(t, s, "ob", func(u *store.Upload) error { return u.ClaimEvent(ev.ID, "gw-b", next.Add(time.Minute), next) })
	mustUpdate(t, s, "ob", func(u *store.Upload) error { return u.AckEvent(ev.ID) })
	if _, err := s.Update(t.Context(), "ob", func(u *store.Upload) error { return u.AckEvent(ev.ID) }); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second AckEvent: got %v, want ErrConflict", err)
	}
	if got := mustGet(t, s, "ob"); len(got.Outbox) != 0 {
		t.Errorf("outbox after AckEvent = %+v, want empty", got.Outbox)
	}
}

// testConcurrentEventClaim checks that only one of several dispatchers
// claims an event.
func testConcurrentEventClaim(t *testing.T, s store.Store) {
	const owners = 8
	u := newUpload("evclaim", 1)
	u.EnableWebhooks(base)
	mustCreate(t, s, u)
	id := u.Outbox[0].ID
	var wg sync.WaitGroup
	results := make([]error, owners)
	for i := range owners {
		wg.Go(func() {
			_, results[i] = s.Update(t.Context(), "evclaim", func(u *store.Upload) error {
				return u.ClaimEvent(id, fmt.Sprintf("gw-%d", i), base.Add(time.Minute), base)
			})
		})
	}
	wg.Wait()
	won := 0
	for i, err := range results {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("owner %d: got %v, want ErrConflict", i, err)
		}
	}
	if won != 1 {
		t.Errorf("%d owners claimed the event, want 1", won)
	}
}

// testConcurrentAckAndEvent races the acknowledgement of a failed upload's
// last event (which takes it out of ListActive) with its termination (which
// queues a new event and keeps it in): whatever the order, a record with a
// pending event ends up listed.
func testConcurrentAckAndEvent(t *testing.T, s store.Store) {
	const rounds = 20
	for i := range rounds {
		id := fmt.Sprintf("race-%d", i)
		u := newUpload(id, 1)
		u.EnableWebhooks(base)
		if err := u.Fail(store.ReasonTokenRejected, "401", base); err != nil {
			t.Fatal(err)
		}
		u.Outbox = u.Outbox[1:] // only upload.failed is left
		mustCreate(t, s, u)
		evID := u.Outbox[0].ID
		var wg sync.WaitGroup
		var ackErr, termErr error
		wg.Go(func() {
			_, ackErr = s.Update(t.Context(), id, func(u *store.Upload) error { return u.AckEvent(evID) })
		})
		wg.Go(func() {
			_, termErr = s.Update(t.Context(), id, func(u *store.Upload) error { return u.Terminate(base) })
		})
		wg.Wait()
		if ackErr != nil || termErr != nil {
			t.Fatalf("round %d: ack: %v, terminate: %v", i, ackErr, termErr)
		}
		got := mustGet(t, s, id)
		if len(got.Outbox) != 1 || got.Outbox[0].Type != store.EventUploadTerminated {
			t.Fatalf("round %d: outbox %+v, want upload.terminated alone", i, got.Outbox)
		}
		if !activeSet(t, s)[id] {
			t.Fatalf("round %d: a terminated upload with a pending event is not listed by ListActive", i)
		}
	}
}

func setOf(ids []string) map[string]bool {
	m := map[string]bool{}
	for _, id := range ids {
		m[id] = true
	}
	return m
}

func testDelete(t *testing.T, s store.Store) {
	mustCreate(t, s, newUpload("del", 1))
	for i := range 2 {
		if err := s.Delete(t.Context(), "del"); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	if err := s.Delete(t.Context(), "never-existed"); err != nil {
		t.Errorf("Delete of a missing id: got %v, want nil", err)
	}
	if _, err := s.Get(t.Context(), "del"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete: got %v, want ErrNotFound", err)
	}
	if activeSet(t, s)["del"] {
		t.Errorf("ListActive still lists a deleted upload")
	}
	again := newUpload("del", 2)
	mustCreate(t, s, again)
	assertEqual(t, mustGet(t, s, "del"), again)
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func testCancelledContext(t *testing.T, s store.Store) {
	mustCreate(t, s, newUpload("ctx", 1))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"Create", func() error { return s.Create(ctx, newUpload("ctx-new", 1)) }},
		{"Get", func() error { _, err := s.Get(ctx, "ctx"); return err }},
		{"Update", func() error {
			_, err := s.Update(ctx, "ctx", func(u *store.Upload) error { u.Attempts++; return nil })
			return err
		}},
		{"ListActive", func() error { _, err := s.ListActive(ctx); return err }},
		{"Delete", func() error { return s.Delete(ctx, "ctx") }},
		{"Ping", func() error { return s.Ping(ctx) }},
	}
	for _, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- c.call() }()
			timer := time.NewTimer(5 * time.Second)
			defer timer.Stop()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("got %v, want an error wrapping context.Canceled", err)
				}
			case <-timer.C:
				t.Fatalf("still running after 5s with a cancelled context")
			}
		})
	}
	// Nothing was changed by the cancelled calls.
	assertEqual(t, mustGet(t, s, "ctx"), newUpload("ctx", 1))
	if _, err := s.Get(t.Context(), "ctx-new"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of the id created with a cancelled context: got %v, want ErrNotFound", err)
	}
}
